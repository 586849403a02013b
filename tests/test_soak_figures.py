"""The figures of ``bench/soak.py``: the RSS slope with one intercept per process incarnation,
and the trials lost read from a real SQLite Optuna study."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _soak_figures import RssSamples, trial_figures

from trainers.storage import retry_failed_trial


def _add(rss: RssSamples, name: str, inc: tuple[int, float], t0: float, base: float, mb_per_h: float) -> None:
    for i in range(10):
        t = t0 + 60.0 * i
        rss.samples[name].append((t, inc, base + mb_per_h * (t - t0) / 3600))


def test_rss_slope_ignores_restarts_and_finds_a_leak() -> None:
    rss = RssSamples(warmup_s=0)
    # flat worker restarted at a higher baseline: a fit over all points would see growth
    _add(rss, "worker-0", (1, 1.0), 0.0, 300.0, 0.0)
    _add(rss, "worker-0", (2, 2.0), 1200.0, 400.0, 0.0)
    # a leaking trader, restarted once: 12 MB/h within each incarnation
    _add(rss, "paper_trader", (3, 3.0), 0.0, 200.0, 12.0)
    _add(rss, "paper_trader", (4, 4.0), 1200.0, 180.0, 12.0)
    rss.samples["api"].append((0.0, (5, 5.0), 100.0))  # one sample: no slope
    slopes = rss.slopes()
    assert slopes["worker-0"][0] == pytest.approx(0.0, abs=1e-9)
    assert slopes["paper_trader"][0] == pytest.approx(12.0)
    assert slopes["paper_trader"][1] == 20
    assert slopes["api"][0] is None


def test_trials_lost_counts_running_and_unretried_failures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    study.enqueue_trial({"x": 1.0})
    first = study.ask()  # fails and is retried by the callback below
    study.tell(first, state=TrialState.FAIL)
    retry_failed_trial(study, first.number)  # the workers' re-queue (Optuna's retry_history)
    retry = study.ask()
    study.tell(retry, 1.0)
    alone = study.ask()  # fails, never retried
    alone.set_user_attr("fail_reason", "ValueError: boom")
    study.tell(alone, state=TrialState.FAIL)
    study.ask()  # RUNNING without any heartbeat
    figures = trial_figures(url, "s", grace_period_s=30)
    assert figures is not None
    assert figures.fail_not_retried == [alone.number]
    assert figures.fail_reasons == {alone.number: "ValueError: boom"}
    assert list(figures.running_lost) == [3]
    assert figures.lost == 2
    assert figures.states == {"FAIL": 2, "COMPLETE": 1, "RUNNING": 1}
    assert trial_figures(url, "missing", grace_period_s=30) is None

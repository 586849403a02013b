"""Sequential two-stage training (:mod:`daemon.sequential`) on a real SQLite storage, without
a supervisor: the start request, the gate's evidence, ``continue`` (refused in stage 1,
``--force`` after a refused gate) with the best quick parameters enqueued in the full study
(same costs and design options), and the switch of ``.current_study`` once the full study
has ``top_k`` COMPLETE trials. The supervisor's side is in ``test_sequential_supervisor.py``."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from daemon import sequential, sequential_state
from daemon.cli import app
from daemon.config import load_config
from daemon.training_control import TrainingRequest, start_training
from trainers.design import DesignOptions
from trainers.runtime.current_study import read_current_study
from trainers.runtime.layout import Layout
from trainers.storage import default_storage_url


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./cappuccino.toml
    for var in [v for v in os.environ if v.upper().startswith("CAPPUCCINO_")]:
        monkeypatch.delenv(var)
    path = tmp_path / "root"
    path.mkdir()
    return path


def _start(root: Path, **kw: object) -> sequential_state.SequentialRun:
    request = TrainingRequest("exp", n_trials=9, workers=0, sequential=True, quick_trials=4, **kw)  # type: ignore[arg-type]
    started = start_training(None, root, request)
    assert started.switch.study == "exp_quick"
    run = sequential_state.read_run(root)
    assert run is not None
    return run


def _add(root: Path, study: str, values: list[float]) -> None:
    storage = default_storage_url(root)
    s = optuna.load_study(study_name=study, storage=storage)
    dist = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}
    for i, v in enumerate(values):
        s.add_trial(create_trial(params={"lr": 1e-4 * (i + 1)}, distributions=dist, value=v))


@pytest.mark.slow  # each request runs `cappuccino sync` as a child process
def test_a_sequential_start_records_stage_1_and_a_plain_start_supersedes_it(root: Path) -> None:
    run = _start(root)
    assert (run.stage, run.training_study, run.quick_trials, run.n_trials) == ("quick", "exp_quick", 4, 9)
    assert read_current_study(root) == "exp_quick"
    request = tomllib.loads(Layout(root).training_request.read_text())
    assert request["study"] == {"n_trials": 4, "mode": "quick"}
    assert sequential_state.worker_study(root, "exp_quick") == "exp_quick"
    with pytest.raises(ValueError, match="--mode and --sequential exclude each other"):
        start_training(None, root, TrainingRequest("exp", 9, 0, mode="full", sequential=True))
    start_training(None, root, TrainingRequest("other", n_trials=3, workers=0))
    after = sequential_state.read_run(root)
    assert after is not None and after.stage == "superseded"
    assert after.history[-1]["note"] == "start-training --study other"


def test_the_gate_records_its_evidence_against_the_baselines(root: Path) -> None:
    at = sequential_state.now_iso()
    run = sequential_state.SequentialRun(
        name="exp",
        quick_study="exp_quick",
        full_study="exp_full",
        n_trials=9,
        quick_trials=4,
        training_study="exp_quick",
        started_at=at,
        updated_at=at,
        stage_since=at,
    )
    cfg = load_config(None, {"root": root, "sequential": {"margin": 0.05}}).sequential
    stats = {
        "trials": {"COMPLETE": 3, "PRUNED": 1},
        "best": {"number": 2, "value": 0.30},
        "baselines": {"invested": 0.28, "cash": -0.1},
    }
    assert sequential.gate_due(run, stats, cfg, 0.0) == "trials"
    gate = sequential.evaluate_gate(run, stats, cfg, "trials")
    assert gate["passed"] is False and gate["threshold"] == pytest.approx(0.33)
    assert gate["reason"].startswith("best quick value 0.3000 does not beat both constant baselines")
    assert (gate["finished_trials"], gate["complete_trials"], gate["best"]) == (
        4,
        3,
        {"number": 2, "value": 0.3},
    )
    passed = sequential.evaluate_gate(run, {**stats, "best": {"number": 2, "value": 0.4}}, cfg, "trials")
    assert passed["passed"] is True
    missing = sequential.evaluate_gate(run, {**stats, "baselines": None}, cfg, "trials")
    assert missing["passed"] is False and "not recorded yet" in missing["reason"]


@pytest.mark.slow
def test_continue_enqueues_the_best_quick_params_and_the_full_study_becomes_current_after_top_k(
    root: Path,
) -> None:
    _start(root, confirm=True)
    result = CliRunner().invoke(app, ["continue", "--root", str(root)])
    assert result.exit_code == 2
    assert "is in stage 'quick': stage 1 is still running" in result.output

    _add(root, "exp_quick", [0.1, 0.5, 0.3, 0.2])
    quick = optuna.load_study(study_name="exp_quick", storage=default_storage_url(root))
    design = DesignOptions.from_dict({"action_scheme": "scores", "decision_intervals": [1, 4]}).as_dict()
    quick.set_user_attr("design_options", design)
    cfg = load_config(None, {"root": root})
    cfg = cfg.model_copy(
        update={"sequential": cfg.sequential.model_copy(update={"top_k": 2, "margin": 100.0})}
    )
    quick.set_user_attr(
        "fold_baselines",
        {"baselines": {n: {"value": 0.0, "folds": [{}]} for n in ("invested", "cash")}},
    )
    assert sequential.check(None, cfg) == "exp: stage 1, gate refused: " + (
        "best quick value 0.5000 does not beat both constant baselines "
        "(invested 0.0000, cash 0.0000, margin 100)"
    )
    doc = sequential_state.status_view(root)
    assert doc is not None and doc["stage"] == "gate_refused" and doc["gate"]["best"]["number"] == 1

    result = CliRunner().invoke(app, ["continue", "--force", "--root", str(root)])
    assert result.exit_code == 0, result.output
    run = sequential_state.read_run(root)
    assert run is not None and run.stage == "full_warmup" and run.training_study == "exp_full"
    assert [e["quick_trial"] for e in run.enqueued] == [1, 2, 3]  # the config's top_k (3), best first
    assert read_current_study(root) == "exp_quick"
    assert sequential_state.worker_study(root, "exp_quick") == "exp_full"
    assert tomllib.loads(Layout(root).training_request.read_text())["study"] == {
        "n_trials": 9,
        "mode": "full",
    }
    full = optuna.load_study(study_name="exp_full", storage=default_storage_url(root))
    assert full.user_attrs["costs"] == quick.user_attrs["costs"]
    assert full.user_attrs["design_options"] == design
    waiting = full.get_trials(states=(TrialState.WAITING,))
    by_number = {t.number: t.params for t in quick.trials}
    assert [t.system_attrs["fixed_params"] for t in waiting] == [by_number[n] for n in (1, 2, 3)]

    assert sequential.check(None, cfg) == "exp: stage 2, 0/2 COMPLETE full trials before the switch"
    _add(root, "exp_full", [0.2, 0.1])
    assert sequential.check(None, cfg) == "exp: stage 2, exp_full is the current study"
    assert read_current_study(root) == "exp_full"
    assert sequential_state.read_run(root).stage == "full"  # type: ignore[union-attr]


def test_status_and_dashboard_show_the_stage_and_the_gate(capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli.supervise import render_status
    from daemon.views.dashboard import sequential_rows

    gate = {"passed": False, "rule": "min_value", "reason": "0.1 <= 0.5", "evaluated_at": "T"}
    seq = {"name": "exp", "stage": "gate_refused", "stage_number": 1, "training_study": "exp_quick"}
    render_status(
        {"supervisor_running": False, "current_study": "exp_quick", "sequential": {**seq, "gate": gate}}
    )
    out = capsys.readouterr().out
    assert "sequential: exp: stage 1 (gate_refused), workers train exp_quick" in out
    assert "gate: refused (min_value): 0.1 <= 0.5; at T" in out
    assert sequential_rows(None) == []
    rows = dict(sequential_rows({**seq, "gate": None, "quick_trials": 4}))
    assert rows["gate"] == "not evaluated yet (4 quick trials)"

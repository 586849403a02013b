"""The auto-deployer on a real trained study: real SQLite storage, real bundles and
artifacts, the real hold-out backtest, real files under a copied root.

Extra candidate trials are added with ``study.add_trial``; each gets its own real bundle
(the actor of a trained fixture trial, its ``model.json`` re-labelled with the new
trial's identity, value and grade), so the gates see exactly what a worker would leave.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from daemon.cli import app
from ensemble.backtests import bundle_backtest
from ensemble.deploy import DeployError, read_log, rollback, run_deploy
from ensemble.deploy_gate import DeployThresholds, check_improvement
from ensemble.deploy_slot import SLOT_FILES, previous_dir, slot_dir
from trainers.bundle import atomic_write_json, load_bundle, sha256_file
from trainers.data import Panel, load_panel
from trainers.features import compute_features
from trainers.naming import vin_for
from trainers.storage import default_storage_url
from trainers.worker import create_study

STUDY = "fixture_study"
LENIENT = DeployThresholds(min_sharpe=-1e9, max_drawdown=1.0)


def _study(root: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=default_storage_url(root))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def _fixture_best(root: Path) -> FrozenTrial:
    """The best trial the fixture trained (added candidates have no artifact)."""
    trials = _study(root).get_trials(states=(TrialState.COMPLETE,))
    return max((t for t in trials if t.user_attrs.get("artifact_id")), key=lambda t: t.value)


def add_candidate(
    root: Path, value: float, grade: str = "A", tamper: str | None = None, source: FrozenTrial | None = None
) -> FrozenTrial:
    """Add a COMPLETE trial with ``value`` and ``grade`` whose bundle (under ``bundle_path``,
    no artifact) is a real trained actor labelled as this trial.

    ``tamper``: ``"actor"`` flips a byte of ``actor.pth``; ``"identity"`` leaves the
    ``model.json`` of the source trial (another trial id) in place.
    """
    study = _study(root)
    src = source or _fixture_best(root)
    number = len(study.get_trials(deepcopy=False))
    rel = f"trials/{STUDY}/{number}/bundle"
    attrs = {k: v for k, v in src.user_attrs.items() if k != "artifact_id"}
    attrs.update(vin=vin_for(src.params, value, trailing_stop=0.1), grade=grade, bundle_path=rel)
    study.add_trial(
        optuna.trial.create_trial(
            params=src.params, distributions=src.distributions, value=value, user_attrs=attrs
        )
    )
    added = study.get_trials(deepcopy=False)[-1]
    assert added.number == number
    src_dir, dst = root / src.user_attrs["bundle_path"], root / rel
    dst.mkdir(parents=True)
    shutil.copyfile(src_dir / "actor.pth", dst / "actor.pth")
    meta = json.loads((src_dir / "model.json").read_text())
    if tamper != "identity":
        meta.update(
            trial_number=added.number, trial_id=added._trial_id, value=value, grade=grade, vin=attrs["vin"]
        )
    atomic_write_json(dst / "model.json", meta)
    if tamper == "actor":
        data = bytearray((dst / "actor.pth").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (dst / "actor.pth").write_bytes(bytes(data))
    return added


@cache
def _panel() -> tuple[Panel, np.ndarray]:
    panel = load_panel()
    return panel, compute_features(panel.prices)


def hand_holdout(bundle_dir: Path, details: dict[str, Any]) -> dict[str, float]:
    """The gate's hold-out figures recomputed by hand from the backtest's equity curve.

    The window: from the hold-out cut, the first half of the hold-out bars (the validation
    window, ``round(0.5 * n_holdout)`` bars). The figures (trainers/metrics.py): per-bar
    simple returns ``r_t = e_t / e_{t-1} - 1``; Sharpe = ``mean(r) / std(r, ddof=1) *
    sqrt(bars_per_year)`` with a zero risk-free rate, ``bars_per_year = 365 * 24`` for the
    hourly, around-the-clock embedded bars; max drawdown ``max_t 1 - e_t / max_{s<=t} e_s``;
    total return ``e_last / e_first - 1``. Sums in plain Python (``math.fsum``), not numpy.
    """
    panel, raw = _panel()
    bundle = load_bundle(bundle_dir)
    cut = pd.Timestamp(details["holdout_cut"])
    start = int(
        np.searchsorted(panel.timestamps, cut.tz_convert(None).to_datetime64().astype("datetime64[s]"))
    )
    stop = start + round(0.5 * (len(panel) - start))
    first, last = (pd.Timestamp(panel.timestamps[i], tz="UTC").isoformat() for i in (start, stop - 1))
    assert (details["first_bar"], details["last_bar"]) == (first, last)
    equity = [
        float(x)
        for x in bundle_backtest(bundle, panel.prices, raw, start, stop, timestamps=panel.timestamps).equity
    ]
    r = [b / a - 1.0 for a, b in itertools.pairwise(equity)]
    mean = math.fsum(r) / len(r)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in r) / (len(r) - 1))
    peak, drawdown = equity[0], 0.0
    for e in equity:
        peak = max(peak, e)
        drawdown = max(drawdown, 1.0 - e / peak)
    return {
        "n_bars": len(r),
        "sharpe": mean / sd * math.sqrt(365 * 24),
        "max_drawdown": drawdown,
        "total_return": equity[-1] / equity[0] - 1.0,
    }


def assert_matches_hand(details: dict[str, Any], bundle_dir: Path) -> None:
    hand = hand_holdout(bundle_dir, details)
    assert details["bars_per_year"] == 365 * 24
    assert details["n_bars"] == hand["n_bars"]
    for key in ("sharpe", "max_drawdown", "total_return"):
        assert details[key] == pytest.approx(hand[key], rel=1e-9, abs=1e-12), key


def base_value(root: Path) -> float:
    """The value of the first deployed candidate: above every fixture trial, and positive so
    relative steps are clear."""
    return max(_fixture_best(root).value, 0.0) + 1.0


@pytest.fixture(scope="module")
def deployed(trained_study, tmp_path_factory) -> tuple[Path, FrozenTrial]:
    """A root whose slot 0 holds a promoted candidate (value ``base_value``). Read-only."""
    root = _copy(trained_study.root, tmp_path_factory.mktemp("deployed") / "root")
    trial = add_candidate(root, base_value(root), "A")
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "promoted", decision.summary()
    return root, trial


@pytest.fixture()
def root(deployed, tmp_path) -> Path:
    """A private copy of the deployed root."""
    return _copy(deployed[0], tmp_path / "root")


def _failing(decision) -> set[str]:
    return {name for name, g in decision.gates.items() if g.status == "fail"}


def test_promote_writes_a_verified_slot_and_logs_it(deployed):
    root, trial = deployed
    slot = slot_dir(root, 0)
    assert sorted(p.name for p in slot.iterdir()) == sorted(SLOT_FILES)
    source = root / trial.user_attrs["bundle_path"]
    assert (slot / "actor.pth").read_bytes() == (source / "actor.pth").read_bytes()
    assert (slot / "model.json").read_bytes() == (source / "model.json").read_bytes()
    info = json.loads((slot / "deployment_info.json").read_text())
    assert sha256_file(slot / "actor.pth") == info["sha256"] == trial.user_attrs["actor_sha256"]
    assert load_bundle(slot, expect_sha256=info["sha256"]).meta["trial_id"] == trial._trial_id
    assert (info["slot"], info["study"], info["trial_number"], info["trial_id"]) == (
        0,
        STUDY,
        trial.number,
        trial._trial_id,
    )
    assert (info["vin"], info["grade"], info["value"]) == (trial.user_attrs["vin"], "A", trial.value)
    assert info["previous"] is None and info["thresholds"] == LENIENT.as_dict()
    holdout = info["holdout"]
    assert holdout["n_bars"] > 1000 and holdout["first_bar"] >= holdout["holdout_cut"]
    assert holdout["first_bar"].startswith("2019-07-01T00:00:00")
    assert {"sharpe", "max_drawdown", "total_return", "benchmark_sharpe", "data_fingerprint"} <= set(holdout)
    assert_matches_hand(holdout, source)
    meta = json.loads((slot / "trial_metadata.json").read_text())
    assert (meta["study"], meta["trial_number"], meta["trial_id"], meta["value"]) == (
        STUDY,
        trial.number,
        trial._trial_id,
        trial.value,
    )
    assert meta["params"] == trial.params and meta["user_attrs"] == trial.user_attrs
    assert meta["datetime_complete"] is not None and set(meta["distributions"]) == set(trial.params)
    # nothing but the slot, the log and the lock: no staging leftovers, no previous yet
    assert sorted(p.name for p in slot.parent.iterdir()) == [".deploy.lock", "deploy_log.jsonl", "model_0"]
    (line,) = read_log(root)
    assert line["decision"] == "promoted" and line["trial"] == trial.number
    assert (line["vin"], line["value"], line["deployed_value"]) == (
        trial.user_attrs["vin"],
        trial.value,
        None,
    )
    assert {n: g["status"] for n, g in line["gates"].items()} == dict.fromkeys(
        ("improvement", "grade", "rollback", "bundle", "holdout"), "pass"
    )
    assert line["gates"]["holdout"]["sharpe"] == holdout["sharpe"] and line["reasons"] == []


def test_the_same_best_trial_again_is_unchanged(root):
    before = _snapshot(slot_dir(root, 0))
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "unchanged", decision.summary()
    assert _snapshot(slot_dir(root, 0)) == before
    assert [r["decision"] for r in read_log(root)] == ["promoted", "unchanged"]


@pytest.mark.parametrize(
    ("case", "failing"),
    [("improvement", {"improvement"}), ("grade", {"grade"})],
)
def test_refused_for_value_or_grade_keeps_the_deployment(root, case, failing):
    v = base_value(root)
    # improvement: +0.5% over the deployed value, 1% required; grade: +50%, but graded B
    value, grade = (v * 1.005, "A") if case == "improvement" else (v * 1.5, "B")
    cand = add_candidate(root, value, grade)
    before = _snapshot(slot_dir(root, 0))
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "refused" and decision.trial_number == cand.number
    assert _failing(decision) == failing
    assert _snapshot(slot_dir(root, 0)) == before
    assert sorted(p.name for p in (root / "deployments").iterdir()) == [
        ".deploy.lock",
        "deploy_log.jsonl",
        "model_0",
    ]
    line = read_log(root)[-1]
    assert line["decision"] == "refused" and line["trial"] == cand.number
    assert line["reasons"] == decision.reasons and len(line["reasons"]) == 1
    assert line["deployed_value"] == pytest.approx(v)
    word = "does not beat" if case == "improvement" else "grade B is below the minimum A"
    assert word in line["reasons"][0]


@pytest.mark.parametrize("metric", ["sharpe", "drawdown"])
def test_refused_by_the_holdout_backtest(root, metric):
    cand = add_candidate(root, base_value(root) * 1.5, "S")
    probe = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT, dry_run=True)
    assert probe.decision == "promoted" and probe.dry_run
    sharpe, dd = probe.gates["holdout"].details["sharpe"], probe.gates["holdout"].details["max_drawdown"]
    assert_matches_hand(probe.gates["holdout"].details, root / cand.user_attrs["bundle_path"])
    if metric == "sharpe":
        thresholds = DeployThresholds(min_sharpe=sharpe + 0.1, max_drawdown=1.0)
    else:
        assert dd > 0, "the real hold-out backtest has some drawdown"
        thresholds = DeployThresholds(min_sharpe=-1e9, max_drawdown=dd / 2)
    before = _snapshot(slot_dir(root, 0))
    decision = run_deploy(root, STUDY, candidates=1, thresholds=thresholds)
    assert decision.decision == "refused" and decision.trial_number == cand.number
    assert _failing(decision) == {"holdout"}
    (reason,) = decision.reasons
    assert ("Sharpe" if metric == "sharpe" else "max drawdown") in reason
    assert decision.gates["holdout"].details["sharpe"] == sharpe  # the same deterministic backtest
    assert _snapshot(slot_dir(root, 0)) == before and not previous_dir(root, 0).exists()
    assert read_log(root)[-1]["reasons"] == [reason]


def test_every_failing_gate_is_reported(root):
    add_candidate(root, base_value(root) * 1.001, "C")
    decision = run_deploy(
        root, STUDY, candidates=1, thresholds=DeployThresholds(min_sharpe=1e6, max_drawdown=0.0)
    )
    assert _failing(decision) == {"improvement", "grade", "holdout"}
    assert len(read_log(root)[-1]["reasons"]) >= 3


@pytest.mark.parametrize(("tamper", "words"), [("actor", "sha256"), ("identity", "trial id")])
def test_refused_for_an_invalid_bundle(root, tamper, words):
    cand = add_candidate(root, base_value(root) * 1.5, "A", tamper=tamper)
    before = _snapshot(slot_dir(root, 0))
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "refused" and decision.trial_number == cand.number
    assert _failing(decision) == {"bundle"} and decision.gates["holdout"].status == "skipped"
    (reason,) = decision.reasons
    assert words in reason and cand.user_attrs["bundle_path"] in reason
    assert _snapshot(slot_dir(root, 0)) == before and not previous_dir(root, 0).exists()
    assert read_log(root)[-1]["gates"]["bundle"]["status"] == "fail"


def test_bundle_comes_from_the_artifact_store(trained_study, tmp_path):
    """A trained fixture trial: its bundle is fetched from Optuna's artifact store; a
    tampered artifact falls back to ``bundle_path``, and with both broken it is refused."""
    root = _copy(trained_study.root, tmp_path / "root")
    best = _fixture_best(root)
    probe = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT, dry_run=True)
    assert probe.trial_number == best.number
    assert probe.gates["bundle"].details["source"] == f"artifact:{best.user_attrs['artifact_id']}"
    artifact = root / "artifacts" / best.user_attrs["artifact_id"]
    artifact.write_bytes(b"not a tar")
    probe = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT, dry_run=True)
    assert probe.gates["bundle"].status == "pass"
    assert probe.gates["bundle"].details["source"] == f"bundle_path:{best.user_attrs['bundle_path']}"
    (root / best.user_attrs["bundle_path"] / "model.json").unlink()
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "refused" and _failing(decision) >= {"bundle"}
    assert "artifact:" in decision.reasons[-1] and "bundle_path:" in decision.reasons[-1]
    assert not slot_dir(root, 0).exists()


def test_rollback_restores_the_previous_deployment_byte_for_byte(root, deployed):
    first = _snapshot(slot_dir(root, 0))
    cand = add_candidate(root, base_value(root) * 1.5, "A")
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "promoted", decision.summary()
    assert _snapshot(previous_dir(root, 0)) == first
    info = json.loads((slot_dir(root, 0) / "deployment_info.json").read_text())
    assert info["trial_number"] == cand.number and info["previous"]["trial_number"] == deployed[1].number
    second = _snapshot(slot_dir(root, 0))

    done = rollback(root, 0)
    assert done.decision == "rolled_back" and done.trial_number == deployed[1].number
    assert _snapshot(slot_dir(root, 0)) == first
    assert _snapshot(previous_dir(root, 0)) == second
    line = read_log(root)[-1]
    assert line["decision"] == "rolled_back" and line["trial"] == deployed[1].number
    assert line["deployed"]["trial_number"] == cand.number

    # the hourly job must not re-promote what was just rolled back
    again = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert again.decision == "refused" and again.trial_number == cand.number
    assert _failing(again) == {"rollback"} and "rolled back from slot 0" in again.reasons[0]
    assert _snapshot(slot_dir(root, 0)) == first

    result = CliRunner().invoke(app, ["deploy", "--rollback", "--root", str(root), "--slot", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("rolled back: slot 0 now holds")
    assert _snapshot(slot_dir(root, 0)) == second and _snapshot(previous_dir(root, 0)) == first
    assert run_deploy(root, STUDY, candidates=1, thresholds=LENIENT).decision == "unchanged"
    assert slot_dir(root, 0).exists() and not list((root / "deployments").glob(".model_0.*"))


def test_rollback_without_previous_is_refused(root):
    before = _snapshot(slot_dir(root, 0))
    result = CliRunner().invoke(app, ["deploy", "--rollback", "--root", str(root)])
    assert result.exit_code == 1 and result.output.startswith("rollback refused:")
    assert "no previous deployment" in result.output
    assert _snapshot(slot_dir(root, 0)) == before
    assert read_log(root)[-1]["decision"] == "rollback_refused"


def test_dry_run_changes_nothing(root, trained_study, tmp_path):
    add_candidate(root, base_value(root) * 1.5, "A")

    def state() -> dict[str, bytes]:  # everything but the SQLite files readers may touch
        return {k: v for k, v in _snapshot(root).items() if not k.startswith("optuna.db")}

    before = state()
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT, dry_run=True)
    assert decision.decision == "promoted" and decision.dry_run
    assert decision.summary().startswith("dry run: would have promoted")
    assert state() == before
    fresh = _copy(trained_study.root, tmp_path / "fresh")
    assert run_deploy(fresh, STUDY, thresholds=LENIENT, dry_run=True).decision in ("promoted", "refused")
    assert not (fresh / "deployments").exists()


def test_no_candidate_is_logged(root):
    empty = create_study(default_storage_url(root), "empty_study")
    empty.enqueue_trial({})
    decision = run_deploy(root, "empty_study")
    assert decision.decision == "no_candidate"
    assert decision.summary() == "no candidate: study 'empty_study' has no COMPLETE trial"
    assert read_log(root)[-1]["decision"] == "no_candidate"


def test_current_study_file_and_errors(root, tmp_path):
    with pytest.raises(DeployError, match=r"\.current_study: missing"):
        run_deploy(root)
    (root / ".current_study").write_text(STUDY + "\n")
    assert run_deploy(root, thresholds=LENIENT).decision == "unchanged"
    with pytest.raises(DeployError, match="unknown study 'nope'"):
        run_deploy(root, "nope")
    bare = tmp_path / "bare"
    with pytest.raises(DeployError, match="no storage"):
        run_deploy(bare, STUDY)
    assert not (bare / "optuna.db").exists()
    with pytest.raises(DeployError, match="has no timezone"):
        run_deploy(root, STUDY, holdout_cut="2019-08-01")  # checked before anything else
    assert read_log(root)[-1]["decision"] == "unchanged"


def test_holdout_cut_inside_the_training_bars_is_refused(root):
    add_candidate(root, base_value(root) * 1.5, "A")
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT, holdout_cut="2019-01-01T00:00:00Z")
    assert _failing(decision) == {"holdout"}
    assert "before the trial's own cut" in decision.reasons[0]


def test_crash_midway_is_repaired_before_the_next_run(root):
    """What the two-rename path leaves if killed between its renames: no ``model_0``, the
    deployment in ``model_0.previous``, a half-written staging dir."""
    good = _snapshot(slot_dir(root, 0))
    slot_dir(root, 0).rename(previous_dir(root, 0))
    stage = root / "deployments" / ".model_0.staging-crashed"
    stage.mkdir()
    (stage / "actor.pth").write_bytes(b"half")
    decision = run_deploy(root, STUDY, candidates=1, thresholds=LENIENT)
    assert decision.decision == "unchanged"
    assert _snapshot(slot_dir(root, 0)) == good
    assert not stage.exists() and not previous_dir(root, 0).exists()


def test_cli_promotes_and_reports_errors(root):
    cand = add_candidate(root, base_value(root) * 1.5, "A")
    runner = CliRunner()
    args = ["deploy", "--root", str(root), "--study", STUDY, "--min-sharpe", "-1e9", "--max-drawdown", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"promoted: study '{STUDY}' trial {cand.number} ")
    assert len(result.output.strip().splitlines()) == 1
    again = runner.invoke(app, [*args, "--min-grade", "S"])
    assert again.exit_code == 0 and again.output.startswith("unchanged:")
    unknown = runner.invoke(app, ["deploy", "--root", str(root), "--study", "nope"])
    assert unknown.exit_code == 1 and "unknown study 'nope'" in unknown.output
    bad = runner.invoke(app, ["deploy", "--root", str(root), "--min-grade", "Z"])
    assert bad.exit_code == 2 and "min_grade" in bad.output


def test_improvement_rule_for_negative_and_zero_values():
    assert check_improvement(0.30, None, 0.01).passed  # empty slot
    assert check_improvement(1.011, 1.0, 0.01).passed
    assert not check_improvement(1.009, 1.0, 0.01).passed
    assert check_improvement(-0.495, -0.5, 0.01).passed  # 1% less bad
    assert not check_improvement(-0.496, -0.5, 0.01).passed
    assert check_improvement(1e-9, 0.0, 0.01).passed  # any positive value beats 0
    assert not check_improvement(0.0, 0.0, 0.01).passed
    assert not check_improvement(0.5, 0.5, 0.0).passed  # a tie never replaces the deployment


def test_candidates_are_tried_in_value_order_until_one_passes(root):
    """The best trial lost its bundle: it is refused (logged), and the next one, which
    passes every gate, is promoted in the same run."""
    v = base_value(root)
    good = add_candidate(root, v * 1.5, "S")
    broken = add_candidate(root, v * 2.0, "S", tamper="actor")
    decision = run_deploy(root, STUDY, thresholds=LENIENT)
    assert decision.decision == "promoted" and decision.trial_number == good.number, decision.summary()
    assert [d.trial_number for d in decision.earlier] == [broken.number]
    assert decision.earlier[0].decision == "refused" and "bundle" in _failing(decision.earlier[0])
    lines = read_log(root)[-2:]
    assert [(r["decision"], r["trial"]) for r in lines] == [
        ("refused", broken.number),
        ("promoted", good.number),
    ]
    # with one candidate only the best is tried, and refused
    assert run_deploy(root, STUDY, candidates=1, thresholds=LENIENT).decision == "refused"

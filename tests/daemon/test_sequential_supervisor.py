"""Sequential training under a real supervisor (tiny budget: ``budget_steps = 256``,
``n_envs = 2``, one worker, the stage checked every second): a run whose gate passes moves
to stage 2 with the best quick parameters enqueued in the full study and the worker
retargeted, while ``.current_study`` still names the quick study; a run refused by a strict
gate stays in stage 1 with the evidence (baselines, best value, threshold) in status."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from daemon.training_control import TrainingRequest, start_training
from tests.daemon._supervisor_proc import cmdline, supervisors, trials, write_config
from trainers.runtime.current_study import read_current_study

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.upper().startswith("CAPPUCCINO_")]:
        monkeypatch.delenv(var)


def _run(tmp_path: Path, gate: dict[str, Any]) -> tuple[Path, Path]:
    root = tmp_path / "root"
    sequential = {"quick_trials": 1, "top_k": 1, "check_interval_s": 1, **gate}
    config = write_config(tmp_path / "cappuccino.toml", root, sequential=sequential)
    start_training(config, root, TrainingRequest("seq", n_trials=2, workers=1, sequential=True))
    return root, config


def _stage(status: dict[str, Any] | None, stage: str) -> dict[str, Any] | None:
    seq = (status or {}).get("sequential") or {}
    return seq if seq.get("stage") == stage else None


def test_a_passed_gate_starts_stage_2_with_the_best_quick_params_enqueued(tmp_path: Path) -> None:
    root, config = _run(tmp_path, {"gate": "min_value", "min_value": -1e9})
    with supervisors(tmp_path) as sups:
        sup = sups.start(config, root)
        seq = sup.wait_for("stage 2", lambda: _stage(sup.status(), "full_warmup"))
        gate = seq["gate"]
        assert gate["passed"] is True and gate["rule"] == "min_value" and gate["threshold"] == -1e9
        quick = [t for t in trials(root, "seq_quick") if t.value is not None]
        best = max(quick, key=lambda t: t.value)  # type: ignore[arg-type, return-value]
        assert gate["best"] == {"number": best.number, "value": best.value}
        assert [e["quick_trial"] for e in seq["enqueued"]] == [best.number]
        assert seq["enqueued"][0]["params"] == best.params
        full = trials(root, "seq_full")
        assert full and full[0].system_attrs["fixed_params"] == best.params

        def retargeted() -> list[str] | None:
            worker = sup.running_child("worker-0")
            argv = cmdline(worker["pid"]) if worker else []
            return argv if "seq_full" in argv else None

        argv = sup.wait_for("the worker on the full study", retargeted)
        assert argv[argv.index("--mode") + 1] == "full" and argv[argv.index("--n-trials") + 1] == "2"
        assert read_current_study(root) == "seq_quick"  # until top_k COMPLETE full trials
        assert sup.status()["supervisor"]["worker_study"] == "seq_full"  # type: ignore[index]
        assert sup.terminate() == 0


def test_a_refused_gate_stays_in_stage_1_with_its_evidence_in_status(tmp_path: Path) -> None:
    root, config = _run(tmp_path, {"gate": "beats_baselines", "margin": 1e6})
    with supervisors(tmp_path) as sups:
        sup = sups.start(config, root)

        def refused_with_baselines() -> dict[str, Any] | None:
            seq = _stage(sup.status(), "gate_refused")
            return seq if seq and seq["gate"]["baselines"] is not None else None

        seq = sup.wait_for("the refused gate", refused_with_baselines)
        gate = seq["gate"]
        baselines = gate["baselines"]
        assert gate["passed"] is False and gate["threshold"] == max(baselines.values()) + 1e6
        assert "does not beat both constant baselines" in gate["reason"]
        assert seq["training_study"] == "seq_quick" and seq["stage_number"] == 1
        assert trials(root, "seq_full") == []
        assert read_current_study(root) == "seq_quick"
        assert sup.terminate() == 0

"""``cappuccino status --json`` with the supervisor down (the study read from storage) and up
(the supervisor's own status document)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.daemon._supervisor_proc import Supervisors, run_cli, write_config
from trainers.runtime.current_study import write_current_study
from trainers.storage import default_storage_url, make_storage

STUDY = "status_study"


def _make_study(root: Path) -> None:
    """A real study with two COMPLETE trials, one FAIL and one PRUNED (no training)."""
    storage = make_storage(default_storage_url(root), heartbeat_interval=None)
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize")
    for value, vin in ((0.25, "PPO-C-TEST-1"), (0.75, "PPO-A-TEST-2")):
        trial = study.ask()
        trial.set_user_attr("vin", vin)
        trial.set_user_attr("grade", vin.split("-")[1])
        study.tell(trial, value)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.tell(study.ask(), state=TrialState.PRUNED)
    storage.engine.dispose()


def _status(cfg: Path, root: Path) -> dict:
    result = run_cli("status", "--json", "--config", str(cfg), "--root", str(root))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_status_json_with_the_supervisor_down_and_up(tmp_path: Path, sups: Supervisors) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _make_study(root)
    write_current_study(root, STUDY)
    cfg = write_config(tmp_path / "c.toml", root, workers={"count": 0})

    down = _status(cfg, root)
    assert down["supervisor_running"] is False and down["supervisor"] is None
    assert down["current_study"] == STUDY
    assert down["study"]["trials"] == {"COMPLETE": 2, "FAIL": 1, "PRUNED": 1}
    best = {"number": 1, "value": 0.75, "vin": "PPO-A-TEST-2", "grade": "A", "beats_baselines": None}
    assert down["study"]["best"] == best  # no fold baselines recorded in this study
    assert down["study"]["baselines"] is None
    assert down["ensemble"] is None and down["mismatches"] == []

    sup = sups.start(cfg, root, preflight=True)
    sup.wait_for("the supervisor's status", sup.status)
    up = _status(cfg, root)
    assert up["supervisor_running"] is True
    assert up["supervisor"]["pid"] == sup.pid
    assert up["supervisor"]["study"] == STUDY
    assert up["study"]["trials"] == down["study"]["trials"]
    assert up["study"]["best"] == down["study"]["best"]
    assert set(up["supervisor"]["jobs"]) >= {"watchdog", "monitor", "ensemble_sync", "deploy"}
    assert sup.terminate() == 0, sup.describe()

    after = _status(cfg, root)
    assert after["supervisor_running"] is False
    assert after["study"]["trials"] == down["study"]["trials"]

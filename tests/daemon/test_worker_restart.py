"""The watchdog on real workers: a SIGKILLed worker is restarted with backoff and its trial
is failed and retried; a worker that always crashes is restarted within the restart budget
and then marked failed, with an alert, never exceeding the configured number of workers."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.daemon._supervisor_proc import (
    SupervisorProc,
    Supervisors,
    log_events,
    proc_gone,
    trials,
    write_config,
)
from trainers.search_space import PPOParams

STUDY = "restarts"


def _running_with_heartbeat(root: Path) -> FrozenTrial | None:
    """The RUNNING trial once it has its parameters and Optuna recorded its first heartbeat
    (only then can a dead worker's trial be detected as stale)."""
    # every parameter sampled (the objective samples them one by one as the trial starts)
    whole = len(PPOParams.__dataclass_fields__)
    running = [t for t in trials(root, STUDY) if t.state == TrialState.RUNNING and len(t.params) == whole]
    if not running:
        return None
    con = sqlite3.connect(root / "optuna.db", timeout=60)
    try:
        n = con.execute(
            "SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = ?", (running[0]._trial_id,)
        ).fetchone()[0]
    finally:
        con.close()
    return running[0] if n else None


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sigkilled_worker_is_restarted_and_its_trial_failed_and_retried(
    tmp_path: Path, sups: Supervisors
) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root, study={"name": STUDY})
    sup = sups.start(cfg, root)

    first = sup.wait_for("worker-0 running", lambda: sup.running_child("worker-0"))
    killed = sup.wait_for("a trial with a heartbeat", lambda: _running_with_heartbeat(root))
    assert sup.running_child("worker-0", not_pid=None)["pid"] == first["pid"]
    os.kill(first["pid"], signal.SIGKILL)

    second = sup.wait_for("worker-0 restarted", lambda: sup.running_child("worker-0", not_pid=first["pid"]))
    assert second["restarts"] == 1
    assert proc_gone(first["pid"], first["create_time"])
    assert "trainers.worker" in " ".join(psutil.Process(second["pid"]).cmdline())
    unhealthy = log_events(root, event="child_unhealthy")
    assert [(e["child"], e["reason"], e["restart_in_s"]) for e in unhealthy] == [
        ("worker-0", f"exited with code {-signal.SIGKILL}", 0.5)
    ]

    def retried() -> FrozenTrial | None:
        ts = trials(root, STUDY)
        if ts[killed.number].state != TrialState.FAIL:
            return None
        done = [
            t
            for t in ts
            if t.system_attrs.get("failed_trial") == killed.number
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        ]
        return done[0] if done else None

    retry = sup.wait_for("the killed trial failed and its retry finished", retried)
    assert retry.params == killed.params == trials(root, STUDY)[killed.number].params
    assert retry.number != killed.number
    assert sup.terminate() == 0, sup.describe()


def _invalid_dataset(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ETHUSD.csv").write_text("this is not, a price file\n1,2\n")
    return folder


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_always_crashing_workers_exhaust_their_restart_budget(tmp_path: Path, sups: Supervisors) -> None:
    root = tmp_path / "root"
    data = _invalid_dataset(tmp_path / "bad_data")
    budget, count = 2, 2
    cfg = write_config(
        tmp_path / "c.toml",
        root,
        study={"name": STUDY, "data": str(data)},
        workers={"count": count},
        restart={"budget_per_hour": budget, "backoff_initial_s": 0.5},
    )
    sup = sups.start(cfg, root)  # preflight would refuse the dataset: skipped (the default here)
    most_alive = 0

    def all_failed() -> bool:
        nonlocal most_alive
        alive = [p for p in sup.descendants() if _is_worker(p) and not proc_gone(p.pid)]
        most_alive = max(most_alive, len(alive))
        assert len(alive) <= count, [p.cmdline() for p in alive]
        states = [sup.child(f"worker-{i}") for i in range(count)]
        return all(s is not None and s["state"] == "failed" for s in states)

    sup.wait_for("both workers marked failed", all_failed)
    assert most_alive >= 1  # the crashing workers were seen alive, and never more than configured
    for i in range(count):
        name = f"worker-{i}"
        entry = sup.child(name)
        assert entry["restarts"] == budget
        assert entry["last_exit"] == 2
        delays = [e["restart_in_s"] for e in log_events(root, event="child_unhealthy") if e["child"] == name]
        assert delays == [0.5, 1.0]  # exponential backoff: initial * 2**k
        alerts = [e for e in log_events(root, event="alert_child_failed") if e["child"] == name]
        assert len(alerts) == 1 and alerts[0]["level"] == "error"
        starts = [e for e in log_events(root, event="child_started") if e["child"] == name]
        assert len(starts) == budget + 1
        assert "exited with code 2" in alerts[0]["reason"]
    # a failed child stays stopped: a few more watchdog runs start nothing
    runs = _watchdog_runs(sup)
    sup.wait_for("three more watchdog runs", lambda: _watchdog_runs(sup) >= runs + 3)
    assert len(log_events(root, event="child_started")) == count * (budget + 1)
    assert not [p for p in sup.descendants() if _is_worker(p) and not proc_gone(p.pid)]
    assert sup.terminate() == 0, sup.describe()


def _watchdog_runs(sup: SupervisorProc) -> int:
    jobs = ((sup.status() or {}).get("supervisor") or {}).get("jobs") or {}
    return int(jobs.get("watchdog", {}).get("runs", 0))


def _is_worker(proc: psutil.Process) -> bool:
    try:
        return "trainers.worker" in proc.cmdline()
    except psutil.NoSuchProcess:
        return False

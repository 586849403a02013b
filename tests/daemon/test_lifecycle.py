"""The supervisor's own life: SIGTERM leaves nothing behind and exits 0; after a SIGKILL the
next supervisor stops the stale children through their pid + create-time records and never
touches an unrelated process; a second supervisor on the same root is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from optuna.trial import TrialState

from tests.daemon._supervisor_proc import (
    REPO,
    Supervisors,
    log_events,
    proc_gone,
    trials,
    write_config,
)

STUDY = "lifecycle"


def _job_command(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[1:4] == ["-m", "daemon.cli", "sync"]
    except (psutil.NoSuchProcess, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sigterm_stops_every_child_and_job_and_exits_0(tmp_path: Path, sups: Supervisors) -> None:
    root = tmp_path / "root"
    # the ensemble sync job runs back to back (every second): a job command is running most
    # of the time, so SIGTERM finds one
    cfg = write_config(
        tmp_path / "c.toml", root, study={"name": STUDY}, workers={"count": 2}, jobs={"sync_interval_s": 1}
    )
    sup = sups.start(cfg, root)
    sup.wait_for(
        "both workers running", lambda: sup.running_child("worker-0") and sup.running_child("worker-1")
    )

    def with_a_job() -> list[psutil.Process] | None:
        procs = sup.descendants()
        return procs if any(_job_command(p) for p in procs) else None

    before = {p.pid: sup.seen[p.pid] for p in sup.wait_for("a sync job command running", with_a_job)}
    recorded = json.loads((root / "run" / "children.json").read_text())
    assert sorted(r["name"] for r in recorded) == ["worker-0", "worker-1"]
    assert {r["pid"] for r in recorded} <= set(before)

    assert sup.terminate() == 0, sup.describe()

    left = [pid for pid, ctime in before.items() if not proc_gone(pid, ctime)]
    assert not left, [psutil.Process(p).cmdline() for p in left]
    assert not (root / "run" / "children.json").exists()
    assert (root / "run" / "supervisor.pid").read_text() == ""  # lock released
    # the workers ended their trials (FAIL + re-queued) instead of leaving them RUNNING
    assert not [t.number for t in trials(root, STUDY) if t.state == TrialState.RUNNING]
    final = json.loads((root / "run" / "status.json").read_text())["supervisor"]
    assert {c["name"]: c["state"] for c in final["children"]} == {
        "worker-0": "stopped",
        "worker-1": "stopped",
    }
    assert [e["event"] for e in log_events(root)][-1] == "supervisor_stopped"


def _decoy(root: Path) -> subprocess.Popen[bytes]:
    """An unrelated sleeper whose command line looks like a worker of this root."""
    code = "import time; time.sleep(600)"
    argv = [sys.executable, "-c", code, "-m", "trainers.worker", "--study", STUDY, "--root", str(root)]
    argv += ["--component", "worker-0"]
    return subprocess.Popen(argv, cwd=REPO, start_new_session=True, stdin=subprocess.DEVNULL)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_stale_children_of_a_killed_supervisor_are_stopped_and_only_they(
    tmp_path: Path, sups: Supervisors
) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root, study={"name": STUDY}, workers={"count": 2})
    first = sups.start(cfg, root)
    old = [
        first.wait_for(f"{name} running", lambda name=name: first.running_child(name))
        for name in ("worker-0", "worker-1")
    ]
    first.remember_children_file()
    os.kill(first.pid, signal.SIGKILL)
    assert first.proc.wait(60) == -signal.SIGKILL
    for c in old:  # orphaned but alive: they are in their own process groups
        assert not proc_gone(c["pid"], c["create_time"])

    decoy = _decoy(root)
    sups.track(decoy.pid)
    decoy_ctime = psutil.Process(decoy.pid).create_time()
    # and a record whose pid is the decoy's but whose create time is not (a reused pid)
    records = json.loads((root / "run" / "children.json").read_text())
    assert sorted(r["pid"] for r in records) == sorted(c["pid"] for c in old)
    records.append({"name": "worker-9", "pid": decoy.pid, "create_time": decoy_ctime - 1000.0, "argv": []})
    (root / "run" / "children.json").write_text(json.dumps(records))

    second = sups.start(cfg, root)
    new = [
        second.wait_for(f"new {name} running", lambda name=name: second.running_child(name))
        for name in ("worker-0", "worker-1")
    ]
    for c in old:
        assert proc_gone(c["pid"], c["create_time"]), f"stale child {c['name']} pid {c['pid']} still runs"
    assert {c["pid"] for c in new}.isdisjoint(c["pid"] for c in old)
    stopped = log_events(root, event="stale_child_stopped")
    assert sorted(e["child_pid"] for e in stopped) == sorted(c["pid"] for c in old)
    assert decoy.poll() is None and not proc_gone(decoy.pid, decoy_ctime)
    assert second.terminate() == 0, second.describe()
    assert decoy.poll() is None  # still untouched after the second supervisor's shutdown
    decoy.kill()
    decoy.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_supervisor_on_the_same_root_is_refused(tmp_path: Path, sups: Supervisors) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root, study={"name": STUDY}, workers={"count": 0})
    first = sups.start(cfg, root)
    first.wait_for("the first supervisor's status", first.status)

    second = sups.start(cfg, root, preflight=True)
    code = second.proc.wait(180)
    assert code != 0
    lines = second.output().strip().splitlines()
    assert any(f"pid {first.pid}" in line and "another supervisor" in line for line in lines), lines
    assert first.proc.poll() is None
    assert (root / "run" / "supervisor.pid").read_text().strip() == str(first.pid)
    assert first.terminate() == 0, first.describe()

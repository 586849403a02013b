"""Scheduled jobs with a bounded run time: a hung job never stops the others (nor its own
next runs) and is recorded as ``timeout``; a hung job command is killed with its whole
process group once its bound has passed."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.scheduler import JobRunner
from tests.daemon._supervisor_proc import proc_gone

WAIT_SECONDS = 120.0


def _wait(what: str, check, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hung_job_does_not_stop_the_others(tmp_path: Path) -> None:
    runner = JobRunner(misfire_grace_s=5.0, timeout_s=0.5)
    release = threading.Event()
    count = {"n": 0}

    def counter() -> str:
        count["n"] += 1
        return f"run {count['n']}"

    runner.add("hung", 0.2, lambda: "never" if release.wait() else "", first_in_s=0.01)
    runner.add("counter", 0.2, counter, first_in_s=0.01)
    runner.scheduler.start()
    try:
        _wait("the hung job timed out twice", lambda: runner.records["hung"].runs >= 2)
        seen = count["n"]
        _wait("the counter kept running", lambda: count["n"] >= seen + 5)
        hung = runner.snapshot()["hung"]
        assert hung["last_outcome"] == "timeout"
        assert hung["failures"] == hung["runs"] >= 2
        assert "abandoned" in hung["last_detail"]
        ok = runner.snapshot()["counter"]
        assert ok["last_outcome"] == "ok" and ok["failures"] == 0 and ok["runs"] >= 5
        assert ok["last_detail"].startswith("run ")
        assert ok["next_run"] is not None and ok["last_duration_s"] is not None
    finally:
        release.set()
        runner.shutdown(5.0)


# a job command that starts a grandchild in its own process group, writes both pids, hangs
HANGING_COMMAND = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(f"{os.getpid()} {child.pid}")
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_hung_job_command_is_killed_with_its_process_group(tmp_path: Path) -> None:
    runner = JobRunner(misfire_grace_s=5.0, timeout_s=60.0)
    pids_file = tmp_path / "pids"
    count = {"n": 0}

    def hung_command() -> str:
        outcome, detail = runner.run_command(
            [sys.executable, "-c", HANGING_COMMAND, str(pids_file)], 3.0, tmp_path / "hung.out"
        )
        return f"{outcome}: {detail}"

    def counter() -> str:
        count["n"] += 1
        return ""

    runner.add("hung_command", 3600.0, hung_command, first_in_s=0.01)
    runner.add("counter", 0.2, counter, first_in_s=0.01)
    runner.scheduler.start()
    try:
        _wait("the job command started", pids_file.is_file)
        pids = [int(p) for p in pids_file.read_text().split()]
        assert len(pids) == 2 and not any(proc_gone(p) for p in pids)
        seen = count["n"]
        _wait("the job command's run ended", lambda: runner.records["hung_command"].runs == 1)
        record = runner.snapshot()["hung_command"]
        assert record["last_outcome"] == "timeout"
        assert "killed after 3 s" in record["last_detail"]
        _wait("the job command and its grandchild gone", lambda: all(proc_gone(p) for p in pids), 30.0)
        assert count["n"] > seen  # the other job ran meanwhile
        assert not runner._active
    finally:
        runner.shutdown(5.0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_shutdown_kills_a_running_job_command(tmp_path: Path) -> None:
    runner = JobRunner(misfire_grace_s=5.0, timeout_s=600.0)
    pids_file = tmp_path / "pids"
    runner.add(
        "long",
        3600.0,
        lambda: "|".join(
            runner.run_command([sys.executable, "-c", HANGING_COMMAND, str(pids_file)], 500.0, tmp_path / "o")
        ),
        first_in_s=0.01,
    )
    runner.scheduler.start()
    try:
        _wait("the job command started", pids_file.is_file)
        pids = [int(p) for p in pids_file.read_text().split()]
    finally:
        runner.shutdown(5.0)
    _wait("the job command and its grandchild gone", lambda: all(proc_gone(p) for p in pids), 30.0)
    # a command asked for after shutdown is refused instead of started
    assert runner.run_command([sys.executable, "-c", "pass"], 5.0, tmp_path / "late") == (
        "failed",
        "supervisor is stopping",
    )

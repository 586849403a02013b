"""Real signals to real worker processes in the middle of a trial.

* SIGKILL: the trial's heartbeats stop; the next worker (short heartbeat interval and grace
  period) fails it and re-queues it once, and the retry runs with the same parameters.
* SIGTERM: the worker ends the current trial as FAIL with a reason, re-queues it and exits 0.

In both cases no trial is ever left RUNNING once a worker is done.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.trainers._worker_proc import TINY_ARGS, reader, trials, wait_until, workers
from trainers.search_space import PPOParams
from trainers.storage import default_storage_url

STUDY = "signals"
HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")
GRACE_SECONDS = 3
# a longer trial for the process that gets the signal: 5 folds of 8,192 env steps each
LONG_ARGS = ("--budget-steps", "8192", "--n-envs", "2", "--seed", "0")


def _running_with_heartbeat(url: str, db: Path) -> FrozenTrial | None:
    """The RUNNING trial once its first heartbeat is in storage (Optuna can only detect a
    dead worker's trial after that)."""
    running = [t for t in trials(reader(url), STUDY) if t.state == TrialState.RUNNING]
    if not running:
        return None
    con = sqlite3.connect(db, timeout=60)
    try:
        beats = con.execute(
            "SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = ?", (running[0]._trial_id,)
        ).fetchone()[0]
    finally:
        con.close()
    # wait for the whole point of the search space too, so "same parameters" is well defined
    complete = len(running[0].params) == len(PPOParams.__dataclass_fields__)
    return running[0] if beats and complete else None


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_mid_trial_fails_and_retries_the_trial(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = default_storage_url(root)
    common = ("--study", STUDY, "--root", str(root), "--n-trials", "1", *HEARTBEAT)
    with workers(tmp_path / "logs") as ws:
        victim = ws.start(*common, *LONG_ARGS, tag="victim")
        killed = wait_until(
            "a trial is running", lambda: _running_with_heartbeat(url, root / "optuna.db"), [victim]
        )
        os.killpg(victim.pid, signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        assert [t.state for t in trials(reader(url), STUDY)] == [TrialState.RUNNING]
        # let its last heartbeat become older than the grace period, so the next worker's
        # first stale-trial check sees it (a wait, not a measurement)
        time.sleep(GRACE_SECONDS + 1)
        successor = ws.start(*common, *TINY_ARGS, tag="successor")
        assert successor.wait() == 0, successor.describe()

    after = trials(reader(url), STUDY)
    assert [t.state for t in after] == [TrialState.FAIL, TrialState.COMPLETE], successor.describe()
    failed, retry = after
    assert failed.number == killed.number
    assert retry.system_attrs["failed_trial"] == killed.number
    assert retry.params == killed.params == failed.params
    assert retry.user_attrs["vin"] and retry.user_attrs.get("fail_reason") is None
    assert not any(t.state == TrialState.RUNNING for t in after)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigterm_mid_trial_fails_requeues_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = default_storage_url(root)
    with workers(tmp_path / "logs") as ws:
        w = ws.start("--study", STUDY, "--root", str(root), "--n-trials", "3", *HEARTBEAT, *LONG_ARGS)
        running = wait_until(
            "a trial is running", lambda: _running_with_heartbeat(url, root / "optuna.db"), [w]
        )
        os.kill(w.pid, signal.SIGTERM)
        assert w.wait() == 0, w.describe()

    after = trials(reader(url), STUDY)
    assert [t.state for t in after] == [TrialState.FAIL, TrialState.WAITING], w.describe()
    failed, queued = after
    assert failed.number == running.number
    assert failed.user_attrs["fail_reason"]
    assert "stop" in failed.user_attrs["fail_reason"]
    assert queued.params == failed.params
    assert queued.system_attrs["failed_trial"] == failed.number
    assert "stop_requested" in w.output() and "SIGTERM" in w.output()

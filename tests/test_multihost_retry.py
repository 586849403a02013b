"""Several hosts: a worker SIGKILLed on host B has its trial retried by a worker on host C
(another root, the same PostgreSQL study), resuming at B's first unfinished fold: the
retry needs nothing from B's root."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.trainers._worker_proc import reader, trials, wait_until, workers

STUDY = "multihost_retry"
ARGS = ("--budget-steps", "256", "--n-envs", "2", "--seed", "0", "--n-trials", "1")
HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _running_with_a_fold(url: str) -> FrozenTrial | None:
    running = [t for t in trials(reader(url), STUDY) if t.state == TrialState.RUNNING]
    return running[0] if running and running[0].user_attrs.get("fold_metrics") else None


@pytest.mark.timeout(400)
def test_a_trial_killed_on_one_host_is_retried_on_another(tmp_path: Path, pg_url: str) -> None:
    host_b, host_c = tmp_path / "host_b", tmp_path / "host_c"
    with workers(tmp_path / "logs") as ws:
        victim = ws.start("--study", STUDY, "--root", str(host_b), "--storage", pg_url, *ARGS, *HEARTBEAT)
        wait_until("a fold is done on host B", lambda: _running_with_a_fold(pg_url), [victim])
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        shutil.rmtree(host_b)  # host B is gone with its disk
        time.sleep(4)  # older than the grace period: host C's worker fails and retries it
        successor = ws.start("--study", STUDY, "--root", str(host_c), "--storage", pg_url, *ARGS, *HEARTBEAT)
        assert successor.wait() == 0, successor.describe()
    failed, retry = trials(reader(pg_url), STUDY)
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    k = retry.user_attrs["resumed_from_fold"]
    assert k == len(failed.user_attrs["fold_metrics"]) >= 1  # B's finished folds, from the storage
    assert retry.user_attrs["fold_metrics"][:k] == failed.user_attrs["fold_metrics"]
    assert (host_c / retry.user_attrs["bundle_path"]).is_dir() and not host_b.exists()

"""Resumable long trials: a trial stores each finished fold's metrics as it goes; a retry of
a trial killed (SIGKILL) or stopped (SIGTERM) at fold k reuses folds 0..k-1, trains from fold
k with the original trial's seed, and ends with the value of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.trainers._worker_proc import reader, trials, wait_until, workers
from trainers.storage import default_storage_url

STUDY = "resume"
ARGS = ("--budget-steps", "1024", "--n-envs", "2", "--seed", "0", "--n-trials", "1")
HEARTBEAT = ("--heartbeat-interval", "1", "--grace-period", "3")
KILL_AT = 2  # folds finished when the signal arrives


def _folds_done(url: str, k: int) -> FrozenTrial | None:
    running = [t for t in trials(reader(url), STUDY) if t.state == TrialState.RUNNING]
    if running and len(running[0].user_attrs.get("fold_metrics") or []) >= k:
        return running[0]
    return None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> FrozenTrial:
    base = tmp_path_factory.mktemp("uninterrupted")
    root = base / "root"
    with workers(base / "logs") as ws:
        w = ws.start("--study", STUDY, "--root", str(root), *ARGS, *HEARTBEAT)
        assert w.wait() == 0, w.describe()
    (done,) = trials(reader(default_storage_url(root)), STUDY)
    assert done.state == TrialState.COMPLETE and done.user_attrs["resumed_from_fold"] is None
    return done


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_retry_resumes_at_the_first_unfinished_fold(
    tmp_path: Path, uninterrupted: FrozenTrial, sig: signal.Signals
) -> None:
    root = tmp_path / "root"
    url = default_storage_url(root)
    common = ("--study", STUDY, "--root", str(root), *ARGS, *HEARTBEAT)
    with workers(tmp_path / "logs") as ws:
        victim = ws.start(*common, tag="victim")
        wait_until(f"{KILL_AT} folds are done", lambda: _folds_done(url, KILL_AT), [victim])
        os.killpg(victim.pid, sig)
        victim.wait()
        if sig == signal.SIGKILL:
            time.sleep(4)  # older than the grace period: the next worker fails and retries it
        successor = ws.start(*common, tag="successor")
        assert successor.wait() == 0, successor.describe()

    failed, retry = trials(reader(url), STUDY)
    assert (failed.state, retry.state) == (TrialState.FAIL, TrialState.COMPLETE)
    k = retry.user_attrs["resumed_from_fold"]
    finished = failed.user_attrs["fold_metrics"]
    assert k == len(finished) >= KILL_AT  # every fold the failed trial finished is reused
    assert retry.user_attrs["fold_metrics"][:k] == finished
    for m in retry.user_attrs["fold_metrics"][k:]:
        assert m["seconds"] > 0 and m["train_steps"] >= 1024  # trained, not copied
    # the original trial's seed: the same folds and the same value as an uninterrupted run
    assert retry.user_attrs["fold_metrics"] == [
        {**m, "seconds": r["seconds"], "train_seconds": r["train_seconds"]}
        for m, r in zip(
            uninterrupted.user_attrs["fold_metrics"], retry.user_attrs["fold_metrics"], strict=True
        )
    ]
    assert retry.value == uninterrupted.value
    assert retry.user_attrs["actor_sha256"] == uninterrupted.user_attrs["actor_sha256"]

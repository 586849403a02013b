"""Inputs of the dashboard and report tests: a small real runtime root (a copy of the
``trained_study`` fixture's root, synced by a real ``cappuccino sync`` process and traded
for a few bars by a real ``python -m paper_trader`` replay), and a real study in a
PostgreSQL database of its own."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.trial import TrialState

from tests.conftest import postgres_database
from tests.daemon._supervisor_proc import REPO, clean_env
from trainers.storage import make_storage

REPLAY_BARS = 50


def run(argv: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGV`` in the repository with the test environment (output captured)."""
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_traded_root(trained_root: Path, dest: Path, study: str, bars: int = REPLAY_BARS) -> Path:
    """Copy ``trained_root`` to ``dest``, name ``study`` in ``.current_study``, sync the
    ensemble and replay ``bars`` bars with the paper trader (``bars=0``: no trader run)."""
    shutil.copytree(trained_root, dest)
    (dest / ".current_study").write_text(study + "\n")
    synced = run(["-m", "daemon.cli", "sync", "--root", str(dest)])
    assert synced.returncode == 0, synced.stderr
    if bars:
        traded = run(["-m", "paper_trader", "--root", str(dest), "--speed", "0", "--max-bars", str(bars)])
        assert traded.returncode == 0, traded.stdout + traded.stderr
    return dest


@contextlib.contextmanager
def pg_study(study: str, values: list[float | None]) -> Iterator[str]:
    """A database of its own on the PostgreSQL server (127.0.0.1:5432, user postgres) holding
    a real Optuna study: one COMPLETE trial per value (VIN ``PPO-T-PG-<number>``), a FAIL
    trial per None. Yields its ``postgresql://`` URL; the database is dropped afterwards."""
    with postgres_database() as url:
        storage = make_storage(url, heartbeat_interval=None)
        s = optuna.create_study(storage=storage, study_name=study, direction="maximize")
        for value in values:
            trial = s.ask()
            if value is None:
                s.tell(trial, state=TrialState.FAIL)
                continue
            trial.set_user_attr("vin", f"PPO-T-PG-{trial.number}")
            trial.set_user_attr("grade", "T")
            s.tell(trial, value)
        storage.engine.dispose()
        yield url

"""Four worker processes on one SQLite file (the default storage of a root) at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.trainers._worker_proc import TINY_ARGS, open_fresh_storage_at_once, reader, trials, workers
from trainers.storage import default_storage_url

STUDY = "concurrent"
N_WORKERS = 4
PER_WORKER = 2


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_four_sqlite_workers_share_one_study(tmp_path: Path) -> None:
    root = tmp_path / "root"
    total = N_WORKERS * PER_WORKER
    args = (
        "--study",
        STUDY,
        "--root",
        str(root),
        "--n-trials",
        str(total),
        "--max-trials-per-process",
        str(PER_WORKER),
        "--heartbeat-interval",
        "1",
        "--grace-period",
        "30",
        *TINY_ARGS,
    )
    with workers(tmp_path / "logs") as ws:
        started = [ws.start(*args) for _ in range(N_WORKERS)]
        codes = [w.wait() for w in started]
    report = "\n".join(w.describe() for w in started)
    assert codes == [0] * N_WORKERS, report
    for w in started:
        assert "database is locked" not in w.stderr(), w.describe()
        assert "OperationalError" not in w.stderr(), w.describe()
    after = trials(reader(default_storage_url(root)), STUDY)
    assert len(after) == total, report
    assert sorted(t.number for t in after) == list(range(total))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after), [t.state for t in after]
    assert not any(t.state == TrialState.RUNNING for t in after)
    completed = [t for t in after if t.state == TrialState.COMPLETE]
    assert completed and all(t.user_attrs["artifact_id"] for t in completed)
    # every trial's bundle is its own: no two workers wrote into the same folder
    paths = [t.user_attrs["bundle_path"] for t in completed]
    assert len(set(paths)) == len(paths)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fresh_sqlite_storage_opened_by_many_processes_at_once(tmp_path: Path) -> None:
    """The first open creates Optuna's tables; processes doing it together must not collide
    ("table already exists", duplicate schema-version row)."""
    url = default_storage_url(tmp_path / "root")
    results = open_fresh_storage_at_once(url, 6, tmp_path)
    assert [rc for rc, _ in results] == [0] * 6, "\n".join(err for _, err in results)
    assert len(trials(reader(url), "opened")) == 0

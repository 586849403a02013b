"""Two worker processes on one study in PostgreSQL (127.0.0.1:5432, user postgres, trust
auth), in a database of its own that is dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import postgres_database
from tests.trainers._worker_proc import TINY_ARGS, open_fresh_storage_at_once, reader, trials, workers

STUDY = "pg_study"
N_WORKERS = 2
PER_WORKER = 2


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url.replace("postgresql://", "postgresql+psycopg://")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(400)
def test_two_workers_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    root = tmp_path / "root"
    total = N_WORKERS * PER_WORKER
    args = (
        "--study",
        STUDY,
        "--storage",
        pg_url,
        "--root",
        str(root),
        "--n-trials",
        str(total),
        "--max-trials-per-process",
        str(PER_WORKER),
        *TINY_ARGS,
    )
    with workers(tmp_path / "logs") as ws:
        started = [ws.start(*args) for _ in range(N_WORKERS)]
        codes = [w.wait() for w in started]
    report = "\n".join(w.describe() for w in started)
    assert codes == [0] * N_WORKERS, report
    storage = reader(pg_url)
    after = trials(storage, STUDY)
    storage.engine.dispose()  # let the database be dropped
    assert sorted(t.number for t in after) == list(range(total)), report
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after), [t.state for t in after]
    completed = [t for t in after if t.state == TrialState.COMPLETE]
    assert completed and all(t.user_attrs["vin"] and t.user_attrs["artifact_id"] for t in completed)
    assert not (root / "optuna.db").exists()  # the PostgreSQL URL replaced the SQLite default


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_fresh_postgresql_storage_opened_by_many_processes_at_once(tmp_path: Path, pg_url: str) -> None:
    """The first open creates Optuna's tables and enum types; processes doing it together
    must not collide (duplicate ``studydirection`` type, duplicate schema-version row)."""
    results = open_fresh_storage_at_once(pg_url, 6, tmp_path)
    assert [rc for rc, _ in results] == [0] * 6, "\n".join(err for _, err in results)
    storage = reader(pg_url)
    assert len(trials(storage, "opened")) == 0
    storage.engine.dispose()

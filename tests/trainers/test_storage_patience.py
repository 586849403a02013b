"""How a worker's storage waits out an outage (:class:`trainers.storage.Patience`), on real
databases: a PostgreSQL URL where nothing listens is waited for (with backoff, until the
stop event), an error while the database answers is raised at once."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from trainers.storage import Patience, StorageUnavailable, make_storage, wait_for_storage


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when this returns: nothing listens there


def test_an_unreachable_database_is_waited_for_until_the_stop_event(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/postgres"
    stop = threading.Event()
    waits: list[tuple[float, str]] = []

    def on_wait(waited_s: float, error: str) -> None:
        waits.append((waited_s, error))
        if len(waits) == 3:
            stop.set()

    patience = Patience(stop=stop, on_wait=on_wait, initial_s=0.05, max_s=0.1)
    with pytest.raises(StorageUnavailable, match="stopped while the storage was unavailable"):
        wait_for_storage(lambda: make_storage(url, heartbeat_interval=None), url, patience)
    assert len(waits) == 3
    assert waits[0][0] == 0.0 < waits[1][0] < waits[2][0]  # seconds waited so far, growing
    assert all(e.startswith("OperationalError") for _, e in waits)


def test_an_error_while_the_database_answers_is_raised_not_waited_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    waits: list[float] = []
    patience = Patience(on_wait=lambda w, e: waits.append(w), initial_s=0.05)
    storage = make_storage(url, heartbeat_interval=None, patience=patience)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with storage.engine.begin() as con:  # a broken schema: SELECT 1 works, the query does not
        con.execute(sqlalchemy.text("ALTER TABLE trials RENAME TO trials_gone"))
    with pytest.raises(optuna.exceptions.StorageInternalError) as info:
        storage.get_all_trials(study._study_id)
    assert isinstance(info.value.__cause__, sqlalchemy.exc.OperationalError)
    assert waits == []
    storage.engine.dispose()

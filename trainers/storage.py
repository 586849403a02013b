"""Optuna storage for workers: SQLite made safe for concurrent workers, or PostgreSQL.

SQLite: the database is switched to WAL journal mode (readers never block the writer),
and every connection waits up to ``busy_timeout`` seconds for a lock. Python's sqlite3
driver opens a write transaction only at its first write statement, so a writer never
holds a stale read snapshot and always waits in the busy handler instead of failing with
"database is locked". PostgreSQL URLs get ``pool_pre_ping`` so a worker survives a server
restart or an idle connection dropped by a firewall.

Optuna creates its tables (and stamps the schema version) the first time a storage is
opened; two workers doing so at once on a fresh database collide ("table already exists",
duplicate ``alembic_version`` row or PostgreSQL enum type). :func:`schema_lock` serialises
that step among processes: an exclusive ``flock`` on ``<database>-init.lock`` next to a
SQLite file, a session advisory lock on PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from trainers.runtime.pidlock import holding

DEFAULT_HEARTBEAT_INTERVAL = 30  # seconds between a running trial's heartbeats
DEFAULT_GRACE_PERIOD = 120  # seconds without a heartbeat before a trial is stale
DEFAULT_BUSY_TIMEOUT = 120.0  # seconds a SQLite connection waits for a lock
MAX_RETRY = 1
SCHEMA_LOCK_KEY = 0x63617070  # PostgreSQL advisory-lock key ("capp") of schema creation
# the storage URL of a process started without --storage; the configuration's study.storage
# variable, so the supervisor, every command and every child agree on one name
STORAGE_ENV = "CAPPUCCINO_STUDY__STORAGE"


def normalize_url(url: str) -> str:
    """A plain ``postgresql://`` URL names psycopg2, which is not a dependency; use the
    installed psycopg 3 driver (``postgresql+psycopg://``). Other URLs are unchanged."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def redact_url(url: str) -> str:
    """A storage URL with its password hidden, safe for messages, screens and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparsable storage URL>"


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the password of every URL argument hidden (``--storage URL`` and
    ``--storage=URL`` alike, by :func:`redact_url`); other arguments are unchanged."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        if "://" in value:
            try:
                has_password = make_url(value).password is not None
            except sqlalchemy.exc.ArgumentError:
                has_password = False
            if has_password:
                arg = f"{flag}{eq}{redact_url(value)}"
        out.append(arg)
    return out


def default_storage_url(root: str | Path) -> str:
    """The storage URL when none is given: the :data:`STORAGE_ENV` environment variable
    (``CAPPUCCINO_STUDY__STORAGE``, also the configuration's ``study.storage``; this is how the
    supervisor hands the URL and its password to workers and jobs, never on a command line),
    else ``sqlite:///<root>/optuna.db`` (relative roots stay relative)."""
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{Path(root) / 'optuna.db'}"


def storage_env(url: str) -> dict[str, str]:
    """The environment that gives a child process ``url`` as its storage (read back by
    :func:`default_storage_url` in a child started without ``--storage``)."""
    return {STORAGE_ENV: url}


def prepare_sqlite(url: str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
    """Create the SQLite file's folder and switch the database to WAL mode (persistent)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(database, timeout=busy_timeout)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold an inter-process lock of the storage at ``url`` while Optuna creates its schema.

    SQLite: exclusive ``flock`` on ``<database>-init.lock``. PostgreSQL:
    ``pg_advisory_lock(SCHEMA_LOCK_KEY)`` on a connection of its own (released on exit, or
    by the server when the connection dies). Other backends: no lock.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        with holding(f"{parsed.database}-init.lock", blocking=True):
            yield
    elif backend == "postgresql":
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as con:
                con.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                try:
                    yield
                finally:
                    con.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
        finally:
            engine.dispose()
    else:
        yield


def make_storage(
    url: str,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = DEFAULT_GRACE_PERIOD,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    max_retry: int = MAX_RETRY,
) -> RDBStorage:
    """An ``RDBStorage`` with heartbeats and Optuna's stale-trial retry callback.

    A trial whose worker stops sending heartbeats for ``grace_period`` seconds is set to
    FAIL by the next worker that starts a trial, and re-queued (same parameters) at most
    ``max_retry`` times.

    Raises:
        ValueError: an unsupported URL scheme.
    """
    url = normalize_url(url)
    backend = make_url(url).get_backend_name()
    engine_kwargs: dict[str, Any]
    if backend == "sqlite":
        prepare_sqlite(url, busy_timeout)
        engine_kwargs = {"connect_args": {"timeout": busy_timeout}}
    elif backend in ("postgresql", "mysql"):
        engine_kwargs = {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 2}
    else:
        raise ValueError(f"storage URL {url!r}: use sqlite:/// or postgresql://")
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
        }
    with schema_lock(url):  # concurrent first starts would race on creating the tables
        return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def retry_failed_trial(study: optuna.Study, trial_number: int, max_retry: int | None = None) -> None:
    """Re-queue a trial that this worker failed itself because it was asked to stop
    (SIGTERM), with Optuna's own :class:`RetryHeartbeatStaleTrialCallback` (the retry is
    recorded in the same ``retry_history``). A stop is not the trial's fault, so by default
    it does not count against the retry limit: a retry that a stopping worker picked up and
    failed at once is re-queued again rather than lost."""
    trial = study._storage.get_trial(
        study._storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
    )
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def fail_orphaned_trials(study: optuna.Study, grace_period: float, max_retry: int = MAX_RETRY) -> list[int]:
    """Fail (and re-queue once) RUNNING trials that never sent a heartbeat.

    Optuna's stale-trial check only sees trials with a heartbeat row, so a worker killed in
    the instant between creating a trial and its first heartbeat would leave that trial
    RUNNING for ever. For a study whose workers all run with heartbeats (the supervisor's),
    a RUNNING trial with no heartbeat that started more than ``grace_period`` seconds ago
    is such an orphan. Returns the numbers of the trials failed.
    """
    storage = study._storage
    rdb = getattr(storage, "_backend", storage)  # optuna wraps RDBStorage in a cache
    if not isinstance(rdb, RDBStorage):
        return []
    from datetime import UTC, datetime, timedelta

    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=grace_period)
    query = sqlalchemy.text(
        "SELECT t.trial_id, t.number FROM trials t "
        "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :s AND t.state = 'RUNNING' AND h.trial_id IS NULL "
        "AND t.datetime_start < :since"
    )
    with rdb.engine.connect() as con:
        rows = list(con.execute(query, {"s": study._study_id, "since": since}))
    failed = []
    for trial_id, number in rows:
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(int(number))
                RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return failed

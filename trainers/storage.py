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

Outages: a worker's storage (:class:`PatientRDBStorage`, from :func:`make_storage` with a
:class:`Patience`) waits out a database that cannot be reached instead of raising: every
storage call that fails with a connection-level error (:func:`is_unavailable_error`) while
``SELECT 1`` fails too, or that fails because the disk is full, is retried with exponential
backoff (1 s doubling to 15 s) until the database answers (or has room) again, calling
``on_wait`` between attempts (the worker beats its heartbeat and logs there, so the
supervisor does not take it for hung). An error while the database answers is not an outage
and is raised (after one more try). A process that is asked to stop (``stop`` is set) gives
up waiting and raises :class:`StorageUnavailable`; a worker then exits with
:data:`STORAGE_UNAVAILABLE_EXIT`.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from trainers.atomic_io import is_disk_full
from trainers.runtime.pidlock import holding

T = TypeVar("T")

DEFAULT_HEARTBEAT_INTERVAL = 30  # seconds between a running trial's heartbeats
DEFAULT_GRACE_PERIOD = 120  # seconds without a heartbeat before a trial is stale
DEFAULT_BUSY_TIMEOUT = 120.0  # seconds a SQLite connection waits for a lock
MAX_RETRY = 1
SCHEMA_LOCK_KEY = 0x63617070  # PostgreSQL advisory-lock key ("capp") of schema creation
# the storage URL of a process started without --storage; the configuration's study.storage
# variable, so the supervisor, every command and every child agree on one name
STORAGE_ENV = "CAPPUCCINO_STUDY__STORAGE"
# exit code of a worker that stopped while its storage could not be reached (sysexits.h
# EX_TEMPFAIL); the supervisor does not count such an exit against the restart budget while
# its own storage check fails too (daemon/storage_health.py)
STORAGE_UNAVAILABLE_EXIT = 75
WAIT_BACKOFF_INITIAL_S = 1.0
WAIT_BACKOFF_MAX_S = 15.0


class StorageUnavailable(RuntimeError):
    """The storage could not be reached and the process was asked to stop while it waited."""


def is_unavailable_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or the error it wraps, as Optuna's ``StorageInternalError`` wraps
    SQLAlchemy's) is a connection-level database error: ``OperationalError`` (refused or
    dropped connection, server shutting down, SQLite lock or I/O error), ``InterfaceError``,
    or a ``DBAPIError`` that invalidated its connection."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__  # type: ignore[assignment]
        seen += 1
    return False


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (for logs; a URL password never appears in
    SQLAlchemy's connection errors, which name host and port only)."""
    wrapped = isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None
    cause = exc.__cause__ if wrapped and exc.__cause__ is not None else exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


OnWait = Callable[[float, str], None]  # (seconds waited so far, error) between attempts
OnRecover = Callable[[float], None]  # (seconds waited) once the storage answers again


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
    patience: Patience | None = None,
) -> RDBStorage:
    """An ``RDBStorage`` with heartbeats and Optuna's stale-trial retry callback.

    A trial whose worker stops sending heartbeats for ``grace_period`` seconds is set to
    FAIL by the next worker that starts a trial, and re-queued (same parameters) at most
    ``max_retry`` times. With ``patience``, a :class:`PatientRDBStorage` that waits out
    storage outages (module docstring).

    Raises:
        ValueError: an unsupported URL scheme.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached (opening it is not
            retried here: see :func:`wait_for_storage`).
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
        if patience is not None:
            return PatientRDBStorage(url, engine_kwargs=engine_kwargs, patience=patience, **kwargs)
        return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


@dataclass
class Patience:
    """How a process waits out a storage outage.

    Attributes:
        stop: set when the process must stop; waiting then ends with :class:`StorageUnavailable`.
        on_wait: called between attempts with (seconds waited, error line).
        on_recover: called once the storage answers again, with the seconds waited.
        initial_s: first delay between attempts; doubled per attempt up to ``max_s``.
        max_s: longest delay between attempts.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    on_wait: OnWait | None = None
    on_recover: OnRecover | None = None
    initial_s: float = WAIT_BACKOFF_INITIAL_S
    max_s: float = WAIT_BACKOFF_MAX_S

    def call(self, fn: Callable[[], T], reachable: Callable[[], bool]) -> T:
        """``fn()``, retried while it fails with :func:`is_unavailable_error` and
        ``reachable()`` is False (an outage); an error while the database answers is raised
        after one more try (it may have come back in between).

        Raises:
            StorageUnavailable: ``stop`` was set while waiting.
            Exception: whatever ``fn`` raises when it is not an outage.
        """
        started: float | None = None
        retried_reachable = False
        attempt = 0
        while True:
            try:
                result = fn()
            except Exception as exc:
                full = is_disk_full(exc)  # SQLite's "database or disk is full": wait for room
                if not full and not is_unavailable_error(exc):
                    raise
                if not full and reachable():
                    if retried_reachable:
                        raise
                    retried_reachable = True
                    continue
                retried_reachable = False
                now = time.monotonic()
                started = now if started is None else started
                if self.on_wait is not None:
                    self.on_wait(now - started, first_line(exc))
                delay = min(self.max_s, self.initial_s * 2.0**attempt)
                attempt += 1
                if self.stop.wait(delay):
                    reason = f"stopped while the storage was unavailable ({first_line(exc)})"
                    raise StorageUnavailable(reason) from exc
                continue
            if started is not None and self.on_recover is not None:
                self.on_recover(time.monotonic() - started)
            return result


def wait_for_storage(open_fn: Callable[[], T], url: str, patience: Patience) -> T:
    """``open_fn()`` (opening a storage, a study), waiting out an outage of the database at
    ``url`` the way :class:`PatientRDBStorage` does.

    Raises:
        StorageUnavailable: ``patience.stop`` was set while waiting.
    """
    return patience.call(open_fn, lambda: storage_reachable(url))


def storage_reachable(url: str, engine: sqlalchemy.engine.Engine | None = None) -> bool:
    """Whether ``SELECT 1`` succeeds on the storage (on ``engine`` when given, else on a
    connection of its own, closed at once)."""
    own = engine is None
    try:
        if engine is None:
            engine = sqlalchemy.create_engine(normalize_url(url), poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as con:
            con.execute(sqlalchemy.text("SELECT 1"))
        return True
    except sqlalchemy.exc.SQLAlchemyError:
        return False
    finally:
        if own and engine is not None:
            engine.dispose()


class PatientRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose every storage call waits out an outage
    (:meth:`Patience.call`) instead of raising: Optuna's ask, report, tell and its
    heartbeat thread all block until the database is back, so a trial in flight keeps its
    result. Not waited out: opening the storage (``__init__``; see :func:`wait_for_storage`).

    A write retried after a connection that died between the server's commit and its answer
    may find its work done: a second new trial (RUNNING with no heartbeat: failed and
    re-queued by :func:`fail_orphaned_trials`), or a trial already finished (Optuna raises
    ``UpdateFinishedTrialError``; the worker carries on with its next trial).
    """

    def __init__(self, url: str, *, patience: Patience, **kwargs: Any) -> None:
        self.patience = patience
        super().__init__(url, **kwargs)

    def _reachable(self) -> bool:
        return storage_reachable(self.url, self.engine)


def _patient(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self: PatientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        patience = getattr(self, "patience", None)
        if patience is None:  # during __init__
            return method(self, *args, **kwargs)
        return patience.call(lambda: method(self, *args, **kwargs), self._reachable)

    return call


# every RDBStorage method that talks to the database (Optuna 4/5), with the private ones
# Optuna's _CachedStorage calls; BaseStorage's helpers (get_n_trials ...) go through these
PATIENT_METHODS = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
)
for _name in PATIENT_METHODS:
    if hasattr(RDBStorage, _name):
        setattr(PatientRDBStorage, _name, _patient(_name))


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

    def select() -> list[Any]:
        with rdb.engine.connect() as con:
            return list(con.execute(query, {"s": study._study_id, "since": since}))

    # a patient storage waits out an outage here too (this query is not one of its methods)
    rows = rdb.patience.call(select, rdb._reachable) if isinstance(rdb, PatientRDBStorage) else select()
    failed = []
    for trial_id, number in rows:
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(int(number))
                RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return failed

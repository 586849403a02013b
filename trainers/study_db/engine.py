"""The engine over Optuna's RDB tables and the study lookup (modelled on Optuna's own
``optuna/storages/_rdb``): the one place product code creates an SQLAlchemy engine on an
Optuna storage.

Tables are read through lightweight :func:`sqlalchemy.table` views of only the columns
used here. Enum columns (``trials.state``, ``study_directions.direction``,
``trial_values.value_type``) are compared with inline literals so the same SQL works on
SQLite (``VARCHAR``) and PostgreSQL (native enum types).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainers.storage import normalize_url, redact_url

SQLITE_BUSY_TIMEOUT_S = 60.0

# Lightweight views of Optuna's RDB tables (only the columns read here). Enum columns are
# compared with inline literals so the same SQL works on SQLite (VARCHAR) and PostgreSQL
# (native enum types).
_studies = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
_directions = sa.table(
    "study_directions", sa.column("study_id"), sa.column("objective"), sa.column("direction")
)
_trials = sa.table(
    "trials", sa.column("trial_id"), sa.column("number"), sa.column("study_id"), sa.column("state")
)
_values = sa.table(
    "trial_values",
    sa.column("trial_value_id"),
    sa.column("trial_id"),
    sa.column("objective"),
    sa.column("value"),
    sa.column("value_type"),
)
_user_attrs = sa.table(
    "trial_user_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json")
)
_study_attrs = sa.table(
    "study_user_attributes", sa.column("study_id"), sa.column("key"), sa.column("value_json")
)
_params = sa.table(
    "trial_params",
    sa.column("trial_id"),
    sa.column("param_name"),
    sa.column("param_value"),
    sa.column("distribution_json"),
)


_COMPLETE = sa.literal_column("'COMPLETE'")
_FINITE = sa.literal_column("'FINITE'")

# Trial states (Optuna's TrialState names). "finished" = counts towards a study's trial
# target (a worker's --n-trials); "ended" = will not run again (FAIL included).
FINISHED_STATES: tuple[str, ...] = ("COMPLETE", "PRUNED")
ENDED_STATES: tuple[str, ...] = ("COMPLETE", "PRUNED", "FAIL")


class StudyDBError(ValueError):
    """The study cannot be read: unusable storage URL, missing SQLite file, unreachable
    server, unknown study or several objectives; the message says which."""


@dataclass(frozen=True)
class StudyRow:
    """A study's row: id, name and whether it maximises its (single) objective."""

    study_id: int
    name: str
    maximize: bool


@lru_cache(maxsize=16)
def open_engine(storage_url: str) -> Engine:
    """The SQLAlchemy engine of an Optuna storage URL (cached per URL; SQLite waits up to 60 s
    for a lock; a plain ``postgresql://`` URL uses the psycopg 3 driver; PostgreSQL
    connections are pinged before use).

    Raises:
        StudyDBError: the URL cannot be parsed, names no installed driver, or names a SQLite
            file that does not exist (it is never created here).
    """
    try:
        url = sa.engine.make_url(normalize_url(storage_url))
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database not in ("", ":memory:") and not Path(database).is_file():
                # sqlite would create an empty file there; a missing storage is an error
                raise StudyDBError(f"storage {database}: no such SQLite file (check --root / --storage)")
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            kwargs["pool_pre_ping"] = True
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StudyDBError(f"storage URL {redact_url(storage_url)}: {exc}") from None


def db_error(engine: Engine, study: str, exc: Exception) -> StudyDBError:
    """One-line :class:`StudyDBError` for a database error while reading ``study``."""
    return StudyDBError(
        f"storage {redact_url(str(engine.url))}: cannot read study {study!r} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0]})"
    )


def find_study(conn: sa.Connection, study: str) -> StudyRow | None:
    """The study's row, or None when the storage has no study of that name.

    Raises:
        StudyDBError: a multi-objective study.
    """
    row = conn.execute(sa.select(_studies.c.study_id).where(_studies.c.study_name == study)).first()
    if row is None:
        return None
    study_id = int(row[0])
    directions = conn.execute(
        sa.select(_directions.c.direction)
        .where(_directions.c.study_id == study_id)
        .order_by(_directions.c.objective)
    ).all()
    if len(directions) != 1:
        raise StudyDBError(f"study {study!r} has {len(directions)} objectives; cappuccino needs exactly one")
    direction = getattr(directions[0][0], "name", directions[0][0])
    return StudyRow(study_id, study, str(direction).upper() != "MINIMIZE")


def require_study(conn: sa.Connection, study: str) -> StudyRow:
    """Like :func:`find_study`, for a study that must exist.

    Raises:
        StudyDBError: no such study (the message lists up to 20 known ones), or several
            objectives.
    """
    found = find_study(conn, study)
    if found is None:
        known = conn.execute(sa.select(_studies.c.study_name).order_by(_studies.c.study_name).limit(20))
        names = ", ".join(r[0] for r in known) or "none"
        raise StudyDBError(f"no study named {study!r} in the storage (studies: {names})")
    return found


def state_name(state: Any) -> str:
    """An Optuna state as read from the database (enum on PostgreSQL, text on SQLite)."""
    return str(getattr(state, "name", state))


def decode_json(raw: str | None) -> Any:
    try:
        return None if raw is None else json.loads(raw)
    except json.JSONDecodeError:
        return raw


def user_attrs(
    conn: sa.Connection, trial_ids: list[int], keys: tuple[str, ...] | None = None
) -> dict[int, dict[str, Any]]:
    """User attributes (decoded JSON) of the given trials, optionally only ``keys``."""
    out: dict[int, dict[str, Any]] = {int(i): {} for i in trial_ids}
    if not out:
        return out
    query = sa.select(_user_attrs.c.trial_id, _user_attrs.c.key, _user_attrs.c.value_json).where(
        _user_attrs.c.trial_id.in_(list(out))
    )
    if keys is not None:
        query = query.where(_user_attrs.c.key.in_(list(keys)))
    for tid, key, raw in conn.execute(query):
        out[int(tid)][key] = decode_json(raw)
    return out


def study_user_attrs(
    conn: sa.Connection, study: StudyRow, keys: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """User attributes (decoded JSON) of the study itself (Optuna's
    ``study_user_attributes``), optionally only ``keys``."""
    query = sa.select(_study_attrs.c.key, _study_attrs.c.value_json).where(
        _study_attrs.c.study_id == study.study_id
    )
    if keys is not None:
        query = query.where(_study_attrs.c.key.in_(list(keys)))
    return {str(key): decode_json(raw) for key, raw in conn.execute(query)}


def ping(storage_url: str) -> None:
    """Open a connection to the storage and run ``SELECT 1``.

    Raises:
        StudyDBError: unusable URL or a missing SQLite file.
        sqlalchemy.exc.SQLAlchemyError: the database cannot be reached.
    """
    with open_engine(storage_url).connect() as con:
        con.execute(sa.text("SELECT 1"))

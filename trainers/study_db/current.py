"""The current study in the shared storage: table ``cappuccino_current_study`` next to
Optuna's tables, so every host that shares a PostgreSQL study follows a ``set-study`` /
``start-training`` made on any of them.

One row (``id`` 1): ``name`` (the study, at most 200 characters), ``updated_at`` (unix
seconds, float) and ``host`` (the writer's host name, for operators). The table is created by
its first writer (``CREATE TABLE IF NOT EXISTS`` semantics); a storage that does not have
it yet has no shared current study. :mod:`trainers.runtime.current_study` is the only caller.
"""

from __future__ import annotations

import socket
import time

import sqlalchemy as sa

from trainers.storage import redact_url
from trainers.study_db.engine import StudyDBError, open_engine

TABLE = "cappuccino_current_study"
_metadata = sa.MetaData()
_table = sa.Table(
    TABLE,
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
)


def read_shared(storage_url: str) -> str | None:
    """The current study recorded in the storage, or None (no table or no row yet).

    Raises:
        StudyDBError: the storage cannot be read (one line, password redacted).
    """
    engine = open_engine(storage_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return None
            row = conn.execute(sa.select(_table.c.name).where(_table.c.id == 1)).first()
    except sa.exc.SQLAlchemyError as exc:
        raise StudyDBError(
            f"storage {redact_url(storage_url)}: cannot read {TABLE} ({exc.__class__.__name__})"
        ) from None
    return None if row is None else str(row[0])


def write_shared(storage_url: str, name: str) -> None:
    """Record ``name`` as the current study in the storage (creating the table when missing).

    Raises:
        StudyDBError: the storage cannot be written (one line, password redacted).
    """
    engine = open_engine(storage_url)
    values = {"name": name, "updated_at": time.time(), "host": socket.gethostname()[:255]}
    try:
        with engine.begin() as conn:
            _metadata.create_all(conn, checkfirst=True)
            done = conn.execute(sa.update(_table).where(_table.c.id == 1).values(**values)).rowcount
            if not done:
                conn.execute(sa.insert(_table).values(id=1, **values))
    except sa.exc.IntegrityError:  # another host inserted the row first: update it
        with engine.begin() as conn:
            conn.execute(sa.update(_table).where(_table.c.id == 1).values(**values))
    except sa.exc.SQLAlchemyError as exc:
        raise StudyDBError(
            f"storage {redact_url(storage_url)}: cannot write {TABLE} ({exc.__class__.__name__})"
        ) from None

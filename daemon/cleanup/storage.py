"""The cleanup's private reader of Optuna's tables (SQL on Optuna's schema; never every
trial). Moved verbatim from the former ``daemon/cleanup.py``; to be replaced by a shared
Optuna-table reader."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.cleanup.references import References
from daemon.cleanup.result import CleanupError

_CHUNK = 500  # bound on the length of an SQL ``IN`` list


def _engine(storage: str) -> sa.Engine:
    """Engine on an existing Optuna RDB storage (a missing SQLite file is an error, not created).

    Raises:
        CleanupError: unparsable URL, unknown driver, or missing SQLite file.
    """
    try:
        url = sa.engine.make_url(storage)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:" and not Path(url.database).is_file():
                raise CleanupError(f"storage {url.database}: no such SQLite file (check --root / --storage)")
            kwargs["connect_args"] = {"timeout": 60.0}
        else:
            kwargs["pool_pre_ping"] = True
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise CleanupError(f"storage URL: {exc}") from None


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


@dataclass(frozen=True)
class _Trial:
    trial_id: int
    study: str
    number: int
    state: str


class _Storage:
    """The few storage lookups cleanup needs (SQL on Optuna's schema; never every trial)."""

    def __init__(self, conn: sa.Connection, keep_top: int) -> None:
        self.conn = conn
        self.keep_top = keep_top
        self._studies: dict[str, tuple[int, bool] | None] = {}
        self._top: dict[str, set[int]] = {}

    def study(self, name: str) -> tuple[int, bool] | None:
        """``(study_id, maximize)`` or None when the storage has no such study."""
        if name not in self._studies:
            row = self.conn.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
            ).first()
            if row is None:
                self._studies[name] = None
            else:
                direction = self.conn.execute(
                    sa.text(
                        "SELECT direction FROM study_directions WHERE study_id = :s "
                        "ORDER BY objective LIMIT 1"
                    ),
                    {"s": row[0]},
                ).scalar()
                self._studies[name] = (int(row[0]), str(direction).upper() != "MINIMIZE")
        return self._studies[name]

    def top(self, name: str) -> set[int]:
        """Trial ids of the best ``keep_top`` COMPLETE trials with a finite value."""
        if name not in self._top:
            info = self.study(name)
            ids: set[int] = set()
            if info is not None:
                sid, maximize = info
                order = "DESC" if maximize else "ASC"
                rows = self.conn.execute(
                    sa.text(
                        "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                        "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.objective = 0 "
                        f"AND v.value_type = 'FINITE' ORDER BY v.value {order}, t.number ASC, "
                        "t.trial_id ASC LIMIT :k"
                    ),
                    {"s": sid, "k": self.keep_top},
                )
                ids = {int(r[0]) for r in rows}
            self._top[name] = ids
        return self._top[name]

    def trials_by_number(self, name: str, numbers: list[int]) -> dict[int, _Trial]:
        info = self.study(name)
        out: dict[int, _Trial] = {}
        if info is None:
            return out
        for chunk in _chunks(numbers):
            query = sa.text(
                "SELECT trial_id, number, state FROM trials WHERE study_id = :s AND number IN :n"
            ).bindparams(sa.bindparam("n", expanding=True))
            for tid, number, state in self.conn.execute(query, {"s": info[0], "n": chunk}):
                out[int(number)] = _Trial(int(tid), name, int(number), str(state))
        return out

    def artifact_owners(self, ids: list[str]) -> tuple[dict[str, _Trial], set[str]]:
        """``({artifact_id: trial}, {study-level artifact ids})`` for artifact files."""
        owners: dict[str, _Trial] = {}
        study_level: set[str] = set()
        for chunk in _chunks(ids):
            keys = [f"artifacts:{a}" for a in chunk]
            q = sa.text(
                "SELECT a.key, t.trial_id, s.study_name, t.number, t.state FROM trial_system_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key IN :k"
            ).bindparams(sa.bindparam("k", expanding=True))
            for key, tid, study, number, state in self.conn.execute(q, {"k": keys}):
                owners[key.split(":", 1)[1]] = _Trial(int(tid), study, int(number), str(state))
            q = sa.text(
                "SELECT a.value_json, t.trial_id, s.study_name, t.number, t.state "
                "FROM trial_user_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key = 'artifact_id' AND a.value_json IN :v"
            ).bindparams(sa.bindparam("v", expanding=True))
            for raw, tid, study, number, state in self.conn.execute(q, {"v": [json.dumps(a) for a in chunk]}):
                owners.setdefault(json.loads(raw), _Trial(int(tid), study, int(number), str(state)))
            q = sa.text("SELECT key FROM study_system_attributes WHERE key IN :k").bindparams(
                sa.bindparam("k", expanding=True)
            )
            study_level |= {row[0].split(":", 1)[1] for row in self.conn.execute(q, {"k": keys})}
        return owners, study_level

    def referenced_trial_ids(self, refs: References) -> dict[int, str]:
        """Trial ids referenced directly, by (study, number), by actor sha256 or by VIN."""
        out = dict(refs.trial_ids)
        for (study, number), where in refs.numbers.items():
            for trial in self.trials_by_number(study, [number]).values():
                out.setdefault(trial.trial_id, where)
        for key, wanted in (("actor_sha256", refs.sha256), ("vin", refs.vins)):
            values = list(wanted)
            for chunk in _chunks(values):
                q = sa.text(
                    "SELECT trial_id, value_json FROM trial_user_attributes "
                    "WHERE key = :key AND value_json IN :v"
                ).bindparams(sa.bindparam("v", expanding=True))
                for tid, raw in self.conn.execute(q, {"key": key, "v": [json.dumps(v) for v in chunk]}):
                    out.setdefault(int(tid), wanted[json.loads(raw)])
        return out

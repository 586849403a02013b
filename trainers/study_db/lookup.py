"""Trial lookups by identity on Optuna's tables, for the cleanup and anything else that must
map files back to trials: trials by number, the owners of artifact ids, trials whose user
attribute has one of a set of values, and a study's top trial ids. Every lookup is a few
chunked ``IN (...)`` queries; a study is never loaded whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from trainers.study_db.engine import StudyRow, find_study, state_name

CHUNK = 500  # bound on the length of an SQL ``IN`` list


def chunks(items: list[Any]) -> Iterator[list[Any]]:
    """``items`` in lists of at most :data:`CHUNK`."""
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


@dataclass(frozen=True)
class TrialRef:
    """A trial's identity and state (Optuna's state name)."""

    trial_id: int
    study: str
    number: int
    state: str


class TrialLookup:
    """Lookups on one open connection; studies and top-trial sets are cached per instance.

    Args:
        conn: an open connection on an Optuna storage (:func:`trainers.study_db.open_engine`).
        keep_top: size of :meth:`top`.
    """

    def __init__(self, conn: sa.Connection, keep_top: int = 1) -> None:
        self.conn = conn
        self.keep_top = keep_top
        self._studies: dict[str, StudyRow | None] = {}
        self._top: dict[str, set[int]] = {}

    def study(self, name: str) -> StudyRow | None:
        """The study's row, or None when the storage has no such study."""
        if name not in self._studies:
            self._studies[name] = find_study(self.conn, name)
        return self._studies[name]

    def top(self, name: str) -> set[int]:
        """Trial ids of the best ``keep_top`` COMPLETE trials with a finite value (ties by
        trial number, then trial id)."""
        if name not in self._top:
            row = self.study(name)
            ids: set[int] = set()
            if row is not None:
                order = "DESC" if row.maximize else "ASC"
                rows = self.conn.execute(
                    sa.text(
                        "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                        "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.objective = 0 "
                        f"AND v.value_type = 'FINITE' ORDER BY v.value {order}, t.number ASC, "
                        "t.trial_id ASC LIMIT :k"
                    ),
                    {"s": row.study_id, "k": self.keep_top},
                )
                ids = {int(r[0]) for r in rows}
            self._top[name] = ids
        return self._top[name]

    def trials_by_number(self, name: str, numbers: list[int]) -> dict[int, TrialRef]:
        """``{number: trial}`` of the given trial numbers of a study (absent ones left out)."""
        row = self.study(name)
        out: dict[int, TrialRef] = {}
        if row is None:
            return out
        for chunk in chunks(numbers):
            query = sa.text(
                "SELECT trial_id, number, state FROM trials WHERE study_id = :s AND number IN :n"
            ).bindparams(sa.bindparam("n", expanding=True))
            for tid, number, state in self.conn.execute(query, {"s": row.study_id, "n": chunk}):
                out[int(number)] = TrialRef(int(tid), name, int(number), state_name(state))
        return out

    def trials_by_id(self, ids: list[int]) -> dict[int, TrialRef]:
        """``{trial_id: trial}`` of the given trial ids, any study (absent ones left out)."""
        out: dict[int, TrialRef] = {}
        for chunk in chunks(ids):
            query = sa.text(
                "SELECT t.trial_id, s.study_name, t.number, t.state FROM trials t "
                "JOIN studies s ON s.study_id = t.study_id WHERE t.trial_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True))
            for tid, study, number, state in self.conn.execute(query, {"ids": chunk}):
                out[int(tid)] = TrialRef(int(tid), study, int(number), state_name(state))
        return out

    def artifact_owners(self, ids: list[str]) -> tuple[dict[str, TrialRef], set[str]]:
        """``({artifact_id: trial}, {study-level artifact ids})`` for artifact ids: Optuna's
        own artifact records (system attributes ``artifacts:<id>``) and the ``artifact_id``
        user attribute the objective sets."""
        owners: dict[str, TrialRef] = {}
        study_level: set[str] = set()
        for chunk in chunks(ids):
            keys = [f"artifacts:{a}" for a in chunk]
            q = sa.text(
                "SELECT a.key, t.trial_id, s.study_name, t.number, t.state FROM trial_system_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key IN :k"
            ).bindparams(sa.bindparam("k", expanding=True))
            for key, tid, study, number, state in self.conn.execute(q, {"k": keys}):
                owners[key.split(":", 1)[1]] = TrialRef(int(tid), study, int(number), state_name(state))
            q = sa.text(
                "SELECT a.value_json, t.trial_id, s.study_name, t.number, t.state "
                "FROM trial_user_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key = 'artifact_id' AND a.value_json IN :v"
            ).bindparams(sa.bindparam("v", expanding=True))
            for raw, tid, study, number, state in self.conn.execute(q, {"v": [json.dumps(a) for a in chunk]}):
                owners.setdefault(json.loads(raw), TrialRef(int(tid), study, int(number), state_name(state)))
            q = sa.text("SELECT key FROM study_system_attributes WHERE key IN :k").bindparams(
                sa.bindparam("k", expanding=True)
            )
            study_level |= {row[0].split(":", 1)[1] for row in self.conn.execute(q, {"k": keys})}
        return owners, study_level

    def trials_with_attr(self, key: str, values: list[Any]) -> dict[int, Any]:
        """``{trial_id: value}`` of the trials (any study) whose user attribute ``key`` has
        one of ``values`` (JSON-equal)."""
        out: dict[int, Any] = {}
        for chunk in chunks(values):
            q = sa.text(
                "SELECT trial_id, value_json FROM trial_user_attributes WHERE key = :key AND value_json IN :v"
            ).bindparams(sa.bindparam("v", expanding=True))
            for tid, raw in self.conn.execute(q, {"key": key, "v": [json.dumps(v) for v in chunk]}):
                out.setdefault(int(tid), json.loads(raw))
        return out

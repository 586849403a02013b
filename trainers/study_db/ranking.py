"""Direction-aware ranking of a study's COMPLETE trials, straight from Optuna's tables.

Order: objective value, best first (descending for a maximising study, ascending for a
minimising one), ties broken by trial number ascending (the older trial first), then
trial id. Only finite values rank; Optuna stores +-inf as a value type without a value.
One ``ORDER BY value LIMIT k`` query, so a study of 100,000 trials ranks in milliseconds
where ``study.get_trials()`` takes minutes (``bench/topn_sync.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from optuna.distributions import json_to_distribution
from sqlalchemy.engine import Engine

from trainers.study_db.engine import (
    _COMPLETE,
    _FINITE,
    StudyRow,
    _params,
    _trials,
    _user_attrs,
    _values,
    db_error,
    decode_json,
    require_study,
    user_attrs,
)


@dataclass(frozen=True)
class RankedTrial:
    """A COMPLETE trial as ranked by the storage (its user attributes and decoded params)."""

    study: str
    trial_id: int
    number: int
    value: float
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def _study_filter(conn: sa.Connection, study_id: int) -> sa.ColumnElement[bool]:
    """``trials.study_id = :id``, written so SQLite picks the faster plan.

    SQLite's planner walks the study's index and looks each trial's value up (two B-tree
    searches a trial). When the study holds at least half of the storage's values, a
    sequential scan of ``trial_values`` with a primary-key lookup of each trial is about
    twice as fast; ``study_id + 0`` keeps SQLite off the study index (the documented way
    to disqualify an index: https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_).
    Both estimates are O(log n): a study's trial numbers are dense (number = trials of the
    study created before it), and ``trial_value_id`` is the rowid. Other databases plan
    with statistics and get the plain filter.
    """
    if conn.dialect.name != "sqlite":
        return _trials.c.study_id == study_id
    last = conn.execute(
        sa.select(_trials.c.number)
        .where(_trials.c.study_id == study_id)
        .order_by(_trials.c.trial_id.desc())
        .limit(1)
    ).scalar()
    total = conn.execute(sa.select(sa.func.max(_values.c.trial_value_id))).scalar()
    if last is not None and total is not None and 2 * (int(last) + 1) >= int(total):
        return (_trials.c.study_id + 0) == study_id
    return _trials.c.study_id == study_id


def rank_trials(
    engine: Engine, study: str, limit: int, after: tuple[float, int, int] | None = None
) -> list[RankedTrial]:
    """The best ``limit`` COMPLETE trials of ``study`` with finite values, best first.

    One ``ORDER BY value, number, trial_id LIMIT limit`` query over the study's trials,
    then one query each for the user attributes and the parameters of those trials only.
    Parameters are decoded to their external form with the stored distribution
    (``json_to_distribution(...).to_external_repr``), so a categorical comes back as its
    choice, not its index.

    Args:
        engine: engine on an Optuna RDB storage.
        study: study name.
        limit: at most this many trials (>= 1).
        after: keyset cursor ``(value, number, trial_id)`` of the last trial of a previous
            page: return the trials ranked after it (stable even while trials complete).

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    try:
        with engine.connect() as conn:
            row = require_study(conn, study)
            study_id, maximize = row.study_id, row.maximize
            value, number, trial_id = _values.c.value, _trials.c.number, _trials.c.trial_id
            query = (
                sa.select(trial_id, number, value)
                .join_from(_trials, _values, _values.c.trial_id == trial_id)
                .where(
                    _study_filter(conn, study_id),
                    _trials.c.state == _COMPLETE,
                    _values.c.objective == 0,
                    _values.c.value_type == _FINITE,
                )
                .order_by(value.desc() if maximize else value.asc(), number.asc(), trial_id.asc())
                .limit(limit)
            )
            if after is not None:
                v, n, tid = after
                worse = value < v if maximize else value > v
                query = query.where(
                    sa.or_(
                        worse,
                        sa.and_(value == v, sa.or_(number > n, sa.and_(number == n, trial_id > tid))),
                    )
                )
            rows = conn.execute(query).all()
            ids = [int(r[0]) for r in rows]
            attrs = user_attrs(conn, ids)
            params: dict[int, dict[str, Any]] = {i: {} for i in ids}
            if ids:
                for tid, name, internal, dist in conn.execute(
                    sa.select(
                        _params.c.trial_id,
                        _params.c.param_name,
                        _params.c.param_value,
                        _params.c.distribution_json,
                    ).where(_params.c.trial_id.in_(ids))
                ):
                    params[int(tid)][name] = json_to_distribution(dist).to_external_repr(internal)
    except sa.exc.SQLAlchemyError as exc:
        raise db_error(engine, study, exc) from None
    return [
        RankedTrial(study, int(r[0]), int(r[1]), float(r[2]), attrs[int(r[0])], params[int(r[0])])
        for r in rows
    ]


def count_ranked(engine: Engine, study: str) -> int:
    """How many trials :func:`rank_trials` can rank: COMPLETE trials of ``study`` with a
    finite value (one ``COUNT`` query; used for top-percent cut-offs).

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    try:
        with engine.connect() as conn:
            study_id = require_study(conn, study).study_id
            query = (
                sa.select(sa.func.count())
                .select_from(_trials)
                .join(_values, _values.c.trial_id == _trials.c.trial_id)
                .where(
                    _study_filter(conn, study_id),
                    _trials.c.state == _COMPLETE,
                    _values.c.objective == 0,
                    _values.c.value_type == _FINITE,
                )
            )
            return int(conn.execute(query).scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise db_error(engine, study, exc) from None


def iter_ranked(engine: Engine, study: str, page_size: int) -> Iterator[RankedTrial]:
    """All COMPLETE trials of ``study``, best first, fetched lazily ``page_size`` at a time.

    Raises:
        StudyDBError: see :func:`rank_trials`.
    """
    after: tuple[float, int, int] | None = None
    while True:
        page = rank_trials(engine, study, page_size, after)
        yield from page
        if len(page) < page_size:
            return
        last = page[-1]
        after = (last.value, last.number, last.trial_id)
        page_size = min(page_size * 2, 1000)


def best_trial(engine: Engine, study: str) -> RankedTrial | None:
    """The best COMPLETE trial (direction-aware), or None when there is none.

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    top = rank_trials(engine, study, 1)
    return top[0] if top else None


@contextmanager
def reading(engine: Engine, study: str) -> Iterator[tuple[sa.Connection, StudyRow]]:
    """A connection and the study's row; a database error becomes one :class:`StudyDBError`.

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    try:
        with engine.connect() as conn:
            yield conn, require_study(conn, study)
    except sa.exc.SQLAlchemyError as exc:
        raise db_error(engine, study, exc) from None


def trial_by_number(engine: Engine, study: str, number: int) -> RankedTrial | None:
    """The COMPLETE trial ``number`` of ``study`` with a finite value (its user attributes
    and decoded parameters), or None when there is none.

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    with reading(engine, study) as (conn, row_of_study):
        study_id = row_of_study.study_id
        row = conn.execute(
            sa.select(_trials.c.trial_id, _values.c.value)
            .join_from(_trials, _values, _values.c.trial_id == _trials.c.trial_id)
            .where(
                _trials.c.study_id == study_id,
                _trials.c.number == number,
                _trials.c.state == _COMPLETE,
                _values.c.objective == 0,
                _values.c.value_type == _FINITE,
            )
        ).first()
        if row is None:
            return None
        trial_id = int(row[0])
        attrs = user_attrs(conn, [trial_id])[trial_id]
        params = {
            name: json_to_distribution(dist).to_external_repr(internal)
            for name, internal, dist in conn.execute(
                sa.select(_params.c.param_name, _params.c.param_value, _params.c.distribution_json).where(
                    _params.c.trial_id == trial_id
                )
            )
        }
    return RankedTrial(study, trial_id, number, float(row[1]), attrs, params)


def complete_attr(engine: Engine, study: str, key: str) -> dict[int, Any]:
    """One user attribute (decoded JSON) of every COMPLETE trial of ``study`` that has it,
    by trial number (e.g. ``fold_metrics`` for the probability of backtest overfitting).

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    with reading(engine, study) as (conn, row):
        rows = conn.execute(
            sa.select(_trials.c.number, _user_attrs.c.value_json)
            .join_from(_trials, _user_attrs, _user_attrs.c.trial_id == _trials.c.trial_id)
            .where(_trials.c.study_id == row.study_id, _trials.c.state == _COMPLETE, _user_attrs.c.key == key)
        ).all()
    return {int(n): decode_json(raw) for n, raw in rows}

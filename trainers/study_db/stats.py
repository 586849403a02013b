"""Study figures as a few aggregate queries on Optuna's tables: the database does the
scanning and only small results come back, so a study of any size costs the same few
round trips. Works on SQLite (>= 3.25, window functions) and PostgreSQL.

Every function takes an open connection and the study's :class:`StudyRow`
(:func:`trainers.study_db.engine.require_study`). Optuna keeps trial datetimes as naive
UTC; aware datetimes passed here are converted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from trainers.study_db.engine import ENDED_STATES, StudyRow, state_name, user_attrs

_ENDED_SQL = "(" + ", ".join(f"'{s}'" for s in ENDED_STATES) + ")"


def naive_utc(dt: datetime) -> datetime:
    """An aware datetime as Optuna's RDB storage keeps it: naive UTC."""
    return dt.astimezone(UTC).replace(tzinfo=None)


def state_counts(conn: sa.Connection, study: StudyRow) -> dict[str, int]:
    """Trials of the study by state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``,
    ``WAITING``); states without trials are absent."""
    return {
        state_name(s): int(n)
        for s, n in conn.execute(
            sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"),
            {"s": study.study_id},
        )
    }


def ended_between(conn: sa.Connection, study: StudyRow, since: datetime, until: datetime) -> dict[str, int]:
    """Trials that ended (COMPLETE, PRUNED or FAIL) with ``since <= datetime_complete <=
    until``, by state (aware datetimes)."""
    rows = conn.execute(
        sa.text(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = :s "
            f"AND state IN {_ENDED_SQL} AND datetime_complete >= :a AND datetime_complete <= :b "
            "GROUP BY state"
        ),
        {"s": study.study_id, "a": naive_utc(since), "b": naive_utc(until)},
    )
    return {state_name(s): int(n) for s, n in rows}


def best_progression(conn: sa.Connection, study: StudyRow, max_points: int) -> list[tuple[int, int, float]]:
    """The trials that improved the study's best value, as ``(trial_id, number, value)`` in
    trial-number order: a step function of the best value over trials. Only the latest
    ``max_points`` improvements; the last one is the best trial."""
    agg, better = ("MAX", ">") if study.maximize else ("MIN", "<")
    rows = conn.execute(
        sa.text(
            "SELECT trial_id, number, value FROM ("
            "  SELECT t.trial_id AS trial_id, t.number AS number, v.value AS value, "
            f"   {agg}(v.value) OVER (ORDER BY t.number ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) "
            "     AS previous "
            "  FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
            "  WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.value_type = 'FINITE'"
            f") x WHERE previous IS NULL OR value {better} previous ORDER BY number DESC LIMIT :k"
        ),
        {"s": study.study_id, "k": max_points},
    ).all()
    return [(int(t), int(n), float(v)) for t, n, v in reversed(rows)]


def best_summary(conn: sa.Connection, trial_id: int, number: int, value: float) -> dict[str, Any]:
    """``{"number", "value", "vin", "grade"}`` of a trial (VIN and grade from its user
    attributes, absent when it has none)."""
    attrs = user_attrs(conn, [trial_id], ("vin", "grade"))[trial_id]
    return {"number": int(number), "value": float(value), **attrs}


def recent_outcomes(conn: sa.Connection, study: StudyRow, window: int) -> dict[str, int]:
    """States of the latest ``window`` ended trials (by trial number), counted."""
    return {
        state_name(s): int(n)
        for s, n in conn.execute(
            sa.text(
                "SELECT state, COUNT(*) FROM (SELECT state FROM trials WHERE study_id = :s "
                f"AND state IN {_ENDED_SQL} ORDER BY number DESC LIMIT :n) x GROUP BY state"
            ),
            {"s": study.study_id, "n": window},
        )
    }


def complete_after(conn: sa.Connection, study: StudyRow, number: int) -> int:
    """COMPLETE trials numbered after ``number`` (trials since the best one)."""
    return int(
        conn.execute(
            sa.text("SELECT COUNT(*) FROM trials WHERE study_id = :s AND state = 'COMPLETE' AND number > :n"),
            {"s": study.study_id, "n": number},
        ).scalar_one()
    )

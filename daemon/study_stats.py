"""Study statistics straight from Optuna's RDB schema (a few aggregate queries; never
loads the trials of a study that may hold tens of thousands)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    return create_engine(url, **kwargs)


def study_stats(url: str, study: str) -> dict[str, Any]:
    """Trials by state, completed trials in the last hour, and the best trial.

    Returns:
        ``{"study", "exists", "trials": {state: count}, "trials_per_hour",
        "best": {"number", "value", "vin", "grade"} | None}``.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the storage cannot be reached.
    """
    with _engine(url).connect() as con:
        row = con.execute(text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": study}).first()
        if row is None:
            return {"study": study, "exists": False, "trials": {}, "trials_per_hour": 0.0, "best": None}
        sid = row[0]
        counts = {
            str(state): int(n)
            for state, n in con.execute(
                text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"), {"s": sid}
            )
        }
        since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
        last_hour = con.execute(
            text(
                "SELECT COUNT(*) FROM trials WHERE study_id = :s AND state = 'COMPLETE' "
                "AND datetime_complete >= :since"
            ),
            {"s": sid, "since": since},
        ).scalar_one()
        best_row = con.execute(
            text(
                "SELECT t.trial_id, t.number, v.value FROM trials t JOIN trial_values v "
                "ON v.trial_id = t.trial_id AND v.objective = 0 "
                "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.value_type = 'FINITE' "
                "ORDER BY v.value DESC, t.number ASC LIMIT 1"
            ),
            {"s": sid},
        ).first()
        best = None
        if best_row is not None:
            attrs = {
                k: json.loads(v)
                for k, v in con.execute(
                    text(
                        "SELECT key, value_json FROM trial_user_attributes "
                        "WHERE trial_id = :t AND key IN ('vin', 'grade')"
                    ),
                    {"t": best_row[0]},
                )
            }
            best = {"number": best_row[1], "value": best_row[2], **attrs}
    return {
        "study": study,
        "exists": True,
        "trials": counts,
        "trials_per_hour": float(last_hour),
        "best": best,
    }

"""Study statistics for ``status.json``, ``cappuccino status`` and the quickstart view, read
through :mod:`trainers.study_db` (a few aggregate queries; never loads the trials of a study
that may hold tens of thousands)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from trainers.naming import beats_baselines
from trainers.study_db import ended_between, find_study, open_engine, rank_trials, state_counts
from trainers.study_db.baselines import study_baselines


def study_stats(url: str, study: str) -> dict[str, Any]:
    """Trials by state, COMPLETE trials in the last hour, and the best trial (direction-aware).

    Returns:
        ``{"study", "exists", "trials": {state: count}, "trials_per_hour"`` (COMPLETE trials
        in the last hour), ``"best": {"number", "value", "vin", "grade", "beats_baselines"}
        | None, "baselines": {"invested", "cash"} | None}`` (the study's constant-policy
        values on its folds, :mod:`trainers.study_db.baselines`).

    Raises:
        trainers.study_db.StudyDBError: unusable storage URL or a missing SQLite file.
        sqlalchemy.exc.SQLAlchemyError: the storage cannot be reached.
    """
    engine = open_engine(url)
    with engine.connect() as con:
        row = find_study(con, study)
        if row is None:
            return {
                "study": study,
                "exists": False,
                "trials": {},
                "trials_per_hour": 0.0,
                "best": None,
                "baselines": None,
            }
        counts = state_counts(con, row)
        recorded = study_baselines(con, row)
        now = datetime.now(UTC)
        last_hour = ended_between(con, row, now - timedelta(hours=1), now).get("COMPLETE", 0)
    top = rank_trials(engine, study, 1)
    best = None
    if top:
        attrs = {k: top[0].user_attrs[k] for k in ("vin", "grade") if k in top[0].user_attrs}
        best = {"number": top[0].number, "value": top[0].value, **attrs}
    baselines = None if recorded is None else recorded.values()
    if best is not None:
        best["beats_baselines"] = beats_baselines(best["value"], baselines)
    return {
        "study": study,
        "exists": True,
        "trials": counts,
        "trials_per_hour": float(last_hour),
        "best": best,
        "baselines": baselines,
    }

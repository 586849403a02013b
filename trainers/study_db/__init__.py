"""The one reader of Optuna's RDB tables (SQLite and PostgreSQL), for everything that
reads a study without loading it: selection, archive, monitor, cleanup, status, report,
dashboard and preflight. Modelled on Optuna's own ``optuna/storages/_rdb``.

* :mod:`~trainers.study_db.engine`: the engine (the one place product code creates one
  over Optuna's tables), the study lookup, state names, user attributes.
* :mod:`~trainers.study_db.ranking`: direction-aware ranking of COMPLETE trials.
* :mod:`~trainers.study_db.stats`: state counts, throughput, best-value progression,
  recent outcome rates, stagnation.

Writing a study (creating it, asking and telling trials) stays with Optuna's
``RDBStorage`` (:mod:`trainers.storage`).
"""

from trainers.study_db.engine import (
    ENDED_STATES,
    FINISHED_STATES,
    StudyDBError,
    StudyRow,
    find_study,
    open_engine,
    require_study,
)
from trainers.study_db.ranking import (
    RankedTrial,
    best_trial,
    complete_attr,
    count_ranked,
    iter_ranked,
    rank_trials,
    trial_by_number,
)
from trainers.study_db.stats import (
    best_progression,
    best_summary,
    complete_after,
    ended_between,
    recent_outcomes,
    state_counts,
)

__all__ = [
    "ENDED_STATES",
    "FINISHED_STATES",
    "RankedTrial",
    "StudyDBError",
    "StudyRow",
    "best_progression",
    "best_summary",
    "best_trial",
    "complete_after",
    "complete_attr",
    "count_ranked",
    "ended_between",
    "find_study",
    "iter_ranked",
    "open_engine",
    "rank_trials",
    "recent_outcomes",
    "require_study",
    "state_counts",
    "trial_by_number",
]

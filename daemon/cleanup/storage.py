"""The cleanup's view of the study storage: which trial each reference (manifest, slot,
archive) names, read through :mod:`trainers.study_db` (the one reader of Optuna's tables)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from daemon.cleanup.references import References
from daemon.cleanup.result import CleanupError
from trainers.study_db import StudyDBError, open_engine
from trainers.study_db.lookup import TrialLookup


@contextmanager
def lookup(storage: str, keep_top: int = 1) -> Iterator[TrialLookup]:
    """A :class:`~trainers.study_db.lookup.TrialLookup` on an open connection.

    Raises:
        CleanupError: an unusable storage URL, a missing SQLite file (never created), or
            an unreachable database; nothing was removed.
    """
    try:
        with open_engine(storage).connect() as conn:
            yield TrialLookup(conn, keep_top)
    except StudyDBError as exc:
        raise CleanupError(f"{exc}; nothing was removed") from None
    except sa.exc.SQLAlchemyError as exc:
        raise CleanupError(
            f"storage: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]}); nothing was removed"
        ) from None


def referenced_trial_ids(db: TrialLookup, refs: References) -> dict[int, str]:
    """Trial ids referenced directly, by (study, number), by actor sha256 or by VIN, each
    with where the reference came from."""
    out = dict(refs.trial_ids)
    for (study, number), where in refs.numbers.items():
        for trial in db.trials_by_number(study, [number]).values():
            out.setdefault(trial.trial_id, where)
    for key, wanted in (("actor_sha256", refs.sha256), ("vin", refs.vins)):
        for tid, value in db.trials_with_attr(key, list(wanted)).items():
            out.setdefault(tid, wanted[value])
    return out

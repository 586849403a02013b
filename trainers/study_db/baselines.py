"""The study's constant-policy baselines, as :mod:`trainers.fold_baselines` records them in
the study user attribute :data:`FOLD_BASELINES_ATTR`, read from Optuna's
``study_user_attributes`` table (for the monitor, the dashboard, the report and
``cappuccino models info``; nothing here loads the study or imports the trainer).

The attribute's schema (JSON)::

    {"schema": 1,
     "key": {"data_fingerprint", "mode", "costs": {...}, "bars_per_year", "folds": [...]},
     "computed_at": UTC ISO 8601,
     "bars_per_year": int,
     "baselines": {"invested" | "cash": {"label", "score", "value",
                   "folds": [{"fold", "excess_sharpe", "sharpe", "benchmark_sharpe",
                              "total_return"}, ...]}},
     "zero_action": {"label", "action_scheme", "value", "by_interval": {"<k>": value}}}

``zero_action`` (absent from records written before it existed) is where the study's design
starts, an untrained agent (:func:`trainers.fold_baselines.zero_action_record`): a reference
shown next to the baselines, not part of the verdict.

``value`` is the objective formula of a trial (``mean - 0.1 * std`` of the per-fold
excess Sharpe ratios, :func:`trainers.objective.objective_value`) on the same folds and
execution model, so it compares directly with trial values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from trainers.naming import BASELINE_LABELS, ZERO_ACTION_LABEL
from trainers.study_db.engine import StudyRow, db_error, require_study, study_user_attrs

FOLD_BASELINES_ATTR = "fold_baselines"
BASELINE_NAMES: tuple[str, ...] = ("invested", "cash")
"""``invested``: constant score +1 on every asset (fully invested within the cash reserve);
``cash``: constant score -1 (never holds a position)."""


@dataclass(frozen=True)
class StudyBaselines:
    """The objective values of the constant policies on a study's folds.

    Attributes:
        invested: value of the always fully invested policy.
        cash: value of the always-in-cash policy.
        n_folds: folds they were computed on.
        computed_at: when (UTC, ISO 8601), or None when not recorded.
        zero_action: value of the design's zero action (the untrained start), or None
            when not recorded: the best over the study's decision intervals, or the one of
            :meth:`at_interval`.
        zero_action_by_interval: the untrained start per decision interval (bars), empty
            for records written before it.
        zero_action_interval: the interval ``zero_action`` is for, None for the best of them.
    """

    invested: float
    cash: float
    n_folds: int
    computed_at: str | None
    zero_action: float | None = None
    zero_action_by_interval: dict[int, float] = field(default_factory=dict, compare=False)
    zero_action_interval: int | None = None

    def at_interval(self, interval: int) -> StudyBaselines:
        """These baselines with the untrained start of a model deciding every ``interval``
        bars (its bundle's ``action_spec.decision_interval``): that interval's value, None
        when the record has values per interval but not this one; unchanged for a record
        without values per interval."""
        if not self.zero_action_by_interval:
            return self
        start = self.zero_action_by_interval.get(int(interval))
        return replace(self, zero_action=start, zero_action_interval=int(interval))

    def values(self) -> dict[str, float]:
        """``{"invested": value, "cash": value}`` (what :mod:`trainers.naming` compares)."""
        return {"invested": self.invested, "cash": self.cash}

    @property
    def best(self) -> float:
        """The better of the two values (a trial must exceed it to beat both)."""
        return max(self.invested, self.cash)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"invested", "cash", "n_folds", "computed_at", "zero_action"}``, and
        ``"zero_action_interval"`` when the start is one interval's (:meth:`at_interval`)."""
        figures = {"n_folds": self.n_folds, "computed_at": self.computed_at, "zero_action": self.zero_action}
        if self.zero_action_interval is not None:
            figures["zero_action_interval"] = self.zero_action_interval
        return {**self.values(), **figures}


def baseline_values(figures: Any) -> dict[str, float] | None:
    """``{"invested", "cash"}`` values from :meth:`StudyBaselines.as_dict` figures (as the
    monitor and the dashboard pass them on); None when absent or incomplete."""
    if not isinstance(figures, dict):
        return None
    values = {k: figures.get(k) for k in BASELINE_NAMES}
    if not all(_finite(v) for v in values.values()):
        return None
    return {k: float(v) for k, v in values.items()}  # type: ignore[arg-type]


def parse_baselines(record: Any) -> StudyBaselines | None:
    """The values of a recorded :data:`FOLD_BASELINES_ATTR`; None when it is absent or not
    of the schema above (a finite ``value`` for both baselines)."""
    if not isinstance(record, dict) or not isinstance(record.get("baselines"), dict):
        return None
    found: dict[str, float] = {}
    n_folds = 0
    for name in BASELINE_NAMES:
        entry = record["baselines"].get(name)
        value = entry.get("value") if isinstance(entry, dict) else None
        if not _finite(value):
            return None
        found[name] = float(value)
        folds = entry.get("folds")
        n_folds = len(folds) if isinstance(folds, list) else 0
    at = record.get("computed_at")
    zero = record.get("zero_action")
    start = zero.get("value") if isinstance(zero, dict) else None
    if not _finite(start):
        start = None
    by_interval = zero.get("by_interval") if isinstance(zero, dict) else None
    per_interval = {
        int(k): float(v)
        for k, v in (by_interval.items() if isinstance(by_interval, dict) else [])
        if str(k).isdigit() and _finite(v)
    }
    at = at if isinstance(at, str) else None
    return StudyBaselines(found["invested"], found["cash"], n_folds, at, start, per_interval)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def zero_action_value(figures: Any) -> float | None:
    """The untrained start's value from :meth:`StudyBaselines.as_dict` figures; None when
    absent."""
    value = figures.get("zero_action") if isinstance(figures, dict) else None
    return float(value) if _finite(value) else None


def vs_baselines_line(head: str, figures: Any) -> str | None:
    """The ``vs baselines`` row of ``models info`` and the dashboard: ``"<head> · always
    invested Y · always in cash Z · untrained start W (same n folds and costs)"`` from
    :meth:`StudyBaselines.as_dict` figures (the untrained start only when recorded, with
    ``(k-bar interval)`` when it is one interval's); None when the baselines are not recorded."""
    values = baseline_values(figures)
    if values is None:
        return None
    parts = [head] if head else []
    parts += [f"{BASELINE_LABELS[k]} {v:.4f}" for k, v in values.items()]
    start = zero_action_value(figures)
    if start is not None:
        interval = figures.get("zero_action_interval")
        label = ZERO_ACTION_LABEL + (f" ({interval}-bar interval)" if isinstance(interval, int) else "")
        parts.append(f"{label} {start:.4f}")
    return " · ".join(parts) + f" (same {figures.get('n_folds')} folds and costs)"


def study_baselines(conn: sa.Connection, study: StudyRow) -> StudyBaselines | None:
    """The study's recorded baselines (one query), None when it has none yet."""
    attrs = study_user_attrs(conn, study, (FOLD_BASELINES_ATTR,))
    return parse_baselines(attrs.get(FOLD_BASELINES_ATTR))


def read_study_baselines(engine: Engine, study: str) -> StudyBaselines | None:
    """:func:`study_baselines` of a study by name.

    Raises:
        StudyDBError: unknown study, several objectives, or a database error.
    """
    try:
        with engine.connect() as conn:
            return study_baselines(conn, require_study(conn, study))
    except sa.exc.SQLAlchemyError as exc:
        raise db_error(engine, study, exc) from None

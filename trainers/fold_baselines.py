"""What a trial value must beat: the objective value of two constant policies on the
study's own walk-forward folds.

* ``invested``: the score +1 on every asset at every bar, i.e. fully invested within the
  cash reserve (``(1 - min_cash) / n_assets`` of each asset, capped at ``max_weight``;
  :func:`trainers.accounting.action_to_weights`), rebalanced back to that target whenever
  a weight drifts by ``min_trade`` or more, and subject to the trailing stop, exactly as an
  agent that always answers +1.
* ``cash``: the score -1 everywhere: never holds a position. Its equity curve is flat, so
  its Sharpe ratio is 0 and its excess Sharpe on a fold is minus the equal-weight
  benchmark's Sharpe ratio: in falling folds cash *gains* (this is the objective's known
  bias; README "What the trial value means").

Both run through :func:`trainers.backtest.run_decisions` (the loop that backtests every
trained actor) on each fold's test slice with the study's :class:`~trainers.accounting.Costs`,
and get a value by :func:`trainers.objective.objective_value` (``mean - 0.1 * std`` of the
per-fold excess Sharpe ratios), so the values compare directly with trial values. Unlike
:mod:`trainers.baselines` (the deployer's evaluation baselines), the trailing stop applies:
this is the agent's own execution.

Beside them the record holds a reference that is not part of the verdict: the **zero
action** of the study's design (:func:`zero_action_folds`), where an untrained agent starts.
Under the default softmax action that is equal weights over the assets and cash, rebalanced
at each decision bar, which on rising folds already scores far above always in cash and, with
a 24-bar interval, above always invested too: a value above both constants is no evidence
of learning unless it is also above this one.

The result is cached in the study user attribute
:data:`trainers.study_db.baselines.FOLD_BASELINES_ATTR` (schema in
:mod:`trainers.study_db.baselines`), computed once per study by the first worker
(:func:`ensure_fold_baselines`) and recomputed only when what determines it changes: the
study bars' data fingerprint, the walk-forward mode and fold bounds, the costs, the
annualisation and the design's action scheme and decision intervals.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import optuna

from trainers.accounting import action_dim
from trainers.backtest import decision_bars, run_decisions
from trainers.data import BARS_PER_YEAR
from trainers.design import Design
from trainers.naming import BASELINE_LABELS, ZERO_ACTION_LABEL
from trainers.objective import StudyData, TrainingConfig, objective_value
from trainers.study_db.baselines import BASELINE_NAMES, FOLD_BASELINES_ATTR

SCHEMA_VERSION = 1
CONSTANT_SCORES: dict[str, float] = {"invested": 1.0, "cash": -1.0}
"""The score each constant policy gives every asset at every bar (see the module docstring)."""

assert tuple(CONSTANT_SCORES) == BASELINE_NAMES


def _bars_per_year(data: StudyData, config: TrainingConfig) -> int:
    """The annualisation of the study's Sharpe ratios: the training config's
    ``bars_per_year`` where it sets one, else the panel's, else
    :data:`trainers.data.BARS_PER_YEAR` (8,760 hourly bars a year)."""
    for source in (config, data.panel):
        value = getattr(source, "bars_per_year", None)
        if isinstance(value, int) and value > 0:
            return value
    return BARS_PER_YEAR


def baselines_key(data: StudyData, config: TrainingConfig) -> dict[str, Any]:
    """What determines the baselines, as JSON values: ``{"data_fingerprint", "mode",
    "costs", "bars_per_year", "folds": [Fold.as_dict(), ...], "design": {"action_scheme",
    "decision_intervals"}}`` (the design decides the zero action, :func:`zero_action_record`)."""
    key = {
        "data_fingerprint": data.fingerprint,
        "mode": config.mode,
        "costs": config.costs.as_dict(),
        "bars_per_year": _bars_per_year(data, config),
        "folds": [f.as_dict() for f in data.folds],
        "design": {
            "action_scheme": config.design.action_scheme,
            "decision_intervals": sorted(int(k) for k in config.design.decision_intervals),
        },
    }
    return json.loads(json.dumps(key))  # the form it takes once stored (lists, floats)


def _policy_folds(
    data: StudyData,
    config: TrainingConfig,
    action: np.ndarray,
    action_scheme: str = "scores",
    decision_interval: int = 1,
) -> tuple[list[dict[str, Any]], float]:
    """One constant ``action`` ``(1, action_dim)`` on every fold's test slice, decided every
    ``decision_interval`` bars: ``(per-fold figures, objective value)``."""
    bars_per_year = _bars_per_year(data, config)
    decide = decision_bars(data.panel.timestamps, data.panel.bar_seconds, decision_interval)
    folds = []
    for fold in data.folds:
        result = run_decisions(
            lambda _t, _w, a=action: a,
            data.panel.prices,
            fold.test_start,
            fold.test_stop,
            config.costs,
            bars_per_year,
            action_scheme,
            decide,
        )
        folds.append(
            {
                "fold": fold.index,
                "excess_sharpe": result.excess_sharpe,
                "sharpe": result.metrics.sharpe,
                "benchmark_sharpe": result.benchmark.sharpe,
                "total_return": result.metrics.total_return,
            }
        )
    return folds, objective_value([f["excess_sharpe"] for f in folds])


def constant_policy_folds(data: StudyData, config: TrainingConfig) -> dict[str, dict[str, Any]]:
    """Run both constant policies on every fold's test slice.

    Args:
        data: the study's bars and folds (features are not used: a constant needs none).
        config: the study's training settings (``costs``, annualisation).

    Returns:
        ``{"invested" | "cash": {"label", "score", "value", "folds": [{"fold",
        "excess_sharpe", "sharpe", "benchmark_sharpe", "total_return"}, ...]}}``:
        Sharpe ratios annualised, returns as fractions, ``value`` =
        :func:`trainers.objective.objective_value` of the folds' excess Sharpe ratios.

    Raises:
        ValueError: a fold's test slice is shorter than 2 bars.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, score in CONSTANT_SCORES.items():
        folds, value = _policy_folds(data, config, np.full((1, data.panel.n_assets), score))
        out[name] = {"label": BASELINE_LABELS[name], "score": score, "value": value, "folds": folds}
    return out


def zero_action_folds(data: StudyData, config: TrainingConfig, design: Design) -> dict[str, Any]:
    """Where an agent of ``design`` starts: the zero action at every decision bar, run on
    every fold's test slice like a trained actor (its action scheme and decision interval,
    the study's costs). An untrained policy's deterministic action is about 0, so a trial
    value at or below this one means training added nothing to the starting point. (PPO's
    and A2C's action head is initialised orthogonally with gain 0.01 by Stable-Baselines3;
    SAC's and TD3's actors use PyTorch's default initialisation, so they start only near it.)
    Under ``softmax`` the zero action is equal weights over the assets and cash,
    ``1 / (n_assets + 1)`` each, rebalanced at decision bars (Jiang, Xu & Liang 2017);
    under ``scores`` it is no position (the same as always in cash).

    This is a reference for reading trial values, recorded beside the baselines
    (:func:`zero_action_record`), not one of the two constant policies that the "beats
    both" verdict uses.

    Args:
        data: the study's bars and folds.
        config: the study's training settings (``costs``, annualisation).
        design: the agent design (``action_scheme``, ``decision_interval``).

    Returns:
        ``{"value", "action_scheme", "decision_interval", "folds": [...]}`` with the folds
        as in :func:`constant_policy_folds`.

    Raises:
        ValueError: a fold's test slice is shorter than 2 bars, or an unknown scheme.
    """
    action = np.zeros((1, action_dim(design.action_scheme, data.panel.n_assets)))
    folds, value = _policy_folds(data, config, action, design.action_scheme, design.decision_interval)
    return {
        "value": value,
        "action_scheme": design.action_scheme,
        "decision_interval": design.decision_interval,
        "folds": folds,
    }


def zero_action_record(data: StudyData, config: TrainingConfig) -> dict[str, Any]:
    """The zero action (:func:`zero_action_folds`) for each decision interval the study
    allows (``config.design``): ``{"label", "action_scheme", "value", "by_interval":
    {"<k>": value}}``, ``value`` the best of them (where the best-placed untrained agent of
    the study starts).

    Raises:
        ValueError: a fold's test slice is shorter than 2 bars.
    """
    scheme = config.design.action_scheme
    by_interval = {}
    for k in sorted(int(k) for k in config.design.decision_intervals):
        by_interval[str(k)] = zero_action_folds(data, config, Design(scheme, k))["value"]
    return {
        "label": ZERO_ACTION_LABEL,
        "action_scheme": scheme,
        "value": max(by_interval.values()),
        "by_interval": by_interval,
    }


def baselines_record(data: StudyData, config: TrainingConfig, now: datetime | None = None) -> dict[str, Any]:
    """The study attribute's value (schema in :mod:`trainers.study_db.baselines`)."""
    return {
        "schema": SCHEMA_VERSION,
        "key": baselines_key(data, config),
        "computed_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "bars_per_year": _bars_per_year(data, config),
        "baselines": constant_policy_folds(data, config),
        "zero_action": zero_action_record(data, config),
    }


def ensure_fold_baselines(
    study: optuna.Study, data: StudyData, config: TrainingConfig, now: datetime | None = None
) -> tuple[dict[str, Any], bool]:
    """The study's baselines: the recorded ones when their key matches ``data`` and
    ``config``, else computed now and recorded (overwriting a record of another key).
    Workers starting together may each compute and write the same record: harmless.

    Returns:
        ``(record, computed)``: ``computed`` is False when the recorded one was reused.

    Raises:
        optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError: the
            storage cannot be written.
    """
    recorded = study.user_attrs.get(FOLD_BASELINES_ATTR)
    key = baselines_key(data, config)
    if (
        isinstance(recorded, dict)
        and recorded.get("schema") == SCHEMA_VERSION
        and recorded.get("key") == key
        and isinstance(recorded.get("baselines"), dict)
    ):
        return recorded, False
    record = baselines_record(data, config, now)
    study.set_user_attr(FOLD_BASELINES_ATTR, record)
    return record, True

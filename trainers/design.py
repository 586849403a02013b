"""The agent design of a trial: how its actions map to weights, how often it decides and
what reward it learns from.

A study fixes the choices (:class:`DesignOptions`, part of its training configuration);
where it allows several values of one item (decision intervals, rewards), the item becomes
a searched parameter of each trial. What a trial used is recorded in its bundle
(``model.json``'s ``action_spec`` and ``design``) and honoured identically by the training
environment, every backtest, ``cappuccino evaluate`` and the paper trader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from trainers.accounting import ACTION_SCHEMES
from trainers.algorithms import ALGORITHMS
from trainers.features import DEFAULT_FEATURE_SET, feature_set_names

REWARDS: tuple[str, ...] = ("log_return", "excess_log_return", "differential_sharpe")
"""The rewards an agent can learn from (defined in :mod:`trainers.env`)."""
DEFAULT_ACTION_SCHEME = "softmax"
RECOMMENDED_DECISION_INTERVALS: tuple[int, ...] = (24,)
RECOMMENDED_REWARDS: tuple[str, ...] = ("excess_log_return",)
"""What a study started from the command line or the supervisor's configuration uses unless
told otherwise: chosen on the walk-forward folds and the validation window of
``bench/model_quality.py`` (README "How good is a model?"). The dataclass defaults below stay
neutral (every bar, log return) for library callers and tests."""
DEFAULT_DECISION_INTERVALS: tuple[int, ...] = (1,)
DEFAULT_REWARDS: tuple[str, ...] = ("log_return",)
DEFAULT_ALGORITHMS: tuple[str, ...] = ("ppo",)
DEFAULT_PREDICTOR_HORIZONS: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class DesignOptions:
    """What a study allows (not searched when one value is given).

    Attributes:
        action_scheme: :data:`trainers.accounting.ACTION_SCHEMES` (``softmax``: portfolio
            weights over the assets and cash; ``scores``: one score per asset, <= 0 flat).
        decision_intervals: bars between decisions, searched when several.
        rewards: :data:`REWARDS`, searched when several.
        turnover_penalty: reward subtracted per unit of turnover (>= 0).
        algorithms: :data:`trainers.algorithms.ALGORITHMS`, searched when several.
        predictor_horizons: horizons (bars) of the supervised GRU predictor channel
            (:mod:`trainers.predictor`); 0 = no predictor; searched when several.
        feature_set: the features every trial observes, a set of
            :data:`trainers.features.FEATURE_SETS` (``base``: windows of at most 48 bars;
            ``long``: also weeks). One per study, never searched: an ensemble's members share it.

    Raises:
        ValueError: an unknown scheme, reward, algorithm or feature set, an interval < 1,
            an empty choice, a negative penalty or horizon; the message names the option.
    """

    action_scheme: str = DEFAULT_ACTION_SCHEME
    decision_intervals: tuple[int, ...] = DEFAULT_DECISION_INTERVALS
    rewards: tuple[str, ...] = DEFAULT_REWARDS
    turnover_penalty: float = 0.0
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    predictor_horizons: tuple[int, ...] = DEFAULT_PREDICTOR_HORIZONS
    feature_set: str = DEFAULT_FEATURE_SET

    def __post_init__(self) -> None:
        feature_set_names(self.feature_set)
        if self.action_scheme not in ACTION_SCHEMES:
            known = ", ".join(ACTION_SCHEMES)
            raise ValueError(f"action_scheme: {self.action_scheme!r} is not one of {known}")
        if not self.decision_intervals or any(int(k) < 1 for k in self.decision_intervals):
            raise ValueError(f"decision_intervals: {list(self.decision_intervals)} must be bars >= 1")
        bad = [r for r in self.rewards if r not in REWARDS]
        if not self.rewards or bad:
            raise ValueError(f"rewards: {bad or 'none'} not among {', '.join(REWARDS)}")
        if not self.turnover_penalty >= 0.0:
            raise ValueError(f"turnover_penalty: {self.turnover_penalty} must be >= 0")
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if not self.algorithms or unknown:
            raise ValueError(f"algorithms: {unknown or 'none'} not among {', '.join(ALGORITHMS)}")
        if not self.predictor_horizons or any(int(h) < 0 for h in self.predictor_horizons):
            raise ValueError(
                f"predictor_horizons: {list(self.predictor_horizons)} must be bars >= 0 (0 = none)"
            )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"decision_intervals": list(self.decision_intervals), "rewards": list(self.rewards)}
        out |= {"algorithms": list(self.algorithms)}
        return {**out, "predictor_horizons": list(self.predictor_horizons)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DesignOptions:
        """Options from :meth:`as_dict` (missing keys take their defaults).

        Raises:
            ValueError: as the constructor.
        """
        return cls(
            action_scheme=str(data.get("action_scheme", DEFAULT_ACTION_SCHEME)),
            decision_intervals=tuple(
                int(k) for k in data.get("decision_intervals", DEFAULT_DECISION_INTERVALS)
            ),
            rewards=tuple(str(r) for r in data.get("rewards", DEFAULT_REWARDS)),
            turnover_penalty=float(data.get("turnover_penalty", 0.0)),
            algorithms=tuple(str(a) for a in data.get("algorithms", DEFAULT_ALGORITHMS)),
            predictor_horizons=tuple(
                int(h) for h in data.get("predictor_horizons", DEFAULT_PREDICTOR_HORIZONS)
            ),
            feature_set=str(data.get("feature_set", DEFAULT_FEATURE_SET)),
        )


@dataclass(frozen=True)
class Design:
    """One trial's design: what :class:`trainers.env.PortfolioCore` takes, the algorithm, the
    horizon of its predictor channel (0 = none, :mod:`trainers.predictor`) and its feature
    set (:data:`trainers.features.FEATURE_SETS`)."""

    action_scheme: str = DEFAULT_ACTION_SCHEME
    decision_interval: int = 1
    reward: str = "log_return"
    turnover_penalty: float = 0.0
    algorithm: str = "ppo"
    predictor_horizon: int = 0
    feature_set: str = DEFAULT_FEATURE_SET

    def env_kwargs(self) -> dict[str, Any]:
        """What the environment takes (all but the algorithm, the predictor and the features)."""
        skip = ("algorithm", "predictor_horizon", "feature_set")
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Design:
        """The design recorded in a bundle's ``model.json`` (bundles before schema version 3
        acted with scores at every bar; bundles before feature sets observed ``base``)."""
        spec = meta.get("action_spec") if isinstance(meta.get("action_spec"), dict) else {}
        design = meta.get("design") if isinstance(meta.get("design"), dict) else {}
        return cls(
            action_scheme=str(spec.get("scheme", "scores")),
            decision_interval=int(spec.get("decision_interval", 1)),
            reward=str(design.get("reward", "log_return")),
            turnover_penalty=float(design.get("turnover_penalty", 0.0)),
            algorithm=str(meta.get("algorithm") or "PPO").lower(),
            predictor_horizon=int(design.get("predictor_horizon", 0)),
            feature_set=str(design.get("feature_set", DEFAULT_FEATURE_SET)),
        )


def suggest_design(trial: optuna.Trial, options: DesignOptions) -> Design:
    """The trial's design: fixed items from ``options``, the others sampled."""
    intervals = list(options.decision_intervals)
    rewards = list(options.rewards)
    algorithms = list(options.algorithms)
    horizons = [int(h) for h in options.predictor_horizons]
    return Design(
        action_scheme=options.action_scheme,
        decision_interval=intervals[0]
        if len(intervals) == 1
        else int(trial.suggest_categorical("decision_interval", intervals)),
        reward=rewards[0] if len(rewards) == 1 else str(trial.suggest_categorical("reward", rewards)),
        turnover_penalty=options.turnover_penalty,
        algorithm=algorithms[0]
        if len(algorithms) == 1
        else str(trial.suggest_categorical("algorithm", algorithms)),
        predictor_horizon=horizons[0]
        if len(horizons) == 1
        else int(trial.suggest_categorical("predictor_horizon", horizons)),
        feature_set=options.feature_set,
    )

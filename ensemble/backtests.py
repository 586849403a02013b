"""Backtests of trained models on a dataset's bars, each with its own execution model: one
bundle (the deployer's gate, ``evaluate --trial / --deployment / --archive``) or a whole
ensemble as the paper trader runs it (``evaluate --ensemble``).

Both go through :func:`trainers.backtest.run_decisions`, the one loop the fold evaluation
also uses, so a model scores the same bars the same way wherever it is judged. Features
are computed over the whole panel (so the first decision has a full lookback window of
history) and normalised with each bundle's stored statistics; decisions at bar ``t`` use
bars ``<= t`` only.
"""

from __future__ import annotations

import numpy as np

from ensemble.policy import EnsemblePolicy
from trainers.accounting import Costs
from trainers.backtest import BacktestResult, backtest, decision_bars, run_decisions
from trainers.bundle import Bundle, bundle_costs, to_numpy_policy, trained_bar_seconds
from trainers.data import BARS_PER_YEAR


def study_bars_per_year(bundle: Bundle) -> int:
    """The bars per year a bundle's study annualised with (``model.json`` training record;
    hourly 24/7 bars, 8,760, for bundles that predate the record)."""
    value = bundle.meta.get("training", {}).get("bars_per_year")
    return int(value) if isinstance(value, (int, float)) and value > 0 else BARS_PER_YEAR


def _decide(bundle: Bundle, interval: int, timestamps: np.ndarray | None) -> np.ndarray | None:
    """The decision bars of a model deciding every ``interval`` bars
    (:func:`trainers.backtest.decision_bars`; None: every bar).

    Raises:
        ValueError: ``interval > 1`` and no timestamps to place the decisions on.
    """
    if interval <= 1:
        return None
    if timestamps is None:
        raise ValueError(f"a model deciding every {interval} bars needs the bars' timestamps")
    bar_seconds = trained_bar_seconds(bundle.meta)
    if bar_seconds is None:
        steps = np.diff(np.asarray(timestamps).astype("datetime64[s]").astype(np.int64))
        bar_seconds = int(np.median(steps))
    return decision_bars(timestamps, bar_seconds, interval)


def bundle_backtest(
    bundle: Bundle,
    prices: np.ndarray,
    raw_features: np.ndarray,
    start: int,
    stop: int,
    costs: Costs | None = None,
    bars_per_year: int | None = None,
    timestamps: np.ndarray | None = None,
) -> BacktestResult:
    """One bundle's deterministic actor over bars ``[start, stop)``.

    Args:
        bundle: a verified bundle.
        prices: ``(T, n_assets, 5)`` OHLCV of the whole panel.
        raw_features: ``(T, n_assets, n_features)`` :func:`trainers.features.compute_features`
            of ``prices``.
        start, stop: the window; ``start >= history_bars - 1`` (the lookback, plus a
            predictor's sequence less one, :attr:`trainers.bundle.ObservationSpec.history_bars`).
        costs: the execution model (None: the bundle's own).
        bars_per_year: annualisation of the Sharpe ratio (None: the bundle's study's,
            :func:`bars_per_year`).
        timestamps: ``(T,)`` bar times of the panel; needed by a model that decides every
            ``k > 1`` bars (it then trades at :func:`trainers.backtest.decision_bars` only).

    Raises:
        trainers.bundle.BundleError: the bundle records no valid costs.
        ValueError: the window is too short or starts before a full lookback window, or a
            decision interval without timestamps.
        FloatingPointError: the actor produced a non-finite action.
    """
    costs = costs or bundle_costs(bundle.meta, str(bundle.path))
    history = bundle.spec.history_bars  # the lookback, plus a predictor's sequence less one
    if start < history - 1:
        raise ValueError(f"cannot backtest [{start}, {stop}): the model needs {history} bars of history")
    features = bundle.observation_features(raw_features)
    policy = to_numpy_policy(bundle.actor)
    per_year = bars_per_year or study_bars_per_year(bundle)
    design = bundle.design
    decide = _decide(bundle, design.decision_interval, timestamps)
    lookback = bundle.spec.lookback
    return backtest(
        policy, features, prices, start, stop, lookback, costs, per_year, design.action_scheme, decide
    )


def ensemble_backtest(
    policy: EnsemblePolicy,
    prices: np.ndarray,
    raw_features: np.ndarray,
    start: int,
    stop: int,
    costs: Costs | None = None,
    bars_per_year: int | None = None,
    timestamps: np.ndarray | None = None,
) -> BacktestResult:
    """An ensemble over bars ``[start, stop)``, deciding as the paper trader does
    (:meth:`ensemble.policy.EnsemblePolicy.act` on the last ``max_lookback`` bars of raw
    features and the current weights).

    Args:
        policy: the ensemble.
        prices, raw_features, start, stop, bars_per_year, timestamps: as
            :func:`bundle_backtest`.
        costs: the execution model (None: the members' one, ``policy.costs``).

    Raises:
        ValueError: the window is too short or starts before ``max_lookback - 1``.
        FloatingPointError: a non-finite action.
    """
    lookback = policy.max_lookback
    if start < lookback - 1:
        raise ValueError(f"cannot backtest [{start}, {stop}) with lookback {lookback}")

    def act(t: int, weights: np.ndarray) -> np.ndarray:
        return policy.act(raw_features[t - lookback + 1 : t + 1], weights[0])

    per_year = bars_per_year or study_bars_per_year(policy.bundles[0])
    decide = _decide(policy.bundles[0], policy.decision_interval, timestamps)
    costs = costs or policy.costs
    return run_decisions(act, prices, start, stop, costs, per_year, policy.action_scheme, decide)

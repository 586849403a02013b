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
from trainers.backtest import BacktestResult, backtest, run_decisions
from trainers.bundle import Bundle, bundle_costs, to_numpy_policy
from trainers.data import BARS_PER_YEAR


def study_bars_per_year(bundle: Bundle) -> int:
    """The bars per year a bundle's study annualised with (``model.json`` training record;
    hourly 24/7 bars, 8,760, for bundles that predate the record)."""
    value = bundle.meta.get("training", {}).get("bars_per_year")
    return int(value) if isinstance(value, (int, float)) and value > 0 else BARS_PER_YEAR


def bundle_backtest(
    bundle: Bundle,
    prices: np.ndarray,
    raw_features: np.ndarray,
    start: int,
    stop: int,
    costs: Costs | None = None,
    bars_per_year: int | None = None,
) -> BacktestResult:
    """One bundle's deterministic actor over bars ``[start, stop)``.

    Args:
        bundle: a verified bundle.
        prices: ``(T, n_assets, 5)`` OHLCV of the whole panel.
        raw_features: ``(T, n_assets, n_features)`` :func:`trainers.features.compute_features`
            of ``prices``.
        start, stop: the window; ``start >= lookback - 1``.
        costs: the execution model (None: the bundle's own).
        bars_per_year: annualisation of the Sharpe ratio (None: the bundle's study's,
            :func:`bars_per_year`).

    Raises:
        trainers.bundle.BundleError: the bundle records no valid costs.
        ValueError: the window is too short or starts before a full lookback window.
        FloatingPointError: the actor produced a non-finite action.
    """
    costs = costs or bundle_costs(bundle.meta, str(bundle.path))
    features = bundle.spec.norm.apply(raw_features)
    policy = to_numpy_policy(bundle.actor)
    per_year = bars_per_year or study_bars_per_year(bundle)
    return backtest(policy, features, prices, start, stop, bundle.spec.lookback, costs, per_year)


def ensemble_backtest(
    policy: EnsemblePolicy,
    prices: np.ndarray,
    raw_features: np.ndarray,
    start: int,
    stop: int,
    costs: Costs | None = None,
    bars_per_year: int | None = None,
) -> BacktestResult:
    """An ensemble over bars ``[start, stop)``, deciding as the paper trader does
    (:meth:`ensemble.policy.EnsemblePolicy.act` on the last ``max_lookback`` bars of raw
    features and the current weights).

    Args:
        policy: the ensemble.
        prices, raw_features, start, stop, bars_per_year: as :func:`bundle_backtest`.
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
    return run_decisions(act, prices, start, stop, costs or policy.costs, per_year)

"""The one backtest routine: the objective's fold evaluation, the deployer's hold-out gate
and the simulated broker's reports all use it.

Metrics (all fractions, not percent):
    * equity: ``(n_bars,)`` portfolio value at each bar's close, starting at 1.0.
    * total return: ``equity[-1] / equity[0] - 1``.
    * Sharpe ratio: annualised, ``mean(r) / std(r) * sqrt(bars_per_year)`` of the simple
      per-bar returns ``r`` with a zero risk-free rate (Sharpe 1966; annualisation by
      ``sqrt(q)`` as in Lo 2002, "The Statistics of Sharpe Ratios"); 0 when ``std(r) == 0``.
      Hourly crypto bars: ``bars_per_year = 8760``.
    * maximum drawdown: ``max_t (1 - equity[t] / max_{s<=t} equity[s])``.
    * turnover: sum over bars of ``sum |target - w|``, i.e. traded notional over value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from trainers.accounting import (
    Costs,
    action_to_weights,
    apply_trailing_stop,
    drifted_weights,
    rebalance_step,
    update_hwm,
)
from trainers.data import BARS_PER_YEAR
from trainers.observation import build_observations

PolicyFn = Callable[[np.ndarray], np.ndarray]
"""Maps observations ``(n, obs_dim)`` float32 to actions ``(n, action_dim)`` in [-1, 1]."""


@dataclass(frozen=True)
class Metrics:
    """Summary of one equity curve (see the module docstring for definitions)."""

    total_return: float
    sharpe: float
    max_drawdown: float
    turnover: float
    n_bars: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class BacktestResult:
    """Agent and equal-weight buy-and-hold benchmark on the same bars.

    ``equity`` and ``benchmark_equity`` are ``(n_steps + 1,)``; ``weights`` is
    ``(n_steps + 1, n_assets)`` (weights at each close).
    """

    equity: np.ndarray
    weights: np.ndarray
    metrics: Metrics
    benchmark_equity: np.ndarray
    benchmark: Metrics
    bars_per_year: int

    @property
    def excess_sharpe(self) -> float:
        """Agent Sharpe minus benchmark Sharpe (both annualised)."""
        return self.metrics.sharpe - self.benchmark.sharpe


def sharpe_ratio(equity: np.ndarray, bars_per_year: int = BARS_PER_YEAR) -> float:
    """Annualised Sharpe ratio of an equity curve ``(n,)``; 0 for a flat curve."""
    r = np.diff(equity) / equity[:-1]
    if len(r) < 2:
        return 0.0
    sd = r.std(ddof=1)
    return 0.0 if sd < 1e-12 else float(r.mean() / sd * np.sqrt(bars_per_year))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough loss of an equity curve ``(n,)`` as a fraction in [0, 1]."""
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak)) if len(equity) else 0.0


def summarise(equity: np.ndarray, turnover: float, bars_per_year: int = BARS_PER_YEAR) -> Metrics:
    """:class:`Metrics` of an equity curve."""
    return Metrics(
        total_return=float(equity[-1] / equity[0] - 1.0),
        sharpe=sharpe_ratio(equity, bars_per_year),
        max_drawdown=max_drawdown(equity),
        turnover=float(turnover),
        n_bars=len(equity) - 1,
    )


def buy_and_hold(prices: np.ndarray, start: int, stop: int, costs: Costs) -> tuple[np.ndarray, float]:
    """Equal-weight buy-and-hold over bars ``[start, stop)``: buy ``1/n_assets`` of each
    asset at ``open[start + 1]`` (paying the fee), then hold. Returns ``(equity, turnover)``."""
    n_assets = prices.shape[1]
    value, weights = np.ones(1), np.zeros((1, n_assets))
    equity = [1.0]
    turnover = 0.0
    close, opn = prices[:, :, 3], prices[:, :, 0]
    target = np.full((1, n_assets), 1.0 / n_assets)
    for t in range(start, stop - 1):
        if t > start:
            target = drifted_weights(weights, close[t], opn[t + 1])
        value, weights, _, to = rebalance_step(
            value, weights, target, close[t], opn[t + 1], close[t + 1], costs
        )
        turnover += float(to[0])
        equity.append(float(value[0]))
    return np.asarray(equity), turnover


ActFn = Callable[[int, np.ndarray], np.ndarray]
"""Maps a decision bar ``t`` and the weights ``(1, n_assets)`` at its close to an action
``(1, action_dim)`` in [-1, 1], using bars ``<= t`` only."""


def decision_bars(timestamps: np.ndarray, bar_seconds: int, interval: int) -> np.ndarray:
    """Which bars are decision bars for a decision interval of ``interval`` bars: those whose
    bar number since the Unix epoch, ``timestamp // bar_seconds``, is a multiple of
    ``interval``. The backtest and the paper trader use this one clock, so they decide at the
    same bars whatever slice they start on.

    Args:
        timestamps: ``(T,)`` bar open times, Unix seconds (or datetime64).
        bar_seconds: the bar interval in seconds (> 0).
        interval: bars per decision (>= 1); 1 makes every bar a decision bar.

    Returns:
        ``(T,)`` bool.
    """
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        ts = ts.astype("datetime64[s]").astype(np.int64)
    if interval <= 1:
        return np.ones(len(ts), dtype=bool)
    return (ts.astype(np.int64) // int(bar_seconds)) % int(interval) == 0


def backtest(
    policy: PolicyFn,
    features: np.ndarray,
    prices: np.ndarray,
    start: int,
    stop: int,
    lookback: int,
    costs: Costs,
    bars_per_year: int = BARS_PER_YEAR,
    action_scheme: str = "scores",
    decide: np.ndarray | None = None,
) -> BacktestResult:
    """Run a deterministic policy over bars ``[start, stop)`` starting all in cash.

    Decisions are made at bars ``start .. stop - 2`` with features of bars ``<= t``;
    each fills at the next bar's open (see :mod:`trainers.accounting`).

    Args:
        policy: observations -> actions (see :data:`PolicyFn`).
        features: ``(T, n_assets, n_channels)`` normalised features (and predictor channel).
        prices: ``(T, n_assets, 5)`` OHLCV.
        start, stop: the test slice; ``start >= lookback - 1`` and ``stop - start >= 2``.
        lookback: observation window in bars.
        costs: fees and risk limits (including the trailing stop).
        action_scheme, decide: as :func:`run_decisions`.

    Raises:
        ValueError: the slice is too short or starts before a full lookback window.
        FloatingPointError: the policy produced a non-finite action.
    """
    if start < lookback - 1:
        raise ValueError(f"cannot backtest [{start}, {stop}) with lookback {lookback}")
    t_arr = np.zeros(1, dtype=np.int64)

    def act(t: int, weights: np.ndarray) -> np.ndarray:
        t_arr[0] = t
        return np.asarray(policy(build_observations(features, t_arr, lookback, weights)))

    return run_decisions(act, prices, start, stop, costs, bars_per_year, action_scheme, decide)


def run_decisions(
    act: ActFn,
    prices: np.ndarray,
    start: int,
    stop: int,
    costs: Costs,
    bars_per_year: int = BARS_PER_YEAR,
    action_scheme: str = "scores",
    decide: np.ndarray | None = None,
) -> BacktestResult:
    """The one backtest loop: decisions of ``act`` over bars ``[start, stop)`` from all cash,
    through the execution model ``costs`` (target weights, trailing stop, fills at the next
    open with fees, slippage and the no-trade band; see :mod:`trainers.accounting`).

    Args:
        act: see :data:`ActFn`.
        prices: ``(T, n_assets, 5)`` OHLCV.
        start, stop: the slice; ``stop - start >= 2``.
        costs: the execution model.
        bars_per_year: annualisation of the Sharpe ratio.
        action_scheme: how actions map to weights
            (:func:`trainers.accounting.action_to_weights`).
        decide: ``(T,)`` bool, the decision bars (:func:`decision_bars`); at other bars
            ``act`` is not called and nothing is traded (the weights drift; the trailing stop
            still applies). None: every bar.

    Raises:
        ValueError: the slice is shorter than 2 bars.
        FloatingPointError: ``act`` returned a non-finite action.
    """
    if stop - start < 2:
        raise ValueError(f"cannot backtest [{start}, {stop}): fewer than 2 bars")
    n_assets = prices.shape[1]
    close, opn = prices[:, :, 3], prices[:, :, 0]
    value, weights, hwm = np.ones(1), np.zeros((1, n_assets)), np.zeros((1, n_assets))
    equity = np.empty(stop - start)
    held = np.empty((stop - start, n_assets))
    equity[0], held[0] = 1.0, 0.0
    turnover = 0.0
    for k, t in enumerate(range(start, stop - 1)):
        if decide is None or decide[t]:
            action = np.asarray(act(t, weights), dtype=np.float64)
            if not np.isfinite(action).all():
                raise FloatingPointError(f"policy returned a non-finite action at bar {t}")
            target = action_to_weights(action.reshape(1, -1), costs, action_scheme)
        else:
            target = drifted_weights(weights, close[t], opn[t + 1])
        target, _ = apply_trailing_stop(target, weights, hwm, close[t], costs.trailing_stop)
        value, weights, _, to = rebalance_step(
            value, weights, target, close[t], opn[t + 1], close[t + 1], costs
        )
        hwm = update_hwm(hwm, weights, close[t + 1])
        turnover += float(to[0])
        equity[k + 1], held[k + 1] = value[0], weights[0]
    bench_equity, bench_turnover = buy_and_hold(prices, start, stop, costs)
    return BacktestResult(
        equity=equity,
        weights=held,
        metrics=summarise(equity, turnover, bars_per_year),
        benchmark_equity=bench_equity,
        benchmark=summarise(bench_equity, bench_turnover, bars_per_year),
        bars_per_year=bars_per_year,
    )

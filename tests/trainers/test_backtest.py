"""The one backtest routine (trainers.backtest) against hand-computed curves.

Formulas (from the module docstring of trainers.backtest):
    * per-bar simple returns ``r_t = equity[t] / equity[t-1] - 1``;
    * Sharpe ratio, annualised: ``mean(r) / std(r) * sqrt(bars_per_year)`` with a zero
      risk-free rate and the sample standard deviation (ddof = 1); 0 for a flat curve;
      hourly bars: ``bars_per_year = 8760``;
    * maximum drawdown: ``max_t (1 - equity[t] / max_{s<=t} equity[s])``;
    * total return: ``equity[-1] / equity[0] - 1``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.accounting import Costs
from trainers.backtest import (
    BacktestResult,
    Metrics,
    backtest,
    buy_and_hold,
    max_drawdown,
    sharpe_ratio,
    summarise,
)
from trainers.data import BARS_PER_YEAR
from trainers.env import PortfolioEnv
from trainers.features import WARMUP_BARS, NormStats, compute_features

from .test_features import synthetic_prices

LOOKBACK = 4


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    prices = synthetic_prices(300, 3, seed=21)
    feats = compute_features(prices)
    return NormStats.fit(feats[WARMUP_BARS:200]).apply(feats), prices


def test_sharpe_by_hand() -> None:
    # r = (0.1, -0.1, 0.1): mean 1/30, sample std sqrt(0.04 / 3) -> mean / std = sqrt(3) / 6
    equity = np.array([1.0, 1.1, 0.99, 1.089])
    assert sharpe_ratio(equity, bars_per_year=1) == pytest.approx(math.sqrt(3) / 6, rel=1e-12)
    assert sharpe_ratio(equity) == pytest.approx(math.sqrt(3) / 6 * math.sqrt(8760), rel=1e-12)
    assert BARS_PER_YEAR == 8760
    assert sharpe_ratio(np.ones(10)) == 0.0  # flat
    assert sharpe_ratio(np.array([1.0, 1.5])) == 0.0  # one return: no std
    assert sharpe_ratio(np.array([1.0, 0.9, 0.81, 0.729])) == 0.0  # constant return: zero std
    assert sharpe_ratio(np.array([1.0, 0.9, 0.9, 0.81]), 1) < 0.0


def test_max_drawdown_by_hand() -> None:
    assert max_drawdown(np.array([1.0, 2.0, 1.0, 3.0, 1.5])) == pytest.approx(0.5)
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.0])) == pytest.approx(0.25)
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0
    assert max_drawdown(np.array([1.0, 0.5, 0.25])) == pytest.approx(0.75)


def test_summarize_by_hand() -> None:
    equity = np.array([2.0, 2.2, 1.98, 2.178])
    m = summarise(equity, turnover=1.5, bars_per_year=1)
    assert isinstance(m, Metrics)
    assert m.total_return == pytest.approx(0.089)
    assert m.sharpe == pytest.approx(math.sqrt(3) / 6)
    assert m.max_drawdown == pytest.approx(0.1)
    assert m.turnover == 1.5 and m.n_bars == 3
    assert m.as_dict() == {
        "total_return": m.total_return,
        "sharpe": m.sharpe,
        "max_drawdown": m.max_drawdown,
        "turnover": 1.5,
        "n_bars": 3,
    }


def tiny_panel() -> np.ndarray:
    """Two assets, four bars; OHLCV with high/low around open/close."""
    opn = np.array([[10.0, 20.0], [10.0, 20.0], [11.0, 20.0], [12.0, 15.0]])
    close = np.array([[10.0, 20.0], [10.0, 20.0], [12.0, 20.0], [12.0, 10.0]])
    high, low = np.maximum(opn, close) + 0.5, np.minimum(opn, close) - 0.5
    return np.stack([opn, high, low, close, np.ones_like(opn)], axis=2)


def test_buy_and_hold_by_hand() -> None:
    """Buy 0.5/0.5 at open[1] paying 1% on turnover 1.0 -> 0.99 split into 0.0495 units of A
    (at 10) and 0.02475 units of B (at 20); then hold: close[2] = 0.0495*12 + 0.02475*20 =
    1.089, close[3] = 0.0495*12 + 0.02475*10 = 0.8415."""
    costs = Costs(fee=0.01, min_cash=0.05, trailing_stop=0.1, min_trade=0.01)
    equity, turnover = buy_and_hold(tiny_panel(), 0, 4, costs)
    np.testing.assert_allclose(equity, [1.0, 0.99, 1.089, 0.8415], rtol=1e-12)
    assert turnover == pytest.approx(1.0)
    # the same bars from a later start: buy at open[2]
    equity, _ = buy_and_hold(tiny_panel(), 1, 4, costs)
    np.testing.assert_allclose(equity, [1.0, 0.99 * (0.5 * 12 / 11 + 0.5), 0.99 * (0.5 * 12 / 11 + 0.25)])


def test_always_cash_policy(data: tuple[np.ndarray, np.ndarray]) -> None:
    feats, prices = data

    def cash(obs: np.ndarray) -> np.ndarray:
        return -np.ones((len(obs), 3), dtype=np.float32)

    result = backtest(cash, feats, prices, 200, 300, LOOKBACK, Costs())
    assert isinstance(result, BacktestResult)
    assert result.equity.shape == (100,) and result.weights.shape == (100, 3)
    assert (result.equity == 1.0).all()
    assert (result.weights == 0.0).all()
    assert result.metrics.sharpe == 0.0
    assert result.metrics.total_return == 0.0
    assert result.metrics.max_drawdown == 0.0
    assert result.metrics.turnover == 0.0
    assert result.metrics.n_bars == 99
    assert result.bars_per_year == 8760
    # the benchmark is equal-weight buy-and-hold on the same bars
    bench, bench_turnover = buy_and_hold(prices, 200, 300, Costs())
    np.testing.assert_array_equal(result.benchmark_equity, bench)
    assert result.benchmark.turnover == bench_turnover
    assert result.excess_sharpe == pytest.approx(-result.benchmark.sharpe)


def test_buy_and_hold_benchmark_on_the_tiny_panel_through_backtest() -> None:
    prices = tiny_panel()
    feats = np.zeros((4, 2, 12), dtype=np.float32)
    costs = Costs(fee=0.01)
    result = backtest(lambda obs: np.zeros((1, 2)), feats, prices, 0, 4, 1, costs)
    np.testing.assert_allclose(result.benchmark_equity, [1.0, 0.99, 1.089, 0.8415], rtol=1e-12)
    assert result.benchmark.total_return == pytest.approx(-0.1585)
    assert result.benchmark.max_drawdown == pytest.approx(1 - 0.8415 / 1.089)


def test_nan_policy_raises(data: tuple[np.ndarray, np.ndarray]) -> None:
    feats, prices = data
    calls = []

    def late_nan(obs: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.full((1, 3), np.nan if len(calls) > 5 else 0.5)

    with pytest.raises(FloatingPointError, match="bar 205"):
        backtest(late_nan, feats, prices, 200, 300, LOOKBACK, Costs())
    with pytest.raises(FloatingPointError, match="non-finite"):
        backtest(lambda obs: np.full((1, 3), np.inf), feats, prices, 200, 300, LOOKBACK, Costs())


def test_invalid_slice(data: tuple[np.ndarray, np.ndarray]) -> None:
    feats, prices = data
    with pytest.raises(ValueError, match="cannot backtest"):
        backtest(lambda o: np.zeros((1, 3)), feats, prices, 2, 100, LOOKBACK, Costs())
    with pytest.raises(ValueError, match="cannot backtest"):
        backtest(lambda o: np.zeros((1, 3)), feats, prices, 100, 101, LOOKBACK, Costs())


def test_backtest_equals_the_environment_dynamics(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A deterministic policy run through the backtest and through PortfolioEnv over the same
    bars gives the same equity curve: one accounting implementation, one observation layout."""
    feats, prices = data
    rng = np.random.default_rng(3)
    proj = rng.normal(0, 0.3, (feats.shape[1] * feats.shape[2] * LOOKBACK + 3 + 1, 3)).astype(np.float32)

    def policy(obs: np.ndarray) -> np.ndarray:
        return np.tanh(obs @ proj)

    costs = Costs(fee=0.002, slippage=0.001, trailing_stop=0.01, min_trade=0.02)
    start, stop = 150, 260
    result = backtest(policy, feats, prices, start, stop, LOOKBACK, costs)
    env = PortfolioEnv(feats, prices, start, stop, LOOKBACK, costs, episode_bars=10_000)
    obs, _ = env.reset(seed=0)
    values, truncated = [1.0], False
    while not truncated:
        obs, _, _, truncated, info = env.step(policy(obs[None, :])[0])
        values.append(info["value"])
    np.testing.assert_array_equal(result.equity, values)
    assert result.metrics.turnover > 0
    assert not np.allclose(result.equity, 1.0)

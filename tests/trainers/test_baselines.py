"""Baselines (trainers.baselines): the backtest's benchmark, hand cases, causality, and
reference values computed by the ``universal-portfolios`` package (0.4.17, not a
dependency) on the closes written out below."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from trainers.accounting import Costs
from trainers.backtest import buy_and_hold
from trainers.baselines import (
    DEFAULT_TREND_WINDOW_BARS,
    BaselineResult,
    above_moving_average,
    bcrp_weights,
    best_constant_rebalanced_portfolio,
    buy_and_hold_equal,
    cash,
    moving_average_trend,
    olmar,
    olmar_weights,
    run_schedule,
    simplex_projection,
)

from .test_features import perturb_after, synthetic_prices

FRICTIONLESS = Costs(fee=0.0, slippage=0.0, min_cash=0.05, trailing_stop=0.0, min_trade=0.0)

# universal.algos.OLMAR(window=5, eps=1.02).run(pd.DataFrame(OLMAR_CLOSE)).B: rows 5 .. 15
OLMAR_CLOSE = np.array(
    [
        [100.0, 100.6, 99.45], [98.24, 99.69, 97.5], [98.36, 102.4, 96.55], [97.14, 103.4, 97.24],
        [97.35, 101.5, 97.18], [98.71, 98.81, 96.29], [95.03, 96.29, 92.81], [94.58, 93.88, 93.32],
        [94.88, 93.53, 88.74], [93.86, 93.44, 88.94], [91.03, 92.55, 87.21], [89.57, 94.54, 85.82],
        [89.51, 96.22, 84.82], [89.31, 96.44, 84.93], [87.15, 96.58, 87.27], [84.5, 98.26, 87.48],
    ]
)  # fmt: skip
OLMAR_LIBRARY_B = np.array(
    [
        [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0],
        [0.0, 0.9481690086126, 0.0518309913874],
        [0.0815215783557, 0.7283133761917, 0.1901650454526],
        [0.2843958001581, 0.3366518665252, 0.3789523333167],
        [0.3835286074101, 0.1273871620049, 0.4890842305849],
        [0.4388484855006, 0.0, 0.5611515144994],
        [0.7744131398419, 0.0, 0.2255868601581],
    ]
)  # fmt: skip

# universal.algos.BCRP().run(pd.DataFrame(BCRP_PRICES)).B[-1]
BCRP_PRICES = np.array(
    [
        [100.0, 100.0, 100.0], [111.19, 90.4, 100.29], [98.24, 103.59, 102.44], [100.72, 103.74, 101.92],
        [98.29, 106.76, 99.95], [96.48, 109.27, 101.02], [95.83, 111.9, 102.1], [86.97, 123.07, 101.56],
        [86.31, 124.52, 99.89], [82.99, 131.57, 100.24], [98.38, 112.41, 95.27], [99.9, 111.59, 96.5],
        [98.54, 114.68, 97.36], [97.56, 113.4, 94.12], [94.73, 118.81, 94.14], [90.22, 124.42, 92.25],
        [88.83, 125.15, 93.57], [91.36, 122.88, 89.75], [90.64, 125.61, 88.03], [95.47, 119.56, 89.2],
        [94.9, 119.83, 91.2], [95.39, 120.07, 87.26], [103.47, 111.42, 86.31], [106.76, 110.29, 86.79],
        [104.51, 114.3, 85.65],
    ]
)  # fmt: skip
BCRP_LIBRARY_B = np.array([0.2266515458252, 0.7733484541748, 0.0])


def flat_bars(closes: np.ndarray) -> np.ndarray:
    """OHLCV ``(T, n_assets, 5)`` whose open, high, low and close all equal ``closes``."""
    prices = np.repeat(closes[:, :, None], 5, axis=2)
    prices[:, :, 4] = 1.0
    return prices


@pytest.fixture(scope="module")
def prices() -> np.ndarray:
    return synthetic_prices(400, 3, seed=31)


def test_buy_and_hold_equal_is_the_backtest_benchmark_scaled_to_the_cash_reserve(prices: np.ndarray) -> None:
    # Fully invested benchmark E_k = (1 - f) G_k, G_k the equal-weight price relative since
    # open[start + 1]; with cash reserve c: V_k = (1 - f (1 - c)) (c + (1 - c) G_k).
    for costs in (Costs(), FRICTIONLESS, Costs(fee=0.004, slippage=0.001, min_cash=0.2)):
        full, full_turnover = buy_and_hold(prices, 50, 300, costs)
        result = buy_and_hold_equal(prices, 50, 300, costs)
        f, c = costs.fee + costs.slippage, costs.min_cash
        expected = (1.0 - f * (1.0 - c)) * (c + (1.0 - c) * full[1:] / (1.0 - f))
        assert result.equity[0] == 1.0
        assert result.equity[1:] == pytest.approx(expected, rel=1e-12)
        assert result.turnover == pytest.approx(full_turnover * (1.0 - c))
        assert result.weights[1].sum() == pytest.approx(1.0 - c, abs=0.05)
        assert result.targets[0] == pytest.approx(np.full(3, (1.0 - c) / 3))
        assert result.name == "buy_and_hold_equal" and not result.clairvoyant


def test_cash_is_flat(prices: np.ndarray) -> None:
    result = cash(prices, 10, 200, Costs())
    assert isinstance(result, BaselineResult)
    assert result.equity.shape == (190,) and result.weights.shape == (190, 3)
    assert (result.equity == 1.0).all()
    assert (result.weights == 0.0).all()
    assert result.turnover == 0.0


def test_above_moving_average_by_hand() -> None:
    close = np.array([[1.0], [2.0], [3.0], [2.0], [1.0], [5.0]])
    # SMA(3) at t = 2..5: 2, 7/3, 2, 8/3; close above it at t = 2 and t = 5 only
    assert above_moving_average(close, 3)[:, 0].tolist() == [False, False, True, False, False, True]
    assert not above_moving_average(close, 7).any()  # never a full window
    with pytest.raises(ValueError):
        above_moving_average(close, 0)


def test_moving_average_trend_targets_follow_the_signal(prices: np.ndarray) -> None:
    costs = Costs()
    result = moving_average_trend(prices, 100, 400, costs, window_bars=24)
    signal = above_moving_average(prices[:, :, 3], 24)[100:399]
    assert result.targets == pytest.approx(np.where(signal, 0.95 / 3, 0.0))
    assert 0.0 < signal.mean() < 1.0
    assert DEFAULT_TREND_WINDOW_BARS == 50 * 24


def test_moving_average_trend_is_causal(prices: np.ndarray) -> None:
    start, t = 30, 200
    base = moving_average_trend(prices, start, 400, Costs(), window_bars=24)
    moved = moving_average_trend(perturb_after(prices, t, seed=1), start, 400, Costs(), window_bars=24)
    k = t - start  # the decision made at close[t]
    assert np.array_equal(base.targets[: k + 1], moved.targets[: k + 1])
    assert np.array_equal(base.equity[: k + 1], moved.equity[: k + 1])
    assert not np.array_equal(base.targets[k + 1 :], moved.targets[k + 1 :])


def test_olmar_matches_the_universal_portfolios_package() -> None:
    # The package's weight row t + 1 is the portfolio decided at close[t]; from bar 5 on it
    # predicts with the 5-bar moving average, so start there from its portfolio of row 5.
    ours = olmar_weights(OLMAR_CLOSE, 5, 16, window=5, epsilon=1.02, initial_portfolio=OLMAR_LIBRARY_B[0])
    assert ours == pytest.approx(OLMAR_LIBRARY_B[1:], abs=1e-10)


def test_olmar_is_causal_and_within_the_limits(prices: np.ndarray) -> None:
    start = 20
    costs = Costs(max_weight=0.6)
    base = olmar(prices, start, 400, costs, epsilon=1.01)  # a small ε keeps the weights interior
    for t in (60, 150, 300):
        moved = olmar(perturb_after(prices, t, seed=t), start, 400, costs, epsilon=1.01)
        k = t - start
        assert np.array_equal(base.targets[: k + 1], moved.targets[: k + 1])
        assert not np.allclose(base.targets[k + 1], moved.targets[k + 1])
    assert (base.targets >= 0.0).all() and (base.targets <= 0.6 + 1e-12).all()
    assert (base.targets.sum(axis=1) <= 0.95 + 1e-12).all()
    uncapped = olmar(prices, start, 400, Costs())
    assert uncapped.targets.sum(axis=1) == pytest.approx(np.full(379, 0.95))


def test_olmar_rejects_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="window"):
        olmar_weights(OLMAR_CLOSE, 0, 16, window=1)
    with pytest.raises(ValueError, match="simplex"):
        olmar_weights(OLMAR_CLOSE, 0, 16, initial_portfolio=np.array([0.5, 0.6, 0.0]))


def test_simplex_projection_by_hand() -> None:
    assert simplex_projection(np.array([0.5, 0.5, 0.0])) == pytest.approx([0.5, 0.5, 0.0])
    assert simplex_projection(np.array([2.0, 0.0])) == pytest.approx([1.0, 0.0])
    assert simplex_projection(np.array([1.0, 1.0, 1.0])) == pytest.approx([1 / 3] * 3)
    assert simplex_projection(np.array([0.8, 0.6, -1.0])) == pytest.approx([0.6, 0.4, 0.0])


def test_bcrp_beats_every_constant_portfolio_on_a_grid() -> None:
    prices = synthetic_prices(300, 2, seed=41)
    result = best_constant_rebalanced_portfolio(prices, 20, 300, FRICTIONLESS)
    assert result.clairvoyant and result.name == "bcrp"
    assert result.targets.sum(axis=1).max() <= 0.95 + 1e-12
    grid = np.linspace(0.0, 0.95, 20)
    best_grid = max(
        run_schedule("grid", prices, 20, 300, FRICTIONLESS, lambda t, w, b=np.array(b): b).equity[-1]
        for b in itertools.product(grid, grid)
        if sum(b) <= 0.95 + 1e-12
    )
    assert result.equity[-1] >= best_grid * (1.0 - 1e-12)


def test_bcrp_matches_the_universal_portfolios_package() -> None:
    # open[t + 1] carries the package's prices, so our open-to-open relatives are its
    # relatives (plus a last step of relative 1, which does not change the optimum).
    prices = flat_bars(np.vstack([BCRP_PRICES[:1], BCRP_PRICES]))
    ours = bcrp_weights(prices, 0, len(prices), Costs(min_cash=0.0))
    assert ours == pytest.approx(BCRP_LIBRARY_B, abs=1e-3)
    relatives = BCRP_PRICES[1:] / BCRP_PRICES[:-1]

    def log_wealth(b: np.ndarray) -> float:
        return float(np.log(1.0 + (relatives - 1.0) @ b).sum())

    assert log_wealth(ours) >= log_wealth(BCRP_LIBRARY_B) - 1e-12


def test_invalid_windows(prices: np.ndarray) -> None:
    for start, stop in ((10, 11), (-1, 50), (0, 401)):
        with pytest.raises(ValueError, match="cannot run"):
            cash(prices, start, stop, Costs())
    with pytest.raises(ValueError, match="OHLCV"):
        cash(prices[:, :, :4], 0, 10, Costs())

"""Accounting identities and risk rules of trainers.accounting (the one implementation the
environment, the backtest and the simulated broker share)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trainers.accounting import (
    Costs,
    action_to_weights,
    apply_trailing_stop,
    drifted_weights,
    enforce_limits,
    executed_target,
    rebalance_step,
    update_hwm,
)

NO_BAND = {"trailing_stop": 0.0, "min_trade": 0.0}


def row(*values: float) -> np.ndarray:
    return np.array([values], dtype=np.float64)


def test_fees_charged_by_hand() -> None:
    """Value 2.0 with 50% in asset A; A opens 10% up; rebalance to A 20%, B 30%.

    By hand: value at open = 2.0 * (0.5 + 0.5 * 1.1) = 2.1, of which 1.1 is A.
    Target: A 0.42 (sell 0.68), B 0.63 (buy 0.63): traded notional 1.31 = turnover 1.31 / 2.1.
    Fee + slippage 0.15%: cost = 0.0015 * 1.31 = 0.001965.
    Then B rises 10% to the close: value = (2.1 - 0.001965) * (0.5 + 0.2 + 0.3 * 1.1).
    """
    costs = Costs(fee=0.001, slippage=0.0005, min_cash=0.05, **NO_BAND)
    value, weights, cost, turnover = rebalance_step(
        np.array([2.0]),
        row(0.5, 0.0),
        row(0.2, 0.3),
        close_t=np.array([10.0, 20.0]),
        open_next=np.array([11.0, 20.0]),
        close_next=np.array([11.0, 22.0]),
        costs=costs,
    )
    assert cost[0] == pytest.approx(0.001965, rel=1e-12)
    assert turnover[0] == pytest.approx(1.31 / 2.1, rel=1e-12)
    assert cost[0] == pytest.approx((costs.fee + costs.slippage) * turnover[0] * 2.1, rel=1e-12)
    assert value[0] == pytest.approx((2.1 - 0.001965) * 1.03, rel=1e-12)
    np.testing.assert_allclose(weights, row(0.2 / 1.03, 0.33 / 1.03), rtol=1e-12)


def test_default_fee_is_a_quarter_percent_per_side() -> None:
    costs = Costs()
    assert costs.fee == 0.0025 and costs.slippage == 0.0
    # all cash -> 95% in one asset, constant prices: the round trip costs fee * traded notional
    p = np.array([5.0])
    value, _, cost, turnover = rebalance_step(np.array([1.0]), row(0.0), row(0.95), p, p, p, costs)
    assert turnover[0] == pytest.approx(0.95) and cost[0] == pytest.approx(0.0025 * 0.95)
    assert value[0] == pytest.approx(1.0 - 0.0025 * 0.95)


finite = st.floats(-3.0, 3.0, allow_nan=False)
costs_strategy = st.builds(
    Costs,
    fee=st.floats(0.0, 0.01),
    slippage=st.floats(0.0, 0.01),
    min_cash=st.floats(0.0, 0.5),
    max_weight=st.floats(0.01, 1.0),
    trailing_stop=st.floats(0.0, 0.5),
    min_trade=st.floats(0.0, 0.05),
)


@settings(max_examples=200, deadline=None)
@given(
    actions=arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 6)), elements=finite),
    costs=costs_strategy,
)
def test_target_weights_within_bounds(actions: np.ndarray, costs: Costs) -> None:
    w = action_to_weights(actions, costs)
    assert w.shape == actions.shape
    assert (w >= 0.0).all()
    assert (w <= costs.max_weight + 1e-12).all()
    assert (w.sum(axis=-1) <= 1.0 - costs.min_cash + 1e-12).all()
    # scores <= 0 mean no position
    assert (w[actions <= 0.0] == 0.0).all()


@settings(max_examples=100, deadline=None)
@given(
    actions=arrays(
        np.float64,
        st.tuples(st.integers(1, 4), st.integers(1, 5)),
        elements=st.floats(allow_nan=True, allow_infinity=True),
    ),
    costs=costs_strategy,
)
def test_target_weights_within_bounds_for_any_input(actions: np.ndarray, costs: Costs) -> None:
    for w in (action_to_weights(actions, costs), enforce_limits(actions, costs)):
        assert np.isfinite(w).all()
        assert (w >= 0.0).all() and (w <= costs.max_weight + 1e-12).all()
        assert (w.sum(axis=-1) <= 1.0 - costs.min_cash + 1e-9).all()


def test_action_to_weights_by_hand() -> None:
    costs = Costs(min_cash=0.1, max_weight=0.4)
    # 0.5 * 0.9 = 0.45 is capped at 0.4
    np.testing.assert_allclose(action_to_weights(row(0.5, -1.0, 0.25), costs), row(0.4, 0.0, 0.225))
    # scores summing above 1 are scaled to 1 - min_cash, then capped at max_weight
    np.testing.assert_allclose(action_to_weights(row(1.0, 1.0, 0.0), costs), row(0.4, 0.4, 0.0))
    np.testing.assert_allclose(action_to_weights(row(1.0, 0.5, 0.5), costs), row(0.4, 0.225, 0.225))
    np.testing.assert_allclose(action_to_weights(row(np.nan, 7.0, -7.0), costs), row(0.0, 0.4, 0.0))


def test_enforce_limits_by_hand() -> None:
    costs = Costs(min_cash=0.2, max_weight=0.5)
    np.testing.assert_allclose(enforce_limits(row(0.7, 0.3, -0.1), costs), row(0.5, 0.3, 0.0))
    np.testing.assert_allclose(enforce_limits(row(0.5, 0.5, 0.2), costs), row(1 / 3, 1 / 3, 0.4 / 3))


@settings(max_examples=100, deadline=None)
@given(
    prices=arrays(np.float64, (3, 4), elements=st.floats(0.01, 1e4)),
    value=st.floats(1e-3, 1e6),
)
def test_all_cash_value_is_exactly_conserved(prices: np.ndarray, value: float) -> None:
    costs = Costs()
    v, w, cost, turnover = rebalance_step(
        np.array([value]), np.zeros((1, 4)), np.zeros((1, 4)), prices[0], prices[1], prices[2], costs
    )
    assert v[0] == value and cost[0] == 0.0 and turnover[0] == 0.0 and (w == 0.0).all()


def test_all_cash_stays_exactly_one_over_many_bars() -> None:
    rng = np.random.default_rng(0)
    prices = np.exp(rng.normal(0, 0.05, (500, 3)).cumsum(axis=0))
    value, weights = np.ones(1), np.zeros((1, 3))
    for t in range(499):
        value, weights, _, _ = rebalance_step(
            value, weights, np.zeros((1, 3)), prices[t], prices[t + 1], prices[t + 1], Costs()
        )
    assert value[0] == 1.0


@settings(max_examples=150, deadline=None)
@given(
    raw=arrays(np.float64, 3, elements=st.floats(0.0, 1.0)),
    growth=arrays(np.float64, (2, 3), elements=st.floats(0.5, 2.0)),
    min_trade=st.floats(0.0, 0.05),
)
def test_holding_value_follows_prices_without_cost(
    raw: np.ndarray, growth: np.ndarray, min_trade: float
) -> None:
    """Targeting the drifted weights (a hold) trades nothing and the value moves with the
    holdings only: V' = V * (cash + sum(w * close_next / close_t))."""
    weights = raw[None, :] / max(1.0, raw.sum() * 1.01)
    close_t = np.array([10.0, 20.0, 30.0])
    open_next, close_next = close_t * growth[0], close_t * growth[0] * growth[1]
    costs = Costs(min_trade=min_trade, trailing_stop=0.0)
    hold = drifted_weights(weights, close_t, open_next)
    v, w, cost, turnover = rebalance_step(
        np.array([3.0]), weights, hold, close_t, open_next, close_next, costs
    )
    assert cost[0] == 0.0 and turnover[0] == pytest.approx(0.0, abs=1e-15)
    expected = 3.0 * (1.0 - weights.sum() + (weights[0] * close_next / close_t).sum())
    assert v[0] == pytest.approx(expected, rel=1e-12)
    units = 3.0 * weights[0] / close_t
    np.testing.assert_allclose(w[0] * v[0], units * close_next, rtol=1e-12, atol=1e-15)


def test_holding_with_constant_prices_keeps_value_exactly() -> None:
    p = np.array([7.0, 3.0])
    weights = row(0.25, 0.6)
    value = np.array([1.5])
    for _ in range(50):
        value, weights, cost, _ = rebalance_step(value, weights, weights.copy(), p, p, p, Costs())
        assert cost[0] == 0.0
    assert value[0] == 1.5
    np.testing.assert_array_equal(weights, row(0.25, 0.6))


def test_rebalance_to_same_weights_with_unchanged_prices_costs_nothing() -> None:
    p = np.array([100.0, 1.0, 0.5])
    w = np.array([[0.3, 0.2, 0.45], [0.0, 0.95, 0.0]])
    v, w2, cost, turnover = rebalance_step(
        np.array([1.0, 2.0]), w, w.copy(), p, p, p, Costs(min_trade=0.0, slippage=0.001)
    )
    np.testing.assert_array_equal(cost, 0.0)
    np.testing.assert_array_equal(turnover, 0.0)
    np.testing.assert_array_equal(v, [1.0, 2.0])
    np.testing.assert_allclose(w2, w, rtol=1e-15)


@settings(max_examples=150, deadline=None)
@given(
    w_raw=arrays(np.float64, 3, elements=st.floats(0.0, 1.0)),
    t_raw=arrays(np.float64, 3, elements=st.floats(0.0, 1.0)),
    growth=arrays(np.float64, (2, 3), elements=st.floats(0.5, 2.0)),
    costs=costs_strategy,
)
def test_rebalance_matches_unit_accounting(
    w_raw: np.ndarray, t_raw: np.ndarray, growth: np.ndarray, costs: Costs
) -> None:
    """Independent bookkeeping in units and cash gives the same value, weights and cost
    (the cost is paid in cash; an asset that is not traded keeps its units)."""
    close_t = np.array([4.0, 50.0, 900.0])
    open_next, close_next = close_t * growth[0], close_t * growth[0] * growth[1]
    weights = w_raw[None, :] / max(1.0, w_raw.sum() * 1.01)
    target = enforce_limits(t_raw[None, :], costs)
    v0 = 10.0
    v, w, cost, turnover = rebalance_step(
        np.array([v0]), weights, target, close_t, open_next, close_next, costs
    )
    units = v0 * weights[0] / close_t
    cash = v0 * (1.0 - weights.sum())
    value_open = cash + (units * open_next).sum()
    executed = executed_target(target, weights, close_t, open_next, costs)[0]
    notional = np.abs(executed * value_open - units * open_next).sum()
    assert turnover[0] == pytest.approx(notional / value_open, rel=1e-9, abs=1e-12)
    assert cost[0] == pytest.approx((costs.fee + costs.slippage) * notional, rel=1e-9, abs=1e-12)
    # after paying the cost the traded assets hold their executed weights of what is left,
    # the others their units
    left = value_open - cost[0]
    traded = executed != drifted_weights(weights, close_t, open_next)[0]
    new_units = np.where(traded, executed * left / open_next, units)
    new_cash = left - (new_units * open_next).sum()
    assert v[0] == pytest.approx(new_cash + (new_units * close_next).sum(), rel=1e-9)
    np.testing.assert_allclose(w[0], new_units * close_next / v[0], rtol=1e-9, atol=1e-15)


def test_min_trade_band_skips_small_trades() -> None:
    costs = Costs(fee=0.01, min_trade=0.02, trailing_stop=0.0)
    p = np.array([1.0, 1.0])
    weights = row(0.30, 0.40)
    # asset 0 moves by 0.015 (< band: skipped), asset 1 by 0.05 (traded)
    v, w, cost, turnover = rebalance_step(np.array([1.0]), weights, row(0.315, 0.45), p, p, p, costs)
    assert turnover[0] == pytest.approx(0.05)
    assert cost[0] == pytest.approx(0.01 * 0.05)
    # the skipped asset keeps its units: 0.30 of the value before the cost is paid
    np.testing.assert_allclose(w, row(0.30 / (1.0 - 0.01 * 0.05), 0.45))
    np.testing.assert_allclose(executed_target(row(0.315, 0.45), weights, p, p, costs), row(0.30, 0.45))
    # a change of exactly the band is traded
    _, _, _, turnover = rebalance_step(np.array([1.0]), weights, row(0.32, 0.40), p, p, p, costs)
    assert turnover[0] == pytest.approx(0.02)
    # all changes inside the band: nothing is traded, nothing is paid
    v, _, cost, turnover = rebalance_step(np.array([1.0]), weights, row(0.29, 0.41), p, p, p, costs)
    assert cost[0] == 0.0 and turnover[0] == 0.0 and v[0] == 1.0


def test_trailing_stop_exit_when_close_at_or_below_threshold() -> None:
    stop = 0.1
    hwm = row(100.0, 100.0, 100.0, 0.0)
    weights = row(0.2, 0.2, 0.0, 0.2)
    threshold = 100.0 * (1.0 - stop)
    close = np.array([threshold, np.nextafter(threshold, np.inf), 50.0, 1.0])
    target = row(0.3, 0.3, 0.3, 0.3)
    new_target, stopped = apply_trailing_stop(target, weights, hwm, close, stop)
    # asset 0: at the threshold -> exit; asset 1: just above -> keep;
    # asset 2: not held -> not stopped; asset 3: held with hwm 0 (no bar yet) -> not stopped
    np.testing.assert_array_equal(stopped, [[True, False, False, False]])
    np.testing.assert_array_equal(new_target, row(0.0, 0.3, 0.3, 0.3))
    _, stopped = apply_trailing_stop(target, weights, hwm, np.array([80.0, 89.0, 1.0, 1.0]), stop)
    np.testing.assert_array_equal(stopped, [[True, True, False, False]])
    off, stopped = apply_trailing_stop(target, weights, hwm, np.array([1.0] * 4), 0.0)
    assert not stopped.any() and off is target


def test_high_water_mark_tracks_close_since_entry() -> None:
    weights = row(0.5, 0.0)
    hwm = update_hwm(np.zeros((1, 2)), weights, row(10.0, 10.0))
    np.testing.assert_array_equal(hwm, row(10.0, 0.0))
    hwm = update_hwm(hwm, weights, row(12.0, 9.0))
    np.testing.assert_array_equal(hwm, row(12.0, 0.0))
    hwm = update_hwm(hwm, weights, row(11.0, 9.0))
    np.testing.assert_array_equal(hwm, row(12.0, 0.0))
    hwm = update_hwm(hwm, row(0.0, 0.5), row(11.0, 9.0))  # exit 0, enter 1: starts from the close
    np.testing.assert_array_equal(hwm, row(0.0, 9.0))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"fee": -0.1}, "fee"),
        ({"slippage": 1.0}, "slippage"),
        ({"min_cash": 1.5}, "min_cash"),
        ({"max_weight": 0.0}, "max_weight"),
        ({"max_weight": 1.2}, "max_weight"),
        ({"trailing_stop": -0.01}, "trailing_stop"),
        ({"min_trade": 2.0}, "min_trade"),
    ],
)
def test_costs_validation(kwargs: dict[str, float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Costs(**kwargs)

"""Risk rules (paper_trader.risk over trainers.accounting): property tests that no order ever
breaks them, through the real decision, the real simulated fills and the real ledger."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from paper_trader.brokers import SimBroker
from paper_trader.ledger import Fill, Ledger
from paper_trader.loop import record_orders, settle
from paper_trader.outbox import send_outbox
from paper_trader.risk import LIMIT_EPS, decide, min_trade_for
from trainers.accounting import Costs
from trainers.data import Panel

SYMBOLS = ("AAAUSD", "BBBUSD", "CCCUSD")
N = len(SYMBOLS)
T0 = 1_700_000_000 - 1_700_000_000 % 3600

price = st.floats(0.05, 5_000.0, allow_nan=False)
score = st.one_of(st.floats(-1.5, 1.5, allow_nan=False), st.just(float("nan")), st.just(0.0), st.just(1.0))


@st.composite
def costs_st(draw: st.DrawFn) -> tuple[Costs, float]:
    costs = Costs(
        fee=draw(st.sampled_from([0.0, 0.001, 0.0025])),
        slippage=draw(st.sampled_from([0.0, 0.0005])),
        min_cash=draw(st.sampled_from([0.0, 0.05, 0.2])),
        max_weight=draw(st.sampled_from([0.2, 0.34, 0.5, 1.0])),
        trailing_stop=draw(st.sampled_from([0.0, 0.02, 0.10])),
    )
    return costs, draw(st.sampled_from([0.0, 1.0, 10.0, 500.0]))


@st.composite
def account_st(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """qty, hwm, close, cash of an arbitrary long-only account (possibly over the limits)."""
    close = np.array([draw(price) for _ in range(N)])
    held = np.array([draw(st.sampled_from([0.0, 1.0])) for _ in range(N)])
    value = np.array([draw(st.floats(0.01, 20_000.0)) for _ in range(N)]) * held
    qty = value / close
    hwm = np.where(qty > 0, close * np.array([draw(st.floats(1.0, 1.5)) for _ in range(N)]), 0.0)
    cash = draw(st.floats(0.0, 20_000.0))
    return qty, hwm, close, cash


def check_decision(action, qty, hwm, close, cash, costs, min_notional) -> None:
    dec = decide(np.asarray(action), qty, hwm, close, cash, costs, min_notional)
    equity = cash + float(qty @ close)
    if equity <= 0:
        assert all(o.side == "sell" for o in dec.orders)
        return
    weights = qty * close / equity
    ordered = {o.j for o in dec.orders}
    # the planned weights (after every order, at the decision close) obey every limit
    assert (dec.planned >= 0).all()
    assert (dec.planned <= costs.max_weight + LIMIT_EPS).all()
    assert dec.planned.sum() <= 1.0 - costs.min_cash + LIMIT_EPS
    # stopped positions: held, at or below the stop, and sold in full
    expect_stop = (qty > 0) & (close <= hwm * (1 - costs.trailing_stop)) & (costs.trailing_stop > 0)
    np.testing.assert_array_equal(dec.stopped, expect_stop)
    for o in dec.orders:
        assert o.qty > 0 and o.side in ("buy", "sell")
        if o.side == "sell":
            assert o.qty <= qty[o.j] * (1 + 1e-12), "never sell more than held: no short"
            assert o.target_weight < weights[o.j]
        else:
            assert o.target_weight > weights[o.j]
        if dec.stopped[o.j]:
            assert o.side == "sell" and o.target_weight == 0.0 and o.qty == qty[o.j]
            assert o.reason == "trailing_stop"
        elif o.target_weight > 0.0:  # anything but a full exit respects the minimum notional
            assert abs(o.target_weight - weights[o.j]) * equity >= min_notional * (1 - 1e-9)
    for j in np.flatnonzero(dec.stopped):
        assert j in ordered
    # an asset without an order keeps its weight
    for j in set(range(N)) - ordered:
        assert dec.planned[j] == pytest.approx(weights[j], abs=1e-12)


@settings(max_examples=400, deadline=None)
@given(
    action=st.lists(score, min_size=N, max_size=N),
    account=account_st(),
    cm=costs_st(),
)
def test_no_decision_breaks_a_rule(action, account, cm) -> None:
    qty, hwm, close, cash = account
    costs, min_notional = cm
    check_decision(action, qty, hwm, close, cash, costs, min_notional)


def test_a_stopped_position_is_sold_whatever_the_model_says() -> None:
    close = np.array([90.0, 50.0, 1.0])
    qty, hwm = np.array([10.0, 2.0, 0.0]), np.array([100.0, 50.0, 0.0])
    dec = decide(np.ones(3), qty, hwm, close, 100.0, Costs(trailing_stop=0.10), 10.0)
    assert dec.stopped.tolist() == [True, False, False]
    (sell,) = [o for o in dec.orders if o.j == 0]
    assert (sell.side, sell.qty, sell.target_weight, sell.reason) == ("sell", 10.0, 0.0, "trailing_stop")


def test_orders_below_the_minimum_notional_are_not_placed() -> None:
    close, qty = np.array([100.0, 100.0, 100.0]), np.array([10.0, 0.0, 0.0])
    equity = 1000.0 + 1000.0
    # targets 0.5 (held: no change) / 0.0038 (an order of 7.6 in quote currency) / 0
    action = np.array([0.5 / 0.95, 0.004, -1.0])
    no_band = Costs(trailing_stop=0.1, min_trade=0.0)  # the minimum notional alone
    dec = decide(action, qty, np.array([100.0, 0, 0]), close, 1000.0, no_band, 10.0)
    assert dec.orders == []
    assert dec.target[1] * equity == pytest.approx(7.6)
    assert min_trade_for(10.0, equity) == pytest.approx(0.005)
    dec = decide(action, qty, np.array([100.0, 0, 0]), close, 1000.0, no_band, 5.0)
    assert [(o.j, o.side) for o in dec.orders] == [(1, "buy")]


def test_the_models_no_trade_band_applies_at_the_decision_unless_the_broker_applies_it() -> None:
    close, qty = np.array([100.0, 100.0, 100.0]), np.array([10.0, 0.0, 0.0])
    action = np.array([0.5 / 0.95, 0.004, -1.0])  # asset 1: a change of 0.0038 of equity
    band = Costs(trailing_stop=0.1, min_trade=0.01)
    hwm = np.array([100.0, 0, 0])
    assert decide(action, qty, hwm, close, 1000.0, band, 5.0).orders == []  # inside the 1% band
    at_fill = decide(action, qty, hwm, close, 1000.0, band, 5.0, band_at_decision=False)
    assert [(o.j, o.side) for o in at_fill.orders] == [(1, "buy")]  # the broker applies it


def test_kept_small_sells_are_forced_when_they_would_break_the_cash_reserve() -> None:
    """Weights drifted just above the targets by less than the band each, but together the
    cash reserve would be broken: the sells are placed, each selling the minimum notional."""
    close = np.ones(3)
    qty = np.array([3200.0, 3200.0, 3200.0])  # 0.32 each of 10,000 -> cash 0.04 < 0.05
    cash = 10_000.0 - qty.sum()
    action = np.ones(3)  # targets 0.95 / 3 = 0.3167 each: change 0.0033 < band 0.005
    dec = decide(action, qty, np.zeros(3) + 1.0, close, cash, Costs(trailing_stop=0.0, min_trade=0.0), 50.0)
    assert sorted((o.j, o.side, o.reason) for o in dec.orders) == [(j, "sell", "limit") for j in range(3)]
    for o in dec.orders:
        assert o.qty * close[o.j] == pytest.approx(50.0)
    assert dec.planned.sum() <= 0.95


@st.composite
def path_st(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray]]:
    """A price path (T, N, 5) with bounded bar-to-bar moves and one action per bar."""
    n_bars = draw(st.integers(3, 7))
    start = np.array([draw(price) for _ in range(N)])
    moves = np.array([[draw(st.floats(-0.15, 0.15)) for _ in range(N)] for _ in range(2 * n_bars)])
    levels = start * np.exp(np.cumsum(moves, axis=0))  # open, close, open, close, ...
    prices = np.empty((n_bars, N, 5))
    prices[:, :, 0] = levels[0::2]
    prices[:, :, 3] = levels[1::2]
    prices[:, :, 1] = np.maximum(prices[:, :, 0], prices[:, :, 3])
    prices[:, :, 2] = np.minimum(prices[:, :, 0], prices[:, :, 3])
    prices[:, :, 4] = 1.0
    actions = [np.array(draw(st.lists(score, min_size=N, max_size=N))) for _ in range(n_bars)]
    return prices, actions


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=path_st(), cm=costs_st())
def test_no_order_breaks_a_rule_through_fills_and_the_ledger(path, cm) -> None:
    """Bar after bar through the loop's own steps (settle: real simulated fills at the open
    into the real ledger; decide; record_orders; the outbox sent): every decision obeys the rules, fills never
    short, conserve value net of costs, and put ordered assets on their target weights."""
    prices, actions = path
    costs, min_notional = cm
    ts = np.arange(T0, T0 + 3600 * len(prices), 3600).astype("datetime64[s]")
    panel = Panel(SYMBOLS, ts, prices)
    broker = SimBroker(
        panel=panel, holdout_cut="2000-01-01T00:00:00Z", fee=costs.fee, slippage=costs.slippage
    )
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.db")
        ledger.open_account("sim", SYMBOLS, 10_000.0)
        stop = threading.Event()
        after = None
        for action in actions:
            bar = broker.next_bar(after, stop)
            assert bar is not None
            with ledger.bar(bar.ts) as tx:
                before = tx.state()
                pending = {o.client_order_id: (o.symbol, o.target_weight) for o in tx.pending_orders()}
                mark = settle(tx, broker, bar)
                assert (mark.qty >= 0).all(), "no short position after a fill"
                if pending:
                    value_open = before.cash + float(before.qty @ bar.open)
                    after_open = mark.cash + float(mark.qty @ bar.open)
                    fills = ledger_fills(tx, bar.ts)
                    slip = sum((f.price - bar.open[SYMBOLS.index(f.symbol)]) * f.qty for f in fills)
                    cost = sum(f.fee for f in fills) + slip
                    assert after_open == pytest.approx(value_open - cost, rel=1e-9, abs=1e-9)
                    ordered = {SYMBOLS.index(sym) for sym, _ in pending.values()}
                    for f in fills:
                        j = SYMBOLS.index(f.symbol)
                        target = pending[f.client_order_id][1]
                        assert mark.qty[j] * bar.open[j] / after_open == pytest.approx(target, abs=1e-9)
                    if not {j for j in range(N) if before.qty[j] > 0} - ordered:
                        assert mark.cash >= -1e-9 * value_open, "cash never overdrawn"
                check_decision(action, mark.qty, mark.hwm, bar.close, mark.cash, costs, min_notional)
                dec = decide(action, mark.qty, mark.hwm, bar.close, mark.cash, costs, min_notional)
                record_orders(tx, SYMBOLS, dec, 1, "prop")
                tx.close_bar(mark.equity, mark.fees, mark.turnover, 1)
            send_outbox(ledger, broker, structlog.get_logger("test"))  # as the loop does after the bar
            after = bar.ts
        ledger.close()


def ledger_fills(tx, bar_ts: int) -> list[Fill]:
    """The fills recorded in the open transaction at ``bar_ts``."""
    return list(tx.session.scalars(select(Fill).where(Fill.bar_ts == bar_ts)))

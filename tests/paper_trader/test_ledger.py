"""The ledger (paper_trader.ledger) on real SQLite files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.exc import IntegrityError

from paper_trader.ledger import (
    CANCELLED,
    FILLED,
    PENDING,
    PENDING_SUBMIT,
    Ledger,
    LedgerError,
    client_order_id,
)

SYMBOLS = ("ETHUSD", "LTCUSD", "XRPUSD")
T0 = 1_561_939_200  # 2019-07-01T00:00:00Z


def send_all(ledger: Ledger) -> None:
    """What the outbox does with a broker that takes every order: record each as sent."""
    for o in ledger.outbox():
        o.broker_order_id = f"b-{o.client_order_id}"
        assert ledger.record_submission(o) == PENDING


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "paper_trader" / "ledger.db")
    led.open_account("sim", SYMBOLS, 1000.0)
    return led


def test_new_account_is_all_cash_and_reopening_keeps_it(tmp_path: Path, ledger: Ledger) -> None:
    state = ledger.state()
    assert state.cash == 1000.0 and state.initial_cash == 1000.0
    assert state.symbols == SYMBOLS
    assert state.qty.tolist() == [0.0, 0.0, 0.0] and state.hwm.tolist() == [0.0, 0.0, 0.0]
    assert state.last_bar_ts is None and state.bars_processed == 0
    again = Ledger(ledger.path).open_account("sim", SYMBOLS, 5.0)  # initial cash only counts once
    assert again.run_id == state.run_id and again.cash == 1000.0


def test_ledger_of_other_symbols_or_broker_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match=r"ledger\.db: this ledger trades"):
        Ledger(ledger.path).open_account("sim", ("ETHUSD", "LTCUSD"), 1000.0)
    with pytest.raises(LedgerError, match="with broker 'sim'"):
        Ledger(ledger.path).open_account("alpaca", SYMBOLS, 1000.0)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "ledger.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.db: not a usable ledger database"):
        Ledger(bad)


def test_bar_commits_fills_orders_equity_and_last_bar(ledger: Ledger) -> None:
    with ledger.bar(T0) as tx:
        order = tx.add_order("LTCUSD", "buy", 2.0, 0.2, "rebalance", 3, "s1")
        tx.session.flush()
        tx.close_bar(1000.0, 0.0, 0.0, 3)
    assert order.client_order_id == client_order_id(ledger.state().run_id, T0, "LTCUSD")
    assert [o.status for o in ledger.orders()] == [PENDING_SUBMIT]
    send_all(ledger)
    with ledger.bar(T0 + 3600) as tx:
        (pending,) = tx.pending_orders()
        tx.apply_fill(pending, 2.0, 100.0, 0.5)
        tx.set_hwm(np.array([0.0, 101.0, 0.0]))
        tx.close_bar(999.5 + 2.0, 0.5, 0.2, 3)
    state = ledger.state()
    assert state.cash == pytest.approx(1000.0 - 200.0 - 0.5)
    assert state.qty.tolist() == [0.0, 2.0, 0.0]
    assert state.hwm.tolist() == [0.0, 101.0, 0.0]
    assert state.last_bar_ts == T0 + 3600 and state.bars_processed == 2
    (fill,) = ledger.fills()
    assert (fill.symbol, fill.qty, fill.price, fill.fee) == ("LTCUSD", 2.0, 100.0, 0.5)
    assert fill.bar_ts == T0 + 3600
    assert [o.status for o in ledger.orders()] == [FILLED]
    pos = {p.symbol: p for p in ledger.positions()}
    assert pos["LTCUSD"].entry_bar_ts == T0 + 3600 and pos["LTCUSD"].entry_price == 100.0
    rows = ledger.equity_rows()
    assert [r.bar_ts for r in rows] == [T0, T0 + 3600]
    assert rows[1].peak == pytest.approx(1001.5) and rows[1].drawdown == 0.0


def test_a_failed_bar_leaves_nothing_behind(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError, match="crash inside the bar"), ledger.bar(T0) as tx:
        tx.add_order("ETHUSD", "buy", 1.0, 0.5, "rebalance", 1, "s1")
        tx.session.flush()
        tx.close_bar(1000.0, 0.0, 0.0, 1)
        raise RuntimeError("crash inside the bar")
    state = ledger.state()
    assert state.last_bar_ts is None and state.bars_processed == 0
    assert ledger.orders() == [] and ledger.equity_rows() == []


def test_a_processed_bar_is_never_processed_again(ledger: Ledger) -> None:
    with ledger.bar(T0) as tx:
        tx.close_bar(1000.0, 0.0, 0.0, 1)
    for ts in (T0, T0 - 3600):
        with pytest.raises(LedgerError, match="is not after the last processed bar"), ledger.bar(ts):
            pass
    assert ledger.state().bars_processed == 1


def test_an_order_id_can_only_be_placed_once(ledger: Ledger) -> None:
    with pytest.raises(IntegrityError), ledger.bar(T0) as tx:
        tx.add_order("ETHUSD", "buy", 1.0, 0.5, "rebalance", 1, "s1")
        tx.add_order("ETHUSD", "buy", 1.0, 0.5, "rebalance", 1, "s1")
        tx.session.flush()
    assert ledger.orders() == []


def test_a_full_exit_leaves_exactly_zero_and_clears_the_entry(ledger: Ledger) -> None:
    with ledger.bar(T0) as tx:
        tx.add_order("XRPUSD", "buy", 3.3, 0.3, "rebalance", 1, "s1")
        tx.close_bar(1000.0, 0.0, 0.0, 1)
    send_all(ledger)
    with ledger.bar(T0 + 3600) as tx:
        (o,) = tx.pending_orders()
        tx.apply_fill(o, 1234.567891, 0.31, 0.1)
        tx.set_hwm(np.array([0.0, 0.0, 0.33]))
        tx.add_order("XRPUSD", "sell", 1234.567891, 0.0, "trailing_stop", 1, "s1")
        tx.add_order("ETHUSD", "buy", 0.01, 0.0, "rebalance", 1, "s1")
        tx.close_bar(1000.0, 0.1, 0.3, 1)
    send_all(ledger)
    with ledger.bar(T0 + 7200) as tx:
        sell, tiny = sorted(tx.pending_orders(), key=lambda o: o.symbol, reverse=True)
        tx.apply_fill(sell, -1234.567891 - 1e-9, 0.30, 0.1)  # a broker may report a hair more
        tx.cancel(tiny, "below minimum")
        tx.close_bar(990.0, 0.1, 0.3, 1)
    state = ledger.state()
    assert state.qty[2] == 0.0
    pos = {p.symbol: p for p in ledger.positions()}
    assert pos["XRPUSD"].entry_bar_ts is None and pos["XRPUSD"].hwm == 0.0
    fills = {f.client_order_id: f for f in ledger.fills()}
    assert sum(f.qty for f in fills.values() if f.symbol == "XRPUSD") == 0.0
    assert {o.symbol: o.status for o in ledger.orders() if o.bar_ts == T0 + 3600} == {
        "XRPUSD": FILLED,
        "ETHUSD": CANCELLED,
    }
    assert PENDING not in {o.status for o in ledger.orders()}


def test_the_outbox_holds_orders_until_their_outcome_is_recorded_once(ledger: Ledger) -> None:
    with ledger.bar(T0) as tx:
        tx.add_order("ETHUSD", "buy", 1.0, 0.5, "rebalance", 1, "s1")
        tx.add_order("LTCUSD", "buy", 2.0, 0.2, "rebalance", 1, "s1")
        tx.close_bar(1000.0, 0.0, 0.0, 1)
    eth, ltc = ledger.outbox()
    assert (eth.symbol, ltc.symbol) == ("ETHUSD", "LTCUSD")
    eth.broker_order_id, eth.qty = "b-1", 0.999  # the broker may send a rounded quantity
    assert ledger.record_submission(eth) == PENDING
    ltc.status, ltc.status_reason = CANCELLED, "refused by Alpaca: insufficient balance"
    assert ledger.record_submission(ltc) == CANCELLED
    assert ledger.outbox() == []
    got = {o.symbol: (o.status, o.status_reason, o.broker_order_id, o.qty) for o in ledger.orders()}
    assert got == {
        "ETHUSD": (PENDING, None, "b-1", 0.999),
        "LTCUSD": (CANCELLED, "refused by Alpaca: insufficient balance", None, 2.0),
    }
    with pytest.raises(LedgerError, match="is pending, not pending_submit"):
        ledger.record_submission(eth)
    with ledger.bar(T0 + 3600) as tx:  # only the sent order waits for its fill
        assert [o.symbol for o in tx.pending_orders()] == ["ETHUSD"]
        assert tx.unsent_orders() == []

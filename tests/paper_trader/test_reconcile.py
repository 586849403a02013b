"""The reconciliation at start (paper_trader.reconcile) and the outbox (paper_trader.outbox):
a real ledger on SQLite and the Alpaca broker over the real alpaca-py clients against the
local server speaking Alpaca's API (tests/paper_trader/alpaca_server.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from daemon.monitor import monitor_alerts
from paper_trader.brokers import BrokerError, SimBroker
from paper_trader.brokers.alpaca import AlpacaBroker
from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.config import TraderConfig
from paper_trader.ledger import CANCELLED, FILLED, PENDING, PENDING_SUBMIT, Ledger, client_order_id
from paper_trader.loop import Trader
from paper_trader.model_source import EnsembleSource
from paper_trader.outbox import send_outbox
from paper_trader.reconcile import reconcile
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.conftest import local_settings
from tests.paper_trader.ensemble_root import read_json
from trainers.bundle import PipelineSpec

SYMBOLS = ("ETHUSD", "LTCUSD")
LOG = structlog.get_logger("test")


class Clock:
    """The broker's notion of now (it cancels orders whose fill bar has closed)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, ts: int) -> None:
        self.now = datetime.fromtimestamp(ts, UTC)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def broker(server: FakeAlpaca, clock: Clock) -> AlpacaBroker:
    client = AlpacaClient(local_settings(server, retry_backoff_s=0.0))
    return AlpacaBroker(client, SYMBOLS, 0.0, clock=clock)


def latest_closed_bar(now: datetime) -> int:
    return int(now.timestamp()) // 3600 * 3600 - 3600


def test_reconciliation_recovers_sent_orders_and_reports_every_difference(
    tmp_path: Path, server: FakeAlpaca, broker: AlpacaBroker, clock: Clock, now: datetime
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    run = ledger.open_account("alpaca", SYMBOLS, 10_000.0).run_id
    t2 = latest_closed_bar(now)
    t0, t1 = t2 - 7200, t2 - 3600
    # bar t0: ETH bought, sent and filled at t1 (ledger and Alpaca agree)
    with ledger.bar(t0) as tx:
        tx.add_order("ETHUSD", "buy", 1.0, 0.2, "rebalance", 1, "s")
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    clock.at(t0 + 3600)  # sent when bar t0 closed
    assert send_outbox(ledger, broker, LOG) == (1, 0)
    clock.now = now
    # bar t1: fill ETH; an LTC order the ledger calls sent, which Alpaca never got
    with ledger.bar(t1) as tx:
        (eth,) = tx.pending_orders()
        tx.apply_fill(eth, 1.0, 2000.0, 0.0)
        tx.add_order("LTCUSD", "buy", 10.0, 0.08, "rebalance", 1, "s")
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    (lost,) = ledger.outbox()
    lost.broker_order_id = "never-reached-alpaca"
    ledger.record_submission(lost)
    # bar t2: two orders in the outbox; the trader died after sending the ETH one
    with ledger.bar(t2) as tx:
        tx.add_order("ETHUSD", "buy", 0.5, 0.3, "rebalance", 1, "s")
        tx.add_order("LTCUSD", "buy", 5.0, 0.04, "rebalance", 1, "s")
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    sent_cid, unsent_cid = (client_order_id(run, t2, s) for s in SYMBOLS)
    server.place_order("ETHUSD", "buy", 0.5, sent_cid)
    # an orphan: an order of this ledger's run that the ledger never recorded
    orphan = client_order_id(run, t0 - 3600, "LTCUSD")
    server.place_order("LTCUSD", "buy", 1.0, orphan)

    report = reconcile(ledger, broker, min_notional=10.0)
    assert report is not None
    assert report["ok"] is False and report["error"] is None
    assert report["recovered"] == [sent_cid] and report["unsent"] == [unsent_cid]
    got = {(d["kind"], d.get("client_order_id") or d.get("symbol")) for d in report["differences"]}
    assert got == {
        ("order_missing_at_broker", lost.client_order_id),
        ("order_unknown_to_ledger", orphan),
        ("position_mismatch", "LTCUSD"),  # Alpaca holds the orphan's 1 LTC (80 USD)
    }  # ETH: booked 1.0 + 0.5 filled of the recovered order = Alpaca's 1.5: no difference
    ltc = next(d for d in report["differences"] if d["kind"] == "position_mismatch")
    assert (ltc["ledger"], ltc["broker"]) == (0.0, 1.0)
    placed = {o["client_order_id"]: o for o in server.orders()}
    orders = {o.client_order_id: o for o in ledger.orders()}
    assert orders[sent_cid].status == PENDING
    assert orders[sent_cid].broker_order_id == placed[sent_cid]["id"]
    assert orders[unsent_cid].status == PENDING_SUBMIT

    again = reconcile(ledger, broker, min_notional=10.0)
    assert again is not None and again["recovered"] == [] and again["unsent"] == [unsent_cid]
    # the outbox sends the rest: the recovered order is not sent again
    assert send_outbox(ledger, broker, LOG) == (1, 0)
    assert len(server.order_posts(sent_cid)) == 0 and len(server.order_posts(unsent_cid)) == 1
    assert {o.client_order_id: o.status for o in ledger.orders()}[unsent_cid] == PENDING


def test_an_account_that_matches_the_ledger_reconciles_clean(
    tmp_path: Path, server: FakeAlpaca, broker: AlpacaBroker, clock: Clock, now: datetime
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open_account("alpaca", SYMBOLS, 10_000.0)
    t = latest_closed_bar(now)
    with ledger.bar(t - 3600) as tx:
        tx.add_order("LTCUSD", "buy", 10.0, 0.08, "rebalance", 1, "s")
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    clock.at(t)
    assert send_outbox(ledger, broker, LOG) == (1, 0)
    clock.now = now
    with ledger.bar(t) as tx:
        (ltc,) = tx.pending_orders()
        tx.apply_fill(ltc, 10.0, 80.0, 0.0)
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    server.set_position("ETHUSD", 0.001, 2000.0)  # 2 USD of dust: below min_notional
    report = reconcile(ledger, broker, min_notional=10.0)
    assert report is not None and report["ok"] is True, report
    assert report["differences"] == [] and report["orders_compared"] == 1
    assert [o.status for o in ledger.orders()] == [FILLED]


def test_a_stale_unsent_order_is_cancelled_and_an_unreachable_broker_keeps_the_outbox(
    tmp_path: Path, server: FakeAlpaca, now: datetime
) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.open_account("alpaca", SYMBOLS, 10_000.0)
    t = latest_closed_bar(now) - 3600  # Alpaca has published the bar after it as closed too
    for sym, px in (("ETHUSD", 2000.0), ("LTCUSD", 80.0)):
        server.set_bars(
            sym, [(datetime.fromtimestamp(t + k * 3600, UTC), px, px, px, px, 1.0) for k in (0, 1)]
        )
    with ledger.bar(t) as tx:
        tx.add_order("ETHUSD", "buy", 0.5, 0.1, "rebalance", 1, "s")
        tx.close_bar(10_000.0, 0.0, 0.0, 1)
    client = AlpacaClient(local_settings(server, retries=0))
    broker = AlpacaBroker(client, SYMBOLS, 0.0, clock=lambda: now)
    server.fail_next("GET", "/v2/orders:by_client_order_id", 503)
    with pytest.raises(BrokerError, match="HTTP 503"):
        send_outbox(ledger, broker, LOG)
    assert [o.status for o in ledger.outbox()] == [PENDING_SUBMIT]
    assert send_outbox(ledger, broker, LOG) == (0, 1)
    (o,) = ledger.orders()
    assert o.status == CANCELLED and "stale" in (o.status_reason or "")
    assert server.order_posts() == []


def test_a_replay_has_nothing_to_reconcile(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    broker = SimBroker()
    ledger.open_account("sim", broker.symbols, 1000.0)
    assert reconcile(ledger, broker, min_notional=10.0) is None


def test_the_trader_reports_a_difference_in_its_status_and_the_monitor_alerts(
    tmp_path: Path, server: FakeAlpaca, broker: AlpacaBroker, now: datetime
) -> None:
    root = tmp_path / "root"
    config = TraderConfig.build(root=root, broker="alpaca", min_notional=10.0)
    trader = Trader(config, broker, EnsembleSource(root, PipelineSpec(SYMBOLS)))
    run = trader.ledger.open_account("alpaca", SYMBOLS, 10_000.0).run_id
    orphan = client_order_id(run, latest_closed_bar(now), "ETHUSD")
    server.place_order("ETHUSD", "buy", 0.25, orphan)  # e.g. sent by a ledger restored from backup
    assert monitor_alerts(root, None, None) == []  # no status yet

    trader.reconcile()
    trader._write_files(trader.ledger.state(), force=True)
    status = read_json(config.status_path)
    assert status is not None
    recon = status["reconciliation"]
    assert recon["ok"] is False
    assert {d["kind"] for d in recon["differences"]} == {"order_unknown_to_ledger", "position_mismatch"}
    (alert,) = [a for a in monitor_alerts(root, None, None) if a.kind == "ledger_mismatch"]
    assert alert.severity == "critical" and "2 difference(s)" in alert.message
    assert alert.details["differences"] == recon["differences"]

    server.fail_next("GET", "/v2/orders", 503, times=10)  # Alpaca down: the report says so
    trader.reconcile()
    trader._write_files(trader.ledger.state(), force=True)
    recon = (read_json(config.status_path) or {})["reconciliation"]
    assert recon["ok"] is None and "HTTP 503" in recon["error"]
    assert [a for a in monitor_alerts(root, None, None) if a.kind == "ledger_mismatch"] == []

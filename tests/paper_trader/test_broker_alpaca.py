"""The Alpaca broker adapter (paper_trader.brokers.alpaca) driving the real alpaca-py clients
against the local server that speaks Alpaca's documented API (tests/paper_trader/
alpaca_server.py), with the real loop, ledger and ensemble. Keys are made up here."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from paper_trader.brokers.alpaca import AlpacaBroker
from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.brokers.alpaca_settings import KEY_ID_VARS, SECRET_KEY_VARS
from paper_trader.config import TraderConfig
from paper_trader.ledger import CANCELLED, FILLED, PENDING, Ledger, Order
from paper_trader.loop import Trader
from paper_trader.model_source import EnsembleSource
from tests.conftest import TrainedStudy
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.conftest import local_settings
from tests.paper_trader.ensemble_root import PIPELINE, REPO, bars_done, ensemble_root, wait_until
from trainers.accounting import Costs
from trainers.data import DEFAULT_HOLDOUT_CUT, Panel

N_BARS = 4


class Clock:
    """The adapter's notion of now, stepped by the test (the server serves 2019 bars)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def when(panel: Panel, i: int) -> datetime:
    return datetime.fromtimestamp(int(panel.timestamps[i].astype("int64")), UTC)


MODEL_FEE = Costs().fee  # the trained_study fixture trains with the default costs


@pytest.fixture
def server(keys: tuple[str, str], panel: Panel) -> Iterator[FakeAlpaca]:
    """The server with the embedded bars around the hold-out cut (instead of conftest's)."""
    cut = panel.index_of(DEFAULT_HOLDOUT_CUT)
    prices = {s: float(panel.prices[cut, j, 0]) for j, s in enumerate(panel.symbols)}
    with FakeAlpaca(*keys, cash=10_000.0, prices=prices) as fake:
        for j, sym in enumerate(panel.symbols):
            rows = panel.prices[cut - 600 : cut + N_BARS + 2, j]
            fake.set_bars(sym, [(when(panel, cut - 600 + k), *map(float, r)) for k, r in enumerate(rows)])
        yield fake


@pytest.fixture(scope="module")
def synced_root(trained_study: TrainedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("alpaca") / "root"
    return ensemble_root(trained_study.root, dest, trained_study.study_name, top_n=3)


@pytest.mark.slow
def test_the_loop_trades_alpaca_bars_and_orders_each_order_once(
    server: FakeAlpaca, synced_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(synced_root / ".current_study", root / ".current_study")
    shutil.copytree(synced_root / "ensemble", root / "ensemble")
    cut = panel.index_of(DEFAULT_HOLDOUT_CUT)
    config = TraderConfig.build(
        root=root, broker="alpaca", max_bars=N_BARS, poll_s=0.02, min_notional=10.0, initial_cash=10_000.0
    )
    client = AlpacaClient(local_settings(server))
    clock = Clock(when(panel, cut) + timedelta(hours=1))  # bar `cut` has just closed
    broker = AlpacaBroker(client, panel.symbols, 0.5, clock)  # set_costs gives the model's fee
    trader = Trader(config, broker, EnsembleSource(root, PIPELINE, debounce_s=0.0))
    thread = threading.Thread(target=trader.run, daemon=True)
    for k in range(N_BARS):
        for j, sym in enumerate(panel.symbols):  # orders decided at bar k fill near the next open
            server.set_price(sym, float(panel.prices[cut + k + 1, j, 0]))
        clock.now = when(panel, cut + k) + timedelta(hours=1)
        if k == 0:
            thread.start()
        wait_until(lambda k=k: bars_done(root) >= k + 1, f"bar {k}")
    thread.join(timeout=300)
    assert not thread.is_alive()

    ledger = Ledger(config.ledger_path)
    rows, orders = ledger.equity_rows(), ledger.orders()
    assert [r.bar_ts for r in rows] == [int(panel.timestamps[cut + k].astype("int64")) for k in range(N_BARS)]
    placed = {o["client_order_id"]: o for o in server.orders()}
    assert placed, "the ensemble must trade for this test to mean much"
    assert {o.client_order_id for o in orders if o.broker_order_id} == set(placed)
    for cid in placed:
        assert len(server.order_posts(cid)) == 1
    # fills in the ledger are what Alpaca reported (orders of the last bar are still pending)
    fills = {f.client_order_id: f for f in ledger.fills()}
    last = rows[-1].bar_ts
    for o in orders:
        alp = placed[o.client_order_id]
        if o.bar_ts == last:
            assert o.status == PENDING
            continue
        assert o.status == FILLED
        f = fills[o.client_order_id]
        signed = float(alp["filled_qty"]) * (1 if alp["side"] == "buy" else -1)
        assert (f.qty, f.price) == (pytest.approx(signed), float(alp["filled_avg_price"]))
        assert f.fee == pytest.approx(MODEL_FEE * abs(f.qty) * f.price)  # the bundles' own fee
    # the ledger's positions plus the last bar's orders are Alpaca's holdings
    state = ledger.state()
    holdings = {k.replace("/", ""): v for k, v in server.holdings().items()}
    for j, sym in enumerate(state.symbols):
        last_orders = [placed[o.client_order_id] for o in orders if o.bar_ts == last and o.symbol == sym]
        extra = sum(float(a["filled_qty"]) * (1 if a["side"] == "buy" else -1) for a in last_orders)
        assert state.qty[j] + extra == pytest.approx(holdings.get(sym, 0.0), abs=1e-9)
    close = panel.prices[cut + N_BARS - 1, :, 3]
    np.testing.assert_allclose(rows[-1].equity, rows[-1].cash + float(state.qty @ close), rtol=1e-12)

    # a retried bar re-submits its orders: nothing is placed twice
    posts = len(server.order_posts())
    broker.submit([o for o in orders if o.bar_ts == last])
    assert len(server.order_posts()) == posts


def order(symbol: str, side: str, qty: float, target: float, cid: str, bar_ts: int | None = None) -> Order:
    """An order decided at ``bar_ts`` (default: the bar that started an hour ago, still fresh)."""
    return Order(
        client_order_id=cid,
        bar_ts=int(datetime.now(UTC).timestamp()) - 3600 if bar_ts is None else bar_ts,
        symbol=symbol,
        side=side,
        qty=qty,
        target_weight=target,
        reason="rebalance",
        status=PENDING,
        generation=1,
        study="s",
    )


def test_sells_never_exceed_the_alpaca_position_and_refused_orders_are_cancelled(
    server: FakeAlpaca, panel: Panel
) -> None:
    client = AlpacaClient(local_settings(server))
    broker = AlpacaBroker(client, panel.symbols, 0.0025)
    server.set_position("LTCUSD", 2.0, 100.0)
    sell_all = order("LTCUSD", "sell", 2.0001, 0.0, "t-sell-all")  # ledger thinks a hair more
    too_big = order("ETHUSD", "buy", 1_000.0, 0.5, "t-too-big")  # more than the cash
    nothing = order("XRPUSD", "sell", 5.0, 0.1, "t-nothing")  # Alpaca holds none
    broker.submit([sell_all, too_big, nothing])
    assert server.holdings() == {}
    assert (sell_all.status, sell_all.qty, sell_all.broker_order_id is not None) == (PENDING, 2.0, True)
    assert too_big.status == CANCELLED and "refused by Alpaca" in (too_big.status_reason or "")
    assert "insufficient balance" in (too_big.status_reason or "")
    assert nothing.status == CANCELLED and nothing.status_reason == "nothing to sell at Alpaca"
    assert [p.body["client_order_id"] for p in server.order_posts()] == ["t-sell-all", "t-too-big"]


def test_an_order_whose_fill_bar_has_closed_is_not_sent(server: FakeAlpaca, panel: Panel) -> None:
    cut = panel.index_of(DEFAULT_HOLDOUT_CUT)
    newest = cut + N_BARS + 1  # the newest bar the server publishes
    clock = Clock(when(panel, newest) + timedelta(hours=1, minutes=5))
    broker = AlpacaBroker(AlpacaClient(local_settings(server)), panel.symbols, 0.0025, clock)
    ts = [int(when(panel, i).timestamp()) for i in (newest - 1, newest)]
    stale = order("ETHUSD", "buy", 0.1, 0.1, "t-stale", bar_ts=ts[0])  # its fill bar has closed
    fresh = order("ETHUSD", "buy", 0.1, 0.1, "t-fresh", bar_ts=ts[1])
    broker.submit([stale, fresh])
    assert stale.status == CANCELLED and "stale" in (stale.status_reason or "")
    assert fresh.status == PENDING and fresh.broker_order_id is not None
    assert [o["client_order_id"] for o in server.orders()] == ["t-fresh"]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paper_trader", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": str(REPO)},
    )


def test_alpaca_needs_keys_and_live_needs_the_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in (*KEY_ID_VARS, *SECRET_KEY_VARS)}
    res = run_cli("--root", str(tmp_path), "--broker", "alpaca", env=env)
    assert res.returncode == 2 and "ALPACA_API_KEY_ID" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    env[KEY_ID_VARS[0]], env[SECRET_KEY_VARS[0]] = "PKFAKE" + secrets.token_hex(8).upper(), "fake-secret"
    res = run_cli("--root", str(tmp_path), "--broker", "alpaca", "--live", env=env)
    assert res.returncode == 2 and "refusing Alpaca's live (real-money) endpoint" in res.stderr
    assert "fake-secret" not in res.stderr + res.stdout

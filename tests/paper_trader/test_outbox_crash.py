"""Crash safety with Alpaca: a real ``python -m paper_trader --broker alpaca`` process against
the local server speaking Alpaca's API (tests/paper_trader/alpaca_server.py) SIGKILLs itself
right after sending its first order, before that order's outcome is committed (the test hook
``PAPER_TRADER_TEST_SIGKILL_AFTER_SUBMIT``, paper_trader/outbox.py). It is restarted two bars
later: the sent order is recovered by its client order id (never placed again), the orders
it had not sent are cancelled as stale, and the server's orders and the ledger agree."""

from __future__ import annotations

import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from paper_trader.ledger import CANCELLED, FILLED, PENDING, Ledger
from paper_trader.outbox import TEST_SIGKILL_ENV
from tests.conftest import TrainedStudy
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.ensemble_root import ensemble_root, finish, read_json, start_trader
from trainers.data import DEFAULT_HOLDOUT_CUT, Panel

HISTORY = 600  # bars served before the first traded one
# overrides of the models' own costs, so the tiny-budget ensemble trades on its first bar
COMMON = ["--min-notional", "10", "--trailing-stop", "0.03", "--max-weight", "0.5", "--min-trade", "0"]


def serve_bars(server: FakeAlpaca, panel: Panel, rows: np.ndarray, first_ts: int, n: int) -> None:
    """Publish the first ``n`` of ``rows`` (``(T, n_assets, 5)``), hourly from ``first_ts``."""
    for j, sym in enumerate(panel.symbols):
        bars = [(datetime.fromtimestamp(first_ts + k * 3600, UTC), *map(float, rows[k, j])) for k in range(n)]
        server.set_bars(sym, bars)


@pytest.mark.slow
def test_sigkill_between_send_and_commit_then_restart_two_bars_later(
    trained_study: TrainedStudy,
    keys: tuple[str, str],
    panel: Panel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = ensemble_root(trained_study.root, tmp_path / "base", trained_study.study_name)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy2(base / ".current_study", root / ".current_study")
    shutil.copytree(base / "ensemble", root / "ensemble")
    cut = panel.index_of(DEFAULT_HOLDOUT_CUT)
    rows = panel.prices[cut - HISTORY : cut + 2]  # HISTORY bars up to b1, then b2 and b3
    # real hours, in the past: b1 is 4 h old and b3 closed an hour ago (the trader reads the clock)
    b1 = int(datetime.now(UTC).timestamp()) // 3600 * 3600 - 4 * 3600
    b3 = b1 + 2 * 3600
    first = b1 - (HISTORY - 1) * 3600

    with FakeAlpaca(*keys, cash=1_000_000.0) as server:
        args = ["--broker", "alpaca", "--alpaca-url", server.url, "--alpaca-data-url", server.url, *COMMON]
        serve_bars(server, panel, rows, first, HISTORY)  # the newest bar published is b1
        for j, sym in enumerate(panel.symbols):
            server.set_price(sym, float(rows[HISTORY, j, 0]))  # orders of b1 fill at b2's open

        monkeypatch.setenv(TEST_SIGKILL_ENV, "1")
        first_run = start_trader(root, *args)
        assert finish(first_run) == -signal.SIGKILL, "the trader must send an order at b1 (see its log)"
        monkeypatch.delenv(TEST_SIGKILL_ENV)

        ledger = Ledger(root / "paper_trader" / "ledger.db")
        assert ledger.state().last_bar_ts == b1  # the bar committed before anything was sent
        decided = ledger.orders()
        assert {o.status for o in decided} == {"pending_submit"}
        assert len(decided) >= 2, "b1 must leave unsent orders too for this test to mean much"
        (sent,) = server.orders()  # killed right after the first send
        assert sent["client_order_id"] == decided[0].client_order_id

        serve_bars(server, panel, rows, first, HISTORY + 2)  # two bars later: b2 and b3 closed
        for j, sym in enumerate(panel.symbols):
            server.set_price(sym, float(rows[HISTORY + 1, j, 3]))
        assert finish(start_trader(root, *args, "--max-bars", "2")) == 0

        state = ledger.state()
        assert state.last_bar_ts == b3 and state.bars_processed == 2  # b2 was skipped
        orders = {o.client_order_id: o for o in ledger.orders()}
        placed = {o["client_order_id"]: o for o in server.orders()}
        # no order lost or duplicated: the server's orders are exactly the ledger's sent ones
        assert set(placed) == {cid for cid, o in orders.items() if o.broker_order_id is not None}
        for cid, o in placed.items():
            assert len(server.order_posts(cid)) == 1
            assert orders[cid].broker_order_id == o["id"]
        recovered = orders[sent["client_order_id"]]
        assert recovered.status == FILLED  # booked at b3 from what Alpaca filled
        (fill,) = [f for f in ledger.fills() if f.client_order_id == recovered.client_order_id]
        assert abs(fill.qty) == pytest.approx(float(sent["filled_qty"]))
        for o in decided[1:]:  # not sent before b2 closed: stale, cancelled, never sent
            assert orders[o.client_order_id].status == CANCELLED
            assert "stale" in (orders[o.client_order_id].status_reason or "")
        assert all(o.status == PENDING for o in orders.values() if o.bar_ts == b3)

        status = read_json(root / "paper_trader" / "status.json") or {}
        recon = status["reconciliation"]
        assert recon["ok"] is True, recon
        assert recon["recovered"] == [recovered.client_order_id]
        assert recon["unsent"] == [o.client_order_id for o in decided[1:]]
        ledger.close()

"""AlpacaClient: the real alpaca-py clients against a local server speaking Alpaca's documented
API (tests/paper_trader/alpaca_server.py), with fake keys made up here (tests/paper_trader/
conftest.py)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.brokers.alpaca_errors import AlpacaAPIError, LiveTradingRefused, OrderConflict
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.conftest import PRICES, local_settings
from trainers.data import DataError, load_panel


@pytest.fixture
def client(server: FakeAlpaca) -> AlpacaClient:
    return AlpacaClient(local_settings(server))


# ----------------------------------------------------------------------------- account, positions


def test_account_and_positions_are_parsed(server: FakeAlpaca, client: AlpacaClient) -> None:
    server.set_position("ETHUSD", 1.5, avg_entry_price=1800.0)
    server.set_position("LTC/USD", 10.0, avg_entry_price=70.0)
    acct = client.account()
    assert acct.cash == 10_000.0
    assert acct.equity == 10_000.0 + 1.5 * 2000.0 + 10.0 * 80.0
    assert acct.currency == "USD"
    assert client.positions() == {"ETHUSD": 1.5, "LTCUSD": 10.0}
    paths = [(r.method, r.path, r.authorized) for r in server.requests]
    assert paths == [("GET", "/v2/account", True), ("GET", "/v2/positions", True)]


def test_empty_account_has_no_positions(client: AlpacaClient) -> None:
    assert client.positions() == {}


# ----------------------------------------------------------------------------- orders


def test_market_order_fills_at_the_price_and_moves_cash(server: FakeAlpaca, client: AlpacaClient) -> None:
    order = client.submit_market_order("ETHUSD", "buy", 0.5, "bar-100-ETHUSD")
    assert order.status == "filled" and order.is_filled and order.is_terminal
    assert (order.symbol, order.side, order.qty, order.filled_qty) == ("ETHUSD", "buy", 0.5, 0.5)
    assert order.filled_avg_price == 2000.0
    assert order.client_order_id == "bar-100-ETHUSD"
    assert order.submitted_at.tzinfo is not None
    (post,) = server.order_posts()
    assert post.body == {
        "symbol": "ETH/USD",
        "qty": 0.5,
        "side": "buy",
        "type": "market",
        "time_in_force": "gtc",
        "client_order_id": "bar-100-ETHUSD",
    }
    assert client.positions() == {"ETHUSD": 0.5}
    assert client.account().cash == 9_000.0
    sold = client.submit_market_order("ETHUSD", "sell", 0.2, "bar-101-ETHUSD")
    assert sold.is_filled and sold.side == "sell"
    assert math.isclose(client.positions()["ETHUSD"], 0.3)
    assert math.isclose(client.account().cash, 9_400.0)


def test_same_client_order_id_twice_posts_once(server: FakeAlpaca, client: AlpacaClient) -> None:
    first = client.submit_market_order("ETHUSD", "buy", 0.5, "cid-twice")
    again = client.submit_market_order("ETHUSD", "buy", 0.5, "cid-twice")
    assert again.order_id == first.order_id
    assert again.filled_qty == 0.5
    assert len(server.order_posts("cid-twice")) == 1
    assert len(server.orders()) == 1
    assert client.positions() == {"ETHUSD": 0.5}
    # a second client (a restarted trader) finds it too, still without posting
    again2 = AlpacaClient(local_settings(server)).submit_market_order("ETHUSD", "buy", 0.5, "cid-twice")
    assert again2.order_id == first.order_id
    assert len(server.order_posts()) == 1


def test_reusing_a_client_order_id_for_another_order_is_a_conflict(
    server: FakeAlpaca, client: AlpacaClient
) -> None:
    client.submit_market_order("ETHUSD", "buy", 0.5, "cid-conflict")
    with pytest.raises(OrderConflict, match="cid-conflict"):
        client.submit_market_order("ETHUSD", "buy", 0.7, "cid-conflict")
    with pytest.raises(OrderConflict):
        client.submit_market_order("LTCUSD", "buy", 0.5, "cid-conflict")
    assert len(server.order_posts()) == 1


def test_server_side_duplicate_422_returns_the_existing_order(
    server: FakeAlpaca, client: AlpacaClient
) -> None:
    placed = client.submit_market_order("LTCUSD", "buy", 3.0, "cid-race")
    # the lookup misses it once (another submitter's order not yet visible): the POST is
    # rejected by the server as a duplicate and the client returns the order it holds
    server.hide_from_lookup("cid-race", times=1)
    again = client.submit_market_order("LTCUSD", "buy", 3.0, "cid-race")
    assert again.order_id == placed.order_id
    assert [p.status for p in server.order_posts("cid-race")] == [200, 422]
    assert len(server.orders()) == 1
    assert server.holdings() == {"LTC/USD": 3.0}


def test_lost_order_answer_is_recovered_without_a_second_order(
    server: FakeAlpaca, client: AlpacaClient
) -> None:
    server.drop_next_order_response()
    order = client.submit_market_order("ETHUSD", "buy", 1.0, "cid-lost")
    assert order.is_filled and order.client_order_id == "cid-lost"
    assert len(server.order_posts()) == 1
    assert len(server.orders()) == 1
    assert server.orders()[0]["id"] == order.order_id


def test_rejected_order_raises_and_places_nothing(server: FakeAlpaca, client: AlpacaClient) -> None:
    with pytest.raises(AlpacaAPIError, match="insufficient balance") as err:
        client.submit_market_order("ETHUSD", "buy", 100.0, "cid-too-big")
    assert (err.value.status_code, err.value.code) == (403, 40310000)
    with pytest.raises(AlpacaAPIError, match="insufficient balance"):
        client.submit_market_order("LTCUSD", "sell", 1.0, "cid-short")
    assert server.orders() == []
    assert client.get_order("cid-too-big") is None


@pytest.mark.parametrize(
    ("side", "qty", "cid"),
    [("hold", 1.0, "x"), ("buy", 0.0, "x"), ("buy", -1.0, "x"), ("buy", float("nan"), "x"), ("buy", 1.0, "")],
)
def test_bad_order_arguments_are_refused_before_any_request(
    server: FakeAlpaca, client: AlpacaClient, side: str, qty: float, cid: str
) -> None:
    with pytest.raises(ValueError):
        client.submit_market_order("ETHUSD", side, qty, cid)  # type: ignore[arg-type]
    assert server.requests == []


def test_order_that_fills_later_is_polled_until_filled(keys: tuple[str, str]) -> None:
    with FakeAlpaca(*keys, prices=PRICES, fill_on_read=True) as fake:
        client = AlpacaClient(local_settings(fake))
        working = client.submit_market_order("ETHUSD", "buy", 0.1, "cid-slow-1", wait_fill_s=0)
        assert working.status == "accepted" and not working.is_terminal
        filled = client.submit_market_order("ETHUSD", "buy", 0.1, "cid-slow-2", poll_s=0.01)
        assert filled.is_filled
        assert any(r.path == f"/v2/orders/{filled.order_id}" for r in fake.requests)
        assert client.get_order_by_id(working.order_id).is_filled


def test_get_order_unknown_is_none(client: AlpacaClient) -> None:
    assert client.get_order("never-placed") is None


# ----------------------------------------------------------------------------- bars


def hourly(start: datetime, n: int, base: float, skip: set[int] = frozenset()) -> list[tuple]:  # type: ignore[assignment]
    """n hourly bars from start with distinct, consistent OHLCV; indices in skip are absent."""
    out = []
    for i in range(n):
        if i in skip:
            continue
        o = base + i
        c = o + 0.5
        out.append((start + timedelta(hours=i), o, c + 0.25, o - 0.25, c, 10.0 + i))
    return out


def write_dataset(folder: Path, bars: dict[str, list[tuple]]) -> None:
    folder.mkdir()
    for name, rows in bars.items():
        lines = ["timestamp,open,high,low,close,volume"]
        lines += [
            f"{t.strftime('%Y-%m-%dT%H:%M:%SZ')},{o!r},{h!r},{lo!r},{c!r},{v!r}" for t, o, h, lo, c, v in rows
        ]
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")


T0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)


def test_bars_are_paginated_and_aligned_like_trainers_data(tmp_path: Path, keys: tuple[str, str]) -> None:
    # ETH: 40 bars with 2 missing (forward-filled); LTC: starts 3 h later, 5 missing in a row
    # (longer than the fill limit 3: dropped for all symbols). Bar 40 (the open hour) exists
    # on the server too but has not closed at `now`.
    eth = hourly(T0, 41, 2000.0, skip={10, 11})
    ltc = hourly(T0 + timedelta(hours=3), 38, 80.0, skip={20, 21, 22, 23, 24})
    now = T0 + timedelta(hours=40, minutes=30)
    with FakeAlpaca(*keys, prices=PRICES, bars_page_size=8) as fake:
        fake.set_bars("ETH/USD", eth)
        fake.set_bars("LTC/USD", ltc)
        client = AlpacaClient(local_settings(fake))
        ts, prices = client.closed_bars(["ETHUSD", "LTCUSD"], T0, now=now)
        pages = [r for r in fake.requests if r.path == "/v1beta3/crypto/us/bars"]

    # the request: Alpaca pairs, hourly, from start to the start of the last closed bar
    q = pages[0].query
    assert q["symbols"] == ["ETH/USD,LTC/USD"] and q["timeframe"] == ["1Hour"]
    assert q["start"] == ["2024-03-01T00:00:00+00:00"]
    assert q["end"] == ["2024-03-02T15:00:00+00:00"]  # bar 39 starts at 15:00, closes 16:00
    # all pages fetched, 8 bars per page: ETH hours 0..39 less 2 missing, LTC hours 3..39
    # less 5 missing
    n_served = (40 - 2) + (37 - 5)
    assert len(pages) == math.ceil(n_served / 8) == 9
    assert all(p.status == 200 for p in pages)
    assert "page_token" not in pages[0].query
    assert all(p.query.get("page_token", [""])[0] for p in pages[1:])

    # identical to trainers.data.load_panel on the same closed bars
    data = tmp_path / "data"
    write_dataset(data, {"ETHUSD": [b for b in eth if b[0] < T0 + timedelta(hours=40)], "LTCUSD": ltc[:-1]})
    panel = load_panel(data, symbols=["ETHUSD", "LTCUSD"])
    np.testing.assert_array_equal(ts, panel.timestamps)
    np.testing.assert_array_equal(prices, panel.prices)

    # and what that means: grid from LTC's first bar, ETH's 2-bar hole filled with the
    # previous close and zero volume, LTC's 5-bar hole dropped, the open bar left out
    assert ts.dtype == np.dtype("datetime64[s]") and prices.shape == (len(ts), 2, 5)
    assert ts[0] == np.datetime64("2024-03-01T03:00:00")
    assert ts[-1] == np.datetime64("2024-03-02T15:00:00")
    i10 = int(np.flatnonzero(ts == np.datetime64("2024-03-01T10:00:00"))[0])
    eth_close_9 = eth[9][4]
    np.testing.assert_array_equal(prices[i10, 0], [eth_close_9] * 4 + [0.0])
    dropped = np.arange(np.datetime64("2024-03-01T23:00:00"), np.datetime64("2024-03-02T04:00:00"))
    assert not np.isin(dropped.astype("datetime64[s]"), ts).any()
    assert len(ts) == 40 - 3 - 5
    np.testing.assert_array_equal(prices[0, 1], ltc[0][1:])


def test_end_cuts_off_bars_that_close_after_it(server: FakeAlpaca, client: AlpacaClient) -> None:
    server.set_bars("ETH/USD", hourly(T0, 10, 2000.0))
    server.set_bars("LTC/USD", hourly(T0, 10, 80.0))
    ts, prices = client.closed_bars(["ETHUSD", "LTCUSD"], T0, T0 + timedelta(hours=5, minutes=59))
    assert ts[-1] == np.datetime64("2024-03-01T04:00:00")  # the 05:00 bar closes at 06:00
    assert len(ts) == 5 and prices.shape == (5, 2, 5)


def test_no_closed_bar_gives_empty_arrays(server: FakeAlpaca, client: AlpacaClient) -> None:
    server.set_bars("ETH/USD", hourly(T0, 10, 2000.0))
    ts, prices = client.closed_bars(["ETHUSD", "LTCUSD"], T0, now=T0 + timedelta(hours=10))  # no LTC bars
    assert ts.shape == (0,) and prices.shape == (0, 2, 5)
    ts, prices = client.closed_bars(["ETHUSD"], T0, now=T0 + timedelta(minutes=59))  # bar 0 still open
    assert ts.shape == (0,) and prices.shape == (0, 1, 5)


def test_inconsistent_bar_is_a_data_error_naming_symbol_and_time(
    server: FakeAlpaca, client: AlpacaClient
) -> None:
    bars = hourly(T0, 5, 2000.0)
    t, o, _high, lo, c, v = bars[2]
    bars[2] = (t, o, lo - 1.0, lo, c, v)  # high below low
    server.set_bars("ETH/USD", bars)
    with pytest.raises(DataError, match=r"ETH/USD bar 2024-03-01T02:00:00Z"):
        client.closed_bars(["ETHUSD"], T0, now=T0 + timedelta(hours=6))


def test_time_without_timezone_is_refused(client: AlpacaClient) -> None:
    with pytest.raises(ValueError, match="timezone"):
        client.closed_bars(["ETHUSD"], datetime(2024, 3, 1))


# ----------------------------------------------------------------------------- errors, secrets


def test_wrong_keys_are_an_api_error(keys: tuple[str, str]) -> None:
    with FakeAlpaca("PKOTHER", "other-secret") as fake:
        with pytest.raises(AlpacaAPIError, match="401") as err:
            AlpacaClient(local_settings(fake)).account()
        assert err.value.status_code == 401
        assert [r.authorized for r in fake.requests] == [False]


def test_unanswered_request_times_out(server: FakeAlpaca) -> None:
    client = AlpacaClient(local_settings(server, request_timeout_s=0.2))
    server.stall_next("/v2/account", 1.0)
    with pytest.raises(AlpacaAPIError, match="no answer") as err:
        client.account()
    assert err.value.status_code is None


def test_secrets_never_reach_repr_errors_or_logs(
    keys: tuple[str, str], server: FakeAlpaca, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    key_id, secret = keys
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        settings = local_settings(server)
        client = AlpacaClient(settings)
        seen += [repr(settings), str(settings), settings.model_dump_json(), repr(client), str(client)]
        client.account()
        client.positions()
        order = client.submit_market_order("ETHUSD", "buy", 0.1, "cid-secret")
        server.hide_from_lookup("cid-secret")
        client.submit_market_order("ETHUSD", "buy", 0.1, "cid-secret")
        seen.append(repr(order))
        server.set_bars("ETH/USD", hourly(T0, 3, 2000.0))
        client.closed_bars(["ETHUSD", "LTCUSD"], T0, now=T0 + timedelta(hours=3))
        errors: list[BaseException] = []
        with FakeAlpaca("PKOTHER", "other-secret") as other:
            try:
                AlpacaClient(local_settings(other)).submit_market_order("ETHUSD", "buy", 1.0, "cid-401")
            except AlpacaAPIError as exc:
                errors.append(exc)
        try:
            AlpacaClient(local_settings(server, paper=False))
        except LiveTradingRefused as exc:
            errors.append(exc)
        server.stall_next("/v2/positions", 1.0)
        try:
            AlpacaClient(local_settings(server, request_timeout_s=0.2)).positions()
        except AlpacaAPIError as exc:
            errors.append(exc)
    assert len(errors) == 3
    seen += [f"{e!r} {e}" for e in errors]
    seen += [repr(e) for e in events]
    out = capsys.readouterr()
    seen += [caplog.text, out.out, out.err]
    assert any(e.get("event") == "alpaca order placed" for e in events)  # the logs were captured
    assert any(e.get("event") == "alpaca has no closed bars" for e in events)
    assert "GET" in caplog.text or "/v2/" in caplog.text  # urllib3's debug lines were captured
    text = "\n".join(seen)
    assert key_id not in text
    assert secret not in text

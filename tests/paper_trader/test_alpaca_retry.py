"""Retries of throttled (429) and failed (5xx) Alpaca answers: the real alpaca-py clients and
urllib3's retry against the local server speaking Alpaca's API (tests/paper_trader/
alpaca_server.py), which answers the injected errors without acting on the request."""

from __future__ import annotations

import itertools

import pytest

from paper_trader.brokers import BrokerError
from paper_trader.brokers.alpaca import AlpacaBroker
from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.brokers.alpaca_errors import AlpacaAPIError
from paper_trader.ledger import CANCELLED, PENDING_SUBMIT, Order
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.conftest import local_settings


def statuses(server: FakeAlpaca, method: str, path: str) -> list[int]:
    return [r.status for r in server.requests if (r.method, r.path) == (method, path)]


def test_429_is_retried_after_the_retry_after_header(server: FakeAlpaca) -> None:
    # no backoff of its own: only the Retry-After header can make the client wait
    client = AlpacaClient(local_settings(server, retry_backoff_s=0.0))
    server.fail_next("GET", "/v2/account", 429, times=2, retry_after="1")
    assert client.account().cash == 10_000.0
    tries = [r for r in server.requests if r.path == "/v2/account"]
    assert [r.status for r in tries] == [429, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert min(gaps) >= 1.0, f"each retry waits the 1 s Retry-After asks for, gaps {gaps}"


def test_503_on_an_order_is_retried_and_the_order_placed_once(server: FakeAlpaca) -> None:
    client = AlpacaClient(local_settings(server, retry_backoff_s=0.0))
    server.fail_next("POST", "/v2/orders", 503, times=3)
    order = client.submit_market_order("ETHUSD", "buy", 0.5, "cid-503", wait_fill_s=0)
    assert order.is_filled and order.client_order_id == "cid-503"
    assert statuses(server, "POST", "/v2/orders") == [503, 503, 503, 200]
    assert len(server.orders()) == 1


def test_a_retry_after_beyond_the_cap_waits_only_the_cap(server: FakeAlpaca) -> None:
    client = AlpacaClient(local_settings(server, retry_backoff_s=0.0, retry_after_max_s=0.0))
    server.fail_next("GET", "/v2/positions", 429, retry_after="3600")
    assert client.positions() == {}
    assert statuses(server, "GET", "/v2/positions") == [429, 200]


def test_retries_spent_raise_the_last_answer(server: FakeAlpaca) -> None:
    client = AlpacaClient(local_settings(server, retries=2, retry_backoff_s=0.0))
    server.fail_next("GET", "/v2/account", 502, times=3)
    with pytest.raises(AlpacaAPIError) as err:
        client.account()
    assert err.value.status_code == 502 and "HTTP 502" in str(err.value)
    assert statuses(server, "GET", "/v2/account") == [502, 502, 502]


def order(cid: str, qty: float) -> Order:
    return Order(
        client_order_id=cid,
        bar_ts=2**40,  # far in the future: never stale
        symbol="ETHUSD",
        side="buy",
        qty=qty,
        target_weight=0.1,
        reason="rebalance",
        status=PENDING_SUBMIT,
        generation=1,
        study="s",
    )


def test_a_throttled_order_stays_unsent_and_a_refused_one_is_cancelled(server: FakeAlpaca) -> None:
    broker = AlpacaBroker(
        AlpacaClient(local_settings(server, retries=1, retry_backoff_s=0.0)), ("ETHUSD",), 0.0
    )
    throttled = order("cid-throttled", 0.5)
    server.fail_next("POST", "/v2/orders", 429, times=2, retry_after="0")
    with pytest.raises(BrokerError, match="HTTP 429"):
        broker.submit([throttled])
    assert (throttled.status, throttled.broker_order_id) == (PENDING_SUBMIT, None)
    assert server.orders() == []
    broker.submit([throttled])  # Alpaca takes orders again: sent once
    assert throttled.status == PENDING_SUBMIT and throttled.broker_order_id is not None
    assert [o["client_order_id"] for o in server.orders()] == ["cid-throttled"]

    refused = order("cid-refused", 100.0)  # 200 000 USD: more than the cash
    broker.submit([refused])
    assert refused.status == CANCELLED and "insufficient balance" in (refused.status_reason or "")

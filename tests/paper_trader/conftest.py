"""Fixtures of the Alpaca tests: fresh fake keys in the environment, and the local server
speaking Alpaca's documented API (tests/paper_trader/alpaca_server.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from paper_trader.brokers.alpaca_settings import KEY_ID_VARS, SECRET_KEY_VARS, AlpacaSettings
from tests.paper_trader.alpaca_server import FakeAlpaca

PRICES = {"ETHUSD": 2000.0, "LTCUSD": 80.0}


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A fresh fake key pair in ALPACA_API_KEY_ID / ALPACA_API_SECRET_KEY (APCA_* unset)."""
    for name in (*KEY_ID_VARS, *SECRET_KEY_VARS):
        monkeypatch.delenv(name, raising=False)
    key_id, secret = "PKFAKE" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
    monkeypatch.setenv("ALPACA_API_KEY_ID", key_id)
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", secret)
    return key_id, secret


@pytest.fixture
def server(keys: tuple[str, str]) -> Iterator[FakeAlpaca]:
    """The fake server with 10 000 USD cash, no positions and :data:`PRICES`."""
    with FakeAlpaca(*keys, cash=10_000.0, prices=PRICES) as fake:
        yield fake


def local_settings(fake: FakeAlpaca, **kw: object) -> AlpacaSettings:
    """Settings that send trading and market-data requests to ``fake``."""
    return AlpacaSettings(url_override=fake.url, data_url_override=fake.url, **kw)

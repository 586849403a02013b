"""AlpacaSettings and the client's connection checks: keys from the environment only, the
two-key live switch; against the local fake Alpaca server, with fake keys made up here."""

from __future__ import annotations

import secrets

import pytest

from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.brokers.alpaca_errors import AlpacaConfigError, LiveTradingRefused
from paper_trader.brokers.alpaca_settings import KEY_ID_VARS, SECRET_KEY_VARS, AlpacaSettings
from tests.paper_trader.alpaca_server import FakeAlpaca
from tests.paper_trader.conftest import local_settings


@pytest.mark.parametrize(("live", "allow_live"), [(False, False), (True, False), (False, True)])
def test_live_endpoint_refused_without_both_switches(
    server: FakeAlpaca, live: bool, allow_live: bool
) -> None:
    settings = local_settings(server, paper=False, allow_live=allow_live)
    with pytest.raises(LiveTradingRefused, match=r"--live.*allow_live"):
        AlpacaClient(settings, live=live)
    assert server.requests == []


def test_url_override_to_the_live_host_counts_as_live(keys: tuple[str, str]) -> None:
    with pytest.raises(LiveTradingRefused):
        AlpacaClient(AlpacaSettings(url_override="https://api.alpaca.markets"))


def test_live_endpoint_allowed_with_both_switches(server: FakeAlpaca) -> None:
    client = AlpacaClient(local_settings(server, paper=False, allow_live=True), live=True)
    assert client.live
    assert client.account().cash == 10_000.0
    real = AlpacaClient(AlpacaSettings(paper=False, allow_live=True), live=True)
    assert real.live and real.trading_url == "https://api.alpaca.markets"
    paper = AlpacaClient(AlpacaSettings())
    assert not paper.live and paper.trading_url == "https://paper-api.alpaca.markets"


def test_live_flag_with_paper_settings_is_an_error(keys: tuple[str, str]) -> None:
    with pytest.raises(AlpacaConfigError, match="paper = false"):
        AlpacaClient(AlpacaSettings(allow_live=True), live=True)


def test_missing_keys_error_names_the_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*KEY_ID_VARS, *SECRET_KEY_VARS):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AlpacaConfigError, match="ALPACA_API_KEY_ID and ALPACA_API_SECRET_KEY"):
        AlpacaClient(AlpacaSettings())
    monkeypatch.setenv("ALPACA_API_KEY_ID", "PKFAKEONLYID")
    with pytest.raises(AlpacaConfigError, match="set ALPACA_API_SECRET_KEY in the environment"):
        AlpacaClient(AlpacaSettings())
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", "")
    with pytest.raises(AlpacaConfigError, match="ALPACA_API_SECRET_KEY"):
        AlpacaClient(AlpacaSettings())


def test_apca_variable_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*KEY_ID_VARS, *SECRET_KEY_VARS):
        monkeypatch.delenv(name, raising=False)
    key_id, secret = "PKAPCA" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)
    monkeypatch.setenv("APCA_API_KEY_ID", key_id)
    monkeypatch.setenv("APCA_API_SECRET_KEY", secret)
    with FakeAlpaca(key_id, secret, cash=5.0) as fake:
        assert AlpacaClient(local_settings(fake)).account().cash == 5.0
        assert all(r.authorized for r in fake.requests)


def test_keys_only_from_the_environment_and_nothing_else_from_it(
    keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ({"api_key_id": "x"}, {"ALPACA_API_SECRET_KEY": "x"}, {"APCA_API_KEY_ID": "x"}):
        with pytest.raises(AlpacaConfigError, match="environment only"):
            AlpacaSettings(**bad)
    monkeypatch.setenv("PAPER", "false")
    monkeypatch.setenv("ALLOW_LIVE", "true")
    monkeypatch.setenv("URL_OVERRIDE", "https://api.alpaca.markets")
    settings = AlpacaSettings()
    assert settings.paper and not settings.allow_live and settings.url_override is None
    assert settings.api_key_id is not None and settings.api_key_id.get_secret_value() == keys[0]
    with pytest.raises(ValueError, match="bogus"):
        AlpacaSettings(bogus=1)

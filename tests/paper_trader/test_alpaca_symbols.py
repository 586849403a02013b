"""The symbol mapping between dataset names (ETHUSD) and Alpaca pairs (ETH/USD)."""

from __future__ import annotations

import pytest

from paper_trader.brokers.alpaca_symbols import to_alpaca_symbol, to_dataset_symbol


def test_symbol_mapping() -> None:
    assert to_alpaca_symbol("ETHUSD") == "ETH/USD"
    assert to_alpaca_symbol("ethusdt") == "ETH/USDT"
    assert to_alpaca_symbol("LTC/USD") == "LTC/USD"
    assert to_dataset_symbol("XRP/USD") == to_dataset_symbol("XRPUSD") == "XRPUSD"
    with pytest.raises(ValueError, match="AAPL"):
        to_alpaca_symbol("AAPL")

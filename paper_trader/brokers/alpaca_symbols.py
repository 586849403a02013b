"""Symbol names between the dataset and Alpaca.

The dataset names a crypto pair ``ETHUSD``; Alpaca's orders and market data name it
``ETH/USD`` and its positions endpoint reports ``ETHUSD``. :func:`to_alpaca_symbol` and
:func:`to_dataset_symbol` convert between the two.
"""

from __future__ import annotations

QUOTE_CURRENCIES = ("USDT", "USDC", "USD", "BTC")  # longest first: "ETHUSDT" -> ETH/USDT


def to_alpaca_symbol(symbol: str) -> str:
    """Dataset symbol -> Alpaca crypto pair: ``ETHUSD`` -> ``ETH/USD`` (``ETH/USD`` unchanged).

    Raises:
        ValueError: the symbol ends in no known quote currency (USD, USDT, USDC, BTC).
    """
    s = symbol.strip().upper()
    if "/" in s:
        return s
    for quote in QUOTE_CURRENCIES:
        if s.endswith(quote) and len(s) > len(quote):
            return f"{s[: -len(quote)]}/{quote}"
    raise ValueError(f"symbol {symbol!r} is not a crypto pair ending in one of {', '.join(QUOTE_CURRENCIES)}")


def to_dataset_symbol(symbol: str) -> str:
    """Alpaca symbol -> dataset symbol: ``ETH/USD`` or ``ETHUSD`` -> ``ETHUSD``."""
    return symbol.strip().upper().replace("/", "")

"""Brokers: where bars come from and where orders go.

* :mod:`~paper_trader.brokers._base`: the :class:`Broker` protocol the trading loop needs and
  its types (:class:`Bar`, :class:`FillReport`, :class:`StopToken`, :class:`BrokerError`,
  :class:`RemoteAccount`, :class:`RemoteOrder`).
* :mod:`~paper_trader.brokers.sim`: :class:`SimBroker`, a replay of a dataset.
* :mod:`~paper_trader.brokers.alpaca`: ``AlpacaBroker``, the Alpaca paper broker, over the
  Alpaca client of :mod:`~paper_trader.brokers.alpaca_client` (settings and keys in
  :mod:`~paper_trader.brokers.alpaca_settings`, errors in
  :mod:`~paper_trader.brokers.alpaca_errors`, symbols in
  :mod:`~paper_trader.brokers.alpaca_symbols`, order snapshots in
  :mod:`~paper_trader.brokers.alpaca_orders`, bar alignment in
  :mod:`~paper_trader.brokers.alpaca_bars`, request timeouts in
  :mod:`~paper_trader.brokers.alpaca_http`).

The Alpaca modules load alpaca-py; they are not imported here, so a replay never loads it.
"""

from paper_trader.brokers._base import (
    Bar,
    Broker,
    BrokerError,
    FillReport,
    RemoteAccount,
    RemoteOrder,
    StopToken,
)
from paper_trader.brokers.sim import SimBroker

__all__ = [
    "Bar",
    "Broker",
    "BrokerError",
    "FillReport",
    "RemoteAccount",
    "RemoteOrder",
    "SimBroker",
    "StopToken",
]

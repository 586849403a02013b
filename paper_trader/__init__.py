"""The paper trader: one decision per closed bar from the ensemble (or a deployment slot),
risk rules from :mod:`trainers.accounting`, orders through a broker (simulated replay or
Alpaca paper), and every bar's state in a SQLite ledger (docs/ARCHITECTURE.md sections 2, 5 and 6).

Modules: :mod:`~paper_trader.loop` (the trading loop), :mod:`~paper_trader.ledger`,
:mod:`~paper_trader.brokers` (``Broker`` protocol, ``SimBroker``, the Alpaca broker and its
client), :mod:`~paper_trader.risk`,
:mod:`~paper_trader.model_source`, :mod:`~paper_trader.reload` (hot reload),
:mod:`~paper_trader.status` (heartbeat and status files), :mod:`~paper_trader.cli`.
"""

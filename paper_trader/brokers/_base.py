"""What the trading loop needs from a broker: the :class:`Broker` protocol and the types it
speaks in (:class:`Bar`, :class:`FillReport`, :class:`StopToken`, :class:`BrokerError`).

Timing (as in :mod:`trainers.accounting`): the decision at the close of bar ``t`` places
orders; they fill at the open of bar ``t + 1``, which the loop processes next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from paper_trader.ledger import Order
from trainers.accounting import Costs


class BrokerError(RuntimeError):
    """The broker cannot serve the request; the message says what and why."""


@dataclass(frozen=True)
class Bar:
    """One closed bar of every symbol.

    Attributes:
        ts: bar start time, UTC epoch seconds.
        open, close: ``(n_assets,)`` prices in the quote currency, symbol order.
    """

    ts: int
    open: np.ndarray
    close: np.ndarray

    @property
    def iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.ts))


@dataclass(frozen=True)
class FillReport:
    """A fill of one order: signed ``qty`` (> 0 bought) at ``price`` per unit (slippage
    included), ``fee`` in the quote currency. ``qty == 0`` means nothing was traded and the
    order is cancelled with ``reason``."""

    client_order_id: str
    qty: float
    price: float
    fee: float
    reason: str = ""


@dataclass(frozen=True)
class RemoteOrder:
    """An order as the broker's account holds it (for the start-up reconciliation).

    Attributes:
        client_order_id: the ledger's id (or another client's).
        broker_order_id: the broker's own id.
        symbol: dataset symbol; side: ``buy`` | ``sell``; qty, filled_qty: asset units.
        status: the broker's order status, e.g. ``filled``, ``accepted``, ``canceled``.
    """

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: str
    qty: float
    filled_qty: float
    status: str


@dataclass(frozen=True)
class RemoteAccount:
    """What the broker's account holds: ``orders`` submitted since the time asked for, by
    client order id, and ``positions`` ``{dataset symbol: (qty, price or None)}`` (asset
    units, price per unit in the quote currency)."""

    orders: dict[str, RemoteOrder]
    positions: dict[str, tuple[float, float | None]]


class StopToken(Protocol):
    """A stop request (:class:`paper_trader.stopping.StopSignal` or ``threading.Event``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Broker(Protocol):
    """What the trading loop needs from a broker.

    Attributes:
        name: ``sim`` or ``alpaca`` (recorded in the ledger).
        symbols: traded symbols; every vector is in this order.
        replay_start_ts: UTC epoch seconds of the first bar a replay trades (None for a live
            feed); the trader refuses models trained on bars at or after it.
        band_at_fill: True when :meth:`execute` applies the execution model's no-trade band
            (``Costs.min_trade``) at the fill, against the weights drifted to the open, as
            the backtest does (the simulated broker); False when the trader must apply it
            when it decides (a live broker fills what it is sent).
    """

    name: str
    symbols: tuple[str, ...]
    band_at_fill: bool
    replay_start_ts: int | None

    def set_costs(self, costs: Costs) -> None:
        """Use the execution model of the model being traded for fills and fee estimates
        (called at start and whenever the trader swaps in a model with other costs)."""
        ...

    @property
    def finished(self) -> bool:
        """True once a replay has delivered its last bar (always False for a live feed)."""
        ...

    def next_bar(self, after_ts: int | None, stop: StopToken, timeout_s: float) -> Bar | None:
        """The first closed bar after ``after_ts`` (None: the first bar to trade), waiting at
        most ``timeout_s`` seconds for it (replay pacing, or a live bar still open).

        Returns None when no bar is available yet, the replay is over (then
        :attr:`finished`), or ``stop`` is set; the loop writes its heartbeat and asks again.
        """
        ...

    def history(self, bar: Bar, n_bars: int) -> np.ndarray:
        """OHLCV ``(<= n_bars, n_assets, 5)`` of the bars up to and including ``bar``."""
        ...

    def execute(self, orders: list[Order], cash: float, qty: np.ndarray, bar: Bar) -> list[FillReport]:
        """Fills of the pending ``orders`` (placed at an earlier bar) at ``bar``'s open.

        Args:
            orders: pending orders of one decision bar.
            cash, qty: the account before the fills (quote currency; ``(n_assets,)`` units).
        """
        ...

    def submit(self, orders: list[Order]) -> None:
        """Send new orders; idempotent per ``client_order_id`` (an order sent before is
        looked up, never placed twice). Sets ``broker_order_id`` (and the quantity sent) of
        each order placed; an order the broker refuses for good, or one whose fill bar has
        already closed (stale), gets status ``cancelled`` and ``status_reason``. Raises
        :class:`BrokerError` when the broker cannot be reached or keeps throttling."""
        ...

    def remote_account(self, since_ts: int) -> RemoteAccount | None:
        """The account's orders submitted after ``since_ts`` (UTC epoch s) and its
        positions, for the reconciliation at start; None for a broker whose account is the
        ledger itself (the replay). Raises :class:`BrokerError`."""
        ...

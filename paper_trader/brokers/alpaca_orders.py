"""Alpaca market orders: the :class:`OrderSnapshot` the client returns, the checks of an
order's arguments, and the check that an order found under a client order id is the one
asked for (orders are idempotent by client order id)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from alpaca.trading.models import Order

from paper_trader.brokers.alpaca_errors import OrderConflict
from paper_trader.brokers.alpaca_symbols import to_alpaca_symbol, to_dataset_symbol

TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
MAX_CLIENT_ORDER_ID = 128  # Alpaca's limit on client_order_id length
QTY_DECIMALS = 9  # Alpaca accepts quantities with up to 9 decimals


@dataclass(frozen=True)
class OrderSnapshot:
    """One order as Alpaca last reported it.

    Attributes:
        client_order_id: the caller's idempotency key.
        order_id: Alpaca's order id (UUID string).
        symbol: dataset symbol, e.g. ``ETHUSD``.
        side: ``"buy"`` or ``"sell"``.
        qty: ordered quantity in asset units.
        filled_qty: filled quantity in asset units.
        filled_avg_price: average fill price in USD per unit, ``None`` before any fill.
        status: Alpaca's order status, e.g. ``accepted``, ``filled``, ``rejected``.
        submitted_at: UTC time the order was submitted.
        filled_at: UTC time of the (last) fill, ``None`` if not filled.
    """

    client_order_id: str
    order_id: str
    symbol: str
    side: str
    qty: float
    filled_qty: float
    filled_avg_price: float | None
    status: str
    submitted_at: datetime
    filled_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        """The order will not change any more (filled, canceled, expired, rejected, ...)."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_filled(self) -> bool:
        return self.status == "filled"

    @classmethod
    def from_order(cls, order: Order) -> OrderSnapshot:
        """Convert alpaca-py's :class:`~alpaca.trading.models.Order`."""
        side = order.side.value if order.side is not None else ""
        return cls(
            client_order_id=order.client_order_id,
            order_id=str(order.id),
            symbol=to_dataset_symbol(order.symbol or ""),
            side=side,
            qty=float(order.qty or 0.0),
            filled_qty=float(order.filled_qty or 0.0),
            filled_avg_price=None if order.filled_avg_price in (None, "") else float(order.filled_avg_price),
            status=order.status.value,
            submitted_at=order.submitted_at,
            filled_at=order.filled_at,
        )


def market_order_args(symbol: str, side: str, qty: float, client_order_id: str) -> tuple[str, float]:
    """Check a market order's arguments before any request.

    Args:
        symbol: dataset symbol (``ETHUSD``) or Alpaca pair (``ETH/USD``).
        side: ``"buy"`` or ``"sell"``.
        qty: quantity in asset units, > 0 once rounded to 9 decimals.
        client_order_id: idempotency key, 1..128 characters.

    Returns:
        ``(Alpaca pair, quantity rounded to 9 decimals)``.

    Raises:
        ValueError: bad side, quantity, client order id or symbol.
    """
    if side not in ("buy", "sell"):
        raise ValueError(f"order side must be 'buy' or 'sell', got {side!r}")
    try:
        qty = float(qty)
    except (TypeError, ValueError):
        raise ValueError(f"order quantity must be a number, got {qty!r}") from None
    if not math.isfinite(qty) or round(qty, QTY_DECIMALS) <= 0:
        raise ValueError(f"order quantity must be a finite number > 0 (9 decimals), got {qty!r}")
    if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID:
        raise ValueError(
            f"client order id must have 1..{MAX_CLIENT_ORDER_ID} characters, got {client_order_id!r}"
        )
    return to_alpaca_symbol(symbol), round(qty, QTY_DECIMALS)


def check_same(order: OrderSnapshot, pair: str, side: str, qty: float) -> None:
    """Check that ``order`` (found under a client order id) is the order asked for: same
    symbol, side and quantity (to 9 decimals, relative above 1 unit).

    Raises:
        OrderConflict: it is another order.
    """
    same = (
        order.symbol == to_dataset_symbol(pair)
        and order.side == side
        and abs(order.qty - qty) <= 10.0**-QTY_DECIMALS * max(1.0, abs(qty))
    )
    if not same:
        raise OrderConflict(
            f"client order id {order.client_order_id!r} already names order {order.order_id} "
            f"({order.side} {order.qty} {order.symbol}), not {side} {qty} {to_dataset_symbol(pair)}"
        )

"""The reconciliation at start: the ledger compared with the broker's account, by client
order id for orders and by symbol for positions.

Orders compared: the ledger's orders decided in the last :data:`WINDOW_S` seconds before
its last processed bar, plus every order not final yet (``pending_submit``, ``pending``),
against the broker's orders submitted since the oldest of them. For each:

* ``pending_submit`` (in the outbox): found at the broker -> it was sent just before the
  trader stopped; recorded now as sent with the broker's id (``recovered``). Not found ->
  ``unsent``: the outbox sends it, or cancels it as stale (not a difference).
* ``pending`` (sent) or ``filled`` and not at the broker -> ``order_missing_at_broker``.
* ``filled`` with another filled quantity than the broker reports -> ``fill_mismatch``.
* ``cancelled`` in the ledger, filled (partly) at the broker -> ``filled_but_cancelled``.
* an order at the broker whose client order id carries this ledger's prefix
  (``cpc-<run id>-``) and that the ledger does not hold -> ``order_unknown_to_ledger``
  (an orphan: placed, then forgotten).

Positions, per traded symbol: the broker's quantity against the ledger's plus what the
broker filled of the ledger's sent, unsettled orders (the next bar books those fills).
A difference counts when it is above :data:`POSITION_RTOL` of the larger quantity (Alpaca
takes its crypto fee out of the bought asset, so its position runs a little below the
ledger's) and worth at least ``min_notional`` (the smallest order the trader places; the
price is the broker's, else the ledger's entry price) -> ``position_mismatch``.
Holdings of other symbols are not the trader's and are left out.

A broker whose account is the ledger itself (the replay) has nothing to reconcile.
"""

from __future__ import annotations

import time
from typing import Any

from paper_trader.brokers import Broker, RemoteAccount
from paper_trader.ledger import CANCELLED, FILLED, PENDING, PENDING_SUBMIT, Ledger, Order, client_order_id
from paper_trader.status import iso_ts

WINDOW_S = 7 * 86_400  # final orders decided this long before the last processed bar are compared
POSITION_RTOL = 0.02  # relative position difference tolerated (fees taken in the asset)
QTY_ATOL = 1e-9  # quantities closer than this (asset units) are equal


def _signed(side: str, qty: float) -> float:
    return qty if side == "buy" else -qty


def _order_differences(
    orders: list[Order], remote: RemoteAccount, ledger: Ledger, prefix: str, since_ts: int
) -> tuple[list[dict[str, Any]], list[Order], list[str]]:
    """``(differences, recovered orders, unsent client order ids)``."""
    diffs: list[dict[str, Any]] = []
    recovered: list[Order] = []
    unsent: list[str] = []
    for o in orders:
        r = remote.orders.get(o.client_order_id)
        cid = o.client_order_id
        if o.status == PENDING_SUBMIT:
            if r is None:
                unsent.append(cid)
            else:
                o.broker_order_id, o.qty = r.broker_order_id, r.qty
                recovered.append(o)
        elif o.status in (PENDING, FILLED) and r is None:
            diffs.append(
                {
                    "kind": "order_missing_at_broker",
                    "client_order_id": cid,
                    "ledger": o.status,
                    "broker": None,
                    "detail": f"the ledger has {o.side} {o.qty} {o.symbol} as {o.status}; "
                    "the broker has no such order",
                }
            )
        elif o.status == FILLED and r is not None:
            fill = ledger.fill_of(cid)
            booked = abs(fill.qty) if fill is not None else 0.0
            if abs(booked - r.filled_qty) > QTY_ATOL * max(1.0, booked):
                diffs.append(
                    {
                        "kind": "fill_mismatch",
                        "client_order_id": cid,
                        "ledger": booked,
                        "broker": r.filled_qty,
                        "detail": f"the ledger booked {booked} {o.symbol}, the broker filled {r.filled_qty}",
                    }
                )
        elif o.status == CANCELLED and r is not None and r.filled_qty > 0:
            diffs.append(
                {
                    "kind": "filled_but_cancelled",
                    "client_order_id": cid,
                    "ledger": CANCELLED,
                    "broker": r.filled_qty,
                    "detail": f"cancelled in the ledger ({o.status_reason}); the broker filled "
                    f"{r.filled_qty} {o.symbol} ({r.status})",
                }
            )
    known = {o.client_order_id for o in ledger.orders_since(since_ts - WINDOW_S)}
    for cid, r in sorted(remote.orders.items()):
        if cid.startswith(prefix) and cid not in known:
            diffs.append(
                {
                    "kind": "order_unknown_to_ledger",
                    "client_order_id": cid,
                    "ledger": None,
                    "broker": r.status,
                    "detail": f"the broker holds {r.side} {r.qty} {r.symbol} ({r.status}, filled "
                    f"{r.filled_qty}) that the ledger does not know",
                }
            )
    return diffs, recovered, unsent


def _position_differences(
    ledger: Ledger, remote: RemoteAccount, in_flight: dict[str, float], min_notional: float
) -> list[dict[str, Any]]:
    diffs = []
    for pos in ledger.positions():
        expected = pos.qty + in_flight.get(pos.symbol, 0.0)
        have, price = remote.positions.get(pos.symbol, (0.0, None))
        price = price if price is not None else pos.entry_price
        gap = have - expected
        if abs(gap) <= max(QTY_ATOL, POSITION_RTOL * max(abs(have), abs(expected))):
            continue
        if price is not None and abs(gap) * price < min_notional:
            continue
        diffs.append(
            {
                "kind": "position_mismatch",
                "symbol": pos.symbol,
                "ledger": expected,
                "broker": have,
                "detail": f"{pos.symbol}: the ledger expects {expected} (booked {pos.qty} + "
                f"{in_flight.get(pos.symbol, 0.0)} filled of orders not yet booked), the broker holds {have}",
            }
        )
    return diffs


def reconcile(
    ledger: Ledger, broker: Broker, min_notional: float, now: float | None = None
) -> dict[str, Any] | None:
    """Compare the ledger with the broker's account (see the module docstring) and record
    the outbox orders the broker already holds as sent.

    Args:
        ledger: an opened ledger (``open_account`` done).
        broker: the trader's broker.
        min_notional: smallest position difference that counts, quote currency.
        now: the report's time, UTC epoch s (default the clock).

    Returns:
        None for a broker without an account of its own (the replay), else ``{"at": UTC ISO,
        "ok": no differences, "since": UTC ISO of the oldest decision bar compared,
        "orders_compared", "broker_orders", "recovered": [client order id], "unsent": [client
        order id], "differences": [{"kind", "client_order_id" or "symbol", "ledger", "broker",
        "detail"}], "error": None}``.

    Raises:
        paper_trader.brokers.BrokerError: the broker could not be asked.
    """
    state = ledger.state()
    now = time.time() if now is None else now
    anchor = int(now) if state.last_bar_ts is None else state.last_bar_ts
    orders = ledger.orders_since(anchor - WINDOW_S)
    since = min([anchor - WINDOW_S, *(o.bar_ts for o in orders)])
    remote = broker.remote_account(since)
    if remote is None:
        return None
    prefix = client_order_id(state.run_id, 0, "")[: -len("0-")]
    diffs, recovered, unsent = _order_differences(orders, remote, ledger, prefix, since)
    for o in recovered:
        ledger.record_submission(o)
    in_flight: dict[str, float] = {}
    for o in orders:
        r = remote.orders.get(o.client_order_id)
        if r is not None and o.status in (PENDING, PENDING_SUBMIT):  # sent, fill not booked yet
            in_flight[o.symbol] = in_flight.get(o.symbol, 0.0) + _signed(r.side, r.filled_qty)
    diffs += _position_differences(ledger, remote, in_flight, min_notional)
    return {
        "at": iso_ts(int(now)),
        "ok": not diffs,
        "since": iso_ts(since),
        "orders_compared": len(orders),
        "broker_orders": len(remote.orders),
        "recovered": [o.client_order_id for o in recovered],
        "unsent": unsent,
        "differences": diffs,
        "error": None,
    }

"""Sending the ledger's outbox: orders recorded with their bar (``pending_submit``) go to the
broker one at a time after the bar has committed, and each outcome is committed on its own
(:meth:`paper_trader.ledger.Ledger.record_submission`): ``pending`` (sent, with the broker's
order id) or ``cancelled`` (refused for good, or stale, with the reason).

A crash between a send and its outcome leaves an order the broker holds and the ledger still
calls ``pending_submit``; the next send (or the reconciliation at start,
:mod:`paper_trader.reconcile`) finds it by its client order id and records it as sent: an
order is never placed twice.

Test hook: when the environment variable :data:`TEST_SIGKILL_ENV`
(``PAPER_TRADER_TEST_SIGKILL_AFTER_SUBMIT``) is ``1``, the process sends itself SIGKILL right
after the first order it sends, before that order's outcome is committed, so tests can crash
a real trader at exactly that point. Unset (or any other value) it does nothing; nothing in
the project sets it.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from paper_trader.brokers import Broker
from paper_trader.ledger import CANCELLED, Ledger

TEST_SIGKILL_ENV = "PAPER_TRADER_TEST_SIGKILL_AFTER_SUBMIT"


def _test_sigkill_after_submit() -> None:
    """SIGKILL this process when :data:`TEST_SIGKILL_ENV` is ``1`` (tests only; else inert)."""
    if os.environ.get(TEST_SIGKILL_ENV) == "1":
        os.kill(os.getpid(), signal.SIGKILL)


def send_outbox(ledger: Ledger, broker: Broker, log: Any) -> tuple[int, int]:
    """Send every ``pending_submit`` order, oldest decision first, committing each outcome.

    Args:
        ledger: the trader's ledger.
        broker: where the orders go (its ``submit`` is idempotent per client order id).
        log: a structlog logger (``order_sent`` / ``order_not_sent`` events).

    Returns:
        ``(sent, cancelled)`` counts.

    Raises:
        paper_trader.brokers.BrokerError: the broker could not be reached or kept throttling;
            the order and those after it stay in the outbox for the next call.
    """
    sent = cancelled = 0
    for order in ledger.outbox():
        broker.submit([order])
        _test_sigkill_after_submit()
        status = ledger.record_submission(order)
        if status == CANCELLED:
            cancelled += 1
            log.warning("order_not_sent", client_order_id=order.client_order_id, reason=order.status_reason)
        else:
            sent += 1
            (log.info if order.broker_order_id else log.debug)(  # a replay sends nowhere
                "order_sent",
                client_order_id=order.client_order_id,
                broker_order_id=order.broker_order_id,
                side=order.side,
                qty=order.qty,
            )
    return sent, cancelled

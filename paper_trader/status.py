"""Files other processes read about the paper trader, each written atomically
(:func:`trainers.bundle.atomic_write_json`):

* heartbeat ``<root>/run/heartbeats/paper_trader.json`` in the one heartbeat format
  (:mod:`trainers.runtime.heartbeat`), every bar and every poll while waiting:
  ``component``, ``pid``, ``time`` (unix s), ``at`` (UTC ISO), ``state``
  (``starting`` | ``waiting_for_model`` | ``trading`` | ``stopped``), ``last_bar`` (UTC ISO
  or None), ``bars_processed``, ``generation``. The supervisor's watchdog reads it.
* status ``<root>/paper_trader/status.json``: the heartbeat's fields plus ``broker``,
  ``equity``, ``cash``, ``positions`` (per symbol: qty, price, value, weight, hwm, entry),
  ``drawdown``, ``peak_equity``, ``initial_cash``, ``source``, ``study``, ``last_reload``,
  ``rejected_generation``, ``rejection_reason`` (the last rejected generation while it is
  newer than the one in use and than the last successful reload, else None), ``ensemble``
  (``{"generation", "digest", "member_dirs"}`` of the ensemble traded: its generation, the
  content digest of its manifest and its member folder names in ``ensemble/``, which the
  sync job does not remove while they are listed here; None for a deployment slot or
  before a model is loaded), the hot-reload watcher's own ``reload`` status,
  ``costs`` (the execution model traded: the model's own, with any overrides),
  ``cost_overrides`` (the fields the trader's options override) and ``reconciliation``
  (the report of the ledger's reconciliation with the broker's account at start,
  :func:`paper_trader.reconcile.reconcile`: ``at``, ``ok``, ``since``, ``orders_compared``,
  ``broker_orders``, ``recovered``, ``unsent``, ``differences``, ``error``; ``ok`` None with
  ``error`` while the broker could not be asked; None for the replay).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from paper_trader.config import COMPONENT
from trainers.atomic_io import atomic_write_json
from trainers.runtime.heartbeat import write_heartbeat as write_runtime_heartbeat


def iso_ts(ts: int | None) -> str | None:
    """UTC epoch seconds -> ``YYYY-MM-DDTHH:MM:SSZ`` (None stays None)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def write_trader_heartbeat(
    path: Path, state: str, last_bar_ts: int | None, bars_processed: int, generation: int | None
) -> dict[str, Any]:
    """Write the heartbeat file atomically; returns what was written."""
    return write_runtime_heartbeat(
        path,
        COMPONENT,
        state=state,
        last_bar=iso_ts(last_bar_ts),
        bars_processed=bars_processed,
        generation=generation,
    )


def write_status(path: Path, heartbeat: dict[str, Any], details: dict[str, Any]) -> None:
    """Write ``status.json`` atomically: the heartbeat's fields merged with ``details``."""
    atomic_write_json(path, {**heartbeat, **details})

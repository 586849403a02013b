"""The one heartbeat format: a child process proves it is alive *and making progress* by
rewriting ``<root>/run/heartbeats/<component>.json`` (atomically) from its work loop; the
supervisor's watchdog restarts a child whose heartbeat is older than its timeout.

A heartbeat is a JSON object::

    {"component": "worker-0", "pid": 1234, "time": 1764480000.25,
     "at": "2025-11-30T05:20:00.250000+00:00", "state": "training", ...}

``time`` is the write time in unix seconds (float, the clock of ``time.time()``) and is
what every reader compares; ``at`` is the same instant as UTC ISO 8601 text for people.
Other keys are the component's own (``state``, ``trial``, ``steps``, ``last_bar`` ...).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainers.atomic_io import atomic_write_json, is_disk_full, read_json_object


def heartbeat_record(component: str, **info: Any) -> dict[str, Any]:
    """A heartbeat written now by this process: ``component``, ``pid``, ``time``, ``at``
    and ``info``."""
    now = time.time()
    return {
        "component": component,
        "pid": os.getpid(),
        "time": now,
        "at": datetime.fromtimestamp(now, UTC).isoformat(),
        **info,
    }


def write_heartbeat(path: str | Path, component: str, **info: Any) -> dict[str, Any]:
    """Write a heartbeat atomically; returns what was written."""
    record = heartbeat_record(component, **info)
    atomic_write_json(path, record)
    return record


class Heartbeat:
    """Rate-limited heartbeat writer.

    Args:
        path: the heartbeat file.
        component: the writer's component name.
        min_interval_s: :meth:`beat` writes at most this often unless ``force``.
    """

    def __init__(self, path: Path, component: str, min_interval_s: float = 2.0) -> None:
        self.path = path
        self.component = component
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def beat(self, force: bool = False, **info: Any) -> bool:
        """Write the heartbeat with ``info`` if ``min_interval_s`` has passed (or ``force``).
        A full disk (:func:`trainers.atomic_io.is_disk_full`) is not an error here: the beat
        is skipped (False) and the work goes on; the supervisor pauses the process while the
        disk is full and ignores the stale heartbeat of a paused one.

        Raises:
            OSError: any other write error.
        """
        now = time.time()
        if not force and now - self._last < self.min_interval_s:
            return False
        self._last = now
        try:
            write_heartbeat(self.path, self.component, **info)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            return False
        return True


def read_heartbeat(path: str | Path) -> dict[str, Any] | None:
    """The heartbeat's content, or None when missing or unreadable."""
    return read_json_object(path)


def heartbeat_age(record: dict[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds since a heartbeat (or a document carrying its fields) was written; None when
    it has no numeric ``time``."""
    when = None if record is None else record.get("time")
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        return None
    return max(0.0, (time.time() if now is None else now) - float(when))

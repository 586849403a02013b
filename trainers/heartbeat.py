"""Heartbeat files: a child process proves it is alive *and making progress* by rewriting
``<root>/run/heartbeats/<component>.json`` (atomically) from its work loop; the
supervisor's watchdog restarts a child whose heartbeat is older than its timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trainers.atomic_io import atomic_write_json, read_json_object


def heartbeat_path(root: Path, component: str) -> Path:
    """``<root>/run/heartbeats/<component>.json``."""
    return root / "run" / "heartbeats" / f"{component}.json"


class Heartbeat:
    """Rate-limited heartbeat writer.

    Args:
        path: the heartbeat file.
        min_interval_s: :meth:`beat` writes at most this often unless ``force``.
    """

    def __init__(self, path: Path, min_interval_s: float = 2.0) -> None:
        self.path = path
        self.min_interval_s = min_interval_s
        self._last = 0.0

    def beat(self, force: bool = False, **info: Any) -> None:
        """Write ``{"pid", "time" (unix s), **info}`` if the interval has passed."""
        now = time.time()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        atomic_write_json(self.path, {"pid": os.getpid(), "time": now, **info})


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    """The heartbeat's content, or None when missing or unreadable."""
    return read_json_object(path)

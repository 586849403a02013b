"""Free space at the runtime root, seen by the supervisor: when the disk is (nearly) full the
supervisor pauses, and it resumes by itself once there is room again.

*Full* starts when free space at the root falls below ``preflight.pause_free_disk_mb``, or
when one of the supervisor's own writes fails with ``ENOSPC``/``EDQUOT``
(:func:`report`). It ends when free space is back at or above
``preflight.min_free_disk_mb`` (the preflight minimum), so a disk hovering at the edge
does not flap. What the supervisor does meanwhile (:mod:`daemon.supervisor`): the workers'
process groups are stopped with SIGSTOP (their trials stay in memory, nothing is written)
and continued with SIGCONT; the paper trader is stopped at a bar boundary and started again;
scheduled jobs that write (sync, deploy, archive, cleanup) are skipped; none of it counts
as a restart. The ``disk_full`` alert goes to the webhook at once (no disk needed) and is
logged again once the disk has room (a log line written while the disk was full is lost).
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.alerts import Alert

log = structlog.get_logger("supervisor")

ALERT_KIND = "disk_full"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def free_mb(path: Path) -> float:
    """Free space (MiB) available to this user on the filesystem holding ``path`` (its
    nearest existing ancestor).

    Raises:
        OSError: the filesystem cannot be queried.
    """
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**20


@dataclass
class DiskGuard:
    """Whether the disk of ``root`` is full (module docstring); thread-safe.

    Attributes:
        root: the runtime root.
        pause_below_mb: free space below which the disk counts as full.
        resume_at_mb: free space at or above which a full disk counts as having room again.
        full: whether the disk counts as full now.
        since: epoch seconds when the current episode started.
        trigger: what started it (``free space ...`` or ``ENOSPC writing ...``).
        episodes: episodes since the supervisor started; ``last_episode_s``: the last one's length.
    """

    root: Path
    pause_below_mb: float
    resume_at_mb: float
    full: bool = False
    since: float | None = None
    trigger: str | None = None
    free: float | None = None
    checked_at: float | None = None
    episodes: int = 0
    last_episode_s: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> bool:
        """Measure free space now and update :attr:`full`; returns it. A filesystem that
        cannot be queried keeps the previous state."""
        try:
            free = free_mb(self.root)
        except OSError:
            return self.full
        now = time.time()
        with self._lock:
            self.free, self.checked_at = round(free, 1), now
            if not self.full and free < self.pause_below_mb:
                self._start(now, f"free space {free:.1f} MB below {self.pause_below_mb:g} MB")
            elif self.full and free >= self.resume_at_mb:
                self.full = False
                self.last_episode_s = None if self.since is None else round(now - self.since, 1)
            return self.full

    def report(self, where: str, exc: BaseException) -> None:
        """A write failed because the disk is full (``where``: what was being written)."""
        with self._lock:
            if not self.full:
                self._start(time.time(), f"{exc.__class__.__name__} writing {where}: {exc}")

    def _start(self, now: float, trigger: str) -> None:
        self.full, self.since, self.trigger = True, now, trigger
        self.episodes += 1

    def alert(self, study: str | None) -> Alert:
        """The ``disk_full`` alert of the current (or last) episode."""
        with self._lock:
            free = self.free
            return Alert(
                ALERT_KIND,
                "critical",
                f"the disk of {self.root} is full ({self.trigger}); workers paused and the paper trader "
                f"stopped until {self.resume_at_mb:g} MB are free",
                key=ALERT_KIND,
                study=study,
                details={"since": _iso(self.since), "free_mb": free, "resume_at_mb": self.resume_at_mb},
            )

    def snapshot(self) -> dict[str, Any]:
        """``{"state": "ok" | "full", "free_mb", "pause_below_mb", "resume_at_mb", "since",
        "trigger", "episodes", "last_episode_s", "checked_at"}`` for ``status.json``."""
        with self._lock:
            return {
                "state": "full" if self.full else "ok",
                "free_mb": self.free,
                "pause_below_mb": self.pause_below_mb,
                "resume_at_mb": self.resume_at_mb,
                "since": _iso(self.since) if self.full else None,
                "trigger": self.trigger if self.full else None,
                "episodes": self.episodes,
                "last_episode_s": self.last_episode_s,
                "checked_at": _iso(self.checked_at),
            }

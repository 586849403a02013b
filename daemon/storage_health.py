"""The supervisor's view of the study storage: is it reachable, since when not, and the
``storage_unavailable`` alert.

The supervisor checks the storage (``SELECT 1``, :func:`trainers.study_db.engine.ping`) at
every watchdog run and before it counts a child's restart. A restart while the storage is
unavailable, or within :data:`RECOVERY_GRACE_S` of its return, is *not* counted against
the child's hourly restart budget (:mod:`daemon.fleet`): workers wait out an outage
(:class:`trainers.storage.PatientRDBStorage`), and one that dies anyway during an outage
must not use up the budget (a routine PostgreSQL restart would otherwise mark every worker
failed). The state is in ``run/status.json`` (``supervisor.storage`` and the top-level
``storage``); an outage longer than ``alerts.storage_unavailable_after_s`` raises the
``storage_unavailable`` alert (critical), resolved when the storage answers again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from daemon.alerts import Alert
from trainers.storage import first_line, redact_url

log = structlog.get_logger("supervisor")

RECOVERY_GRACE_S = 30.0  # an exit this soon after the storage came back is still the outage's
ALERT_KIND = "storage_unavailable"


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


@dataclass
class StorageHealth:
    """Reachability of one storage URL, updated by :meth:`check` (thread-safe).

    Attributes:
        url: the storage URL (shown redacted).
        alert_after_s: seconds of outage before :meth:`alert` returns an alert.
        state: ``unknown`` (not checked yet), ``available`` or ``unavailable``.
        down_since: epoch seconds of the first failed check of the current outage.
        recovered_at: epoch seconds of the first good check after the last outage.
        outages: outages seen since the supervisor started.
        last_outage_s: length of the last finished outage (seconds).
    """

    url: str
    alert_after_s: float = 60.0
    state: str = "unknown"
    down_since: float | None = None
    recovered_at: float | None = None
    last_error: str | None = None
    checked_at: float | None = None
    outages: int = 0
    last_outage_s: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self) -> bool:
        """Ping the storage now; log the transitions (``storage_unavailable`` warning,
        ``storage_available`` with the outage's length). Returns whether it answered."""
        from trainers.study_db.engine import ping

        try:
            ping(self.url)
            error = None
        except Exception as exc:  # any failure to answer SELECT 1 is an outage
            error = first_line(exc)
        now = time.time()
        with self._lock:
            self.checked_at = now
            if error is None:
                if self.state == "unavailable" and self.down_since is not None:
                    self.last_outage_s = round(now - self.down_since, 1)
                    self.recovered_at = now
                    log.info("storage_available", storage=redact_url(self.url), outage_s=self.last_outage_s)
                self.state, self.down_since, self.last_error = "available", None, None
                return True
            if self.state != "unavailable":
                self.state, self.down_since = "unavailable", now
                self.outages += 1
                log.warning("storage_unavailable", storage=redact_url(self.url), error=error)
            self.last_error = error
            return False

    def excuses_restart(self) -> bool:
        """Whether a child's restart now is the storage's fault: the storage does not answer,
        or came back less than :data:`RECOVERY_GRACE_S` ago."""
        if not self.check():
            return True
        with self._lock:
            return self.recovered_at is not None and time.time() - self.recovered_at < RECOVERY_GRACE_S

    def outage_s(self, now: float | None = None) -> float | None:
        """Seconds the current outage has lasted (None while available)."""
        with self._lock:
            if self.state != "unavailable" or self.down_since is None:
                return None
            return max(0.0, (time.time() if now is None else now) - self.down_since)

    def alert(self, study: str | None) -> Alert | None:
        """The ``storage_unavailable`` alert once the outage has lasted ``alert_after_s``."""
        lasted = self.outage_s()
        if lasted is None or lasted < self.alert_after_s:
            return None
        return Alert(
            ALERT_KIND,
            "critical",
            f"the study storage {redact_url(self.url)} has not answered for {lasted:.0f} s "
            f"({self.last_error}); workers are waiting for it",
            key=ALERT_KIND,
            study=study,
            details={"since": _iso(self.down_since), "outage_s": round(lasted, 1), "error": self.last_error},
        )

    def snapshot(self) -> dict[str, Any]:
        """``{"state", "url", "since", "outage_s", "error", "checked_at", "outages",
        "last_outage_s"}`` for ``status.json``."""
        lasted = self.outage_s()
        with self._lock:
            return {
                "state": self.state,
                "url": redact_url(self.url),
                "since": _iso(self.down_since),
                "outage_s": None if lasted is None else round(lasted, 1),
                "error": self.last_error,
                "checked_at": _iso(self.checked_at),
                "outages": self.outages,
                "last_outage_s": self.last_outage_s,
            }

"""Alerts: to the log always, and as JSON POSTs to an optional webhook.

An :class:`Alert` is a condition with an identity (``key``). :class:`AlertSink` raises each
key once: the same key is not sent again while it stays active (the monitor re-evaluates
its conditions every run), except once every ``repeat_after_s`` as a reminder. A key that
is no longer active is *resolved* (logged), so the condition coming back alerts again.
Active keys can be kept in a state file so a supervisor restart does not re-send them.

:data:`KINDS` are the monitor's conditions (reconciled by each monitor run). The supervisor
raises two more itself and resolves them with ``update(..., kinds=(kind,))``:
``storage_unavailable`` (:mod:`daemon.storage_health`) and ``disk_full``
(:mod:`daemon.disk_guard`; delivery needs no disk, the state file is skipped while full).

Delivery never blocks the caller: alerts are queued to one background thread that POSTs
the payload (``requests``, timeout ``timeout_s`` per attempt) and retries a connection
error, a timeout, HTTP 408/425/429 or 5xx up to ``max_attempts`` attempts with
exponential backoff (``backoff_s * 2**(attempt-1)``, at most ``backoff_max_s``); another
4xx answer is not retried. A full queue drops the alert (logged). The webhook URL may carry
a token: it is never logged, only its scheme and host.

Payload (one JSON object)::

    {"alert": kind, "severity": "info" | "warning" | "critical", "message": str,
     "time": UTC ISO 8601, "root": str, "study": str | null, "key": str, **details}
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import requests
import structlog

from trainers.atomic_io import atomic_write_json, read_json

if TYPE_CHECKING:
    from daemon.config import AlertsConfig

log = structlog.get_logger("alerts")

Severity = Literal["info", "warning", "critical"]
KINDS = (
    "worker_budget_exhausted",
    "stagnation",
    "below_baselines",
    "drawdown",
    "reload_rejected",
    "manifest_rebuilt",
    "ledger_mismatch",
)
RETRY_STATUS = frozenset({408, 425, 429})
RECENT_KEPT = 50
_STOP = object()


@dataclass(frozen=True)
class Alert:
    """One alert condition.

    Attributes:
        kind: one of :data:`KINDS` (or another short name).
        severity: ``info``, ``warning`` or ``critical``.
        message: one human sentence.
        key: identity for de-duplication: the same key is the same alert.
        study: the study it concerns, if any.
        details: extra JSON-ready fields merged into the payload (base fields win).
    """

    kind: str
    severity: Severity
    message: str
    key: str
    study: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def payload(self, root: str, at: float) -> dict[str, Any]:
        """The JSON object POSTed to the webhook (``at``: epoch seconds)."""
        base = {
            "alert": self.kind,
            "severity": self.severity,
            "message": self.message,
            "time": datetime.fromtimestamp(at, UTC).isoformat(),
            "root": root,
            "study": self.study,
            "key": self.key,
        }
        return {**self.details, **base}


def url_host(url: str) -> str:
    """``https://hooks.example.org/T000/secret`` -> ``https://hooks.example.org`` (for logs)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port else "")


class AlertSink:
    """Logs alerts, de-duplicates them by key and delivers them to a webhook off-thread.

    Args:
        webhook_url: ``http(s)://`` URL, or None to log only.
        root: runtime root (named in every payload).
        max_attempts: delivery attempts per alert (>= 1).
        backoff_s: delay before the second attempt; doubled for each further one.
        backoff_max_s: cap of one delay.
        timeout_s: HTTP timeout of one attempt (connect and read).
        repeat_after_s: re-send a still-active alert after this long; 0 = never.
        state_path: JSON file keeping active alerts, recent alerts and delivery counts
            across restarts (written atomically); None keeps them in memory only.
        queue_size: alerts waiting for delivery before new ones are dropped.
        clock: epoch-seconds clock (for tests of ``repeat_after_s``).

    Raises:
        ValueError: the URL is not ``http://`` or ``https://`` (the message does not repeat
            the URL, which may hold a token), or a bad number.
    """

    def __init__(
        self,
        webhook_url: str | None,
        root: str | Path,
        *,
        max_attempts: int = 5,
        backoff_s: float = 2.0,
        backoff_max_s: float = 300.0,
        timeout_s: float = 5.0,
        repeat_after_s: float = 86_400.0,
        state_path: str | Path | None = None,
        queue_size: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if webhook_url is not None:
            parts = urlsplit(webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("alerts.webhook_url: must be an http:// or https:// URL with a host")
        if max_attempts < 1 or backoff_s < 0 or timeout_s <= 0 or repeat_after_s < 0:
            raise ValueError("alerts: max_attempts >= 1, backoff_s >= 0, timeout_s > 0, repeat_after_s >= 0")
        self.url = webhook_url
        self.root = str(root)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.repeat_after_s = repeat_after_s
        self.state_path = Path(state_path) if state_path is not None else None
        self.clock = clock
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._abort = threading.Event()
        self.active: dict[str, dict[str, Any]] = {}
        self.recent: list[dict[str, Any]] = []
        self.delivery = {"sent": 0, "failed": 0, "dropped": 0, "last_error": None}
        self._load_state()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        if self.url is not None:
            self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
            self._thread.start()

    @classmethod
    def from_config(
        cls, cfg: AlertsConfig, root: str | Path, state_path: str | Path | None = None
    ) -> AlertSink:
        """A sink for the ``[alerts]`` configuration section."""
        url = cfg.webhook_url.get_secret_value() if cfg.webhook_url is not None else None
        return cls(
            url or None,
            root,
            max_attempts=cfg.max_attempts,
            backoff_s=cfg.backoff_s,
            timeout_s=cfg.timeout_s,
            repeat_after_s=cfg.repeat_after_s,
            state_path=state_path,
        )

    # ------------------------------------------------------------------ raising
    def emit(self, alert: Alert) -> bool:
        """Raise an alert: log it and queue it for the webhook, unless the same key is
        already active (and not due for a reminder). Never blocks.

        Returns:
            True when the alert was raised now, False when it was a duplicate.
        """
        now = self.clock()
        with self._lock:
            entry = self.active.get(alert.key)
            if entry is not None:
                last = float(entry.get("last_raised", 0.0))
                due = self.repeat_after_s > 0 and now - last >= self.repeat_after_s
                if not due:
                    entry["seen"] = entry.get("seen", 0) + 1
                    return False
            payload = alert.payload(self.root, now)
            first = now if entry is None else entry.get("first_raised", now)
            self.active[alert.key] = {
                "kind": alert.kind,
                "first_raised": first,
                "last_raised": now,
                "message": alert.message,
                "seen": 1 if entry is None else entry.get("seen", 0) + 1,
            }
            self.recent = [
                *self.recent,
                {**payload, "delivery": "log only" if self.url is None else "queued"},
            ]
            self.recent = self.recent[-RECENT_KEPT:]
            self._save_state()
        level = log.error if alert.severity == "critical" else log.warning
        level(
            "alert",
            alert=alert.kind,
            severity=alert.severity,
            message=alert.message,
            study=alert.study,
            key=alert.key,
            repeat=entry is not None,
            **{k: v for k, v in alert.details.items() if k not in ("message", "study", "key", "severity")},
        )
        if self.url is not None:
            self._enqueue(payload)
        return True

    def update(self, alerts: Iterable[Alert], kinds: Iterable[str] = KINDS) -> list[Alert]:
        """Reconcile with the conditions active now: raise the new ones, resolve active keys
        of ``kinds`` that are not among ``alerts`` (so they alert again if they come back).

        Returns:
            The alerts raised by this call.
        """
        current = list(alerts)
        raised = [a for a in current if self.emit(a)]
        keys, scope = {a.key for a in current}, set(kinds)
        with self._lock:
            gone = [k for k, v in self.active.items() if v["kind"] in scope and k not in keys]
            for key in gone:
                entry = self.active.pop(key)
                log.info("alert_resolved", alert=entry["kind"], key=key)
            if gone:
                self._save_state()
        return raised

    # ------------------------------------------------------------------ delivery
    def _enqueue(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            with self._lock:
                self._pending -= 1
                self.delivery["dropped"] += 1
                self._idle.notify_all()
                self._save_state()
            log.error("alert_dropped", alert=payload["alert"], reason="delivery queue full")

    def _run(self) -> None:
        session = requests.Session()
        try:
            while True:
                payload = self._queue.get()
                if payload is _STOP:
                    return
                try:
                    ok, attempts, error = self._deliver(session, payload)
                except Exception as exc:  # the sender thread must survive anything
                    ok, attempts, error = False, 0, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.delivery["sent" if ok else "failed"] += 1
                    if not ok:
                        self.delivery["last_error"] = error
                    for rec in self.recent:
                        if rec.get("key") == payload["key"] and rec.get("time") == payload["time"]:
                            rec["delivery"] = "delivered" if ok else f"failed: {error}"
                    self._save_state()
                if ok:
                    log.info("alert_delivered", alert=payload["alert"], attempts=attempts)
                else:
                    log.error(
                        "alert_delivery_failed",
                        alert=payload["alert"],
                        attempts=attempts,
                        error=error,
                        webhook=url_host(str(self.url)),
                    )
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()
        finally:
            session.close()

    def _deliver(self, session: requests.Session, payload: dict[str, Any]) -> tuple[bool, int, str | None]:
        """POST with retries; returns ``(delivered, attempts made, last error)``."""
        error: str | None = None
        body = json.dumps(payload, default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "cappuccino-alerts"}
        for attempt in range(1, self.max_attempts + 1):
            try:
                resp = session.post(str(self.url), data=body, headers=headers, timeout=self.timeout_s)
                if 200 <= resp.status_code < 300:
                    return True, attempt, None
                error = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in RETRY_STATUS:
                    return False, attempt, f"{error} (not retried)"
            except requests.RequestException as exc:
                error = type(exc).__name__
            if attempt < self.max_attempts:
                delay = min(self.backoff_max_s, self.backoff_s * 2.0 ** (attempt - 1))
                log.warning("alert_retry", alert=payload["alert"], attempt=attempt, error=error, wait_s=delay)
                if self._abort.wait(delay):
                    return False, attempt, f"{error} (abandoned at shutdown)"
        return False, self.max_attempts, error

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within ``timeout_s``, then abandon the rest."""
        if self._thread is None:
            return
        self.flush(timeout_s)
        self._abort.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        self._thread.join(timeout=max(1.0, self.timeout_s))
        self._thread = None

    # ------------------------------------------------------------------ state
    def snapshot(self) -> dict[str, Any]:
        """Active alerts, recent ones and delivery counts (JSON-ready, for ``status.json``)."""
        with self._lock:
            return {
                "webhook": None if self.url is None else url_host(self.url),
                "active": {k: dict(v) for k, v in self.active.items()},
                "recent": [dict(r) for r in self.recent],
                "delivery": dict(self.delivery),
            }

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        try:
            data = self.snapshot()
            del data["webhook"]
            atomic_write_json(self.state_path, data)
        except OSError as exc:  # alerts must never take their caller down
            log.warning("alert_state_write_failed", path=str(self.state_path), error=str(exc))

    def _load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            data = read_json(self.state_path)
            active, recent = data["active"], data["recent"]
            if not isinstance(active, dict) or not isinstance(recent, list):
                raise ValueError("unexpected layout")
            self.active = {str(k): dict(v) for k, v in active.items() if isinstance(v, dict) and "kind" in v}
            self.recent = [r for r in recent if isinstance(r, dict)][-RECENT_KEPT:]
            counts = data.get("delivery") or {}
            for key in ("sent", "failed", "dropped"):
                self.delivery[key] = int(counts.get(key, 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("alert_state_ignored", path=str(self.state_path), error=str(exc))

"""Scheduled jobs of the supervisor (APScheduler 3.x) with recorded outcomes.

Every job runs with coalescing, one instance at a time and a misfire grace time. Jobs that
do real work (ensemble sync, auto-deployer) run as child processes in their own process
group with a run-time bound: past ``timeout_s`` the group is killed, so a hung job can
never block its next runs. In-process jobs (watchdog, monitor) are bounded the same way by
running on a worker thread that the scheduler thread stops waiting for. Each run's start,
outcome and duration go to the log and into :attr:`JobRecord.as_dict` for ``status.json``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler

from daemon.children import stop_process_group

log = structlog.get_logger("supervisor.jobs")


@dataclass
class JobRecord:
    """Outcome history of one job."""

    name: str
    interval_s: float
    runs: int = 0
    failures: int = 0
    last_start: str | None = None
    last_outcome: str | None = None  # ok | failed | timeout
    last_duration_s: float | None = None
    last_detail: str | None = None
    running: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self, next_run: datetime | None) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "runs": self.runs,
            "failures": self.failures,
            "last_start": self.last_start,
            "last_outcome": self.last_outcome,
            "last_duration_s": self.last_duration_s,
            "last_detail": self.last_detail,
            "running": self.running,
            "next_run": next_run.isoformat() if next_run else None,
        }


def _summary_line(path: Path, offset: int) -> str:
    """First non-empty line a job wrote to its log after ``offset`` (its summary)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read(8192).decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


class JobRunner:
    """Owns the APScheduler scheduler and the records of its jobs."""

    def __init__(self, misfire_grace_s: float, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.records: dict[str, JobRecord] = {}
        self._active: set[subprocess.Popen[bytes]] = set()
        self._active_lock = threading.Lock()
        self._closing = False
        self.scheduler = BackgroundScheduler(
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(misfire_grace_s),
            },
            timezone=UTC,
        )

    def add(
        self, name: str, interval_s: float, func: Callable[[], str | None], first_in_s: float = 1.0
    ) -> None:
        """Schedule ``func`` every ``interval_s`` (first run after ``first_in_s``).

        ``func`` returns a short detail string or raises; a return of ``"timeout"`` /
        ``"failed: ..."`` is recorded as that outcome.
        """
        self.records[name] = JobRecord(name, interval_s)
        start = datetime.fromtimestamp(time.time() + first_in_s, UTC)
        self.scheduler.add_job(
            self._wrap(name, func), "interval", seconds=interval_s, id=name, name=name, next_run_time=start
        )

    def reschedule(self, name: str, interval_s: float) -> None:
        rec = self.records[name]
        if rec.interval_s != interval_s:
            rec.interval_s = interval_s
            self.scheduler.reschedule_job(name, trigger="interval", seconds=interval_s)

    def run_now(self, name: str) -> None:
        """Ask for an immediate run (coalesced with a run in progress)."""
        self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    def _wrap(self, name: str, func: Callable[[], str | None]) -> Callable[[], None]:
        rec = self.records[name]

        def job() -> None:
            if not rec.lock.acquire(blocking=False):
                log.warning("job_skipped", job=name, reason="previous run still in progress")
                return
            rec.running = True
            rec.last_start = datetime.now(UTC).isoformat()
            t0 = time.monotonic()
            log.info("job_started", job=name)
            outcome, detail = self._bounded(func)
            rec.running = False
            rec.lock.release()
            rec.runs += 1
            rec.last_duration_s = round(time.monotonic() - t0, 3)
            rec.last_outcome, rec.last_detail = outcome, detail
            if outcome != "ok":
                rec.failures += 1
            level = log.info if outcome == "ok" else log.warning
            level("job_finished", job=name, outcome=outcome, duration_s=rec.last_duration_s, detail=detail)

        return job

    def _bounded(self, func: Callable[[], str | None]) -> tuple[str, str]:
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                detail = func() or ""
                if detail.startswith(("timeout", "failed")):
                    outcome, _, rest = detail.partition(":")
                    result["value"] = (outcome, rest.strip() or detail)
                else:
                    result["value"] = ("ok", detail)
            except Exception as exc:
                result["value"] = ("failed", f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            return "timeout", f"abandoned after {self.timeout_s:.0f} s"
        return result["value"]

    def run_command(
        self, argv: list[str], timeout_s: float, log_file: Path, env: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """Run a job command in its own process group; kill the group past ``timeout_s``.
        ``env``: variables added to the supervisor's environment (the storage URL, which
        never goes on a command line).

        Returns ``(outcome, detail)``: ``ok`` / ``failed`` (non-zero exit, detail = last
        output line) / ``timeout``. :meth:`shutdown` stops commands still running.
        """
        log_file.parent.mkdir(parents=True, exist_ok=True)
        offset = log_file.stat().st_size if log_file.exists() else 0
        with open(log_file, "ab") as out:
            with self._active_lock:
                if self._closing:
                    return "failed", "supervisor is stopping"
                proc = subprocess.Popen(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **(env or {})},
                )
                self._active.add(proc)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop_process_group(proc.pid, None, 5.0, proc)
                return "timeout", f"killed after {timeout_s:.0f} s"
            finally:
                with self._active_lock:
                    self._active.discard(proc)
        if code == 0:
            return "ok", _summary_line(log_file, offset)
        return "failed", f"exit {code}: {_summary_line(log_file, offset)}"

    def shutdown(self, timeout_s: float) -> None:
        """Stop the scheduler (when it was started) and every job command still running
        (process groups)."""
        with self._active_lock:
            self._closing = True
            active = list(self._active)
        if self.scheduler.running:  # the control API runs commands without scheduling any
            self.scheduler.shutdown(wait=False)
        for proc in active:
            stop_process_group(proc.pid, None, timeout_s, proc)

    def snapshot(self) -> dict[str, Any]:
        out = {}
        for name, rec in self.records.items():
            job = self.scheduler.get_job(name)
            out[name] = rec.as_dict(job.next_run_time if job else None)
        return out

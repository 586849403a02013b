"""The supervisor (``cappuccino supervise``): owns the training workers and the paper
trader, runs the scheduled jobs, writes ``run/status.json``, talks to systemd.

Signals: SIGTERM/SIGINT stop everything gracefully and exit 0; SIGHUP re-reads the config
and ``.current_study`` and realigns children and jobs.

Outages: a worker that exits while the study storage is unavailable is restarted without
counting against its restart budget (:mod:`daemon.storage_health`); a full disk pauses the
workers (SIGSTOP) and stops the paper trader until there is room again
(:mod:`daemon.disk_guard`). No write of the supervisor's own files (``run/*.json``) can take
it down: its state is in memory and the files are rewritten once they can be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal, get_args

import structlog

from daemon import fleet, jobs, sequential, sequential_state
from daemon.artifact_health import ALERT_KIND as ARTIFACT_ALERT
from daemon.artifact_health import artifact_store_alert
from daemon.children import Child, ChildSpec
from daemon.config import Config, load_config
from daemon.disk_guard import ALERT_KIND as DISK_ALERT
from daemon.disk_guard import DiskGuard
from daemon.scheduler import JobRunner
from daemon.sdnotify import Notifier
from daemon.storage_health import ALERT_KIND as STORAGE_ALERT
from daemon.storage_health import StorageHealth
from daemon.views.status import build_status
from trainers.accounting import Costs
from trainers.atomic_io import atomic_write_json, is_disk_full, read_json
from trainers.runtime.current_study import read_current_study, shared_storage
from trainers.runtime.layout import Layout
from trainers.runtime.logs import configure_logging
from trainers.runtime.pidlock import LockHeld, PidLock, lock_holder
from trainers.storage import (
    Patience,
    StorageUnavailable,
    default_storage_url,
    redact_argv,
    redact_url,
    wait_for_storage,
)

log = structlog.get_logger("supervisor")

# what one host runs (cappuccino supervise --role): every host shares the PostgreSQL study
# and the artifact store; "workers" runs the training workers only, "services" the jobs,
# the paper trader and the API, "all" everything (one machine)
Role = Literal["all", "workers", "services"]
ROLES: tuple[str, ...] = get_args(Role)


class SupervisorError(RuntimeError):
    """Start-up refused (lock held, no study); the message says why and what to do."""


def stop_stale_children(root: Path, timeout_s: float) -> list[dict[str, Any]]:
    """Stop the children recorded in ``run/children.json`` by a supervisor that died without
    cleaning up (:func:`daemon.fleet.stop_stale`), then forget the record."""
    path = Layout(root).children
    try:
        records = read_json(path)
    except (OSError, ValueError):
        return []
    stopped = fleet.stop_stale(records if isinstance(records, list) else [], timeout_s)
    for rec in stopped:
        log.warning("stale_child_stopped", child=rec.get("name"), child_pid=rec.get("pid"))
    path.unlink(missing_ok=True)
    return stopped


@dataclass
class Supervisor:
    """One supervisor per root. Use :meth:`run`."""

    config_path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    on_tick: Callable[[Supervisor], None] | None = None
    console_logs: bool = True
    role: Role = "all"

    def __post_init__(self) -> None:
        self.config: Config = load_config(self.config_path, self.overrides)
        self.root = self.config.root
        self.children: dict[str, Child] = {}
        self.notifier = Notifier()
        self.lock = PidLock(Layout(self.root).supervisor_pid)
        self.jobs = JobRunner(self.config.jobs.misfire_grace_s, self.config.jobs.job_timeout_s)
        self.study: str | None = None
        self.study_costs: Costs | None = None  # the study's execution model, once read
        self.started_at = time.time()
        self.monitor_cache: dict[str, Any] = {}
        self.alerts: Any = None  # daemon.alerts.AlertSink, created when the supervisor runs
        self._stop = False
        self._stop_event = threading.Event()  # ends a wait for the storage at start (SIGTERM)
        self._hup = False
        # children are managed from the main loop and from the watchdog job's thread
        self._children_lock = threading.RLock()
        self._closing = False
        self._last_status = 0.0
        self._last_ping = 0.0
        self._last_disk = 0.0
        self.storage_health = StorageHealth(self.storage_url, self.config.alerts.storage_unavailable_after_s)
        pre = self.config.preflight
        self.disk = DiskGuard(self.root, pre.pause_below_mb, pre.min_free_disk_mb)
        self.disk_paused = False  # workers SIGSTOPped, trader stopped (a full disk)

    # ------------------------------------------------------------------ setup
    @property
    def storage_url(self) -> str:
        return self.config.study.storage or default_storage_url(self.root)

    def resolve_study(self) -> str:
        name = read_current_study(self.root, self.storage_url) or self.config.study.name
        if not name:
            raise SupervisorError(
                f"no study: write one with bin/sync_training_study NAME (creates {self.root}/.current_study) "
                "or set study.name in the config"
            )
        return name

    @property
    def worker_study(self) -> str:
        """The study the workers train: the current study, or, during a sequential run, its
        stage's study (:func:`daemon.sequential_state.worker_study`: the full study once
        stage 2 has begun, while the current study is still the quick one)."""
        return sequential_state.worker_study(self.root, str(self.study))

    def child_specs(self) -> list[ChildSpec]:
        specs = fleet.child_specs(
            self.config, self.worker_study, self.storage_url, self.study_costs, self.config_path
        )
        return [s for s in specs if self.runs(s.name)]

    def runs(self, child: str) -> bool:
        """Whether this host's role runs ``child``: ``workers`` only the training workers,
        ``services`` everything but them (paper trader, API), ``all`` everything."""
        return self.role == "all" or (self.role == "workers") == child.startswith("worker-")

    def services_only(self, body: Callable[[], str]) -> Callable[[], str]:
        """A job body (sync, deploy, archive, cleanup, sequential) that a ``workers`` host skips."""

        def run() -> str:
            return "skipped: role workers" if self.role == "workers" else body()

        return run

    # ------------------------------------------------------------------ children
    def record_children(self) -> None:
        """Write ``run/children.json`` (owner-only, 0600): each running (or paused) child's
        name, pid, create time and command line, with any URL password redacted. A failed
        write is logged, never raised (:meth:`write_failed`)."""
        try:
            atomic_write_json(
                Layout(self.root).children,
                [
                    {
                        "name": c.spec.name,
                        "pid": c.pid,
                        "create_time": c.create_time,
                        "argv": redact_argv(c.spec.argv),
                    }
                    for c in self.children.values()
                    if c.pid is not None and c.state in ("running", "paused") and c.process() is not None
                ],
                mode=0o600,
            )
        except OSError as exc:
            self.write_failed("run/children.json", exc)

    def write_failed(self, where: str, exc: OSError) -> None:
        """A write of the supervisor's own files failed: a full disk starts the disk guard's
        pause at the next tick; anything else is logged (the state stays in memory)."""
        if is_disk_full(exc):
            self.disk.report(where, exc)
        log.warning("write_failed", path=where, error=f"{type(exc).__name__}: {exc}")

    def start_child(self, spec: ChildSpec) -> None:
        child = self.children.get(spec.name)
        if child is None or child.spec != spec:
            old = child
            child = Child(spec, Layout(self.root).logs_dir)
            if old is not None:
                child.restarts, child.total_restarts = old.restarts, old.total_restarts
            self.children[spec.name] = child
        try:
            child.start()
        except OSError as exc:  # its log file cannot be opened (a full disk) ...
            self.write_failed(f"logs/{spec.name}.stdout", exc)
            delay = self.config.restart.backoff_initial_s
            child.state, child.restart_at = "backoff", time.monotonic() + delay
            child.last_reason = f"start failed: {exc}"
            log.error("child_start_failed", child=spec.name, error=str(exc), retry_in_s=delay)
            return
        log.info("child_started", child=spec.name, child_pid=child.pid)
        self.record_children()

    def stop_child(self, name: str, forget: bool = False) -> None:
        child = self.children.get(name)
        if child is None:
            return
        if child.state == "running":
            child.stop(self.config.restart.stop_timeout_s)
            log.info("child_stopped", child=name, child_pid=child.pid)
        if forget:
            del self.children[name]
        self.record_children()

    def align_children(self) -> None:
        """Start missing children, restart changed ones, stop ones no longer configured."""
        with self._children_lock:
            if self._closing:
                return
            specs = {s.name: s for s in self.child_specs()}
            for name in list(self.children):
                if name not in specs:
                    self.stop_child(name, forget=True)
            for name, spec in specs.items():
                child = self.children.get(name)
                if child is not None and child.state == "paused":
                    continue  # the disk is full: realigned when it has room again
                if child is not None and child.spec != spec and child.state == "running":
                    self.stop_child(name)
                if child is None or child.spec != spec or child.state in ("new", "stopped"):
                    self.start_child(spec)

    def handle_unhealthy(self, child: Child, reason: str) -> None:
        """Stop an unhealthy child and schedule its restart (backoff) or mark it failed."""
        code = child.last_exit
        child.stop(self.config.restart.stop_timeout_s)
        if self.disk_paused or self.disk.check():
            # a child that died of the full disk (the trader stops at a bar boundary with exit
            # code paper_trader.cli.DISK_FULL_EXIT): started again once the disk has room, not
            # counted; with room on the disk such an exit is an ordinary, counted crash
            child.state, child.last_reason = "paused", reason
            log.warning("child_paused", child=child.spec.name, reason=reason, note="disk full; not counted")
            self.record_children()
            return
        if code == 0 and not child.spec.restart_on_success:
            child.state = "done"
            log.info("child_done", child=child.spec.name)
            self.record_children()
            return
        if code == 0 and child.spec.name.startswith("worker-") and self.study_finished(refresh=True):
            child.state = "done"
            log.info("child_done", child=child.spec.name, reason="study reached its trial target")
            self.record_children()
            return
        child.last_reason = reason
        planned = code == 0 and reason.startswith("exited")  # a worker's per-process trial quota
        # a worker that dies while the storage is down is the outage's, not the worker's, fault
        counted = planned or not (
            child.spec.name.startswith("worker-") and self.storage_health.excuses_restart()
        )
        policy = fleet.RestartPolicy.from_config(self.config)
        delay = fleet.schedule_restart(child, policy, planned, counted=counted)
        if not counted:
            log.warning(
                "child_unhealthy",
                child=child.spec.name,
                reason=reason,
                restart_in_s=delay,
                counted=False,
                note="storage unavailable: not counted against the restart budget",
            )
            self.record_children()
            return
        if delay is None:
            child.state = "failed"
            log.error(
                "alert_child_failed",
                child=child.spec.name,
                reason=reason,
                restarts_last_hour=child.recent_restarts(time.monotonic()),
                note="restart budget exhausted; not restarting",
            )
        else:
            log.warning("child_unhealthy", child=child.spec.name, reason=reason, restart_in_s=delay)
        self.record_children()

    def ensure_study(self) -> None:
        """Create the storage schema and the study before workers start."""
        self.study_costs = fleet.ensure_study(self.storage_url, str(self.study), self.config.costs.as_costs())

    def open_study(self) -> bool:
        """:meth:`ensure_study`, waiting out a storage that cannot be reached (a database
        still starting at boot, a restart) as the workers do
        (:func:`trainers.storage.wait_for_storage`, backoff from 1 s to 15 s): each attempt is
        logged (``storage_unavailable_at_start``) and pings the systemd watchdog. Returns
        False when SIGTERM or SIGINT ended the wait.

        Raises:
            Exception: what opening the study raises while the database answers.
        """

        def waiting(waited_s: float, error: str) -> None:
            log.warning("storage_unavailable_at_start", waited_s=round(waited_s, 1), error=error)
            self.notifier.status(f"waiting for the study storage ({round(waited_s)} s): {error}")
            self.notifier.watchdog()

        def recovered(waited_s: float) -> None:
            log.info("storage_available", waited_s=round(waited_s, 1))

        patience = Patience(stop=self._stop_event, on_wait=waiting, on_recover=recovered)
        try:
            wait_for_storage(self.ensure_study, self.storage_url, patience)
        except StorageUnavailable:
            return False
        return True

    def study_finished(self, refresh: bool = False) -> bool:
        """Whether the study reached its trial target; ``refresh`` reads the storage now (a
        worker that exits 0 must not be restarted in a loop until the next monitor run). The
        study is the one the workers train (:attr:`worker_study`)."""
        from daemon.study_stats import study_stats

        training = self.worker_study
        if training != self.study:  # stage 2 of a sequential run: not the monitor's study
            try:
                stats = study_stats(self.storage_url, training)
            except Exception as exc:
                log.warning("study_stats_failed", study=training, error=str(exc))
                return False
            return fleet.finished_trials(stats) >= self.config.study.n_trials
        if refresh:
            try:
                self.monitor_cache["study"] = study_stats(self.storage_url, str(self.study))
            except Exception as exc:  # storage down: keep the cached figures
                log.warning("study_stats_failed", error=str(exc))
        return fleet.finished_trials(self.monitor_cache.get("study") or {}) >= self.config.study.n_trials

    def check_children(self, deep: bool) -> None:
        """Fast path each tick: exits and due restarts. ``deep`` (watchdog job): also
        zombies, hung heartbeats and memory limits."""
        with self._children_lock:  # the main loop and the watchdog job both get here
            if self._closing:
                return
            now = time.time()
            for child in list(self.children.values()):
                if child.state == "running":
                    if deep:
                        reason = child.unhealthy_reason(now)
                    else:
                        code = child.poll_exit()
                        reason = None if code is None else f"exited with code {code}"
                        if code is not None:
                            child.last_exit = code
                    if reason is not None:
                        self.handle_unhealthy(child, reason)
                elif (
                    child.state == "backoff"
                    and child.restart_at is not None
                    and time.monotonic() >= child.restart_at
                ):
                    self.start_child(child.spec)

    # ------------------------------------------------------------------ jobs
    def job_context(self) -> jobs.JobContext:
        return jobs.JobContext(
            self.config, self.root, str(self.study), self.storage_url, self.jobs, self.config_path
        )

    def job_watchdog(self) -> str:
        self.check_children(deep=True)
        self.check_storage()
        self.follow_shared_study()
        states = [c.state for c in self.children.values()]
        return f"{states.count('running')}/{len(states)} running"

    def follow_shared_study(self) -> None:
        """With a shared storage (PostgreSQL) the current study lives in it
        (:mod:`trainers.runtime.current_study`): a switch made on another host is noticed
        here, at every watchdog run, and handled as a SIGHUP by the main loop."""
        if shared_storage(self.storage_url) is None or self.study is None:
            return
        try:
            name = self.resolve_study()
        except SupervisorError:
            return
        if name != self.study:
            log.info("study_switched_elsewhere", study=name, previous_study=self.study)
            self._hup = True

    def check_storage(self) -> None:
        """Ping the study storage; raise the ``storage_unavailable`` alert once an outage has
        lasted ``alerts.storage_unavailable_after_s``, resolve it when the storage is back.
        On a services host also the artifact store (:mod:`daemon.artifact_health`)."""
        self.storage_health.check()
        if self.alerts is not None:
            alert = self.storage_health.alert(self.study)
            self.alerts.update([alert] if alert is not None else [], kinds=(STORAGE_ALERT,))
            if self.role != "workers":  # the services read bundles from the artifact store
                alert = artifact_store_alert(self.root, self.study)
                self.alerts.update([alert] if alert is not None else [], kinds=(ARTIFACT_ALERT,))

    def unless_disk_full(self, body: Callable[[], str]) -> Callable[[], str]:
        """A job body that is skipped while the disk is full (sync, deploy, archive and
        cleanup all write to it)."""

        def run() -> str:
            return "skipped: disk full" if self.disk_paused else body()

        return run

    def job_monitor(self) -> str:
        return jobs.monitor(self.job_context(), list(self.children.values()), self.alerts, self.monitor_cache)

    def schedule_jobs(self) -> None:
        ctx = self.job_context
        bodies: dict[str, Callable[[], str]] = {
            "watchdog": self.job_watchdog,
            "monitor": self.job_monitor,
            "ensemble_sync": self.unless_disk_full(lambda: jobs.sync(ctx(), self.alerts)),
            "deploy": self.unless_disk_full(lambda: jobs.deploy(ctx())),
            "archive": self.unless_disk_full(lambda: jobs.archive(ctx())),
            "cleanup": self.unless_disk_full(lambda: jobs.cleanup(ctx())),
            "sequential": self.unless_disk_full(lambda: sequential.check(self.config_path, self.config)),
        }
        for name in ("ensemble_sync", "deploy", "archive", "cleanup", "sequential"):
            bodies[name] = self.services_only(bodies[name])
        jobs.schedule(self.jobs, self.config, bodies)

    # ------------------------------------------------------------------ signals
    def _on_term(self, signum: int, _frame: FrameType | None) -> None:
        self._stop = True
        self._stop_event.set()

    def _on_hup(self, signum: int, _frame: FrameType | None) -> None:
        self._hup = True

    def reload(self) -> None:
        """SIGHUP: re-read config and ``.current_study``; realign children and jobs."""
        try:
            new = load_config(self.config_path, self.overrides)
        except ValueError as exc:
            log.error("config_reload_rejected", error=str(exc), note="keeping the running configuration")
            return
        self.config = new
        self.storage_health.url = self.storage_url
        self.storage_health.alert_after_s = new.alerts.storage_unavailable_after_s
        self.disk.pause_below_mb = new.preflight.pause_below_mb
        self.disk.resume_at_mb = new.preflight.min_free_disk_mb
        old_study = self.study
        self.study = self.resolve_study()
        if self.study != old_study:
            self.study_costs = None
            try:
                self.ensure_study()
            except Exception as exc:  # storage down: the workers retry; the supervisor stays up
                log.error("ensure_study_failed", study=self.study, error=str(exc))
        jobs.reschedule(self.jobs, new)
        log.info("reloaded", study=self.study, previous_study=old_study)
        self.align_children()
        if self.study != old_study:
            self.jobs.run_now("ensemble_sync")
            self.jobs.run_now("monitor")

    # ------------------------------------------------------------------ status
    def write_status(self) -> None:
        """Write ``run/status.json``; a failed write is logged, never raised."""
        status = build_status(self.root, self.storage_url, self.study, supervisor=self.status_self())
        try:
            atomic_write_json(Layout(self.root).status, status)
        except OSError as exc:
            self.write_failed("run/status.json", exc)

    def status_self(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "updated_at": datetime.now(UTC).isoformat(),
            "study": self.study,
            "role": self.role,
            "worker_study": self.worker_study,
            "config": str(self.config_path) if self.config_path else None,
            "children": [c.snapshot() for c in self.children.values()],
            "jobs": self.jobs.snapshot(),
            "monitor": self.monitor_cache,
            "systemd": self.notifier.enabled,
            "storage": self.storage_health.snapshot(),
            "disk": {**self.disk.snapshot(), "paused": self.disk_paused},
        }

    # ------------------------------------------------------------------ a full disk
    def guard_disk(self) -> None:
        """Each second: pause when the disk became full, resume when it has room again."""
        full = self.disk.check()
        if full and not self.disk_paused:
            self.pause_for_disk()
        elif not full and self.disk_paused:
            self.resume_after_disk()

    def pause_for_disk(self) -> None:
        """SIGSTOP the workers' process groups, stop the paper trader (it finishes its bar),
        defer restarts due; alert through the webhook (the log may be lost)."""
        with self._children_lock:
            if self._closing:
                return
            self.disk_paused = True
            for child in self.children.values():
                name = child.spec.name
                if name.startswith("worker-") and child.state == "running":
                    if not child.pause():
                        child.state = "paused"  # gone: started again on resume
                elif name == "paper_trader" and child.state == "running":
                    child.stop(self.config.restart.stop_timeout_s)
                    child.state = "paused"
                elif child.state == "backoff":
                    child.state = "paused"
            paused = [c.spec.name for c in self.children.values() if c.state == "paused"]
        log.error("disk_full", paused=paused, **self.disk.snapshot())
        if self.alerts is not None:
            self.alerts.emit(self.disk.alert(self.study))

    def resume_after_disk(self) -> None:
        """SIGCONT the paused workers (one that is gone is started again), start the paper
        trader again (none of it counted as a restart); log the alert that could not be
        logged while the disk was full, and resolve it."""
        with self._children_lock:
            if self._closing:
                return
            resumed = []
            for child in list(self.children.values()):
                if child.state != "paused":
                    continue
                if child.poll_exit() is None and child.resume():
                    log.info("child_resumed", child=child.spec.name, child_pid=child.pid)
                else:
                    self.start_child(child.spec)
                resumed.append(child.spec.name)
            self.disk_paused = False
            self.align_children()  # what a SIGHUP changed while paused
            self.record_children()
        alert = self.disk.alert(self.study)
        log.error(
            "alert",
            alert=alert.kind,
            severity=alert.severity,
            message=alert.message,
            key=alert.key,
            study=alert.study,
            delayed=True,
            note="logged once the disk had room again",
            **alert.details,
        )
        log.info("disk_room_again", resumed=resumed, **self.disk.snapshot())
        if self.alerts is not None:
            self.alerts.update([], kinds=(DISK_ALERT,))

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or ``duration_s``); returns the exit code."""
        # handlers first: SIGHUP's default action would kill a supervisor that is starting up
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, self._on_hup)
        configure_logging("supervisor", self.root, self.config.log_level, console=self.console_logs)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except LockHeld as held:
            raise SupervisorError(
                f"another supervisor is running on this root ({held.holder}, lock {held.path}); "
                "stop it first (bin/stop_automation.sh)"
            ) from None
        try:
            holder = lock_holder(Layout(self.root).pipeline_lock)
            if holder is not None:
                raise SupervisorError(
                    f"a `cappuccino pipeline` run (pid {holder}) owns the workers on this root; "
                    "wait for it or stop it first"
                )
            return self._run_locked()
        finally:
            self.lock.release()

    def _run_locked(self) -> int:
        stop_stale_children(self.root, self.config.restart.stop_timeout_s)
        self.study = self.resolve_study()
        if not self.open_study():
            log.info("supervisor_stopped", reason="signal while waiting for the storage")
            return 0
        from daemon.alerts import AlertSink

        self.alerts = AlertSink.from_config(self.config.alerts, self.root, Layout(self.root).alerts_state)
        storage = redact_url(self.storage_url)
        log.info("supervisor_started", study=self.study, root=str(self.root), storage=storage)
        self.align_children()
        self.schedule_jobs()
        self.jobs.scheduler.start()
        self.notifier.ready(f"supervising study {self.study}")
        ping = self.notifier.watchdog_interval_s() or 5.0
        deadline = None if self.duration_s is None else time.monotonic() + self.duration_s
        try:
            while not self._stop and (deadline is None or time.monotonic() < deadline):
                if self._hup:
                    self._hup = False
                    self.reload()
                self.check_children(deep=False)
                now = time.monotonic()
                if now - self._last_disk >= 1.0:
                    self._last_disk = now
                    self.guard_disk()
                if now - self._last_ping >= min(ping, 1.0):
                    self.notifier.watchdog()
                    self._last_ping = now
                if now - self._last_status >= self.config.status_interval_s:
                    self._last_status = now
                    try:
                        self.write_status()
                    except Exception as exc:  # status must never take the supervisor down
                        log.warning("status_write_failed", error=str(exc))
                if self.on_tick is not None:
                    self.on_tick(self)
                time.sleep(0.2)
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        """Stop jobs and children (graceful, then process-group kill), record the exit."""
        log.info("supervisor_stopping")
        self.notifier.stopping()
        self.jobs.shutdown(self.config.restart.stop_timeout_s)
        with self._children_lock:  # waits for a watchdog run in progress; none restarts after this
            self._closing = True
            for c in self.children.values():
                if c.state == "paused" and c.pid is not None and c.poll_exit() is None:
                    c.resume()  # SIGCONT first: a stopped process cannot act on SIGTERM
            running = [c for c in self.children.values() if c.state == "running"]
            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:  # stop all at once
                list(pool.map(lambda c: c.stop(self.config.restart.stop_timeout_s), running))
        for c in running:
            log.info("child_stopped", child=c.spec.name, child_pid=c.pid)
        Layout(self.root).children.unlink(missing_ok=True)
        if self.alerts is not None:
            self.alerts.close(5.0)
        with contextlib.suppress(Exception):
            self.write_status()
        log.info("supervisor_stopped")


def main(argv: list[str] | None = None) -> int:
    """``python -m daemon.supervisor [--config FILE] [--root DIR] [--duration S] [--role R]``: the lean
    supervisor process. ``cappuccino supervise`` validates the config, runs the preflight
    checks and then ``exec``s this (same pid), so the long-running process never holds the
    modules the command line and the preflight import (torch alone is ~200 MB of RSS)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m daemon.supervisor")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--role", choices=ROLES, default="all")
    args = parser.parse_args(argv)
    try:
        overrides = {"root": args.root} if args.root else {}
        sup = Supervisor(args.config, overrides, duration_s=args.duration, role=args.role)
        return sup.run()
    except (SupervisorError, ValueError) as exc:  # ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

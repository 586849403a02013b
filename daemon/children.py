"""Managed child processes: each in its own process group, identified by pid + create time
(psutil).

A child is *unhealthy* when it has exited, is a zombie, its heartbeat file is older than
its timeout, or its resident memory (the whole process tree) exceeds its limit. Who runs
and how an unhealthy child is restarted is :mod:`daemon.fleet`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from trainers.runtime.heartbeat import heartbeat_age, read_heartbeat


@dataclass(frozen=True)
class ChildSpec:
    """How to run one child.

    Attributes:
        name: unique component name (``worker-0``, ``paper_trader``).
        argv: command line (``sys.executable -m ...``).
        heartbeat: heartbeat file, or None for no hang detection.
        heartbeat_timeout_s: a heartbeat older than this means hung.
        memory_limit_mb: RSS limit of the process tree.
        restart_on_success: restart also after exit code 0 (a worker that finished its
            per-process trial quota); False for children whose clean exit means "done".
    """

    name: str
    argv: tuple[str, ...]
    heartbeat: Path | None = None
    heartbeat_timeout_s: float = 600.0
    memory_limit_mb: int = 4096
    restart_on_success: bool = True
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class Child:
    """A running (or restarting, or failed) child process."""

    spec: ChildSpec
    log_dir: Path
    pid: int | None = None
    create_time: float | None = None
    started_at: float | None = None
    state: str = "new"  # running | paused | backoff | failed | stopped | done
    restarts: deque[float] = field(default_factory=deque)  # restart times (monotonic)
    restart_at: float | None = None
    last_exit: int | None = None
    last_reason: str | None = None
    total_restarts: int = 0
    paused_at: float | None = None  # when it was paused (epoch), while paused
    resumed_at: float | None = None  # when it was last continued after a pause (epoch)
    _popen: subprocess.Popen[bytes] | None = None
    _ps: psutil.Process | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the child in a new session (its own process group)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{self.spec.name}.stdout", "ab")  # noqa: SIM115
        env = {**os.environ, **dict(self.spec.env)}
        try:
            self._popen = subprocess.Popen(
                list(self.spec.argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        finally:
            out.close()
        self.pid = self._popen.pid
        try:
            self._ps = psutil.Process(self.pid)  # kept: cpu_percent() measures between calls
            self.create_time = self._ps.create_time()
        except psutil.NoSuchProcess:
            self._ps, self.create_time = None, None
        self.started_at = time.time()
        self.state = "running"
        self.restart_at = None
        self.paused_at = self.resumed_at = None

    def process(self) -> psutil.Process | None:
        """The live process if it is still ours (pid + create time match)."""
        if self.pid is None:
            return None
        try:
            proc = self._ps if self._ps is not None and self._ps.pid == self.pid else psutil.Process(self.pid)
            if self.create_time is not None and abs(proc.create_time() - self.create_time) > 0.01:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def poll_exit(self) -> int | None:
        """Reap the child if it exited; returns its exit code (None while running)."""
        if self._popen is None:
            return None
        return self._popen.poll()

    def stop(self, timeout_s: float) -> None:
        """SIGTERM the child's process group, wait up to ``timeout_s``, then SIGKILL the group."""
        if self.pid is not None:
            stop_process_group(self.pid, self.create_time, timeout_s, self._popen)
        self.state = "stopped"

    def pause(self) -> bool:
        """Stop the child's process group with SIGSTOP (state ``paused``: it keeps its memory
        and writes nothing until :meth:`resume`). Returns False (nothing done) when the
        process is no longer ours."""
        proc = self.process()
        if proc is None:
            return False
        _signal_group(self._pgid(proc.pid), signal.SIGSTOP)
        self.state, self.paused_at = "paused", time.time()
        return True

    def resume(self) -> bool:
        """Continue a paused child's process group with SIGCONT (state ``running``; its
        heartbeat gets a fresh timeout from now). Returns False when the process is gone."""
        proc = self.process()
        if proc is None:
            return False
        _signal_group(self._pgid(proc.pid), signal.SIGCONT)
        self.state, self.paused_at, self.resumed_at = "running", None, time.time()
        return True

    @staticmethod
    def _pgid(pid: int) -> int:
        try:
            return os.getpgid(pid)
        except ProcessLookupError:
            return pid

    # ----------------------------------------------------------------- health
    def unhealthy_reason(self, now: float) -> str | None:
        """Why this running child must be restarted, or None when healthy."""
        code = self.poll_exit()
        if code is not None:
            self.last_exit = code
            return f"exited with code {code}"
        proc = self.process()
        if proc is None:
            return "process disappeared"
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                code = self.poll_exit()  # it died between the poll above and now: reap it
                if code is not None:
                    self.last_exit = code
                    return f"exited with code {code}"
                return "zombie"
            rss = tree_rss(proc)
        except psutil.NoSuchProcess:
            return "process disappeared"
        if rss > self.spec.memory_limit_mb * 1024 * 1024:
            return f"memory {rss / 2**20:.0f} MB over the limit {self.spec.memory_limit_mb} MB"
        if self.spec.heartbeat is not None and self.started_at is not None:
            beat = read_heartbeat(self.spec.heartbeat)
            age = heartbeat_age(beat, now) if beat and beat.get("pid") == self.pid else None
            since = now - self.started_at if age is None else age
            if self.resumed_at is not None:  # a pause stopped its heartbeat too
                since = min(since, now - self.resumed_at)
            if since > self.spec.heartbeat_timeout_s:
                return f"no heartbeat for {since:.0f} s"
        return None

    def recent_restarts(self, now_mono: float) -> int:
        while self.restarts and now_mono - self.restarts[0] > 3600:
            self.restarts.popleft()
        return len(self.restarts)

    def snapshot(self) -> dict[str, Any]:
        """State for ``status.json``: pid, state, uptime, CPU, RSS, restarts."""
        info: dict[str, Any] = {
            "name": self.spec.name,
            "pid": self.pid,
            "create_time": self.create_time,
            "state": self.state,
            "restarts": self.total_restarts,
            "restarts_last_hour": len(self.restarts),
            "last_exit": self.last_exit,
            "last_reason": self.last_reason,
            "paused_since": self.paused_at,
        }
        proc = self.process() if self.state == "running" else None
        if proc is not None:
            try:
                with proc.oneshot():
                    info["uptime_s"] = round(time.time() - proc.create_time(), 1)
                    info["cpu_percent"] = proc.cpu_percent(interval=None)
                    info["rss_mb"] = round(tree_rss(proc) / 2**20, 1)
            except psutil.NoSuchProcess:
                pass
        return info


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory in bytes of a process and all its descendants."""
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


def stop_process_group(
    pid: int,
    create_time: float | None,
    timeout_s: float,
    popen: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Gracefully stop the process group led by ``pid`` (only if pid + create time still
    identify our child): SIGTERM, wait up to ``timeout_s``, then SIGKILL the group.
    Returns True when something was signalled."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return False  # the pid was reused by an unrelated process
    except psutil.NoSuchProcess:
        if popen is not None:
            popen.poll()
        return False
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    if pgid != pid:
        # not a group leader we started: signal the process alone
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
        return True
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()
        if not _group_alive(pgid):
            return True
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    if popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(5)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            continue
    return False

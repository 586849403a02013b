"""Helpers of the supervisor tests: write a test config, start real ``cappuccino supervise``
processes in their own sessions, poll ``run/status.json`` and the study storage, and always
clean up what was started: the supervisor by its pid, its children by process group of the
pids we saw (pid + create time, never by name)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from optuna.trial import FrozenTrial

from trainers.storage import default_storage_url, make_storage

REPO = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.2
WAIT_SECONDS = 240.0  # bound of every wait (a hang fails the test instead of blocking it)
T = TypeVar("T")
SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# small, fast settings: tiny training budget, 1 s watchdog, 0.5 s first backoff
BASE_CONFIG: dict[str, dict[str, Any]] = {
    "": {"status_interval_s": 0.5, "log_level": "info"},
    "study": {"budget_steps": 256, "n_envs": 2, "n_trials": 200},
    "workers": {
        "count": 1,
        "max_trials_per_process": 200,
        "optuna_heartbeat_interval_s": 1,
        "optuna_grace_period_s": 3,
    },
    "paper_trader": {"enabled": False},
    "jobs": {"watchdog_interval_s": 1, "monitor_interval_s": 5, "sync_interval_s": 600},
    "restart": {"backoff_initial_s": 0.5, "stop_timeout_s": 20},
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(path: Path, root: Path, **sections: dict[str, Any]) -> Path:
    """Write a TOML config: :data:`BASE_CONFIG` updated with ``sections`` (``top`` = the
    top-level keys), with ``root`` set."""
    merged = {name: dict(values) for name, values in BASE_CONFIG.items()}
    for name, values in sections.items():
        merged.setdefault("" if name == "top" else name, {}).update(values)
    lines = [f"root = {_toml_value(root)}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in merged.pop("").items()]
    for name, values in merged.items():
        lines.append(f"\n[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without CAPPUCCINO_* / systemd variables, one torch thread."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().startswith("CAPPUCCINO_") and k not in SYSTEMD_VARIABLES
    }
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def proc_gone(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` no longer runs the process we knew (exited, zombie, or reused)."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except psutil.NoSuchProcess:
        return []


def log_events(root: Path, component: str = "supervisor", event: str | None = None) -> list[dict[str, Any]]:
    """JSON events of ``<root>/logs/<component>.log`` (optionally only ``event``)."""
    path = root / "logs" / f"{component}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and (event is None or rec.get("event") == event):
                out.append(rec)
    return out


def trials(root: Path, study: str) -> list[FrozenTrial]:
    """All trials of ``study`` in the root's SQLite storage (empty before it exists)."""
    if not (root / "optuna.db").is_file():
        return []
    storage = make_storage(default_storage_url(root), heartbeat_interval=None)
    try:
        sid = storage.get_study_id_from_name(study)
        return storage.get_all_trials(sid, deepcopy=False)
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


@dataclass
class SupervisorProc:
    """A ``cappuccino supervise`` process started by a test."""

    proc: subprocess.Popen[bytes]
    root: Path
    out_path: Path
    seen: dict[int, float] = field(default_factory=dict)  # every descendant pid -> create time

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def describe(self) -> str:
        log = self.root / "logs" / "supervisor.log"
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.is_file() else []
        return (
            f"supervisor pid {self.pid} rc={self.proc.poll()}\noutput:\n{self.output()[-3000:]}\n"
            "supervisor.log (tail):\n" + "\n".join(tail)
        )

    def status(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return None
        sup = data.get("supervisor") or {}
        return data if sup.get("pid") == self.pid else None  # not a previous supervisor's file

    def child(self, name: str) -> dict[str, Any] | None:
        """The child's entry in the current status (None before the first status)."""
        status = self.status()
        for c in ((status or {}).get("supervisor") or {}).get("children", []):
            if c.get("name") == name:
                return c
        return None

    def descendants(self) -> list[psutil.Process]:
        """Live descendants (remembered in :attr:`seen` for the cleanup)."""
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.seen.setdefault(p.pid, p.create_time())
        return procs

    def remember_children_file(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for rec in json.loads((self.root / "run" / "children.json").read_text()):
                self.seen.setdefault(int(rec["pid"]), float(rec["create_time"]))

    def wait_for(self, what: str, check: Callable[[], T | None], timeout: float = WAIT_SECONDS) -> T:
        """Poll ``check`` until it returns a truthy value; fail (with the logs) when the
        supervisor exits first or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.descendants()
            value = check()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited while waiting for {what}\n{self.describe()}")
            time.sleep(POLL_SECONDS)
        raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")

    def running_child(self, name: str, not_pid: int | None = None) -> dict[str, Any] | None:
        """The child's status entry once it is running (with a pid other than ``not_pid``)."""
        c = self.child(name)
        if c and c.get("state") == "running" and c.get("pid") and c["pid"] != not_pid:
            return c
        return None

    def terminate(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait for the exit code."""
        self.descendants()
        self.remember_children_file()
        os.kill(self.pid, signal.SIGTERM)
        return self.proc.wait(timeout)


class Supervisors:
    """Starts supervisors for one test and cleans up after it (see :func:`supervisors`)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[SupervisorProc] = []
        self.extra_pids: dict[int, float] = {}

    def start(
        self,
        config: Path,
        root: Path,
        *args: str,
        env: dict[str, str] | None = None,
        preflight: bool = False,
    ) -> SupervisorProc:
        out = self.tmp / f"supervisor{len(self.started)}.out"
        argv = [sys.executable, "-m", "daemon.cli", "supervise", "--config", str(config), *args]
        if not preflight:
            argv.append("--skip-preflight")
        with open(out, "wb") as fh:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env or clean_env(),
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        sup = SupervisorProc(proc, root, out)
        self.started.append(sup)
        return sup

    def track(self, pid: int) -> None:
        """Also clean up this process (started by the test itself)."""
        with contextlib.suppress(psutil.NoSuchProcess):
            self.extra_pids[pid] = psutil.Process(pid).create_time()

    def cleanup(self) -> None:
        for sup in self.started:
            sup.descendants()
            sup.remember_children_file()
            if sup.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup.pid, signal.SIGTERM)
                try:
                    sup.proc.wait(60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(sup.pid, signal.SIGKILL)
                    sup.proc.wait(10)
        pids: dict[int, float] = dict(self.extra_pids)
        for sup in self.started:
            pids.update(sup.seen)
        for pid, ctime in pids.items():
            if not proc_gone(pid, ctime):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    pgid = os.getpgid(pid)
                    if pgid != os.getpgrp():  # never the test's own group
                        os.killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def supervisors(tmp: Path) -> Iterator[Supervisors]:
    """Context manager version of the fixture (cleanup always runs)."""
    sups = Supervisors(tmp)
    try:
        yield sups
    finally:
        sups.cleanup()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """``python -m daemon.cli ARGS`` to completion (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        cwd=REPO,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

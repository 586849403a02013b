"""Helpers of the process-level worker tests: start real ``python -m trainers.worker``
processes in their own sessions, poll the study storage, and always kill what was started
(by process group of the pid we own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from trainers.storage import make_storage

REPO = Path(__file__).resolve().parents[2]
TINY_ARGS = ("--budget-steps", "256", "--n-envs", "2", "--seed", "0")
POLL_SECONDS = 0.1


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group of a still-running child started with
    ``start_new_session=True`` (its pgid is its pid), then reap it."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@dataclass
class Worker:
    """A started worker process; its stdout/stderr go to files (no pipe can fill up)."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        """stdout and stderr together (log events may go to either)."""
        return self.stdout() + self.stderr()

    def describe(self) -> str:
        return (
            f"worker pid {self.pid} rc={self.proc.poll()}\nstdout:\n{self.stdout()}\nstderr:\n{self.stderr()}"
        )

    def wait(self) -> int:
        return self.proc.wait()


class Workers:
    """Starts workers and kills every process group it started on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Worker] = []

    def start(self, *args: str, tag: str | None = None) -> Worker:
        tag = tag or f"w{len(self.started)}"
        self.logs.mkdir(parents=True, exist_ok=True)
        out, err = self.logs / f"{tag}.out", self.logs / f"{tag}.err"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("CAPPUCCINO_ROOT", None)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainers.worker", *args],
                cwd=REPO,
                env=env,
                stdout=fo,
                stderr=fe,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        worker = Worker(proc, out, err)
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for worker in self.started:
            kill_group(worker.proc)


@contextmanager
def workers(logs: Path) -> Iterator[Workers]:
    """Context manager yielding a :class:`Workers`; kills all their process groups on exit."""
    ws = Workers(logs)
    try:
        yield ws
    finally:
        ws.kill_all()


def reader(url: str) -> RDBStorage:
    """A storage for the test to read with (no heartbeats of its own)."""
    return make_storage(url, heartbeat_interval=None)


def trials(storage: RDBStorage, study: str) -> list[FrozenTrial]:
    """All trials of a study, or [] while the study does not exist yet."""
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def wait_until(what: str, condition: Callable[[], object], watched: list[Worker]) -> object:
    """Poll ``condition`` until it returns something truthy; fails (with the workers' logs)
    when a watched worker exits first. Hangs are caught by pytest's timeout."""
    while True:
        result = condition()
        if result:
            return result
        for worker in watched:
            if worker.proc.poll() is not None:
                raise AssertionError(f"worker exited before {what}:\n{worker.describe()}")
        time.sleep(POLL_SECONDS)


def states(ts: list[FrozenTrial]) -> list[TrialState]:
    return [t.state for t in ts]


# Each process imports first, then waits for the go file, so that all of them open the
# fresh storage at the same moment (the first open creates Optuna's tables).
_OPEN_STORAGE = """
import sys, time
from pathlib import Path
import optuna
from trainers.storage import make_storage
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
storage = make_storage(sys.argv[1], heartbeat_interval=1, grace_period=3)
optuna.create_study(storage=storage, study_name="opened", load_if_exists=True)
"""


def open_fresh_storage_at_once(url: str, n: int, tmp: Path) -> list[tuple[int, str]]:
    """Open a fresh storage from ``n`` processes at once; returns ``(exit code, stderr)`` of
    each."""
    go = tmp / "go"
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for i in range(n):
            err = tmp / f"open{i}.err"
            with open(err, "wb") as fe:
                procs.append(
                    (
                        subprocess.Popen(
                            [sys.executable, "-c", _OPEN_STORAGE, url, str(go)],
                            cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL,
                            stderr=fe,
                            start_new_session=True,
                        ),
                        err,
                    )
                )
        go.touch()
        return [(p.wait(), err.read_text(errors="replace")) for p, err in procs]
    finally:
        for p, _ in procs:
            kill_group(p)

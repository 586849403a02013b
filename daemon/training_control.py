"""Training requests, shared by the command line and the control API (:mod:`daemon.api`):

* start training (``cappuccino start-training``, ``POST /api/training/start``): create the
  study with its execution model, record the request in ``<root>/training.toml``, make the
  study current (``.current_study``, an ensemble sync at once, SIGHUP to the supervisor);
* stop training (``cappuccino stop-training``, ``POST /api/training/stop``): set
  ``workers.count = 0`` in ``training.toml`` and SIGHUP the supervisor, which stops its
  workers (each re-queues its current trial); the paper trader, the scheduled jobs and the
  API keep running;
* switch the current study (``cappuccino set-study``, ``POST /api/study/current``);
* start a sequential run (``start-training --sequential``): stage 1 trains ``<study>_quick``
  in quick mode, the supervisor's ``sequential`` job (:mod:`daemon.sequential`) runs the
  gate and stage 2 (``run/sequential.json``, :mod:`daemon.sequential_state`). A later plain
  start, or a switch to another study, supersedes the run.

Each request holds ``run/training.lock`` (:class:`trainers.runtime.pidlock.PidLock`) while
it writes those files and signals the supervisor, so two concurrent requests never
interleave: the second one gets :class:`TrainingBusy` at once. A request whose result
would not load as a configuration restores the previous ``training.toml``: the running
system keeps its last good state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from daemon import sequential_state
from daemon.config import Config, load_config
from trainers.accounting import Costs, costs_from_options
from trainers.atomic_io import atomic_write_bytes
from trainers.runtime.current_study import write_current_study
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import LockHeld, holding, supervisor_pid
from trainers.storage import default_storage_url, make_storage, storage_env

Mode = Literal["quick", "full"]


class TrainingBusy(RuntimeError):
    """Another training request (start, stop or study switch) holds ``run/training.lock``.

    Attributes:
        pid: the holder's pid, or None when it has not written it yet.
    """

    def __init__(self, held: LockHeld) -> None:
        self.pid = held.pid
        super().__init__(
            f"another training request ({held.holder}) is in progress (lock {held.path}); "
            "try again when it is done"
        )


@contextmanager
def request_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/run/training.lock`` for the ``with`` block.

    Raises:
        TrainingBusy: another request holds it (this call does not wait).
    """
    with holding(Layout(root).training_lock, busy=TrainingBusy):
        yield


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class StudySwitch:
    """What switching the current study did.

    Attributes:
        study: the new current study.
        path: the ``.current_study`` file written.
        sync_code: exit code of the immediate ``cappuccino sync`` (0 = synced).
        sync_output: what that sync printed (stdout and stderr).
        supervisor_pid: the supervisor that got SIGHUP, or None when none runs.
    """

    study: str
    path: Path
    sync_code: int
    sync_output: str
    supervisor_pid: int | None

    def lines(self) -> list[str]:
        """The human report, one line each (the sync's output included)."""
        out = [f"current study: {self.study} ({self.path})"]
        out += [ln for ln in self.sync_output.splitlines() if ln.strip()]
        if self.supervisor_pid is not None:
            pid = self.supervisor_pid
            out.append(f"supervisor pid {pid} signalled (SIGHUP): realigning workers, jobs and trader")
        else:
            out.append("supervisor is not running; it will follow this study when started")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "current_study_file": str(self.path),
            "ensemble_sync": {
                "ok": self.sync_code == 0,
                "exit_code": self.sync_code,
                "output": self.sync_output,
            },
            "supervisor_pid": self.supervisor_pid,
            "supervisor_signalled": self.supervisor_pid is not None,
        }


@dataclass(frozen=True)
class TrainingRequest:
    """A start request: the study, its trial target and worker count; the walk-forward mode
    and the env steps per fold (None: the configuration's ``study.mode`` /
    ``study.budget_steps``); the study's cost fields that differ from the configuration's
    ``[costs]`` (only when the study is new: a study keeps its execution model).

    ``sequential``: a two-stage run (``study`` is the base name of ``<study>_quick`` and
    ``<study>_full``; ``n_trials`` the full study's target; ``mode`` must be None);
    ``quick_trials`` the quick study's target (None: ``sequential.quick_trials``);
    ``confirm``: wait for ``cappuccino continue`` between the stages."""

    study: str
    n_trials: int
    workers: int
    mode: Mode | None = None
    budget_steps: int | None = None
    costs: Mapping[str, float] = field(default_factory=dict)
    sequential: bool = False
    quick_trials: int | None = None
    confirm: bool = False


@dataclass(frozen=True)
class TrainingStarted:
    """What a start request did: the request, the study's costs, the ``training.toml``
    written and the study switch."""

    request: TrainingRequest
    costs: Costs
    overlay: Path
    switch: StudySwitch
    sequential: dict[str, Any] | None = None

    def lines(self) -> list[str]:
        """The human report of a sequential start (empty for a plain one)."""
        seq = self.sequential
        if seq is None:
            return []
        wait = "waits for `cappuccino continue`" if seq["confirm"] else "follows automatically"
        return [
            f"sequential run {seq['name']!r}: stage 1 trains {seq['quick_study']!r} (quick mode, "
            f"{seq['quick_trials']} trials), then the gate; stage 2 ({wait}) trains {seq['full_study']!r} "
            f"(full mode, {seq['n_trials']} trials)"
        ]

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "study": self.switch.study,
            "n_trials": r.n_trials,
            "workers": r.workers,
            "mode": r.mode if self.sequential is None else "quick",
            "budget_steps": r.budget_steps,
            "costs": self.costs.as_dict(),
            "training_request_file": str(self.overlay),
            **{k: v for k, v in self.switch.as_dict().items() if k != "study"},
            "sequential": self.sequential,
        }


@dataclass(frozen=True)
class TrainingStopped:
    """What a stop request did: the worker count before, the ``training.toml`` written and
    the supervisor signalled (None: none runs)."""

    workers_before: int
    overlay: Path
    supervisor_pid: int | None

    def lines(self) -> list[str]:
        out = [f"training stopped: workers.count = 0 in {self.overlay} (was {self.workers_before})"]
        if self.supervisor_pid is not None:
            out.append(f"supervisor pid {self.supervisor_pid} signalled (SIGHUP): stopping its workers")
        else:
            out.append("supervisor is not running; it will start no workers until training is started again")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "workers_before": self.workers_before,
            "workers": 0,
            "training_request_file": str(self.overlay),
            "supervisor_pid": self.supervisor_pid,
            "supervisor_signalled": self.supervisor_pid is not None,
        }


# --------------------------------------------------------------------------- training.toml
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def training_request_toml(data: Mapping[str, Any], writer: str) -> str:
    """``training.toml`` text of ``data`` (top-level keys, then one ``[section]`` per table),
    under a comment naming the ``writer`` and the time; ``tomllib`` reads ``data`` back."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# the training request, written by {writer} at {stamp}"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for name, values in data.items():
        if isinstance(values, Mapping) and values:
            lines += ["", f"[{name}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def replace_training_request(config_path: Path | None, root: Path, text: str) -> Config:
    """Write ``training.toml`` and load the configuration with it; when that fails, put the
    previous file back (or remove the new one) and re-raise.

    Raises:
        ConfigError: the configuration with the new request is invalid (naming the key).
        OSError: the file cannot be written.
    """
    path = Layout(root).training_request
    try:
        previous: bytes | None = path.read_bytes()
    except FileNotFoundError:
        previous = None
    atomic_write_bytes(path, text.encode())
    try:
        return load_config(config_path, {"root": root})
    except ValueError:
        if previous is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_bytes(path, previous)
        raise


# --------------------------------------------------------------------------- requests
def _sync_now(root: Path, storage: str, study: str) -> tuple[int, str]:
    """``cappuccino sync`` of ``study`` as a child process (the storage URL in its
    environment, never its argv); returns its exit code and output."""
    argv = [sys.executable, "-m", "daemon.cli", "sync", "--study", study, "--root", str(root)]
    done = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **storage_env(storage)},
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def switch_study(cfg: Config, study: str) -> StudySwitch:
    """Make ``study`` current: write ``.current_study``, sync the ensemble from it at once,
    SIGHUP the supervisor. The caller holds :func:`request_lock`.

    Raises:
        ValueError: an invalid study name (empty, a line break, over 200 characters), or a
            shared (PostgreSQL) storage that cannot be written.
        OSError: the file cannot be written.
    """
    cfg.root.mkdir(parents=True, exist_ok=True)
    storage = cfg.study.storage or default_storage_url(cfg.root)
    write_current_study(cfg.root, study, storage)  # and in a shared storage: every host follows
    code, output = _sync_now(cfg.root, storage, study)
    pid = supervisor_pid(cfg.root)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return StudySwitch(study, Layout(cfg.root).current_study, code, output, pid)


def set_study(config_path: Path | None, root: Path | None, study: str) -> StudySwitch:
    """``cappuccino set-study STUDY``: :func:`switch_study` under :func:`request_lock`.

    Raises:
        ConfigError: a bad configuration.
        TrainingBusy: another training request is in progress.
        ValueError, OSError: see :func:`switch_study`.
    """
    cfg = load_config(config_path, {"root": root} if root else None)
    cfg.root.mkdir(parents=True, exist_ok=True)
    with request_lock(cfg.root):
        sequential_state.supersede(cfg.root, f"set-study {study}", keep=study)
        return switch_study(cfg, study)


def start_training(config_path: Path | None, root: Path | None, request: TrainingRequest) -> TrainingStarted:
    """Create the study if needed (with the configuration's ``[costs]`` and the request's
    cost fields), write ``training.toml`` (``[study] n_trials`` and the mode and budget when
    given, ``[workers] count``, ``[costs]`` when cost fields are given), then make the study
    current (:func:`switch_study`). Starting the supervisor when none runs is the caller's
    choice (the command line does).

    Raises:
        ConfigError: a bad configuration, or one the request would make invalid (then
            ``training.toml`` is left as it was).
        TrainingBusy: another training request is in progress.
        ValueError: a cost out of bounds, a study created with other costs, ``mode`` given
            with ``sequential``, or a base name too long for ``<study>_quick``.
        OSError: a file cannot be written.

    A sequential request (``request.sequential``) creates ``<study>_quick``, records it with
    ``[study] n_trials = quick_trials, mode = "quick"`` and writes ``run/sequential.json``
    (stage ``quick``) before the switch; a plain request supersedes an active sequential run.
    """
    from trainers.worker import create_study  # optuna's samplers: only when training starts

    cfg = load_config(config_path, {"root": root} if root else None)
    costs = costs_from_options(cfg.costs.as_costs(), "start-training options", **request.costs)
    name, n_trials, mode = request.study, request.n_trials, request.mode
    if request.sequential:
        if request.mode is not None:
            raise ValueError(
                "--mode and --sequential exclude each other: a sequential run trains quick, then full"
            )
        name = sequential_state.study_names(request.study)[0]
        n_trials, mode = request.quick_trials or cfg.sequential.quick_trials, "quick"
    cfg.root.mkdir(parents=True, exist_ok=True)
    with request_lock(cfg.root):
        storage = cfg.study.storage or default_storage_url(cfg.root)
        storage_obj = make_storage(storage, heartbeat_interval=None)
        try:
            create_study(storage_obj, name, costs=costs)
        finally:
            storage_obj.engine.dispose()
        study: dict[str, Any] = {"n_trials": n_trials}
        if mode is not None:
            study["mode"] = mode
        if request.budget_steps is not None:
            study["budget_steps"] = request.budget_steps
        sections: dict[str, dict[str, Any]] = {"study": study, "workers": {"count": request.workers}}
        if request.costs:
            sections["costs"] = costs.as_dict()
        text = training_request_toml(sections, "cappuccino start-training")
        cfg = replace_training_request(config_path, cfg.root, text)  # validated before anyone is signalled
        run = None
        if request.sequential:
            run = _new_sequential_run(request, n_trials)
            sequential_state.write_run(cfg.root, run)
        else:
            sequential_state.supersede(cfg.root, f"start-training --study {name}")
        switch = switch_study(cfg, name)
    seq = None if run is None else run.as_dict()
    return TrainingStarted(request, costs, Layout(cfg.root).training_request, switch, seq)


def _new_sequential_run(request: TrainingRequest, quick_trials: int) -> sequential_state.SequentialRun:
    quick, full = sequential_state.study_names(request.study)
    at = sequential_state.now_iso()
    return sequential_state.SequentialRun(
        name=request.study,
        quick_study=quick,
        full_study=full,
        n_trials=request.n_trials,
        quick_trials=quick_trials,
        budget_steps=request.budget_steps,
        confirm=request.confirm,
        stage="quick",
        training_study=quick,
        started_at=at,
        updated_at=at,
        stage_since=at,
        history=[{"at": at, "stage": "quick", "note": "start-training --sequential"}],
    )


def stop_training(config_path: Path | None, root: Path | None) -> TrainingStopped:
    """Set ``workers.count = 0`` in ``training.toml`` (its other keys kept) and SIGHUP the
    supervisor: it stops its training workers (each fails and re-queues its current trial).

    Raises:
        ConfigError: a bad configuration or an unreadable ``training.toml``.
        TrainingBusy: another training request is in progress.
        OSError: the file cannot be written.
    """
    cfg = load_config(config_path, {"root": root} if root else None)
    cfg.root.mkdir(parents=True, exist_ok=True)
    with request_lock(cfg.root):
        path = Layout(cfg.root).training_request
        try:
            sections: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}
        except tomllib.TOMLDecodeError as exc:  # load_config above already refused it
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
        sections.setdefault("workers", {})["count"] = 0
        text = training_request_toml(sections, "cappuccino stop-training")
        replace_training_request(config_path, cfg.root, text)
        pid = supervisor_pid(cfg.root)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
    return TrainingStopped(cfg.workers.count, path, pid)

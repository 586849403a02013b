"""Pipeline modes (``cappuccino pipeline``): clean, train, archive and deploy in one command.

Modes and their steps, run in this order; the first step that fails or is interrupted
stops the pipeline and the steps after it are ``skipped``:

* ``full``: ``clean`` -> ``training`` -> ``archive`` -> ``deploy``;
* ``training``, ``archive``, ``deploy``: that one step.

Steps:

* ``clean``: :func:`daemon.cleanup.run_cleanup` with the config's ``[cleanup]`` settings
  (``keep_top`` at least ``ensemble.top_n``, like the supervisor's job); skipped when the
  SQLite storage does not exist yet (a fresh root has nothing to clean).
* ``training`` (:mod:`daemon.pipeline.training`): creates the study if needed, then runs
  ``W`` training workers (the supervisor's command lines, :func:`daemon.fleet.worker_specs`,
  so the config's ``[study]`` and ``[workers]`` settings apply) each in its own process group,
  until the study has ``N`` finished (COMPLETE + PRUNED) trials in total and every worker
  has exited. ``N`` counts the study's trials, not new ones: a study that already has ``N``
  is left as it is. A worker that exits 0 after its per-process trial quota is started
  afresh; one that crashes (or exits without any trial finishing in the study meanwhile)
  is restarted with the config's backoff, at most ``restart.budget_per_hour`` times an hour
  (:func:`daemon.fleet.schedule_restart`, the supervisor's rule); past that it is given up,
  and when every worker is given up the step fails.
* ``archive``: :func:`ensemble.archive.run_archive` with ``[archive]`` ``top_percent`` and
  ``min_grade``.
* ``deploy``: :func:`ensemble.deploy.run_deploy` with the ``[deploy]`` thresholds, slot,
  ``study.holdout_cut`` and ``study.data``; the decision goes to ``deploy_log.jsonl``.

Step outcomes: ``ok``; ``failed`` (an error; the detail names it); ``refused`` (deploy
only: the gates refused the candidate, or there was none; the deployer working as
intended); ``interrupted`` (SIGTERM/SIGINT); ``skipped``. A pipeline that may not run at all
(a supervisor owns the root's workers, or another pipeline runs) is refused before any
step: one line on stderr, exit code 3, ``run/pipeline.json`` untouched.

Exit codes (:func:`exit_code`): ``0`` every step ran (a deploy refused by its gates
included); ``1`` a step failed; ``2`` bad arguments or configuration (nothing ran);
``3`` refused: a supervisor runs on this root (``--mode training|full``) or another
pipeline does (nothing ran); ``130`` interrupted by SIGTERM or SIGINT (workers were
stopped gracefully, their trials end FAIL and are re-queued once).

The final summary is also written atomically to ``<root>/run/pipeline.json``; while the
pipeline runs that file holds ``state: running`` with the current step and the worker pids.
One pipeline per root at a time: ``run/pipeline.lock`` is held with ``flock``. Workers run
in their own sessions, so a pipeline killed with SIGKILL leaves them running (each stops by
itself at the trial target or its per-process quota); the next pipeline on the root stops
them first (:func:`stop_stale_workers`, by pid + create time from ``run/pipeline.json``,
with the supervisor's reaper :func:`daemon.fleet.stop_stale`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon import fleet
from daemon.pipeline.plan import (
    MODES,
    STEPS,
    PipelineError,
    Plan,
    StepResult,
    first_line,
    make_plan,
)
from daemon.pipeline.steps import step_archive, step_clean, step_deploy
from daemon.pipeline.training import Training
from trainers.atomic_io import atomic_write_json, read_json_object
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import PidLock, holding, lock_holder
from trainers.storage import redact_url

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "MODES",
    "STEPS",
    "PipelineError",
    "PipelineRefused",
    "PipelineResult",
    "Plan",
    "StepResult",
    "check_free",
    "make_plan",
    "run_pipeline",
]

log = structlog.get_logger("pipeline")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130

RESULT_FILE = "pipeline.json"
LOCK_FILE = "pipeline.lock"
LOG_COMPONENT = "pipeline"


class PipelineRefused(RuntimeError):
    """The root is owned by a supervisor or another pipeline (exit code 3); nothing ran."""


def result_path(root: Path) -> Path:
    """``<root>/run/pipeline.json``: the running state, then the final summary."""
    return Layout(root).pipeline_result


def log_file(root: Path) -> Path:
    """``<root>/logs/pipeline.log``."""
    return Layout(root).log(LOG_COMPONENT)


# --------------------------------------------------------------------------- ownership
def supervisor_holding(root: Path) -> int | None:
    """Pid of the supervisor holding ``<root>/run/supervisor.pid``, or None."""
    return lock_holder(Layout(root).supervisor_pid)


def pipeline_lock(root: Path) -> AbstractContextManager[PidLock]:
    """Hold ``<root>/run/pipeline.lock`` (the pipeline's pid lock).

    Raises:
        PipelineRefused: another pipeline holds it (the message names its pid).
    """
    return holding(
        Layout(root).pipeline_lock,
        lambda held: PipelineRefused(
            f"another pipeline is running on {root} ({held.holder}); see {result_path(root)}"
        ),
    )


def pipeline_holding(root: Path) -> int | None:
    """Pid of a pipeline holding ``<root>/run/pipeline.lock``, or None."""
    return lock_holder(Layout(root).pipeline_lock)


def check_free(root: Path, mode: str) -> None:
    """Refuse when this root is owned by someone else.

    Raises:
        PipelineRefused: a supervisor runs on the root and ``mode`` trains (it owns the
            workers), or another pipeline runs on the root.
    """
    if mode in ("full", "training"):
        pid = supervisor_holding(root)
        if pid is not None:
            raise PipelineRefused(
                f"refused: a supervisor (pid {pid}) runs on {root} and owns its training workers; "
                "stop it first (bin/stop_automation.sh) or use --mode archive|deploy"
            )
    pid = pipeline_holding(root)
    if pid is not None:
        raise PipelineRefused(
            f"refused: another pipeline (pid {pid}) runs on {root}; see {result_path(root)}"
        )


# --------------------------------------------------------------------------- results
def exit_code(steps: list[StepResult]) -> int:
    """The process exit code of a finished pipeline (module docstring)."""
    outcomes = [s.outcome for s in steps]
    if "interrupted" in outcomes:
        return EXIT_INTERRUPTED
    if "failed" in outcomes:
        return EXIT_FAILED
    return EXIT_OK  # a deploy refused by its gates is the deployer working as intended


@dataclass
class PipelineResult:
    """The whole run: what ``run/pipeline.json`` holds and the summary prints."""

    mode: str
    study: str
    root: Path
    storage: str
    started_at: float
    steps: list[StepResult] = field(default_factory=list)
    finished_at: float | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.steps)

    @property
    def outcome(self) -> str:
        return {
            EXIT_OK: "ok",
            EXIT_FAILED: "failed",
            EXIT_INTERRUPTED: "interrupted",
        }.get(self.exit_code, "failed")

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at or time.time()
        return {
            "state": "finished",
            "pid": os.getpid(),
            "mode": self.mode,
            "study": self.study,
            "root": str(self.root),
            "storage": redact_url(self.storage),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(end),
            "duration_s": round(end - self.started_at, 1),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "steps": [s.as_dict() for s in self.steps],
        }

    def summary_lines(self) -> list[str]:
        """The one-screen summary: a header, one line per step (notes indented), the result."""
        lines = [f"cappuccino pipeline --mode {self.mode}: study {self.study!r}, root {self.root}"]
        for s in self.steps:
            took = f" ({s.duration_s:.0f} s)" if s.outcome not in ("skipped",) else ""
            lines.append(f"  {s.name:<9} {s.outcome:<11} {s.detail}{took}")
            shown = s.notes[:6]
            lines += [f"  {'':<9} {'':<11}   {n}" for n in shown]
            if len(s.notes) > len(shown):
                lines.append(f"  {'':<9} {'':<11}   ... {len(s.notes) - len(shown)} more in {RESULT_FILE}")
        end = self.finished_at or time.time()
        lines.append(
            f"result: {self.outcome} (exit {self.exit_code}) after {end - self.started_at:.0f} s; "
            f"summary in {result_path(self.root)}"
        )
        return lines


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- run
def write_state(root: Path, data: dict[str, Any]) -> None:
    """Write ``run/pipeline.json`` atomically (never raises: the pipeline goes on)."""
    try:
        atomic_write_json(result_path(root), data)
    except OSError as exc:
        log.warning("pipeline_state_write_failed", error=str(exc))


def stop_stale_workers(root: Path, timeout_s: float) -> list[int]:
    """Stop the workers of a pipeline that died without stopping them (SIGKILL, power loss).

    Call it holding the pipeline lock (so the pipeline that recorded them is gone). Only
    workers listed in a ``state: running`` ``run/pipeline.json`` whose pid AND create time
    still match are stopped (SIGTERM to the process group, SIGKILL after ``timeout_s``);
    a reused pid is left alone. Returns the pids stopped.
    """
    doc = read_json_object(result_path(root))
    if doc is None or doc.get("state") != "running":
        return []
    workers = (doc.get("training") or {}).get("workers") or []
    stopped = fleet.stop_stale(workers if isinstance(workers, list) else [], timeout_s)
    for w in stopped:
        log.warning(
            "stale_worker_stopped", worker=w.get("name"), worker_pid=w.get("pid"), pipeline_pid=doc.get("pid")
        )
    return [w["pid"] for w in stopped]


def run_pipeline(
    plan: Plan,
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run the plan's steps in order (module docstring); hold ``run/pipeline.lock`` while
    running and write ``run/pipeline.json`` (running state, then the final summary).

    Args:
        plan: from :func:`make_plan`.
        stop: set it (a SIGTERM/SIGINT handler) to stop gracefully; the running step ends
            (training stops its workers), the rest are skipped.
        progress: receives a line now and then (stderr of the command).

    Returns:
        The result; ``result.exit_code`` is the process exit code.

    Raises:
        PipelineRefused: a supervisor owns the root (training modes) or another pipeline
            runs on it; nothing ran and ``run/pipeline.json`` is left as it was.
    """
    stop = stop or threading.Event()
    say = progress or (lambda _line: None)
    plan.root.mkdir(parents=True, exist_ok=True)
    check_free(plan.root, plan.mode)
    with pipeline_lock(plan.root):
        for pid in stop_stale_workers(plan.root, plan.config.restart.stop_timeout_s):
            say(f"stopped worker pid {pid} left running by a pipeline that died")
        result = PipelineResult(plan.mode, plan.study, plan.root, plan.storage, time.time())
        log.info("pipeline_started", mode=plan.mode, study=plan.study, steps=list(plan.steps))

        def running(step: str, extra: dict[str, Any] | None = None) -> None:
            doc = {**result.as_dict(), "state": "running", "step": step, "finished_at": None}
            doc.pop("outcome")
            doc.pop("exit_code")
            if extra:
                doc["training"] = extra
            write_state(plan.root, doc)

        stopped = False
        for name in plan.steps:
            if stopped or stop.is_set():
                why = "interrupted" if stop.is_set() else "an earlier step did not succeed"
                result.steps.append(StepResult(name, "skipped", why))
                continue
            running(name)
            say(f"{name}: running")
            t0 = time.monotonic()
            try:
                step = _run_step(name, plan, stop, running, say)
            except Exception as exc:  # a bug or an unexpected error: the step failed, say what
                log.exception("step_crashed", step=name)
                step = StepResult(name, "failed", f"unexpected error: {first_line(exc)}")
            step.duration_s = time.monotonic() - t0
            result.steps.append(step)
            log.info("step_done", step=name, outcome=step.outcome, detail=step.detail)
            say(f"{name}: {step.outcome}: {step.detail}")
            if step.outcome in ("failed", "interrupted"):
                stopped = True
        if stop.is_set() and not any(s.outcome == "interrupted" for s in result.steps):
            done = [s for s in result.steps if s.outcome != "skipped"]
            if len(done) < len(result.steps):  # steps were skipped because of the signal
                nxt = next(s for s in result.steps if s.outcome == "skipped")
                nxt.outcome, nxt.detail = "interrupted", "interrupted by a signal before it started"
        result.finished_at = time.time()
        write_state(plan.root, result.as_dict())
        log.info("pipeline_finished", outcome=result.outcome, exit_code=result.exit_code)
        return result


def _run_step(
    name: str,
    plan: Plan,
    stop: threading.Event,
    running: Callable[[str, dict[str, Any] | None], None],
    say: Callable[[str], None],
) -> StepResult:
    if name == "clean":
        return step_clean(plan)
    if name == "archive":
        return step_archive(plan)
    if name == "deploy":
        return step_deploy(plan)
    return Training(plan, stop, lambda state: running("training", state), say).run()


def progress_to_stderr(line: str) -> None:
    """Print a progress line with a UTC time stamp on stderr."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", file=sys.stderr, flush=True)

"""The ``training`` step of :mod:`daemon.pipeline`: ``W`` worker processes (the
supervisor's command lines, :func:`daemon.fleet.worker_specs`) until the study has ``N``
finished trials, restarted by the fleet's rules (:func:`daemon.fleet.schedule_restart`:
backoff within ``restart.budget_per_hour`` restarts an hour)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from daemon.children import Child
from daemon.fleet import RestartPolicy, ensure_study, finished_trials, schedule_restart, worker_specs
from daemon.pipeline.plan import Outcome, Plan, StepResult, first_line, fmt_value
from trainers.naming import grade_with_baselines
from trainers.runtime.layout import Layout
from trainers.storage import redact_url
from trainers.study_db import open_engine
from trainers.study_db.baselines import read_study_baselines

log = structlog.get_logger("pipeline")

POLL_S = 0.2
STATS_EVERY_S = 1.0


@dataclass
class _Worker:
    child: Child
    finished_at_start: int = 0
    restarts: int = 0
    state: str = "running"  # running | backoff | done | given_up
    restart_at: float = 0.0
    exits: list[int] = field(default_factory=list)


class Training:
    """The ``training`` step: ``W`` worker processes until the study has ``N`` finished trials.

    ``stop`` (set by SIGTERM/SIGINT) stops the workers gracefully (SIGTERM to each process
    group, SIGKILL after ``restart.stop_timeout_s``); their current trials end FAIL and are
    re-queued once. ``on_change`` receives the running state (worker pids, trial counts)
    whenever it changes.
    """

    def __init__(
        self,
        plan: Plan,
        stop: threading.Event,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.stop = stop
        self.on_change = on_change or (lambda _state: None)
        self.progress = progress or (lambda _line: None)
        self.workers: dict[str, _Worker] = {}
        self.stats: dict[str, Any] = {}

    def _stats(self) -> dict[str, Any]:
        from daemon.study_stats import study_stats

        try:
            self.stats = study_stats(self.plan.storage, self.plan.study)
        except Exception as exc:  # storage briefly locked/unreachable: keep the last figures
            log.warning("study_stats_failed", error=first_line(exc))
        return self.stats

    def _baselines(self) -> dict[str, float] | None:
        """The study's constant-policy baseline values, when recorded and readable."""
        try:
            recorded = read_study_baselines(open_engine(self.plan.storage), self.plan.study)
        except Exception as exc:  # a summary line must not fail the step
            log.warning("baselines_unreadable", error=first_line(exc))
            return None
        return None if recorded is None else recorded.values()

    def state(self) -> dict[str, Any]:
        """Running state for ``run/pipeline.json``."""
        return {
            "target": self.plan.trials,
            "finished": finished_trials(self.stats),
            "trials": self.stats.get("trials") or {},
            "best": self.stats.get("best"),
            "workers": [
                {
                    "name": n,
                    "pid": w.child.pid,
                    "create_time": w.child.create_time,
                    "state": w.state,
                    "restarts": w.restarts,
                }
                for n, w in self.workers.items()
            ],
        }

    def run(self) -> StepResult:
        plan, cfg = self.plan, self.plan.config
        try:
            costs = ensure_study(plan.storage, plan.study, cfg.costs.as_costs())
        except Exception as exc:
            return StepResult("training", "failed", f"storage {redact_url(plan.storage)}: {first_line(exc)}")
        policy = RestartPolicy.from_config(cfg)
        specs = worker_specs(cfg, plan.study, plan.storage, costs)  # the supervisor's command lines
        before = finished_trials(self._stats())
        figures: dict[str, Any] = {
            "target": plan.trials,
            "finished_before": before,
            "worker_count": len(specs),
        }
        if before >= plan.trials:
            return self._result("ok", f"study already has {before} >= {plan.trials} finished trials", figures)
        last_stats, last_seen = 0.0, before
        try:
            for spec in specs:
                child = Child(spec, Layout(plan.root).logs_dir)
                self.workers[spec.name] = _Worker(child, before)
                child.start()
                log.info("worker_started", worker=spec.name, worker_pid=child.pid, study=plan.study)
            self.progress(f"training: {len(specs)} worker(s) started, {before}/{plan.trials} finished trials")
            self.on_change(self.state())
            while not self.stop.is_set():
                now = time.monotonic()
                if now - last_stats >= STATS_EVERY_S:
                    last_stats = now
                    finished = finished_trials(self._stats())
                    if finished != last_seen:
                        last_seen = finished
                        best = self.stats.get("best") or {}
                        self.progress(
                            f"training: {finished}/{plan.trials} finished trials, best value "
                            f"{fmt_value(best.get('value'))} {best.get('vin') or ''}".rstrip()
                        )
                        self.on_change(self.state())
                if self._tick(policy):
                    self.on_change(self.state())
                if all(w.state in ("done", "given_up") for w in self.workers.values()):
                    break
                time.sleep(POLL_S)
        finally:
            self._stop_all(cfg.restart.stop_timeout_s)
        finished = finished_trials(self._stats())
        figures.update(self.state(), finished=finished)
        figures["restarts"] = sum(w.restarts for w in self.workers.values())
        figures["exit_codes"] = {n: w.exits for n, w in self.workers.items()}
        if self.stop.is_set() and finished < plan.trials:
            what = f"stopped at {finished}/{plan.trials} finished trials; workers stopped"
            return self._result("interrupted", what, figures)
        if finished >= plan.trials:
            what = f"{before} -> {finished} finished trials (target {plan.trials})"
            return self._result("ok", what, figures)
        notes = [
            f"{n}: exit codes {w.exits}; see {Layout(plan.root).child_output(n)}"
            for n, w in self.workers.items()
            if w.state == "given_up"
        ]
        result = self._result(
            "failed",
            f"every worker gave up after {cfg.restart.budget_per_hour} restarts in an hour; "
            f"{finished}/{plan.trials} finished trials",
            figures,
        )
        result.notes += notes
        return result

    def _result(self, outcome: Outcome, what: str, figures: dict[str, Any]) -> StepResult:
        best = self.stats.get("best") or {}
        figures.setdefault("best", self.stats.get("best"))
        figures.setdefault("trials", self.stats.get("trials") or {})
        if self.workers:
            restarts = sum(w.restarts for w in self.workers.values())
            n = len(self.workers)
            what = f"{what}; {n} worker{'s' if n != 1 else ''}, {restarts} restarts"
        notes = []
        if best:
            notes.append(
                f"best: trial {best.get('number')} value {fmt_value(best.get('value'))} "
                f"grade {grade_with_baselines(best.get('grade'), best.get('value'), self._baselines())} "
                f"{best.get('vin') or ''}".rstrip()
            )
        return StepResult("training", outcome, what, figures, notes)

    def _tick(self, policy: RestartPolicy) -> bool:
        """Reap exits, restart workers that are due; True when something changed."""
        changed = False
        now = time.monotonic()
        for name, w in self.workers.items():
            if w.state == "backoff" and now >= w.restart_at:
                w.finished_at_start = finished_trials(self._stats())
                if w.finished_at_start >= self.plan.trials:
                    w.state, changed = "done", True
                    continue
                w.child.start()
                w.state, w.restarts, changed = "running", w.restarts + 1, True
                log.info("worker_restarted", worker=name, worker_pid=w.child.pid, restarts=w.restarts)
                continue
            if w.state != "running":
                continue
            code = w.child.poll_exit()
            if code is None:
                continue
            changed = True
            w.exits.append(code)
            finished = finished_trials(self._stats())
            if code == 0 and finished >= self.plan.trials:
                w.state = "done"
                log.info("worker_done", worker=name, finished=finished)
                continue
            if code == 0 and finished > w.finished_at_start:  # its per-process trial quota
                w.state, w.restart_at = "backoff", now
                continue
            reason = f"exited with code {code}" if code else "exited without a finished trial"
            delay = schedule_restart(w.child, policy)
            if delay is None:
                w.state = "given_up"
                budget = policy.budget_per_hour
                log.error("worker_given_up", worker=name, reason=reason, restarts_last_hour=budget)
                self.progress(f"training: {name} {reason}; given up after {budget} restarts in an hour")
                continue
            w.state, w.restart_at = "backoff", now + delay
            log.warning("worker_crashed", worker=name, reason=reason, restart_in_s=delay)
            self.progress(f"training: {name} {reason}; restarting in {delay:g} s")
        return changed

    def _stop_all(self, timeout_s: float) -> None:
        running = [w for w in self.workers.values() if w.state == "running"]
        for w in self.workers.values():
            if w.state == "backoff":
                w.state = "stopped"
        if not running:
            return
        if self.stop.is_set():
            n = len(running)
            self.progress(f"training: stopping {n} workers (SIGTERM, SIGKILL after {timeout_s:g} s)")
        with ThreadPoolExecutor(max_workers=len(running)) as pool:
            list(pool.map(lambda w: w.child.stop(timeout_s), running))
        for w in running:
            code = w.child.poll_exit()
            if code is not None:
                w.exits.append(code)
            w.state = "stopped"
            log.info("worker_stopped", worker=w.child.spec.name, worker_pid=w.child.pid, exit_code=code)

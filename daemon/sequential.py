"""Sequential two-stage training: the stage machine behind ``start-training --sequential``
(state: :mod:`daemon.sequential_state`, ``run/sequential.json``).

Stage 1 trains ``<name>_quick`` in quick mode (``[study] n_trials = quick_trials``). The
supervisor's ``sequential`` job (:func:`check`, every ``sequential.check_interval_s``)
evaluates the **gate** once the quick study has ``quick_trials`` finished (COMPLETE or
PRUNED) trials, or, with ``sequential.quick_time_limit_s``, once that long has passed since
the start and it has a COMPLETE trial. The gate (``sequential.gate``):

* ``beats_baselines`` (default): the best quick value exceeds both constant baselines
  (always fully invested, always cash) on the same folds, i.e.
  ``best > max(invested, cash) + margin`` (:class:`trainers.study_db.baselines.StudyBaselines`,
  recorded in the quick study by its first worker, :mod:`trainers.fold_baselines`);
* ``min_value``: ``best > min_value``;
* ``off``: passes once there is a COMPLETE trial.

Its evidence (best trial and value, baselines, threshold, trial counts, reason) is kept in
``run/sequential.json`` and logged (``sequential_gate``) whenever it changes. A refused gate
leaves the run in stage 1 (``gate_refused``) and is evaluated again at every check. When it
passes, stage 2 begins at once, or, for a run started with ``--confirm``, when a person runs
``cappuccino continue`` (:func:`continue_training`; ``--force`` also passes a refused gate).

Stage 2 (:func:`begin_full_stage`) creates ``<name>_full`` with the quick study's costs and
design options, enqueues the ``top_k`` best quick trials' exact ``params``
(``study.enqueue_trial``), records the workers' new target in ``training.toml``
(``[study] n_trials`` = the request's, ``mode = "full"``) and SIGHUPs the supervisor, whose
workers then train the full study (:func:`daemon.sequential_state.worker_study`).
``.current_study`` (what the ensemble, the deployer and the paper trader follow) keeps naming
the quick study until the full study has ``top_k`` COMPLETE trials; then the job switches it
(:func:`daemon.training_control.switch_study`: ensemble sync, SIGHUP) and the run is in stage
``full``. Every transition holds ``run/training.lock``; a check that finds it held waits for
the next run.
"""

from __future__ import annotations

import os
import signal
import time
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from daemon import training_control
from daemon.config import Config, SequentialConfig, load_config
from daemon.sequential_state import SequentialRun, now_iso, read_run, supersede, write_run
from daemon.study_stats import study_stats
from trainers.runtime.current_study import read_current_study
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import supervisor_pid
from trainers.storage import default_storage_url

log = structlog.get_logger("supervisor")

GATE_KEYS = ("passed", "reason", "best", "threshold", "baselines")


def _count(stats: dict[str, Any], *states: str) -> int:
    trials = stats.get("trials") or {}
    return sum(int(trials.get(s, 0)) for s in states)


def gate_due(run: SequentialRun, stats: dict[str, Any], seq: SequentialConfig, now: float) -> str | None:
    """Why the gate is due (``"trials"``, ``"time_limit"``), None while it is not.

    Args:
        stats: :func:`daemon.study_stats.study_stats` of the quick study.
        now: unix seconds.
    """
    if _count(stats, "COMPLETE", "PRUNED") >= run.quick_trials:
        return "trials"
    if seq.quick_time_limit_s is not None and _count(stats, "COMPLETE") >= 1:
        started = datetime.fromisoformat(run.started_at).timestamp()
        if now - started >= seq.quick_time_limit_s:
            return "time_limit"
    return None


def evaluate_gate(
    run: SequentialRun, stats: dict[str, Any], seq: SequentialConfig, trigger: str
) -> dict[str, Any]:
    """The gate's verdict and evidence on the quick study's figures.

    Args:
        stats: :func:`daemon.study_stats.study_stats` of the quick study (``best``: the
            best COMPLETE trial with a finite value; ``baselines``: ``{"invested", "cash"}``
            objective values of the constant policies on the same folds, or None).
        trigger: why it is evaluated (:func:`gate_due`).

    Returns:
        ``{"evaluated_at", "trigger", "rule", "passed", "reason", "best": {"number",
        "value"} | None, "baselines", "threshold", "margin", "finished_trials",
        "complete_trials", "quick_trials"}``.
    """
    best = stats.get("best")
    baselines = stats.get("baselines")
    value = best.get("value") if isinstance(best, dict) else None
    threshold: float | None = None
    if value is None:
        passed, reason = False, "no COMPLETE quick trial with a finite value"
    elif seq.gate == "off":
        passed, reason = True, "gate off"
    elif seq.gate == "min_value":
        threshold = float(seq.min_value)  # type: ignore[arg-type]  # the config requires it
        passed = value > threshold
        reason = f"best quick value {value:.4f} {'>' if passed else '<='} min_value {threshold:.4f}"
    elif not isinstance(baselines, dict):
        passed, reason = False, "the quick study's constant baselines are not recorded yet"
    else:
        threshold = max(baselines["invested"], baselines["cash"]) + seq.margin
        passed = value > threshold
        reason = (
            f"best quick value {value:.4f} {'beats' if passed else 'does not beat'} both constant "
            f"baselines (invested {baselines['invested']:.4f}, cash {baselines['cash']:.4f}"
            + (f", margin {seq.margin:g}" if seq.margin else "")
            + ")"
        )
    return {
        "evaluated_at": now_iso(),
        "trigger": trigger,
        "rule": seq.gate,
        "passed": passed,
        "reason": reason,
        "best": None if value is None else {"number": best["number"], "value": value},  # type: ignore[index]
        "baselines": baselines if isinstance(baselines, dict) else None,
        "threshold": threshold,
        "margin": seq.margin if seq.gate == "beats_baselines" else None,
        "finished_trials": _count(stats, "COMPLETE", "PRUNED"),
        "complete_trials": _count(stats, "COMPLETE"),
        "quick_trials": run.quick_trials,
    }


def _signal_supervisor(root: Path) -> int | None:
    pid = supervisor_pid(root)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
    return pid


def begin_full_stage(config_path: Path | None, cfg: Config, run: SequentialRun, note: str) -> None:
    """Stage 2: create the full study (the quick study's costs and design options), enqueue
    the ``top_k`` best quick trials' ``params``, move the run to ``full_warmup`` (workers
    train the full study), record ``[study] n_trials`` / ``mode = "full"`` in
    ``training.toml`` and SIGHUP the supervisor. The caller holds ``run/training.lock``.

    Enqueueing skips parameter sets already waiting (``skip_if_exists``), so a transition
    interrupted before its state was written can run again.

    Raises:
        ValueError: the full study exists with other costs or design options, or the
            configuration refuses the new ``training.toml`` (then it is left as it was).
        trainers.study_db.StudyDBError, sqlalchemy.exc.SQLAlchemyError: the storage.
        OSError: a file cannot be written.
    """
    from trainers.design import DesignOptions
    from trainers.storage import make_storage
    from trainers.study_db import open_engine, rank_trials
    from trainers.worker import STUDY_DESIGN_ATTR, check_study_design, create_study, study_costs

    url = cfg.study.storage or default_storage_url(cfg.root)
    storage = make_storage(url, heartbeat_interval=None)
    try:
        import optuna

        quick = optuna.load_study(study_name=run.quick_study, storage=storage)
        costs = study_costs(quick, cfg.costs.as_costs())
        full = create_study(storage, run.full_study, costs=costs)
        design = quick.user_attrs.get(STUDY_DESIGN_ATTR)
        if design is not None:
            check_study_design(full, DesignOptions.from_dict(design))
        top = rank_trials(open_engine(url), run.quick_study, cfg.sequential.top_k)
        enqueued = []
        for t in top:
            source = {"study": run.quick_study, "number": t.number, "value": t.value}
            full.enqueue_trial(dict(t.params), user_attrs={"sequential_source": source}, skip_if_exists=True)
            enqueued.append({"quick_trial": t.number, "value": t.value, "params": dict(t.params)})
    finally:
        storage.engine.dispose()
    previous = run.stage
    run.enqueued, run.training_study = enqueued, run.full_study
    run.to_stage("full_warmup", note)
    path = Layout(cfg.root).training_request
    sections: dict[str, Any] = tomllib.loads(path.read_text()) if path.is_file() else {}
    study = sections.setdefault("study", {})
    study["n_trials"], study["mode"] = run.n_trials, "full"
    text = training_control.training_request_toml(sections, "the supervisor's sequential job (stage 2)")
    training_control.replace_training_request(config_path, cfg.root, text)
    write_run(cfg.root, run)
    log.info(
        "sequential_stage",
        run=run.name,
        previous=previous,
        stage=run.stage,
        training_study=run.full_study,
        current_study=run.quick_study,
        enqueued=[e["quick_trial"] for e in enqueued],
        note=note,
    )
    _signal_supervisor(cfg.root)


def _gate_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return old is None or any(old.get(k) != new.get(k) for k in GATE_KEYS)


def check(config_path: Path | None, cfg: Config) -> str:
    """The supervisor's ``sequential`` job: advance the sequential run one step if due.

    Returns:
        a one-line detail for the job record (``"no sequential run"``, the stage and its
        progress, or ``"skipped: ..."`` when another training request holds the lock).

    Raises:
        anything the storage or the file system raise: the job records it as failed and the
        next run tries again (the state file is unchanged).
    """
    root = cfg.root
    try:
        with training_control.request_lock(root):
            return _check_locked(config_path, cfg)
    except training_control.TrainingBusy:
        return "skipped: another training request is in progress"


def _check_locked(config_path: Path | None, cfg: Config) -> str:
    root, seq = cfg.root, cfg.sequential
    run = read_run(root)
    if run is None or not run.active:
        return "no sequential run" if run is None else f"{run.name}: {run.stage}"
    current = read_current_study(root)
    if current not in run.studies():
        supersede(root, f".current_study is {current!r}")
        log.info(
            "sequential_stage", run=run.name, previous=run.stage, stage="superseded", current_study=current
        )
        return f"{run.name}: superseded (.current_study is {current!r})"
    url = cfg.study.storage or default_storage_url(root)
    if run.stage in ("quick", "gate_refused"):
        stats = study_stats(url, run.quick_study)
        trigger = gate_due(run, stats, seq, time.time())
        if trigger is None:
            done = _count(stats, "COMPLETE", "PRUNED")
            return f"{run.name}: stage 1, {done}/{run.quick_trials} quick trials finished"
        gate = evaluate_gate(run, stats, seq, trigger)
        changed = _gate_changed(run.gate, gate)
        run.gate = gate
        if changed:
            log.info("sequential_gate", run=run.name, study=run.quick_study, **gate)
        if not gate["passed"]:
            if run.stage != "gate_refused":
                run.to_stage("gate_refused", gate["reason"])
            write_run(root, run)
            return f"{run.name}: stage 1, gate refused: {gate['reason']}"
        if run.confirm:
            run.to_stage("awaiting_confirmation", gate["reason"])
            write_run(root, run)
            log.info(
                "sequential_stage", run=run.name, stage=run.stage, note="waiting for `cappuccino continue`"
            )
            return f"{run.name}: gate passed, waiting for `cappuccino continue`"
        begin_full_stage(config_path, cfg, run, f"gate passed: {gate['reason']}")
        return f"{run.name}: gate passed, stage 2 trains {run.full_study} ({len(run.enqueued)} enqueued)"
    if run.stage == "awaiting_confirmation":
        return f"{run.name}: gate passed, waiting for `cappuccino continue`"
    full = study_stats(url, run.full_study)
    complete = _count(full, "COMPLETE")
    if run.stage == "full_warmup":
        needed = min(seq.top_k, run.n_trials)
        if complete < needed:
            return f"{run.name}: stage 2, {complete}/{needed} COMPLETE full trials before the switch"
        previous = run.stage
        switch = training_control.switch_study(cfg, run.full_study)  # sync + SIGHUP
        run.to_stage("full", f"{complete} COMPLETE trials in {run.full_study}")
        write_run(root, run)
        log.info(
            "sequential_stage",
            run=run.name,
            previous=previous,
            stage=run.stage,
            current_study=run.full_study,
            ensemble_sync_ok=switch.sync_code == 0,
        )
        return f"{run.name}: stage 2, {run.full_study} is the current study"
    done = _count(full, "COMPLETE", "PRUNED")
    return f"{run.name}: stage 2, {done}/{run.n_trials} full trials finished"


@dataclass(frozen=True)
class Continued:
    """What ``cappuccino continue`` did: the run's state after it and the supervisor
    signalled (None: none runs)."""

    run: dict[str, Any]
    supervisor_pid: int | None

    def lines(self) -> list[str]:
        r = self.run
        out = [
            f"sequential run {r['name']!r}: stage 2 trains {r['full_study']!r} with "
            f"{len(r['enqueued'])} quick parameter set(s) enqueued; {r['quick_study']!r} stays the "
            "current study until the full study has top_k COMPLETE trials"
        ]
        if self.supervisor_pid is None:
            out.append("supervisor is not running; its workers will train the full study when started")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"sequential": self.run, "supervisor_pid": self.supervisor_pid}


def continue_training(config_path: Path | None, root: Path | None, force: bool = False) -> Continued:
    """``cappuccino continue`` (``POST /api/training/continue``): begin stage 2 of a run
    waiting for confirmation; ``force`` also begins it after a refused gate (recorded in
    the run's history).

    Raises:
        ConfigError: a bad configuration.
        TrainingBusy: another training request is in progress.
        ValueError: no sequential run, or one in another stage (the message names it).
        OSError, trainers.study_db.StudyDBError: see :func:`begin_full_stage`.
    """
    cfg = load_config(config_path, {"root": root} if root else None)
    with training_control.request_lock(cfg.root):
        run = read_run(cfg.root)
        if run is None:
            raise ValueError(
                f"no sequential run under {cfg.root} (start one with start-training --sequential)"
            )
        allowed = {"awaiting_confirmation"} | ({"gate_refused"} if force else set())
        if run.stage not in allowed:
            hint = {
                "quick": "stage 1 is still running; its gate has not been evaluated",
                "gate_refused": "its gate refused stage 2 (continue --force overrides it)",
                "full_warmup": "stage 2 has already begun",
                "full": "stage 2 has already begun",
                "superseded": "another training request replaced it",
            }[run.stage]
            raise ValueError(f"sequential run {run.name!r} is in stage {run.stage!r}: {hint}")
        note = "cappuccino continue" + (" --force (gate refused)" if run.stage == "gate_refused" else "")
        begin_full_stage(config_path, cfg, run, note)
    return Continued(run.as_dict(), supervisor_pid(cfg.root))

"""The fleet: which child processes run (the training workers' and the paper trader's
command lines), how a crashed one is restarted (exponential backoff within an hourly
restart budget) and how the children of a process that died are stopped. The supervisor
and ``cappuccino pipeline`` both use it, so a worker runs with the same flags and is
restarted by the same rules whoever owns it.

Restart rule: a crash (or an unplanned exit) is restarted after ``initial * 2**k`` seconds
(capped at ``max``), ``k`` being the restarts in the last hour; past
``restart.budget_per_hour`` restarts in an hour the child is given up. A planned exit (a
worker's per-process trial quota) restarts at once and does not count; neither does a
restart while the study storage is unavailable (:mod:`daemon.storage_health`) nor a pause
for a full disk (:mod:`daemon.disk_guard`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import structlog

from daemon.api import HEARTBEAT_TIMEOUT_S as API_HEARTBEAT_TIMEOUT_S
from daemon.children import Child, ChildSpec, stop_process_group
from daemon.config import Config
from trainers.accounting import Costs
from trainers.runtime.layout import Layout
from trainers.storage import storage_env
from trainers.study_db import FINISHED_STATES

log = structlog.get_logger("fleet")


def finished_trials(stats: dict[str, Any]) -> int:
    """Finished trials (:data:`trainers.study_db.FINISHED_STATES`: COMPLETE + PRUNED) in a
    :func:`daemon.study_stats.study_stats` result."""
    trials = stats.get("trials") or {}
    return sum(int(trials.get(state, 0)) for state in FINISHED_STATES)


# --------------------------------------------------------------------------- command lines
def cost_args(values: dict[str, float | None]) -> list[str]:
    """``--fee 0.0025 --min-cash 0.05 ...`` for every cost field that is set."""
    return [a for k, v in values.items() if v is not None for a in (f"--{k.replace('_', '-')}", str(v))]


def holdout_cut_args(cfg: Config) -> list[str]:
    """``--holdout-cut CUT`` when the config sets ``study.holdout_cut``; nothing otherwise
    (the worker and the trader then use the dataset's default cut, the same rule)."""
    return [] if cfg.study.holdout_cut is None else ["--holdout-cut", cfg.study.holdout_cut]


def worker_specs(cfg: Config, study: str, storage_url: str, costs: Costs | None = None) -> list[ChildSpec]:
    """The ``workers.count`` training workers (``python -m trainers.worker``) of ``study``,
    with the study's execution model ``costs`` (None: the config's ``[costs]``).

    ``storage_url`` reaches a worker through its environment
    (:func:`trainers.storage.storage_env`), never its command line, so a password in it shows
    in no ``ps`` listing and in no ``run/children.json``."""
    root, py = cfg.root, sys.executable
    costs = costs or cfg.costs.as_costs()
    specs = []
    for i in range(cfg.workers.count):
        name = f"worker-{i}"
        argv = [py, "-m", "trainers.worker", "--study", str(study)]
        argv += ["--root", str(root), "--n-trials", str(cfg.study.n_trials), "--mode", cfg.study.mode]
        argv += ["--max-trials-per-process", str(cfg.workers.max_trials_per_process)]
        argv += ["--device", cfg.workers.device, "--budget-steps", str(cfg.study.budget_steps)]
        argv += ["--n-envs", str(cfg.study.n_envs), *holdout_cut_args(cfg)]
        argv += ["--heartbeat-interval", str(cfg.workers.optuna_heartbeat_interval_s)]
        argv += ["--grace-period", str(cfg.workers.optuna_grace_period_s)]
        argv += ["--torch-threads", str(cfg.workers.torch_threads), "--component", name]
        argv += ["--log-level", cfg.log_level, *cost_args(costs.as_dict()), *cfg.training.worker_args()]
        if cfg.study.data:
            argv += ["--data", cfg.study.data]
        specs.append(
            ChildSpec(
                name,
                tuple(argv),
                Layout(root).heartbeat(name),
                cfg.workers.heartbeat_timeout_s,
                cfg.workers.memory_limit_mb,
                env=(("OMP_NUM_THREADS", str(cfg.workers.torch_threads)), *storage_env(storage_url).items()),
            )
        )
    return specs


def paper_trader_spec(cfg: Config) -> ChildSpec | None:
    """The paper trader (``python -m paper_trader``), or None when it is disabled."""
    if not cfg.paper_trader.enabled:
        return None
    pt, root = cfg.paper_trader, cfg.root
    argv = [sys.executable, "-m", "paper_trader", "--root", str(root), "--broker", pt.broker]
    argv += ["--speed", str(pt.speed), "--initial-cash", str(pt.initial_cash)]
    argv += ["--min-notional", str(pt.min_notional)]
    argv += cost_args(pt.overrides())
    argv += [*holdout_cut_args(cfg), "--log-level", cfg.log_level]
    if pt.deployment is not None:
        argv += ["--deployment", pt.deployment]
    if cfg.study.data:
        argv += ["--data", cfg.study.data]
    return ChildSpec(
        "paper_trader",
        tuple(argv),
        Layout(root).heartbeat("paper_trader"),
        pt.heartbeat_timeout_s,
        pt.memory_limit_mb,
        restart_on_success=False,
        env=(
            ("OMP_NUM_THREADS", "1"),
            ("CAPPUCCINO_PAPER_TRADER__ALLOW_LIVE", "true" if pt.allow_live else "false"),
        ),
    )


def api_spec(cfg: Config, config_path: Path | None = None) -> ChildSpec | None:
    """The control API (``python -m daemon.api``, :mod:`daemon.api.server`) with the
    supervisor's configuration file, or None when ``api.enabled`` is false. Host and port are
    on its command line so a SIGHUP that changes them restarts it; its token comes from the
    environment or the token file, never its argv."""
    if not cfg.api.enabled:
        return None
    argv = [sys.executable, "-m", "daemon.api", "--root", str(cfg.root)]
    argv += ["--host", cfg.api.host, "--port", str(cfg.api.port), "--log-level", cfg.log_level]
    if config_path is not None:
        argv += ["--config", str(config_path)]
    return ChildSpec(
        "api",
        tuple(argv),
        Layout(cfg.root).heartbeat("api"),
        API_HEARTBEAT_TIMEOUT_S,
        cfg.api.memory_limit_mb,
        env=(("OMP_NUM_THREADS", "1"),),
    )


def child_specs(
    cfg: Config,
    study: str,
    storage_url: str,
    costs: Costs | None = None,
    config_path: Path | None = None,
) -> list[ChildSpec]:
    """Every child the supervisor runs: the workers, the paper trader if enabled, the
    control API if enabled (``config_path``: the supervisor's configuration file)."""
    extra = [spec for spec in (paper_trader_spec(cfg), api_spec(cfg, config_path)) if spec is not None]
    return worker_specs(cfg, study, storage_url, costs) + extra


def ensure_study(storage_url: str, study: str, default_costs: Costs) -> Costs:
    """Create the storage schema and the study before workers start (so concurrent workers
    never race to create tables on a fresh database); returns the study's execution model
    (``default_costs``, recorded now, for a study that has none yet).

    Raises:
        ValueError: the study's recorded costs are invalid.
    """
    import optuna

    from trainers.storage import make_storage
    from trainers.worker import study_costs

    storage = make_storage(storage_url, heartbeat_interval=None)
    try:  # the direction is all a study stores; workers bring their own sampler and pruner
        created = optuna.create_study(
            storage=storage, study_name=study, direction="maximize", load_if_exists=True
        )
        return study_costs(created, default_costs)
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- restarts
@dataclass
class RestartPolicy:
    """Exponential backoff and an hourly restart budget (seconds)."""

    initial_s: float = 5.0
    max_s: float = 300.0
    budget_per_hour: int = 3

    @classmethod
    def from_config(cls, cfg: Config) -> RestartPolicy:
        r = cfg.restart
        return cls(r.backoff_initial_s, r.backoff_max_s, r.budget_per_hour)

    def backoff(self, recent_restarts: int) -> float:
        return min(self.max_s, self.initial_s * 2.0**recent_restarts)


def schedule_restart(
    child: Child, policy: RestartPolicy, planned: bool = False, counted: bool = True
) -> float | None:
    """Put a stopped child in ``backoff`` and return the delay until its restart, or None
    (and nothing changed) when its hourly restart budget is spent. A ``planned`` restart
    (a worker's per-process trial quota) is immediate and not counted. An uncounted one
    (``counted=False``: the child died during a storage outage, :mod:`daemon.storage_health`)
    waits ``policy.initial_s`` and leaves the budget alone."""
    now = time.monotonic()
    if planned:
        delay = 0.0
    elif not counted:
        delay = policy.initial_s
    else:
        recent = child.recent_restarts(now)
        if recent >= policy.budget_per_hour:
            return None
        delay = policy.backoff(recent)
        child.restarts.append(now)
        child.total_restarts += 1
    child.state = "backoff"
    child.restart_at = now + delay
    return delay


# --------------------------------------------------------------------------- stale children
def stop_stale(records: Iterable[Any], timeout_s: float) -> list[dict[str, Any]]:
    """Stop children recorded by a process that died without stopping them (SIGKILL, power
    loss): each record is ``{"name", "pid", "create_time", ...}``.

    Only processes whose pid AND create time match a record are touched (SIGTERM to the
    process group, SIGKILL after ``timeout_s``); a reused pid or an unrelated process with a
    similar command line is left alone. Returns the records of the children stopped.
    """
    stopped = []
    for rec in records:
        if not isinstance(rec, dict):
            continue
        pid, ctime = rec.get("pid"), rec.get("create_time")
        if not isinstance(pid, int) or not isinstance(ctime, (int, float)):
            continue
        try:
            if abs(psutil.Process(pid).create_time() - ctime) > 0.01:
                continue
        except psutil.NoSuchProcess:
            continue
        if stop_process_group(pid, ctime, timeout_s):
            stopped.append(rec)
    return stopped

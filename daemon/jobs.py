"""The supervisor's scheduled jobs: what each one does (the scheduling and the run-time
bound are :mod:`daemon.scheduler`).

``ensemble_sync``, ``deploy``, ``archive`` and ``cleanup`` run ``python -m daemon.cli ...``
as child processes (so a hung one can be killed with its process group and the supervisor
never loads torch); ``monitor`` reads the storage in-process and raises alerts. The
``watchdog`` job is the supervisor's own (it checks the supervisor's children), and so is
``sequential`` (the stage machine of a sequential training run, :mod:`daemon.sequential`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.children import Child
from daemon.config import Config
from daemon.scheduler import JobRunner
from trainers.runtime.layout import Layout
from trainers.storage import storage_env

log = structlog.get_logger("supervisor")


@dataclass(frozen=True)
class JobContext:
    """What a job reads, taken from the supervisor at each run (a SIGHUP may change it)."""

    config: Config
    root: Path
    study: str
    storage_url: str
    runner: JobRunner
    config_path: Path | None = None  # the supervisor's file; the job commands read the same


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", *args]


def _run(ctx: JobContext, argv: list[str], job: str) -> str:
    """Run a job command bounded by 90% of ``jobs.job_timeout_s``; output to ``logs/<job>.out``.
    The storage URL goes in the command's environment, never its argv (a password in it
    would show in ``ps``)."""
    timeout = ctx.config.jobs.job_timeout_s * 0.9
    if ctx.config_path is not None:  # else a stray ./cappuccino.toml could differ from ours
        argv = [*argv, "--config", str(Path(ctx.config_path).resolve())]
    out = Layout(ctx.root).job_output(job)
    outcome, detail = ctx.runner.run_command(argv, timeout, out, storage_env(ctx.storage_url))
    return detail if outcome == "ok" else f"{outcome}: {detail}"


def sync(ctx: JobContext, alerts: Any = None) -> str:
    """``cappuccino sync``: rebuild the ensemble from the study's top trials.

    Args:
        alerts: the supervisor's :class:`daemon.alerts.AlertSink`, or None. After the
            command, the ``manifest_rebuilt`` alerts are reconciled at once
            (:func:`daemon.monitor.manifest_alerts`: a manifest the sync found unreadable,
            kept aside and rebuilt), rather than at the next monitor run.
    """
    cfg = ctx.config
    argv = _cli("sync", "--study", ctx.study, "--root", str(ctx.root))
    argv += ["--top-n", str(cfg.ensemble.top_n)]
    if cfg.study.data:
        argv += ["--data", cfg.study.data]
    detail = _run(ctx, argv, "sync")
    if alerts is not None:
        from daemon.monitor import manifest_alerts

        raised = alerts.update(manifest_alerts(ctx.root), kinds=("manifest_rebuilt",))
        if raised:
            detail += f" (manifest rebuilt: {len(raised)} alert(s) raised)"
    return detail


def deploy(ctx: JobContext, dry_run: bool = False) -> str:
    """``cappuccino deploy``: promote the best trial past the gates (``dry_run``: evaluate
    them and change nothing; the control API's ``POST /api/deploy``)."""
    d, st = ctx.config.deploy, ctx.config.study
    argv = _cli("deploy", "--study", ctx.study, "--root", str(ctx.root))
    argv += ["--slot", d.slot, "--min-improvement", str(d.min_improvement)]
    argv += ["--min-grade", d.min_grade, "--min-sharpe", str(d.min_sharpe)]
    argv += ["--max-drawdown", str(d.max_drawdown)]
    if st.holdout_cut:  # else each trial's own recorded cut
        argv += ["--holdout-cut", st.holdout_cut]
    argv += ["--validation-fraction", str(d.validation_fraction), "--candidates", str(d.candidates)]
    if st.data:
        argv += ["--data", st.data]
    if dry_run:
        argv.append("--dry-run")
    return _run(ctx, argv, "deploy")


def rollback(ctx: JobContext) -> str:
    """``cappuccino deploy --rollback`` of the configured slot (the control API's
    ``POST /api/deploy/rollback``); output to ``logs/rollback.out``."""
    argv = _cli("deploy", "--root", str(ctx.root), "--slot", ctx.config.deploy.slot, "--rollback")
    return _run(ctx, argv, "rollback")


def archive(ctx: JobContext) -> str:
    """``cappuccino archive``: copy the top trials into the archive."""
    a = ctx.config.archive
    argv = _cli("archive", "--study", ctx.study, "--root", str(ctx.root))
    argv += ["--top-percent", str(a.top_percent), "--min-grade", a.min_grade]
    return _run(ctx, argv, "archive")


def cleanup(ctx: JobContext) -> str:
    """Archive first (cleanup never removes what the archive refers to, but it may remove
    scratch of trials the archive has not copied yet), then ``cappuccino clean``. When the
    archive run fails or times out, cleanup does not run in this cycle: a trial that
    qualifies for the archive keeps its scratch folder and artifact until it is archived."""
    cfg = ctx.config
    if cfg.archive.enabled:
        archived = archive(ctx)
        if archived.startswith(("failed", "timeout")):
            log.warning("cleanup_skipped", reason="archive did not complete", archive=archived)
            return f"failed: cleanup skipped because the archive did not complete ({archived})"
    keep_top = max(cfg.cleanup.keep_top, cfg.ensemble.top_n)
    argv = _cli("clean", "--root", str(ctx.root))
    argv += ["--keep-days", str(cfg.cleanup.keep_days), "--keep-top", str(keep_top)]
    return _run(ctx, argv, "cleanup")


def monitor(ctx: JobContext, children: Iterable[Child], alerts: Any, cache: dict[str, Any]) -> str:
    """Trials/hour, best value over time, fail and prune rates, stagnation; alerts.

    Args:
        children: the supervisor's children (their states feed the child alerts).
        alerts: the supervisor's :class:`daemon.alerts.AlertSink`, or None.
        cache: the supervisor's monitor cache (``study``, ``at``, ``alerts`` are set).
    """
    from daemon.monitor import compute_monitor, monitor_alerts

    a = ctx.config.alerts
    figures = compute_monitor(
        ctx.storage_url, ctx.study, history=a.rate_window, stagnation_trials=a.stagnation_trials
    )
    cache["study"] = figures
    cache["at"] = datetime.now(UTC).isoformat()
    kids = [
        {
            "name": c.spec.name,
            "state": c.state,
            "restarts": c.total_restarts,
            "restarts_last_hour": len(c.restarts),
            "last_reason": c.last_reason,
            "last_exit": c.last_exit,
        }
        for c in children
    ]
    if alerts is not None:
        alerts.update(monitor_alerts(ctx.root, figures, kids, a.drawdown_limit))
        cache["alerts"] = alerts.snapshot()
    best = figures.get("best") or {}
    log.info(
        "monitor",
        study=ctx.study,
        trials=figures.get("trials"),
        ended_per_hour=figures.get("ended_per_hour"),
        fail_rate=figures.get("fail_rate"),
        prune_rate=figures.get("prune_rate"),
        stagnation=figures.get("stagnation"),
        best_value=best.get("value"),
        best_vin=best.get("vin"),
    )
    return f"{sum((figures.get('trials') or {}).values())} trials, best {best.get('value')}"


def schedule(runner: JobRunner, cfg: Config, bodies: Mapping[str, Callable[[], str]]) -> None:
    """Add the configured jobs to ``runner``; ``bodies`` maps each job name (``watchdog``,
    ``monitor``, ``ensemble_sync``, ``deploy``, ``archive``, ``cleanup``, ``sequential``) to
    its body."""
    j = cfg.jobs
    check_s = cfg.sequential.check_interval_s
    runner.add("sequential", check_s, bodies["sequential"], first_in_s=min(5.0, check_s))
    runner.add("watchdog", j.watchdog_interval_s, bodies["watchdog"], first_in_s=j.watchdog_interval_s)
    runner.add("monitor", j.monitor_interval_s, bodies["monitor"], first_in_s=0.5)
    runner.add(
        "ensemble_sync", j.sync_interval_s, bodies["ensemble_sync"], first_in_s=min(5.0, j.sync_interval_s)
    )
    runner.add("deploy", j.deploy_interval_s, bodies["deploy"], first_in_s=min(60.0, j.deploy_interval_s))
    if cfg.archive.enabled:
        runner.add("archive", cfg.archive.interval_s, bodies["archive"], first_in_s=cfg.archive.interval_s)
    if cfg.cleanup.enabled:
        runner.add("cleanup", cfg.cleanup.interval_s, bodies["cleanup"], first_in_s=cfg.cleanup.interval_s)


def reschedule(runner: JobRunner, cfg: Config) -> None:
    """Apply a reloaded config's intervals and job timeout (SIGHUP)."""
    j = cfg.jobs
    for name, interval in (
        ("watchdog", j.watchdog_interval_s),
        ("monitor", j.monitor_interval_s),
        ("ensemble_sync", j.sync_interval_s),
        ("deploy", j.deploy_interval_s),
        ("sequential", cfg.sequential.check_interval_s),
    ):
        runner.reschedule(name, interval)
    runner.timeout_s = j.job_timeout_s

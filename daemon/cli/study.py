"""``cappuccino set-study`` (behind ``bin/sync_training_study``) and
``cappuccino start-training`` (behind ``bin/start_training.sh``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from daemon.config import TRAINING_OVERLAY, ConfigError, load_config
from trainers.accounting import costs_from_options
from trainers.atomic_io import atomic_write_bytes
from trainers.runtime.current_study import write_current_study
from trainers.runtime.pidlock import supervisor_pid
from trainers.storage import default_storage_url, make_storage, storage_env


def _sync_now(root: Path, storage: str, study: str) -> int:
    """``cappuccino sync`` of ``study`` as a child process (the storage URL in its
    environment, never its argv); returns its exit code."""
    argv = [sys.executable, "-m", "daemon.cli", "sync", "--study", study, "--root", str(root)]
    return subprocess.run(argv, check=False, env={**os.environ, **storage_env(storage)}).returncode


def set_study(
    study: str = typer.Argument(..., help="The study every component should follow."),
    config: Path = typer.Option(None, "--config", "-c"),
    root: Path = typer.Option(None, help="Runtime root (overrides the config)."),
) -> None:
    """Make STUDY the current study: write .current_study, sync the ensemble from it at once,
    and SIGHUP the supervisor so workers, jobs and the paper trader follow it."""
    try:
        cfg = load_config(config, {"root": root} if root else None)
        cfg.root.mkdir(parents=True, exist_ok=True)
        write_current_study(cfg.root, study)
    except (ConfigError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"current study: {study} ({cfg.root / '.current_study'})")
    storage = cfg.study.storage or default_storage_url(cfg.root)
    code = _sync_now(cfg.root, storage, study)
    if code != 0:
        typer.echo("ensemble sync found nothing to sync yet (the sync job retries on schedule)", err=True)
    pid = supervisor_pid(cfg.root)
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        typer.echo(f"supervisor pid {pid} signalled (SIGHUP): realigning workers, jobs and trader")
    else:
        typer.echo("supervisor is not running; it will follow this study when started")


def start_training(
    study: str = typer.Option(..., help="Study name (created if needed)."),
    n_trials: int = typer.Option(..., min=1, help="Finished trials to reach."),
    workers: int = typer.Option(..., min=0, help="Training worker processes."),
    config: Path = typer.Option(None, "--config", "-c"),
    root: Path = typer.Option(None, help="Runtime root (overrides the config)."),
    wait: float = typer.Option(30.0, help="Seconds to wait for a background supervisor to come up."),
    fee: float = typer.Option(None, help="Study cost: commission per side (default: the config's [costs])."),
    slippage: float = typer.Option(None, help="Study cost: slippage per side, fraction."),
    min_cash: float = typer.Option(None, help="Study cost: minimum cash reserve, fraction of equity."),
    max_weight: float = typer.Option(None, help="Study cost: maximum weight of one asset."),
    trailing_stop: float = typer.Option(None, help="Study cost: trailing stop below the high (0 = off)."),
    min_trade: float = typer.Option(None, help="Study cost: no-trade band per asset, fraction of equity."),
) -> None:
    """Create the study if needed (with its execution model: the config's [costs], with the
    cost options given here), record the request in <root>/training.toml, make it the
    current study (sync + SIGHUP), and start the supervisor in the background if it is not
    running."""
    from trainers.worker import create_study

    options = {
        "fee": fee,
        "slippage": slippage,
        "min_cash": min_cash,
        "max_weight": max_weight,
        "trailing_stop": trailing_stop,
        "min_trade": min_trade,
    }
    given = {k: v for k, v in options.items() if v is not None}
    try:
        cfg = load_config(config, {"root": root} if root else None)
        costs = costs_from_options(cfg.costs.as_costs(), "start-training options", **options)
        cfg.root.mkdir(parents=True, exist_ok=True)
        storage = cfg.study.storage or default_storage_url(cfg.root)
        create_study(make_storage(storage, heartbeat_interval=None), study, costs=costs)
        overlay = f"[study]\nn_trials = {n_trials}\n\n[workers]\ncount = {workers}\n"
        if given:
            overlay += "\n[costs]\n" + "".join(f"{k} = {v!r}\n" for k, v in costs.as_dict().items())
        atomic_write_bytes(cfg.root / TRAINING_OVERLAY, overlay.encode())
        load_config(config, {"root": root} if root else None)  # validate before signalling anyone
    except (ConfigError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    set_study(study, config, root)
    if supervisor_pid(cfg.root) is not None:
        return
    log = cfg.root / "logs" / "supervisor.console"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "daemon.cli", "supervise", "--root", str(cfg.root)]
    if config is not None:
        argv += ["--config", str(config)]
    with open(log, "ab") as out:
        subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = supervisor_pid(cfg.root)
        if pid is not None:
            typer.echo(f"supervisor started in the background: pid {pid} (log {log})")
            return
        time.sleep(0.5)
    typer.echo(f"error: the supervisor did not come up within {wait:.0f} s; see {log}", err=True)
    raise typer.Exit(1)

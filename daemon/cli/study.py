"""``cappuccino set-study`` (behind ``bin/sync_training_study``), ``cappuccino
start-training`` (behind ``bin/start_training.sh``) and ``cappuccino stop-training``: the
command-line side of :mod:`daemon.training_control` (the control API calls the same
functions)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import typer

from daemon import training_control
from daemon.cli._options import CONFIG_HELP, ROOT_HELP, runtime_config
from daemon.config import ConfigError
from daemon.training_control import Mode, StudySwitch, TrainingBusy, TrainingRequest
from trainers.runtime.layout import Layout
from trainers.runtime.pidlock import supervisor_pid

SYNC_RETRY_NOTE = "ensemble sync found nothing to sync yet (the sync job retries on schedule)"


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def _report_switch(switch: StudySwitch) -> None:
    for line in switch.lines():
        typer.echo(line)
    if switch.sync_code != 0:
        typer.echo(SYNC_RETRY_NOTE, err=True)


def set_study(
    study: str = typer.Argument(..., help="The study every component should follow."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Make STUDY the current study: write .current_study, sync the ensemble from it at once,
    and SIGHUP the supervisor so workers, jobs and the paper trader follow it."""
    try:
        switch = training_control.set_study(config, root, study)
    except (ConfigError, ValueError, OSError, TrainingBusy) as exc:
        raise _fail(exc) from None
    _report_switch(switch)


def start_training(
    study: str = typer.Option(..., help="Study name (created if needed)."),
    n_trials: int = typer.Option(..., min=1, help="Finished trials to reach."),
    workers: int = typer.Option(..., min=0, help="Training worker processes."),
    mode: Mode = typer.Option(
        None, help="Walk-forward mode, quick or full (default: the config's study.mode)."
    ),
    budget_steps: int = typer.Option(
        None, min=1, help="Env steps per fold (default: the config's study.budget_steps)."
    ),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
    wait: float = typer.Option(30.0, help="Seconds to wait for a background supervisor to come up."),
    fee: float = typer.Option(None, help="Study cost: commission per side (default: the config's [costs])."),
    slippage: float = typer.Option(None, help="Study cost: slippage per side, fraction."),
    min_cash: float = typer.Option(None, help="Study cost: minimum cash reserve, fraction of equity."),
    max_weight: float = typer.Option(None, help="Study cost: maximum weight of one asset."),
    trailing_stop: float = typer.Option(None, help="Study cost: trailing stop below the high (0 = off)."),
    min_trade: float = typer.Option(None, help="Study cost: no-trade band per asset, fraction of equity."),
    sequential: bool = typer.Option(
        False,
        help="Two stages: a quick-mode study STUDY_quick, a gate ([sequential] in the config), then a "
        "full-mode study STUDY_full seeded with the best quick parameters; N_TRIALS is the full study's.",
    ),
    quick_trials: int = typer.Option(
        None, min=1, help="--sequential: quick trials before the gate (default: sequential.quick_trials)."
    ),
    confirm: bool = typer.Option(
        False, help="--sequential: wait for `cappuccino continue` between the stages (default: automatic)."
    ),
) -> None:
    """Create the study if needed (with its execution model: the config's [costs], with the
    cost options given here), record the request in <root>/training.toml, make it the
    current study (sync + SIGHUP), and start the supervisor in the background if it is not
    running. The control API's POST /api/training/start does the same."""
    if not sequential and (quick_trials is not None or confirm):
        raise _fail(ValueError("--quick-trials and --confirm need --sequential"))
    options = {
        "fee": fee,
        "slippage": slippage,
        "min_cash": min_cash,
        "max_weight": max_weight,
        "trailing_stop": trailing_stop,
        "min_trade": min_trade,
    }
    request = TrainingRequest(
        study=study,
        n_trials=n_trials,
        workers=workers,
        mode=mode,
        budget_steps=budget_steps,
        costs={k: v for k, v in options.items() if v is not None},
        sequential=sequential,
        quick_trials=quick_trials,
        confirm=confirm,
    )
    try:
        started = training_control.start_training(config, root, request)
    except (ConfigError, ValueError, OSError, TrainingBusy) as exc:
        raise _fail(exc) from None
    for line in started.lines():
        typer.echo(line)
    _report_switch(started.switch)
    cfg_root = started.overlay.parent
    if supervisor_pid(cfg_root) is not None:
        return
    log = Layout(cfg_root).logs_dir / "supervisor.console"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "daemon.cli", "supervise", "--root", str(cfg_root)]
    if config is not None:
        argv += ["--config", str(config)]
    with open(log, "ab") as out:
        subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = supervisor_pid(cfg_root)
        if pid is not None:
            typer.echo(f"supervisor started in the background: pid {pid} (log {log})")
            return
        time.sleep(0.5)
    typer.echo(f"error: the supervisor did not come up within {wait:.0f} s; see {log}", err=True)
    raise typer.Exit(1)


def stop_training(
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Stop the training workers: workers.count = 0 in <root>/training.toml and SIGHUP the
    supervisor (each worker re-queues its current trial). The supervisor, the paper trader
    and the scheduled jobs keep running; start-training starts workers again. The control
    API's POST /api/training/stop does the same."""
    cfg = runtime_config(config, root)
    try:
        stopped = training_control.stop_training(config, cfg.root)
    except (ConfigError, ValueError, OSError, TrainingBusy) as exc:
        raise _fail(exc) from None
    for line in stopped.lines():
        typer.echo(line)


def continue_training(
    force: bool = typer.Option(False, help="Also begin stage 2 after a refused gate."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Begin stage 2 of a sequential run started with --confirm whose gate passed: enqueue the
    best quick parameter sets in the full study and SIGHUP the supervisor, whose workers then
    train it. The control API's POST /api/training/continue does the same."""
    from daemon.sequential import continue_training as begin

    try:
        done = begin(config, root, force=force)
    except (ConfigError, ValueError, OSError, TrainingBusy) as exc:
        raise _fail(exc) from None
    for line in done.lines():
        typer.echo(line)

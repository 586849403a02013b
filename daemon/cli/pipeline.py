"""``cappuccino pipeline``: clean, train, archive and deploy in one command (see
:mod:`daemon.pipeline` for the steps).

Prints progress lines on stderr and a one-screen summary on stdout; the summary is also
written to ``<root>/run/pipeline.json``. Exit status: 0 every step ran (a deploy refused by
its gates included), 1 a step failed, 2 bad arguments or configuration, 3 refused (a
supervisor or another pipeline runs on the root), 130 interrupted (SIGTERM/SIGINT).
``--background`` starts the same pipeline detached and exits 0 once it runs.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import typer

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION
from daemon.pipeline import (
    EXIT_REFUSED,
    EXIT_USAGE,
    LOG_COMPONENT,
    MODES,
    PipelineError,
    PipelineRefused,
    Plan,
    check_free,
    log_file,
    make_plan,
    progress_to_stderr,
    result_path,
    run_pipeline,
)
from trainers.atomic_io import read_json_object
from trainers.runtime.logs import configure_logging

BACKGROUND_WAIT_S = 60.0


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}" if code == EXIT_USAGE else message, err=True)
    return typer.Exit(code)


def pipeline(
    mode: str = typer.Option(..., "--mode", "-m", help=f"What to run: {', '.join(MODES)}."),
    workers: int = typer.Option(None, help="Training worker processes (default: workers.count)."),
    trials: int = typer.Option(
        None, help="Train until the study has this many finished trials (default: study.n_trials)."
    ),
    background: bool = typer.Option(
        False, "--background", help="Run detached; log to <root>/logs/pipeline.log."
    ),
    study: str = typer.Option(None, help="Study (default: <root>/.current_study, then study.name)."),
    root: Path = ROOT_OPTION,
    config: Path = CONFIG_OPTION,
    detached: bool = typer.Option(False, "--detached", hidden=True, help="Internal: the background run."),
) -> None:
    """Run the pipeline: full = clean, train to N finished trials, archive, deploy; or one step."""
    try:
        plan = make_plan(mode, config, root, study, workers, trials)
    except PipelineError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if background:
        raise typer.Exit(_start_background(plan, workers, trials))
    if detached:  # stdout and stderr are <root>/logs/pipeline.log
        configure_logging(LOG_COMPONENT, None, plan.config.log_level, console=True)
    else:
        configure_logging(LOG_COMPONENT, plan.root, plan.config.log_level, console=False)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        progress_to_stderr(f"{signal.Signals(signum).name}: stopping gracefully")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        result = run_pipeline(plan, stop, progress_to_stderr)
    except PipelineRefused as exc:
        raise _fail(str(exc), EXIT_REFUSED) from None
    typer.echo("\n".join(result.summary_lines()))
    raise typer.Exit(result.exit_code)


def _start_background(plan: Plan, workers: int | None, trials: int | None) -> int:
    """Start ``cappuccino pipeline ... --detached`` in its own session and wait until it
    has taken the root (its pid in ``run/pipeline.json``); returns this command's exit code."""
    try:
        check_free(plan.root, plan.mode)
    except PipelineRefused as exc:
        typer.echo(str(exc), err=True)
        return EXIT_REFUSED
    argv = [sys.executable, "-m", "daemon.cli", "pipeline", "--mode", plan.mode, "--detached"]
    argv += ["--root", str(plan.root), "--study", plan.study]
    if plan.config_path is not None:
        argv += ["--config", str(plan.config_path)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if trials is not None:
        argv += ["--trials", str(trials)]
    out_path = log_file(plan.root)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    state_file = result_path(plan.root)
    deadline = time.monotonic() + BACKGROUND_WAIT_S
    while time.monotonic() < deadline:
        doc = read_json_object(state_file) or {}
        if doc.get("pid") == proc.pid:
            break
        code = proc.poll()
        if code is not None:
            typer.echo(f"error: the background pipeline exited with code {code}; see {out_path}", err=True)
            return code or 1
        time.sleep(0.2)
    else:
        typer.echo(f"warning: pid {proc.pid} has not written {state_file} yet; see {out_path}", err=True)
    typer.echo(f"pipeline --mode {plan.mode} started in the background: pid {proc.pid}")
    typer.echo(f"  log:    {out_path}")
    typer.echo(f"  result: {state_file} (state 'running' until it finishes, then the summary and exit_code)")
    return 0

"""CLI commands ``cappuccino dashboard`` (live rich view, or one frame with ``--once``) and
``cappuccino report`` (PNG plots). Both work with the supervisor down."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage
from daemon.config import Config
from daemon.views.collector import Collector
from daemon.views.dashboard import render_frame, render_layout
from trainers.runtime.current_study import read_current_study

PLAIN_WIDTH = 140  # columns of a frame written to a file or pipe (VINs fit on one line)


def _collector(cfg: Config, study: str | None, storage: str | None) -> Collector:
    return Collector(
        cfg.root,
        runtime_storage(cfg, storage),
        study=study,
        fallback_study=cfg.study.name,
        n_trials=cfg.study.n_trials,
        stagnation_trials=cfg.alerts.stagnation_trials,
    )


def _stop_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # leave the live view (and the alternate screen) cleanly


def dashboard(
    once: bool = typer.Option(False, "--once", help="Print one frame and exit (for cron and scripts)."),
    refresh: float = typer.Option(
        5.0, "--refresh", min=0.2, help="Seconds between refreshes of the live view."
    ),
    root: Path = ROOT_OPTION,
    config: Path = CONFIG_OPTION,
    study: str = typer.Option(None, help="Study to show (default: <root>/.current_study, then the config)."),
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
    as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON and exit."),
) -> None:
    """Live view of the study, top trials, workers, jobs and the paper trader.

    Reads the storage, the manifest and the paper trader's files directly, so it works with
    the supervisor down; workers and jobs come from run/status.json while it runs. When
    stdout is not a terminal it prints one plain-text frame (no colour codes).
    """
    cfg = runtime_config(config, root)
    collector = _collector(cfg, study, storage)
    try:
        if as_json:
            typer.echo(json.dumps(collector.collect(), indent=2, default=str))
            return
        console = Console(highlight=False)
        plain = not console.is_terminal
        if plain:
            console = Console(
                highlight=False, no_color=True, width=None if "COLUMNS" in os.environ else PLAIN_WIDTH
            )
        if once or plain:
            console.print(render_frame(collector.collect(), plain=plain))
            return
        _live(console, collector, refresh)
    finally:
        collector.close()


def _live(console: Console, collector: Collector, refresh: float) -> None:
    """Redraw every ``refresh`` seconds until Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        with Live(
            render_layout(collector.collect()), console=console, screen=True, auto_refresh=False
        ) as live:
            live.refresh()
            while True:
                time.sleep(refresh)
                try:
                    frame: RenderableType = render_layout(collector.collect())
                except Exception as exc:  # keep the view up; the next refresh may succeed
                    frame = Text(f"error: refresh failed: {type(exc).__name__}: {exc}", style="red")
                live.update(frame, refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def report(
    out: Path = typer.Option(..., "--out", help="Folder for the PNG files (created if needed)."),
    root: Path = ROOT_OPTION,
    config: Path = CONFIG_OPTION,
    study: str = typer.Option(None, help="Study to plot (default: <root>/.current_study, then the config)."),
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
) -> None:
    """Write equity.png (paper trader equity and drawdown, from the ledger) and
    best_value.png (the study's best value over trials) into --out.

    A plot whose input is missing (no ledger yet, no storage, no study) is reported on one
    line and the other is still written; the exit code is then 1.
    """
    from daemon.views.report import write_report  # matplotlib only for this command

    cfg = runtime_config(config, root)
    name = study or read_current_study(cfg.root) or cfg.study.name
    try:
        result = write_report(cfg.root, runtime_storage(cfg, storage), name, out)
    except OSError as exc:
        typer.echo(f"error: cannot write the report into {out}: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in result.written:
        typer.echo(f"wrote {path}")
    for problem in result.problems:
        typer.echo(f"error: {problem}", err=True)
    if result.problems:
        raise typer.Exit(1)

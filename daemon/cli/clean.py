"""``cappuccino clean``: remove old logs and the scratch directories and artifacts of trials
outside each study's top, never anything the ensemble, a deployment or the archive refers to
(see :mod:`daemon.cleanup`).

Exit status: 0 when everything planned went (or a dry run), 1 when the cleanup was refused
(unreadable reference file, no storage) or a removal failed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.cleanup import CleanupError, format_result, run_cleanup
from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage


def clean(
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would go and its size; touch nothing."),
    keep_days: float = typer.Option(7.0, min=0, help="Remove logs not modified for this many days."),
    keep_top: int = typer.Option(20, min=1, help="COMPLETE trials kept per study (best first)."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
    study: str = typer.Option(None, help="Only this study's trial folders and artifacts (default: all)."),
) -> None:
    """Free disk space: old logs, scratch folders and artifacts of trials outside the top."""
    cfg = runtime_config(config, root)
    try:
        result = run_cleanup(cfg.root, runtime_storage(cfg, storage), keep_days, keep_top, dry_run, study)
    except CleanupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for line in format_result(result):
        typer.echo(line)
    raise typer.Exit(1 if result.errors else 0)

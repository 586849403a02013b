"""What every command that reads the runtime shares: ``--config`` and ``--root`` resolved
the same way (``cappuccino.toml`` and ``CAPPUCCINO_*``, ``--root`` winning)."""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.config import Config, ConfigError, load_config

CONFIG_HELP = "cappuccino.toml (default ./cappuccino.toml if it exists)."
ROOT_HELP = "Runtime root (overrides the config; default train_results)."


def runtime_config(config: Path | None, root: Path | None, must_exist: bool = True) -> Config:
    """The configuration with ``--root`` applied.

    A bad configuration, or (with ``must_exist``) a runtime root that does not exist, is one
    line on stderr and exit code 2.
    """
    try:
        cfg = load_config(config, {"root": root} if root else None)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if must_exist and not cfg.root.is_dir():
        typer.echo(
            f"error: runtime root {cfg.root} does not exist (pass --root DIR, set CAPPUCCINO_ROOT, "
            "or run cappuccino quickstart)",
            err=True,
        )
        raise typer.Exit(2)
    return cfg

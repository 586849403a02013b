"""``cappuccino trade``: run the paper trader in the foreground, with exactly the options of
``python -m paper_trader`` (see :mod:`paper_trader.cli`).

The one difference: ``--live`` also honours ``paper_trader.allow_live`` from the
configuration (``cappuccino.toml`` in the working directory, or ``CAPPUCCINO_*`` variables).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import typer

from daemon.config import ConfigError, load_config
from paper_trader import cli


@functools.wraps(cli.trade)
def trade(*args: Any, **kwargs: Any) -> None:
    if kwargs.get("live"):
        try:
            allow = load_config(None).paper_trader.allow_live
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if allow:
            os.environ[cli.ALLOW_LIVE_ENV] = "true"
    cli.trade(*args, **kwargs)

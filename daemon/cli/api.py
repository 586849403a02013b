"""``cappuccino api-token``: where the control API's bearer token is (README "Control API")."""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.api.auth import TokenError, load_token
from daemon.cli._options import CONFIG_HELP, ROOT_HELP, runtime_config


def api_token(
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
    show: bool = typer.Option(
        False, "--show", help="Print the token itself (to stdout, alone on its line) instead of its location."
    ),
) -> None:
    """Print where the control API's bearer token is: the CAPPUCCINO_API_TOKEN variable, or
    <root>/run/api.token (mode 0600; created now if the API has not created it yet). The
    token itself is printed only with --show, e.g. TOKEN=$(cappuccino api-token --show)."""
    cfg = runtime_config(config, root)
    try:
        token = load_token(cfg.root)
    except TokenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if show:
        typer.echo(token.value)
        return
    if token.path is None:
        typer.echo(f"the API token is the {token.source}")
    else:
        typer.echo(f"the API token is in {token.path} (mode 0600; print it with --show)")
    typer.echo(f"API: http://{cfg.api.host}:{cfg.api.port} ({'enabled' if cfg.api.enabled else 'disabled'})")

"""The ``cappuccino`` command line."""

from __future__ import annotations

import typer

from trainers import worker

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="cappuccino: Optuna PPO studies, a paper-trading ensemble and their supervisor.",
)


@app.callback()
def _root() -> None:
    """cappuccino: Optuna PPO studies, a paper-trading ensemble and their supervisor."""


app.command("train", help="Run a training worker in the foreground (same options as trainers.worker).")(
    worker.main
)


def main() -> None:
    """Console-script entry point."""
    app()

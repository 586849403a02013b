"""The ``cappuccino`` command line."""

from __future__ import annotations

import typer

from daemon import (
    cmd_clean,
    cmd_dashboard,
    cmd_deploy,
    cmd_models,
    cmd_pipeline,
    cmd_quickstart,
    cmd_study,
    cmd_supervise,
    cmd_sync,
    cmd_trade,
)
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

app.command("sync")(cmd_sync.sync)
app.command("deploy")(cmd_deploy.deploy)
app.command("trade")(cmd_trade.trade)
app.command("supervise")(cmd_supervise.supervise)
app.command("doctor")(cmd_supervise.doctor)
app.command("status")(cmd_supervise.status)
app.command("logs")(cmd_supervise.logs)
app.command("set-study")(cmd_study.set_study)
app.command("start-training")(cmd_study.start_training)
app.command("quickstart")(cmd_quickstart.quickstart)
app.command("archive")(cmd_models.archive)
app.command("clean")(cmd_clean.clean)
app.command("dashboard")(cmd_dashboard.dashboard)
app.command("report")(cmd_dashboard.report)
app.command("pipeline")(cmd_pipeline.pipeline)
app.add_typer(cmd_models.models_app, name="models")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

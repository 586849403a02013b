"""The ``cappuccino`` command line: one module per command group.

``supervise`` (supervise, doctor, status, logs), ``study`` (set-study, start-training,
stop-training, continue), ``api`` (api-token),
``models`` (archive, models ...), ``sync``, ``deploy``, ``trade``, ``clean``, ``pipeline``,
``dashboard`` (dashboard, report), ``evaluate`` and ``quickstart``. ``python -m daemon.cli`` runs it too.
"""

from __future__ import annotations

import typer

from daemon.cli import (
    api,
    clean,
    dashboard,
    deploy,
    evaluate,
    models,
    pipeline,
    quickstart,
    study,
    supervise,
    sync,
    trade,
    train,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="cappuccino: Optuna PPO studies, a paper-trading ensemble and their supervisor.",
)


@app.callback()
def _root() -> None:
    """cappuccino: Optuna PPO studies, a paper-trading ensemble and their supervisor."""


app.command(
    "train", help="Run a training worker in the foreground (the options of trainers.worker, and --config)."
)(train.train)

app.command("sync")(sync.sync)
app.command("deploy")(deploy.deploy)
app.command("trade")(trade.trade)
app.command("supervise")(supervise.supervise)
app.command("doctor")(supervise.doctor)
app.command("status")(supervise.status)
app.command("logs")(supervise.logs)
app.command("set-study")(study.set_study)
app.command("start-training")(study.start_training)
app.command("stop-training")(study.stop_training)
app.command("continue")(study.continue_training)
app.command("api-token")(api.api_token)
app.command("quickstart")(quickstart.quickstart)
app.command("archive")(models.archive)
app.command("clean")(clean.clean)
app.command("dashboard")(dashboard.dashboard)
app.command("report")(dashboard.report)
app.command("pipeline")(pipeline.pipeline)
app.command("evaluate")(evaluate.evaluate_command)
app.add_typer(models.models_app, name="models")


def main() -> None:
    """Console-script entry point."""
    app()

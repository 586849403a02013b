"""``cappuccino evaluate``: a model against the baselines on a hold-out window (see
:mod:`ensemble.evaluate`). A table on the terminal, ``--json`` for machines, ``--out DIR``
for a PNG tearsheet and the JSON beside it.

Exit status: 0 evaluated; 1 the model or the data cannot be evaluated (one line on
stderr); 2 a bad option or configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from daemon.cli._options import CONFIG_HELP, ROOT_HELP, runtime_config
from daemon.views.evaluation import render_table, write_tearsheet
from ensemble.evaluate import EvaluateError, Source, evaluate
from trainers.atomic_io import atomic_write_json
from trainers.runtime.current_study import read_current_study
from trainers.windows import WINDOWS, Window


def evaluate_command(
    study: str = typer.Option(None, help="Study (default: the model's own, or <root>/.current_study)."),
    ensemble: bool = typer.Option(False, "--ensemble", help="Evaluate the live ensemble (the default)."),
    trial: int = typer.Option(None, "--trial", help="Evaluate this COMPLETE trial number of the study."),
    deployment: int = typer.Option(None, "--deployment", help="Evaluate deployments/model_<SLOT>."),
    archive: str = typer.Option(None, "--archive", help="Evaluate this archived model (VIN or folder)."),
    window: str = typer.Option("test", help="validation (the gate's bars), test (never selected on) or all."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON."),
    out: Path = typer.Option(None, "--out", help="Write tearsheet.png and evaluation.json into this folder."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
    root: Path = typer.Option(None, help=ROOT_HELP),
) -> None:
    """Run a model and the baselines (buy-and-hold, cash, trend filter, OLMAR, hindsight
    BCRP) on the same hold-out bars with the model's own costs; report returns, Sharpe ratio
    with a 95% bootstrap interval, Sortino, drawdown, Calmar, turnover, exposure, and the
    study's PBO and deflated Sharpe ratio."""
    chosen = [
        n
        for n, v in (("--trial", trial), ("--deployment", deployment), ("--archive", archive))
        if v is not None
    ]
    if ensemble:
        chosen.append("--ensemble")
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one model, not {' and '.join(chosen)}", param_hint="--ensemble")
    if window not in WINDOWS:
        raise typer.BadParameter(f"use one of {', '.join(WINDOWS)}, not {window!r}", param_hint="--window")
    cfg = runtime_config(config, root)
    source: Source = "ensemble"
    if trial is not None:
        source = "trial"
    elif deployment is not None:
        source = "deployment"
    elif archive is not None:
        source = "archive"
    name = study or (read_current_study(cfg.root) if source == "trial" else None) or cfg.study.name
    win: Window = window  # type: ignore[assignment]
    try:
        ev = evaluate(
            cfg.root,
            source,
            study=name,
            trial=trial,
            slot=deployment or 0,
            vin=archive,
            window=win,
            storage=cfg.study.storage,
            data=cfg.study.data,
            validation_fraction=cfg.deploy.validation_fraction,
        )
    except EvaluateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "evaluation.json", ev.as_dict(curves=True))
        write_tearsheet(ev, out / "tearsheet.png")
    if as_json:
        typer.echo(json.dumps(ev.as_dict(), indent=2))
    else:
        render_table(ev)
        if out is not None:
            typer.echo(f"wrote {out / 'tearsheet.png'} and {out / 'evaluation.json'}")

"""``cappuccino deploy``: promote the study's best trial to a deployment slot, or roll back.

Prints one line per outcome. Exit status: 0 when promoted, refused by a gate, unchanged,
without a candidate, or rolled back; 1 for an error (unknown study, no storage, bad data,
nothing to roll back); 2 for a bad option.
"""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage
from ensemble.deploy import DEFAULT_CANDIDATES, DeployError, rollback, run_deploy
from ensemble.deploy_gate import (
    DEFAULT_MAX_DRAWDOWN,
    DEFAULT_MIN_GRADE,
    DEFAULT_MIN_IMPROVEMENT,
    DEFAULT_MIN_SHARPE,
    DeployThresholds,
)
from trainers.windows import DEFAULT_VALIDATION_FRACTION


def deploy(
    study: str = typer.Option(None, help="Study name (default: the one in <root>/.current_study)."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
    slot: int = typer.Option(0, min=0, help="Deployment slot: <root>/deployments/model_<slot>."),
    min_improvement: float = typer.Option(
        DEFAULT_MIN_IMPROVEMENT, help="Minimum relative improvement over the deployed value (0.01 = 1%)."
    ),
    min_grade: str = typer.Option(DEFAULT_MIN_GRADE, help="Worst acceptable grade (S, A, B, C, D, F)."),
    min_sharpe: float = typer.Option(
        DEFAULT_MIN_SHARPE, help="Minimum validation-window Sharpe ratio (annualised)."
    ),
    max_drawdown: float = typer.Option(
        DEFAULT_MAX_DRAWDOWN, help="Maximum validation-window drawdown (fraction of peak equity)."
    ),
    validation_fraction: float = typer.Option(
        DEFAULT_VALIDATION_FRACTION, help="Share of the hold-out bars in the validation window the gate uses."
    ),
    data: Path = typer.Option(None, help="Dataset folder for the hold-out backtest (default: embedded)."),
    holdout_cut: str = typer.Option(
        None, help="First hold-out bar, UTC ISO 8601 (default: the trial's own training cut)."
    ),
    candidates: int = typer.Option(
        DEFAULT_CANDIDATES, min=1, help="Try at most this many of the best trials, in value order."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Evaluate the gates; change nothing."),
    do_rollback: bool = typer.Option(
        False, "--rollback", help="Swap model_<slot>.previous back in instead of deploying."
    ),
) -> None:
    """Promote the best COMPLETE trial to deployments/model_<slot> if it passes every gate."""
    cfg = runtime_config(config, root)
    try:
        if do_rollback:
            decision = rollback(cfg.root, slot)
        else:
            thresholds = DeployThresholds(
                min_improvement, min_grade.upper(), min_sharpe, max_drawdown, validation_fraction
            )
            decision = run_deploy(
                cfg.root,
                study,
                runtime_storage(cfg, storage),
                slot,
                thresholds,
                data,
                holdout_cut,
                dry_run,
                candidates,
            )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except DeployError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for refused in getattr(decision, "earlier", []):
        typer.echo(refused.summary())
    typer.echo(decision.summary())
    raise typer.Exit(1 if decision.decision == "rollback_refused" else 0)

"""``cappuccino sync``: run the ensemble sync once (see :mod:`ensemble.sync`)."""

from __future__ import annotations

from pathlib import Path

import typer

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage
from ensemble.selection import DEFAULT_TOP_N
from ensemble.sync import SyncError, SyncResult, sync_ensemble
from trainers.bundle import PipelineSpec
from trainers.data import DataError, dataset_symbols
from trainers.naming import grade_with_baselines
from trainers.runtime.current_study import require_current_study
from trainers.study_db import StudyDBError, open_engine
from trainers.study_db.baselines import read_study_baselines


def format_result(result: SyncResult, baselines: dict[str, float] | None = None) -> str:
    """A short human summary: generation, whether it changed, whether the manifest was
    rebuilt (and where the unreadable one is kept), member folders kept for the paper trader,
    and one line per member (its grade with the verdict against the study's constant
    baselines, when recorded)."""
    state = "new" if result.changed else "unchanged"
    lines = [
        f"study {result.study}: generation {result.generation} ({state}), {len(result.members)} members"
        + (f", {len(result.skipped)} trials skipped" if result.skipped else "")
    ]
    if result.rebuilt is not None:
        aside = result.rebuilt.set_aside
        lines.append(
            f"  manifest rebuilt from the study ({result.rebuilt.reason})"
            + (f"; the unreadable file is kept as ensemble/{aside}" if aside else "")
        )
    if result.kept:
        lines.append(f"  kept for the paper trader (its ensemble uses them): {', '.join(result.kept)}")
    for m in result.members:
        lines.append(
            f"  slot {m.slot}: trial {m.trial_number} (id {m.trial_id}) value {m.value:.4f} "
            f"grade {grade_with_baselines(m.grade, m.value, baselines)} {m.vin} {m.sha256[:12]}"
        )
    return "\n".join(lines)


def sync(
    study: str = typer.Option(None, help="Study name (default: the one in <root>/.current_study)."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
    top_n: int = typer.Option(DEFAULT_TOP_N, min=1, help="Ensemble members wanted."),
    symbols: str = typer.Option(
        None, help="Comma-separated symbols the trader trades (default: those of --data)."
    ),
    data: Path = typer.Option(None, help="Dataset folder the trader trades (default: the embedded dataset)."),
) -> None:
    """Sync the ensemble with the top-N COMPLETE trials of the study, once."""
    cfg = runtime_config(config, root, must_exist=False)  # sync_ensemble names a missing root
    root = cfg.root
    try:
        name = study or require_current_study(root)
        wanted = (
            [s.strip().upper() for s in symbols.split(",") if s.strip()] if symbols else dataset_symbols(data)
        )
        pipeline = PipelineSpec(tuple(wanted))
        url = runtime_storage(cfg, storage)
        result = sync_ensemble(root, url, name, pipeline, top_n)
    except (SyncError, StudyDBError, DataError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    recorded = read_study_baselines(open_engine(url), name)
    typer.echo(format_result(result, None if recorded is None else recorded.values()))

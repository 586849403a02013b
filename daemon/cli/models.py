"""``cappuccino archive`` and ``cappuccino models list|info``: the trial archive and its
registry (see :mod:`ensemble.archive` and :mod:`ensemble.registry`).

A model's grade is shown with whether its value beats both constant-policy baselines of its
study (always invested, always in cash; :mod:`trainers.fold_baselines`), read from the
study's storage; where the storage cannot be read the grade says so and the command still
succeeds.

Exit status: 0 on success; 1 for an error the user can fix (unknown study, no storage,
unreadable registry, unknown model) or a failed integrity check; 2 for a bad option.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage
from ensemble.archive import DEFAULT_MIN_GRADE, DEFAULT_TOP_PERCENT, ArchiveError, run_archive
from ensemble.registry import (
    HYPERPARAMS_FILE,
    META_FILE,
    METADATA_FILE,
    PROVENANCE_KEYS,
    ArchiveEntry,
    Registry,
    RegistryError,
    archive_dir,
    check_integrity,
    read_registry,
    registry_path,
)
from trainers.atomic_io import read_json_object
from trainers.design import Design
from trainers.naming import GRADES, beats_baselines, grade_with_baselines
from trainers.study_db import StudyDBError, open_engine
from trainers.study_db.baselines import (
    StudyBaselines,
    baseline_values,
    read_study_baselines,
    vs_baselines_line,
)

models_app = typer.Typer(
    no_args_is_help=True, help="Archived models: the registry of <root>/trial_archive (see `archive`)."
)

FOLD_COLUMNS = ("sharpe", "excess_sharpe", "max_drawdown", "total_return", "turnover")
STORAGE_OPTION = typer.Option(
    None, help="Optuna storage URL, for the studies' baselines (default: config, else <root>/optuna.db)."
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _console() -> Console:
    # a pipe or a test runner gets a wide console: VINs are long and must never be cut
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False, markup=False)


def archive(
    study: str = typer.Option(None, help="Study name (default: the one in <root>/.current_study)."),
    top_percent: float = typer.Option(
        DEFAULT_TOP_PERCENT, help="Share of the COMPLETE trials considered, in percent (0 < p <= 100)."
    ),
    min_grade: str = typer.Option(DEFAULT_MIN_GRADE, help="Worst grade archived (S, A, B, C, D, F)."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    storage: str = typer.Option(None, help="Optuna storage URL (default: config, else <root>/optuna.db)."),
) -> None:
    """Copy the study's top trials into <root>/trial_archive/<VIN>/ and update the registry."""
    cfg = runtime_config(config, root, must_exist=False)  # run_archive names a missing root
    try:
        result = run_archive(cfg.root, runtime_storage(cfg, storage), study, top_percent, min_grade)
    except (ArchiveError, StudyDBError) as exc:  # StudyDBError is a ValueError: first
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    typer.echo(result.summary())


def _load(root: Path) -> Registry | None:
    try:
        return read_registry(root)
    except RegistryError as exc:
        raise _fail(str(exc)) from None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _baselines(storage: str, study: str) -> StudyBaselines | str | None:
    """The study's recorded baselines, None when it has none, or a line saying why they
    cannot be read (no storage, unknown study)."""
    try:
        return read_study_baselines(open_engine(storage), study)
    except StudyDBError as exc:
        return str(exc)


def _baselines_record(
    found: StudyBaselines | str | None, value: float, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``models info --json``'s ``baselines``: ``{"invested", "cash", "n_folds",
    "computed_at", "zero_action", "beats_baselines"}`` (with the model's ``model.json``
    ``meta``, the untrained start at its own decision interval, ``zero_action_interval``),
    ``{"error"}`` or ``{"recorded": False}``."""
    if isinstance(found, str):
        return {"error": found}
    if found is None:
        return {"recorded": False}
    if meta:
        with contextlib.suppress(TypeError, ValueError):  # a bad model.json: the study's best start
            found = found.at_interval(Design.from_meta(meta).decision_interval)
    return {**found.as_dict(), "beats_baselines": beats_baselines(value, found.values())}


@models_app.command("list")
def list_models(
    grade: str = typer.Option(None, help="Only models of this grade (S, A, B, C, D, F)."),
    study: str = typer.Option(None, help="Only models of this study."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    storage: str = STORAGE_OPTION,
) -> None:
    """Table of archived models, best value first: VIN, grade, whether it beats both baselines
    of its study, value, Sharpe, max drawdown, created."""
    wanted = grade.strip().upper() if grade else None
    if wanted is not None and wanted not in GRADES:
        raise _fail(f"--grade must be one of {', '.join(GRADES)}, got {grade!r}", 2)
    cfg = runtime_config(config, root)
    root, storage = cfg.root, runtime_storage(cfg, storage)
    registry = _load(root)
    if registry is None:
        typer.echo(f"no archived models: {registry_path(root)} does not exist (run `cappuccino archive`)")
        return
    rows = [
        e
        for e in registry.models
        if (wanted is None or e.grade == wanted) and (study is None or e.study == study)
    ]
    filters = ", ".join(f for f in (wanted and f"grade {wanted}", study and f"study {study}") if f)
    if not rows:
        typer.echo(
            f"no archived models{' with ' + filters if filters else ''} ({len(registry.models)} in all)"
        )
        return
    table = Table(title=f"archived models{' (' + filters + ')' if filters else ''}: {len(rows)}")
    for column, justify in (
        ("VIN", "left"),
        ("grade", "center"),
        ("beats baselines", "center"),
        ("value", "right"),
        ("Sharpe", "right"),
        ("max drawdown", "right"),
        ("created", "left"),
        ("study", "left"),
        ("trial", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=column == "VIN")  # type: ignore[arg-type]
    found = {name: _baselines(storage, name) for name in {e.study for e in rows}}
    for e in rows:
        base = found[e.study]
        verdict = beats_baselines(e.value, base.values()) if isinstance(base, StudyBaselines) else None
        table.add_row(
            e.dir,
            e.grade,
            "-" if verdict is None else ("yes" if verdict else "no"),
            f"{e.value:.4f}",
            _fmt(e.metrics.get("sharpe"), ".2f"),
            _fmt(e.metrics.get("max_drawdown"), ".1%"),
            (e.created_at or "-")[:10],
            e.study,
            str(e.trial_number),
        )
    _console().print(table)


def _resolve(registry: Registry, root: Path, name: str) -> ArchiveEntry:
    found = registry.find(name)
    if not found:
        raise _fail(f"no archived model {name!r} in {registry_path(root)}; see `cappuccino models list`")
    if len(found) > 1:
        dirs = ", ".join(e.dir for e in found)
        raise _fail(
            f"{len(found)} archived models share the VIN {name!r} ({dirs}); name one of these folders"
        )
    return found[0]


def _print_info(entry: ArchiveEntry, directory: Path, record: dict[str, Any], problems: list[str]) -> None:
    console = _console()
    table = Table(title=f"archived model {entry.dir}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    base = record.get("baselines") or {}
    values = baseline_values(base)
    grade = grade_with_baselines(entry.grade, entry.value, values)
    if "error" in base:
        grade = f"{entry.grade} (baselines unknown: {base['error']})"
    rows: list[tuple[str, Any]] = [
        (k, grade if k == "grade" else v) for k, v in entry.model_dump().items() if k != "metrics"
    ]
    line = vs_baselines_line(f"value {entry.value:.4f}", base)
    if line is not None:
        rows.append(("vs baselines", line))
    rows += [(f"metrics.{k}", v) for k, v in entry.metrics.items()]
    metadata = record.get("metadata") or {}
    rows += [(k, metadata.get(k)) for k in ("source", *PROVENANCE_KEYS) if k in metadata]
    rows += [(f"hyperparams.{k}", v) for k, v in sorted((record.get("hyperparams") or {}).items())]
    model = record.get("model") or {}
    spec = model.get("observation_spec") or {}
    rows += [("architecture", model.get("architecture")), ("symbols", spec.get("symbols"))]
    rows += [("lookback", spec.get("lookback")), ("folder", str(directory))]
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    folds = [f for f in metadata.get("fold_metrics") or [] if isinstance(f, dict)]
    if folds:
        per_fold = Table(title="walk-forward folds (test slices; Sharpe annualised, 8760 bars/year)")
        for column in ("fold", *FOLD_COLUMNS):
            per_fold.add_column(column, justify="right")
        for i, fold in enumerate(folds):
            per_fold.add_row(str(fold.get("fold", i)), *(_fmt(fold.get(k), ".4f") for k in FOLD_COLUMNS))
        console.print(per_fold)
    if problems:
        console.print("integrity: FAILED")
        for line in problems:
            console.print(f"  {line}", soft_wrap=True)
    else:
        console.print(f"integrity: ok (actor.pth sha256 {entry.sha256} matches the registry and model.json)")


@models_app.command("info")
def info(
    vin: str = typer.Argument(..., help="VIN or archive folder name (see `cappuccino models list`)."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the record as one JSON object."),
    storage: str = STORAGE_OPTION,
) -> None:
    """One archived model's full record, its grade against its study's constant-policy
    baselines, and an integrity check of its files (exit 1 if it fails)."""
    cfg = runtime_config(config, root)
    root, storage = cfg.root, runtime_storage(cfg, storage)
    registry = _load(root)
    if registry is None:
        raise _fail(f"{registry_path(root)} does not exist (run `cappuccino archive` first)")
    entry = _resolve(registry, root, vin)
    directory = archive_dir(root) / entry.dir
    problems = check_integrity(root, entry)
    same_vin = [e.dir for e in registry.models if e.vin == entry.vin and e.dir != entry.dir]
    model = read_json_object(directory / META_FILE)
    record = {
        "entry": entry.model_dump(mode="json"),
        "same_vin": same_vin,
        "metadata": read_json_object(directory / METADATA_FILE),
        "hyperparams": read_json_object(directory / HYPERPARAMS_FILE),
        "model": model,
        "integrity": problems or "ok",
        "baselines": _baselines_record(_baselines(storage, entry.study), entry.value, model),
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        _print_info(entry, directory, record, problems)
        if same_vin:
            typer.echo(f"note: {len(same_vin)} other archived model(s) share this VIN: {', '.join(same_vin)}")
    if problems:
        raise _fail(
            f"integrity check failed for {entry.dir} ({len(problems)} problem(s): {problems[0]}); "
            "run `cappuccino archive` to restore it from the trial's bundle"
        )

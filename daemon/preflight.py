"""Preflight checks run before the supervisor starts (and alone by ``cappuccino doctor``):
free disk, free memory, dataset valid, storage reachable, root writable, dependencies
importable, GPU present or not (informational)."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from daemon.config import Config
from trainers.storage import default_storage_url, redact_url

REQUIRED_MODULES = (
    "torch",
    "stable_baselines3",
    "gymnasium",
    "optuna",
    "sqlalchemy",
    "apscheduler",
    "watchdog",
    "alpaca",
    "psutil",
    "structlog",
)


@dataclass(frozen=True)
class Check:
    """One check's result; ``ok=None`` means informational."""

    name: str
    ok: bool | None
    detail: str


def _existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def run_checks(config: Config) -> list[Check]:
    """All preflight checks (never raises)."""
    checks: list[Check] = []
    root = config.root
    free_mb = shutil.disk_usage(_existing_parent(root)).free / 2**20
    need = config.preflight.min_free_disk_mb
    checks.append(Check("disk", free_mb >= need, f"{free_mb:,.0f} MB free at {root} (need {need:,} MB)"))
    avail_mb = psutil.virtual_memory().available / 2**20
    need = config.preflight.min_free_memory_mb
    checks.append(Check("memory", avail_mb >= need, f"{avail_mb:,.0f} MB available (need {need:,} MB)"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root):
            pass
        checks.append(Check("root", True, f"{root} is writable"))
    except OSError as exc:
        checks.append(Check("root", False, f"{root} is not writable: {exc}"))
    missing = []
    for name in REQUIRED_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    checks.append(
        Check(
            "dependencies", not missing, "all importable" if not missing else "missing: " + ", ".join(missing)
        )
    )
    try:
        from trainers.data import load_panel, resolve_holdout_cut, split_holdout
        from trainers.features import feature_set_names, warmup_bars
        from trainers.splits import panel_folds

        panel = load_panel(config.study.data)
        cut = resolve_holdout_cut(panel, config.study.holdout_cut)
        study, holdout = split_holdout(panel, cut)
        folds = panel_folds(
            study, config.study.mode, first_bar=warmup_bars(feature_set_names(config.training.feature_set))
        )
        checks.append(
            Check(
                "dataset",
                True,
                f"{', '.join(panel.symbols)}: {panel.timeframe.describe()}; {len(study):,} study bars, "
                f"{len(holdout):,} hold-out bars from {cut}; {config.study.mode} mode: {len(folds)} folds",
            )
        )
    except Exception as exc:
        checks.append(Check("dataset", False, str(exc)))
    url = config.study.storage or default_storage_url(root)
    try:
        from trainers.storage import prepare_sqlite
        from trainers.study_db.engine import ping

        if url.startswith("sqlite"):
            prepare_sqlite(url)
        ping(url)
        checks.append(Check("storage", True, f"{redact_url(url)} reachable"))
    except Exception as exc:
        checks.append(Check("storage", False, f"{redact_url(url)}: {type(exc).__name__}: {exc}"))
    try:
        import torch

        gpu = torch.cuda.is_available()
        detail = torch.cuda.get_device_name(0) if gpu else "no CUDA device (training runs on the CPU)"
    except Exception as exc:
        detail = f"unknown ({exc})"
    checks.append(Check("gpu", None, detail))
    return checks

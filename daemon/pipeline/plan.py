"""The pipeline's request and step results (:mod:`daemon.pipeline`): modes, argument and
configuration checks (:func:`make_plan`), and :class:`StepResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.config import Config, ConfigError, load_config
from trainers.runtime.current_study import read_current_study
from trainers.storage import default_storage_url

Mode = Literal["full", "training", "archive", "deploy"]
Outcome = Literal["ok", "failed", "refused", "interrupted", "skipped"]
MODES: tuple[str, ...] = ("full", "training", "archive", "deploy")
STEPS: dict[str, tuple[str, ...]] = {
    "full": ("clean", "training", "archive", "deploy"),
    "training": ("training",),
    "archive": ("archive",),
    "deploy": ("deploy",),
}


class PipelineError(ValueError):
    """Bad arguments or configuration (exit code 2); nothing ran. One line naming it."""


@dataclass(frozen=True)
class Plan:
    """A validated pipeline request.

    Attributes:
        mode: ``full``, ``training``, ``archive`` or ``deploy``.
        config: the loaded configuration (``--root``, ``--workers`` and ``--trials`` applied).
        config_path: the ``--config`` file (None: ``./cappuccino.toml`` if present).
        study: study name.
        storage: storage URL.
        workers: training worker processes (training modes).
        trials: finished trials the study must reach (training modes).
    """

    mode: str
    config: Config
    config_path: Path | None
    study: str
    storage: str
    workers: int
    trials: int

    @property
    def root(self) -> Path:
        return self.config.root

    @property
    def steps(self) -> tuple[str, ...]:
        return STEPS[self.mode]


def make_plan(
    mode: str,
    config_path: Path | None = None,
    root: Path | None = None,
    study: str | None = None,
    workers: int | None = None,
    trials: int | None = None,
) -> Plan:
    """Validate the arguments and load the configuration.

    Args:
        mode: one of :data:`MODES`.
        config_path: TOML config (None: ``./cappuccino.toml`` if it exists).
        root: runtime root (overrides the config).
        study: study name (default ``<root>/.current_study``, then ``study.name``).
        workers: worker processes (default ``workers.count``); training modes only, >= 1.
        trials: finished trials to reach (default ``study.n_trials``); training modes only, >= 1.

    Raises:
        PipelineError: unknown mode, an option the mode does not use, a value out of range,
            a bad config, or no study name.
    """
    if mode not in MODES:
        raise PipelineError(f"--mode: use one of {', '.join(MODES)}, not {mode!r}")
    trains = mode in ("full", "training")
    if not trains and (workers is not None or trials is not None):
        raise PipelineError(f"--workers/--trials only apply to --mode full|training, not --mode {mode}")
    if workers is not None and workers < 1:
        raise PipelineError(f"--workers must be >= 1, got {workers}")
    if trials is not None and trials < 1:
        raise PipelineError(f"--trials must be >= 1, got {trials}")
    overrides: dict[str, Any] = {}
    if root is not None:
        overrides["root"] = root
    if workers is not None:
        overrides["workers"] = {"count": workers}
    if trials is not None:
        overrides["study"] = {"n_trials": trials}
    try:
        cfg = load_config(config_path, overrides or None)
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    if trains and cfg.workers.count < 1:
        raise PipelineError("workers.count is 0 in the config: pass --workers W (>= 1) to train")
    if mode in ("full", "deploy"):
        try:
            int(cfg.deploy.slot)
        except ValueError:
            raise PipelineError(f"deploy.slot: not a slot number ({cfg.deploy.slot!r})") from None
    name = study or read_current_study(cfg.root) or cfg.study.name
    if not name:
        raise PipelineError(
            f"no study: pass --study, write one to {cfg.root / '.current_study'} "
            "(bin/sync_training_study NAME) or set study.name in the config"
        )
    return Plan(
        mode=mode,
        config=cfg,
        config_path=config_path,
        study=name,
        storage=cfg.study.storage or default_storage_url(cfg.root),
        workers=cfg.workers.count,
        trials=cfg.study.n_trials,
    )


@dataclass
class StepResult:
    """One step's outcome.

    Attributes:
        name: ``clean``, ``training``, ``archive`` or ``deploy``.
        outcome: ``ok``, ``failed``, ``refused``, ``interrupted`` or ``skipped``.
        detail: one line with the key figures (or the error).
        figures: the key figures as JSON-ready values.
        notes: further lines for the summary (deploy reasons, skipped trials).
        duration_s: seconds the step ran.
    """

    name: str
    outcome: Outcome
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome,
            "detail": self.detail,
            "figures": self.figures,
            "notes": self.notes,
            "duration_s": round(self.duration_s, 2),
        }


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception (one summary line)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def fmt_value(value: float | None) -> str:
    """An objective value with 4 decimals, or ``none``."""
    return "none" if value is None else f"{value:.4f}"

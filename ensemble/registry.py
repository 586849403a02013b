"""The model registry of the trial archive: ``<root>/trial_archive/trial_registry.json``.

Layout (docs/ARCHITECTURE.md section 2; the archive job is the only writer)::

    trial_archive/
      trial_registry.json        this registry (written atomically)
      <dir>/                     one archived trial; <dir> is its VIN, or VIN-T<number> on a collision
        actor.pth                the trial's actor state_dict (bytes as trained)
        model.json               the trial's bundle metadata (as trained)
        hyperparams.json         the trial's decoded hyperparameters (FrozenTrial.params)
        metadata.json            the registry entry plus per-fold metrics and provenance

The registry holds one :class:`ArchiveEntry` per archived trial, best value first, and
totals by grade and by algorithm. An entry is identified by (study, trial id, sha256 of
``actor.pth``). Kept free of torch so that light processes (status, dashboard) can read it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainers.atomic_io import read_json, sha256_file
from trainers.naming import GRADES

SCHEMA_VERSION = 1
ARCHIVE_DIR = "trial_archive"
REGISTRY_FILE = "trial_registry.json"
ACTOR_FILE = "actor.pth"  # same names as trainers.bundle (not imported: it loads torch)
META_FILE = "model.json"
HYPERPARAMS_FILE = "hyperparams.json"
METADATA_FILE = "metadata.json"
ARCHIVE_FILES = (METADATA_FILE, HYPERPARAMS_FILE, ACTOR_FILE, META_FILE)
# trial user attributes copied into metadata.json (what data and pipeline trained the model)
PROVENANCE_KEYS = ("data_fingerprint", "feature_pipeline_version", "mode", "budget_steps")


class RegistryError(ValueError):
    """An unreadable registry or archived model; the message names the file and the problem."""


class ArchiveEntry(BaseModel):
    """One archived trial as listed in the registry.

    Attributes:
        dir: folder name under ``trial_archive/`` (the VIN, or ``<VIN>-T<trial number>``
            when another trial already holds that VIN; see :mod:`ensemble.archive`).
        vin: the trial's VIN (:mod:`trainers.naming`).
        grade: grade of the objective value (``S`` best .. ``F``).
        value: objective value (mean minus 0.1 std of the per-fold excess Sharpe ratio).
        algorithm: training algorithm (``PPO``).
        study, trial_number, trial_id: where the trial comes from.
        sha256: hex sha256 of ``actor.pth``.
        metrics: summary over the walk-forward folds' test slices (see
            :func:`summarise_folds`): Sharpe ratios annualised with 8,760 bars/year,
            drawdowns and returns as fractions.
        created_at: when the trial saved its bundle (UTC, ISO 8601).
        archived_at: when the trial was first archived (UTC, ISO 8601).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    vin: str
    grade: Literal["S", "A", "B", "C", "D", "F"]
    value: float
    algorithm: str
    study: str
    trial_number: int = Field(ge=0)
    trial_id: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, float | int | None]
    created_at: str | None
    archived_at: str

    @property
    def key(self) -> tuple[str, int, str]:
        """Identity: (study, trial id, sha256)."""
        return (self.study, self.trial_id, self.sha256)


class Registry(BaseModel):
    """``trial_registry.json``: entries best value first, and totals."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    models: list[ArchiveEntry] = Field(default_factory=list)
    totals: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def build(cls, entries: list[ArchiveEntry]) -> Registry:
        """A registry of ``entries`` in canonical order (value desc, study, trial number,
        folder) with totals ``{"models": n, "by_grade": {S..F: n}, "by_algorithm": {...}}``."""
        ordered = sorted(entries, key=lambda e: (-e.value, e.study, e.trial_number, e.dir))
        grades = Counter(e.grade for e in ordered)
        algorithms = Counter(e.algorithm for e in ordered)
        totals = {
            "models": len(ordered),
            "by_grade": {g: grades.get(g, 0) for g in GRADES},
            "by_algorithm": dict(sorted(algorithms.items())),
        }
        return cls(models=ordered, totals=totals)

    def to_bytes(self) -> bytes:
        """The file's exact bytes (sorted keys, indent 2): equal registries give equal bytes."""
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()

    def find(self, name: str) -> list[ArchiveEntry]:
        """Entries whose folder is ``name``; else entries whose VIN is ``name`` (several
        when trials share a VIN)."""
        exact = [e for e in self.models if e.dir == name]
        return exact or [e for e in self.models if e.vin == name]


def archive_dir(root: str | Path) -> Path:
    """``<root>/trial_archive``."""
    return Path(root) / ARCHIVE_DIR


def registry_path(root: str | Path) -> Path:
    """``<root>/trial_archive/trial_registry.json``."""
    return archive_dir(root) / REGISTRY_FILE


def read_registry(root: str | Path) -> Registry | None:
    """The registry of ``root``'s archive, or None when there is none yet.

    Raises:
        RegistryError: the file exists but is not a valid registry (the message names it).
    """
    path = registry_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc})") from None
    try:
        return Registry.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise RegistryError(
            f"{path}: not a valid trial registry ({where}: {first['msg']}); the archive job owns this "
            "file: remove it and run `cappuccino archive` to rebuild it from the archived folders"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise RegistryError(
            str(exc) if isinstance(exc, ValueError) else f"{path}: unreadable ({exc})"
        ) from None


def read_metadata(directory: Path) -> dict[str, Any]:
    """``metadata.json`` of an archived model.

    Raises:
        RegistryError: missing, unreadable or not a JSON object.
    """
    data = _read_json(directory / METADATA_FILE)
    if not isinstance(data, dict):
        raise RegistryError(f"{directory / METADATA_FILE}: not a JSON object")
    return data


def check_integrity(root: str | Path, entry: ArchiveEntry) -> list[str]:
    """Problems of one archived model; empty when it is intact.

    Checks that the four files exist, that ``actor.pth``'s sha256 equals the registry's
    and ``model.json``'s ``actor_sha256``, and that ``metadata.json`` names the same
    study, trial id and sha256 as the registry entry. Each problem is one line naming
    the file.
    """
    directory = archive_dir(root) / entry.dir
    problems = [f"{directory / name}: missing" for name in ARCHIVE_FILES if not (directory / name).is_file()]
    if (directory / ACTOR_FILE).is_file():
        digest = sha256_file(directory / ACTOR_FILE)
        if digest != entry.sha256:
            problems.append(
                f"{directory / ACTOR_FILE}: sha256 {digest} does not match the registry's {entry.sha256} "
                "(the file was modified or replaced)"
            )
    if (directory / META_FILE).is_file():
        try:
            claimed = _read_json(directory / META_FILE).get("actor_sha256")
        except (RegistryError, AttributeError) as exc:
            problems.append(f"{directory / META_FILE}: {exc}")
        else:
            if claimed != entry.sha256:
                problems.append(
                    f"{directory / META_FILE}: actor_sha256 {claimed} does not match the registry's "
                    f"{entry.sha256}"
                )
    if (directory / METADATA_FILE).is_file():
        try:
            meta = read_metadata(directory)
        except RegistryError as exc:
            problems.append(str(exc))
        else:
            claimed_key = (meta.get("study"), meta.get("trial_id"), meta.get("sha256"))
            if claimed_key != entry.key:
                problems.append(
                    f"{directory / METADATA_FILE}: names study {claimed_key[0]!r} trial id {claimed_key[1]} "
                    f"sha256 {claimed_key[2]}, not the registry's {entry.key}"
                )
    return problems


def summarise_folds(folds: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Summary metrics of a trial over its walk-forward folds' test slices.

    Args:
        folds: the trial's ``fold_metrics`` (one dict per fold, from
            :func:`trainers.objective.train_fold`).

    Returns:
        ``folds`` (count); ``sharpe``, ``excess_sharpe``, ``benchmark_sharpe``,
        ``total_return``, ``turnover``: means over folds; ``max_drawdown``: the worst
        (largest) fold drawdown, a fraction of peak equity; ``min_excess_sharpe``: the
        worst fold. Sharpe ratios are annualised with 8,760 bars per year
        (:mod:`trainers.backtest`). A metric missing from any fold, or not finite, is None.
    """
    rows = [f for f in folds if isinstance(f, dict)]
    out: dict[str, float | int | None] = {"folds": len(rows)}

    def column(key: str) -> list[float] | None:
        vals = [f.get(key) for f in rows]
        numbers = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not rows or len(numbers) != len(rows) or not all(math.isfinite(v) for v in numbers):
            return None
        return numbers

    for key in ("sharpe", "excess_sharpe", "benchmark_sharpe", "total_return", "turnover"):
        col = column(key)
        out[key] = None if col is None else sum(col) / len(col)
    dd, ex = column("max_drawdown"), column("excess_sharpe")
    out["max_drawdown"] = None if dd is None else max(dd)
    out["min_excess_sharpe"] = None if ex is None else min(ex)
    return out

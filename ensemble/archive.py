"""The trial archive: keep a study's best trials for good (``cappuccino archive``, daily job).

:func:`run_archive` ranks the study's COMPLETE trials with a finite value by objective
value (best first, ties by trial number; :func:`ensemble.selection.rank_trials`, one
``ORDER BY ... LIMIT`` query, never a full load of the study), keeps the top
``ceil(top_percent / 100 * n_ranked)`` of them, and of those the ones whose grade is
``min_grade`` or better. Each such trial is copied into ``<root>/trial_archive/<dir>/``
(``actor.pth``, ``model.json``, ``hyperparams.json``, ``metadata.json``; see
:mod:`ensemble.registry`) and listed in ``trial_registry.json``.

Bundle source, in order: the trial's artifact (``artifact_id`` in ``<root>/artifacts``),
``<root>/<bundle_path>``, an ensemble member directory of the same identity. Before a
copy the bundle must have ``actor.pth`` with the trial's ``actor_sha256``, a
``model.json`` naming the same study, trial id and hash, and weights that load into the
declared actor; a trial that fails any of this is skipped with one ``trial_skipped`` log
line and archived on a later run once its bundle is good.

Folder names: the VIN. VINs are not unique (trials with the same VIN fields on the same
day share one), so a trial whose VIN folder is held by another trial (another study,
trial id or hash) gets ``<VIN>-T<trial number>``, and if that is held too
``<VIN>-T<trial number>-<k>`` for the smallest free ``k >= 2``. Trials are archived best
first, so within one run the best trial of a VIN gets the bare VIN; a trial keeps its
folder on every later run (found by its identity, never re-derived).

Idempotence: a trial already archived with intact files (:func:`check_integrity`) is not
touched, and the registry is rewritten only when its content changes, so a second run
changes no byte and no mtime. A damaged archived copy (missing file, other hash) of a
trial in the run's cut is rewritten from the trial's bundle, keeping its first
``archived_at``. Entries are never removed (also not when their trial leaves the cut).
A registry that is missing (deleted, or a crash between a folder's rename and the
registry write) is rebuilt from the folders' ``metadata.json``.

One archive run at a time: ``trial_archive/.archive.lock`` is held with ``flock``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from ensemble.registry import (
    ACTOR_FILE,
    HYPERPARAMS_FILE,
    META_FILE,
    METADATA_FILE,
    PROVENANCE_KEYS,
    REGISTRY_FILE,
    ArchiveEntry,
    Registry,
    RegistryError,
    archive_dir,
    check_integrity,
    read_registry,
    registry_path,
    summarise_folds,
)
from ensemble.selection import BundleSkip, locate_bundle, verify_bundle
from trainers.artifact_store import ArtifactStoreUnavailable
from trainers.atomic_io import atomic_write_bytes, fsync_dir, read_json
from trainers.naming import GRADES, grade_at_least, grade_for
from trainers.runtime.current_study import require_current_study
from trainers.runtime.pidlock import PidLock, holding
from trainers.storage import default_storage_url
from trainers.study_db import RankedTrial, count_ranked, open_engine, rank_trials

DEFAULT_TOP_PERCENT = 10.0
DEFAULT_MIN_GRADE = "A"
LOCK_FILE = ".archive.lock"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class ArchiveError(RuntimeError):
    """The archive run could not proceed; the archive is left as it was. The message says
    why and what to do."""


class ArchiveBusy(ArchiveError):
    """Another archive run holds ``trial_archive/.archive.lock``."""


@dataclass(frozen=True)
class ArchiveSkip:
    """A trial of the top set that was not archived (reason ``missing``, ``hash``,
    ``identity``, ``invalid`` or ``vin``) with the details."""

    trial_number: int
    trial_id: int
    value: float
    reason: str
    detail: str


@dataclass
class ArchiveResult:
    """What an archive run did.

    Attributes:
        study: the study archived.
        top_percent, min_grade: the cut asked for (percent; worst grade kept).
        ranked: COMPLETE trials with a finite value in the study.
        top: trials in the top-percent cut, ``ceil(top_percent / 100 * ranked)``.
        eligible: trials of the cut with grade ``min_grade`` or better.
        added: folders written for trials archived for the first time.
        repaired: folders rewritten because the archived copy was damaged.
        unchanged: folders of eligible trials already archived intact.
        skipped: eligible trials whose bundle was missing or bad.
        registry_changed: whether ``trial_registry.json`` was (re)written.
        total: models in the registry after the run (all studies, all runs).
    """

    study: str
    top_percent: float
    min_grade: str
    ranked: int
    top: int
    eligible: int
    added: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[ArchiveSkip] = field(default_factory=list)
    registry_changed: bool = False
    total: int = 0

    def summary(self) -> str:
        """A few human lines: the cut, what was written, and each skipped trial."""
        lines = [
            f"study {self.study}: {self.ranked} complete trials, top {self.top_percent:g}% = {self.top}, "
            f"{self.eligible} graded {self.min_grade} or better: {len(self.added)} added, "
            f"{len(self.repaired)} repaired, {len(self.unchanged)} unchanged, {len(self.skipped)} skipped; "
            f"registry {self.total} models ({'updated' if self.registry_changed else 'unchanged'})"
        ]
        lines += [f"  archived {name}" for name in self.added]
        lines += [f"  repaired {name}" for name in self.repaired]
        lines += [
            f"  skipped trial {s.trial_number} (id {s.trial_id}, value {s.value:.4f}): {s.reason}: {s.detail}"
            for s in self.skipped
        ]
        return "\n".join(lines)


def top_count(n_ranked: int, top_percent: float) -> int:
    """Size of the top-percent cut: ``ceil(top_percent / 100 * n_ranked)`` (at least one
    trial when there is any; the product is rounded to 9 decimals first so that 10% of
    30 is 3, not 4)."""
    return math.ceil(round(n_ranked * top_percent / 100.0, 9))


def allocate_dir(vin: str, trial_number: int, taken: set[str]) -> str:
    """Folder name of a newly archived trial: ``vin``, else ``<vin>-T<trial_number>``,
    else ``<vin>-T<trial_number>-<k>`` with the smallest free ``k >= 2``."""
    for candidate in (vin, f"{vin}-T{trial_number}"):
        if candidate not in taken:
            return candidate
    k = 2
    while f"{vin}-T{trial_number}-{k}" in taken:
        k += 1
    return f"{vin}-T{trial_number}-{k}"


def trial_grade(trial: RankedTrial) -> str:
    """The trial's ``grade`` attribute, or the default grade of its value when it has none."""
    grade = trial.user_attrs.get("grade")
    return grade if isinstance(grade, str) and grade in GRADES else grade_for(trial.value)


def _archive_lock(directory: Path) -> AbstractContextManager[PidLock]:
    path = directory / LOCK_FILE
    return holding(
        path, lambda held: ArchiveBusy(f"{path}: another archive run is in progress ({held.holder})")
    )


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def _entry_from_metadata(meta: dict[str, Any]) -> ArchiveEntry:
    return ArchiveEntry.model_validate({k: meta.get(k) for k in ArchiveEntry.model_fields})


def _load_entries(arch: Path, root: Path, log: Any) -> dict[str, ArchiveEntry]:
    """Registry entries by folder, plus folders with a valid ``metadata.json`` that the
    registry does not list (a crash after a rename, or a deleted registry)."""
    try:
        registry = read_registry(root)
    except RegistryError as exc:
        raise ArchiveError(str(exc)) from None
    entries = {e.dir: e for e in registry.models} if registry else {}
    for folder in sorted(p for p in arch.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in entries or not (folder / METADATA_FILE).is_file():
            continue
        try:
            entry = _entry_from_metadata(read_json(folder / METADATA_FILE))
        except (OSError, ValueError, AttributeError, ValidationError):
            continue  # not an archived model: its name is taken, never overwritten
        if entry.dir == folder.name and entry.key not in {e.key for e in entries.values()}:
            entries[entry.dir] = entry
            log.info("archive_adopted", dir=entry.dir, trial=entry.trial_number, note="not in the registry")
    return entries


def _write_model(arch: Path, name: str, bundle_dir: Path, sha256: str, files: dict[str, bytes]) -> None:
    """Write one archived model: a temp folder in ``arch`` renamed to ``arch/name`` (a
    damaged folder of that name is moved aside first and removed after)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=arch))
    try:
        actor = (bundle_dir / ACTOR_FILE).read_bytes()
        if hashlib.sha256(actor).hexdigest() != sha256:
            raise BundleSkip("hash", f"{bundle_dir / ACTOR_FILE} changed while it was copied")
        atomic_write_bytes(tmp / ACTOR_FILE, actor)
        atomic_write_bytes(tmp / META_FILE, (bundle_dir / META_FILE).read_bytes())
        for fname, data in files.items():
            atomic_write_bytes(tmp / fname, data)
        tmp.chmod(0o755)
        final = arch / name
        trash = None
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".trash-{name}-", dir=arch))
            os.rename(final, trash)
        os.rename(tmp, final)
        fsync_dir(arch)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _clean_leftovers(arch: Path) -> None:
    for entry in arch.iterdir():  # ours or a crashed run's: the lock is held
        if entry.is_dir() and entry.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(entry, ignore_errors=True)


def run_archive(
    root: str | Path,
    storage: str | None = None,
    study: str | None = None,
    top_percent: float = DEFAULT_TOP_PERCENT,
    min_grade: str = DEFAULT_MIN_GRADE,
    log: Any = None,
) -> ArchiveResult:
    """Archive the top trials of ``study`` into ``<root>/trial_archive`` (module docstring).

    Args:
        root: runtime root (``artifacts/``, the trials' ``bundle_path`` and
            ``trial_archive/`` are under it).
        storage: Optuna storage URL (default ``sqlite:///<root>/optuna.db``).
        study: study name (default: ``<root>/.current_study``).
        top_percent: share of the ranked trials considered, in percent, ``0 < p <= 100``.
        min_grade: worst grade archived (``S`` best .. ``F``), case-insensitive.
        log: structlog logger (default ``ensemble.archive``).

    Returns:
        What the run did (:class:`ArchiveResult`).

    Raises:
        ValueError: ``top_percent`` or ``min_grade`` out of range.
        ArchiveError: no root, no study name, unreadable registry, or another run holds
            the lock (:class:`ArchiveBusy`); nothing was changed. Also the artifact store
            could not be reached for a bundle no other source has: the trials archived
            before it stay, the registry is unchanged (the next run completes it).
        trainers.study_db.StudyDBError: unknown study, no SQLite file, unreachable
            storage; nothing was changed.
    """
    if not (0.0 < top_percent <= 100.0):
        raise ValueError(f"--top-percent must be in (0, 100], got {top_percent}")
    grade = min_grade.strip().upper()
    if grade not in GRADES:
        raise ValueError(f"--min-grade must be one of {', '.join(GRADES)}, got {min_grade!r}")
    root = Path(root)
    if not root.is_dir():
        raise ArchiveError(f"{root}: the runtime root does not exist (check --root / CAPPUCCINO_ROOT)")
    try:
        name = study or require_current_study(root)
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    log = log or structlog.get_logger("ensemble.archive").bind(
        component="archive", study=name, pid=os.getpid()
    )
    engine = open_engine(storage or default_storage_url(root))
    try:
        n_ranked = count_ranked(engine, name)
        k = top_count(n_ranked, top_percent)
        ranked = rank_trials(engine, name, k) if k else []
    finally:
        engine.dispose()
    eligible = [t for t in ranked if grade_at_least(trial_grade(t), grade)]
    arch = archive_dir(root)
    arch.mkdir(exist_ok=True)
    result = ArchiveResult(name, top_percent, grade, n_ranked, k, len(eligible))
    with _archive_lock(arch), tempfile.TemporaryDirectory(prefix="cappuccino-archive-") as staging:
        _clean_leftovers(arch)
        entries = _load_entries(arch, root, log)
        try:
            for trial in eligible:
                _archive_trial(trial, root, arch, Path(staging), entries, result, log)
        except ArtifactStoreUnavailable as exc:  # not a missing bundle: stop, try again next run
            raise ArchiveError(f"{exc}; the archive stopped, its registry is unchanged") from None
        registry = Registry.build(list(entries.values()))
        data = registry.to_bytes()
        path = registry_path(root)
        if not path.is_file() or path.read_bytes() != data:
            atomic_write_bytes(path, data)
            result.registry_changed = True
        result.total = len(registry.models)
        _clean_leftovers(arch)
    log.info(
        "archive_done",
        ranked=n_ranked,
        top=k,
        eligible=len(eligible),
        added=len(result.added),
        repaired=len(result.repaired),
        unchanged=len(result.unchanged),
        skipped=len(result.skipped),
        registry_changed=result.registry_changed,
        total=result.total,
    )
    return result


def _archive_trial(
    trial: RankedTrial,
    root: Path,
    arch: Path,
    staging: Path,
    entries: dict[str, ArchiveEntry],
    result: ArchiveResult,
    log: Any,
) -> None:
    """Archive one eligible trial (or find it intact, or record why it was skipped)."""
    sha256 = trial.user_attrs.get("actor_sha256")
    name: str | None = None
    old: ArchiveEntry | None = None  # the damaged archived copy being repaired
    try:
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise BundleSkip("missing", "the trial has no actor_sha256 attribute (no bundle was saved)")
        key = (trial.study, trial.trial_id, sha256)
        name = next((n for n, e in entries.items() if e.key == key), None)
        if name is not None:
            if not check_integrity(root, entries[name]):
                result.unchanged.append(name)
                return
            old = entries[name]
        bundle_dir, source, where = locate_bundle(trial, root, staging, root / "ensemble", sha256)
        meta = verify_bundle(trial, bundle_dir, where, sha256, None)
        vin = str(trial.user_attrs.get("vin") or meta.get("vin") or "")
        if not _SAFE_NAME.match(vin):
            raise BundleSkip("vin", f"VIN {vin!r} is not a usable folder name")
        if name is None:
            taken = set(entries) | {p.name for p in arch.iterdir()} | {REGISTRY_FILE}
            name = allocate_dir(vin, trial.number, taken)
        folds = trial.user_attrs.get("fold_metrics")
        if not isinstance(folds, list):
            folds = (meta.get("metrics") or {}).get("folds") or []
        entry = ArchiveEntry(
            dir=name,
            vin=vin,
            grade=trial_grade(trial),
            value=trial.value,
            algorithm=str(meta.get("algorithm") or "PPO"),
            study=trial.study,
            trial_number=trial.number,
            trial_id=trial.trial_id,
            sha256=sha256,
            metrics=summarise_folds(folds),
            created_at=meta.get("created_at"),
            archived_at=old.archived_at if old else datetime.now(UTC).isoformat(timespec="seconds"),
        )
        metadata = {
            **entry.model_dump(mode="json"),
            "fold_metrics": folds,
            "source": source,
            **{k: trial.user_attrs.get(k) for k in PROVENANCE_KEYS},
        }
        files = {HYPERPARAMS_FILE: _json_bytes(trial.params), METADATA_FILE: _json_bytes(metadata)}
        _write_model(arch, name, bundle_dir, sha256, files)
    except BundleSkip as skip:
        detail = skip.detail if old is None else f"archived copy {old.dir} is damaged; {skip.detail}"
        result.skipped.append(ArchiveSkip(trial.number, trial.trial_id, trial.value, skip.reason, detail))
        log.warning(
            "trial_skipped",
            trial=trial.number,
            trial_id=trial.trial_id,
            value=trial.value,
            reason=skip.reason,
            detail=detail,
        )
        return
    entries[name] = entry
    (result.repaired if old else result.added).append(name)
    log.info(
        "trial_archived" if old is None else "archive_repaired",
        trial=trial.number,
        trial_id=trial.trial_id,
        dir=name,
        vin=vin,
        grade=entry.grade,
        value=trial.value,
        source=source,
    )

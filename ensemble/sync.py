"""Ensemble sync: make ``<root>/ensemble/`` hold the study's top-N trials (docs/ARCHITECTURE.md section 5).

Order of writes, so a reader never sees a manifest that points at a missing member:

1. each new member's bundle is copied into a temp folder inside ``ensemble/`` (files
   fsynced, hash re-checked) and renamed to its immutable ``model_<trial_id>_<sha12>``;
2. the manifest is replaced atomically with ``generation`` + 1;
3. ``ensemble/.reload`` is touched;
4. member directories the new manifest no longer refers to are removed.

Before step 2 the new generation is recorded in ``ensemble/generations.json``
(:mod:`ensemble.generations`): generations only increase, even across a rebuilt or removed
manifest. Step 4 never removes a member directory that the paper trader's status file says
its current ensemble uses (it goes at a later sync, once the trader has moved on).

The manifest is derived state. A sync that finds it unreadable (truncated, not JSON, a
schema violation, a digest that does not match) keeps the file aside as
``ensemble_manifest.json.corrupt-<UTC time>``, rebuilds the manifest from the study above
the highest generation ever published and records the rebuild (``SyncResult.rebuilt``, and
in ``generations.json``, from which the supervisor's monitor raises a ``manifest_rebuilt``
alert). A missing manifest is rebuilt the same way (nothing to keep aside).

A sync whose membership (the ordered list of (study, trial id, sha256)) equals the
manifest's, with every member directory intact, publishes nothing: no new generation, no
manifest written; it only removes member directories that neither the manifest nor the
trader uses any more (left behind while the trader used them). Syncing another study than
the manifest's replaces the whole membership. Artifacts are unpacked into a staging folder
outside ``ensemble/``. One sync at a time: ``ensemble/.sync.lock`` is held with ``flock``
for the duration.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from ensemble.generations import (
    REBUILDS_KEPT,
    GenerationRecord,
    Rebuild,
    TraderUse,
    highest_generation,
    read_generations,
    set_aside,
    trader_use,
    write_generations,
)
from ensemble.manifest import (
    Combine,
    Manifest,
    ManifestError,
    Member,
    manifest_path,
    member_dir_name,
    read_manifest,
    touch_reload,
    write_manifest,
)
from ensemble.selection import DEFAULT_TOP_N, SelectedTrial, SkippedTrial, select_top_n
from trainers.artifact_store import ArtifactStoreUnavailable
from trainers.atomic_io import fsync_dir
from trainers.bundle import ACTOR_FILE, META_FILE, BundleError, PipelineSpec, common_costs, sha256_file
from trainers.runtime.pidlock import PidLock, holding

ENSEMBLE_DIR = "ensemble"
LOCK_FILE = ".sync.lock"
MEMBER_PREFIX = "model_"


class SyncError(RuntimeError):
    """The ensemble was left as it was; the message says why and what to do."""


class SyncBusy(SyncError):
    """Another sync holds ``ensemble/.sync.lock``."""


@dataclass(frozen=True)
class SyncResult:
    """What a sync did.

    Attributes:
        study: the study synced.
        generation: the manifest's generation after the sync.
        changed: whether a new manifest was written.
        members: the manifest's members, best first.
        added: member directory names written by this sync.
        removed: member directory names removed by this sync.
        skipped: ranked trials that were not usable (with reasons).
        rebuilt: set when the manifest was unreadable or missing and this sync rebuilt it
            from the study (why, the generation, the name of the file kept aside).
        kept: stale member directory names left in place because the paper trader's
            current ensemble uses them.
    """

    study: str
    generation: int
    changed: bool
    members: list[Member]
    added: list[str]
    removed: list[str]
    skipped: list[SkippedTrial]
    rebuilt: Rebuild | None = None
    kept: list[str] = field(default_factory=list)


def ensemble_dir(root: str | Path) -> Path:
    """``<root>/ensemble``."""
    return Path(root) / ENSEMBLE_DIR


def _sync_lock(directory: Path) -> AbstractContextManager[PidLock]:
    path = directory / LOCK_FILE
    return holding(
        path, lambda held: SyncBusy(f"{path}: another sync is running ({held.holder}); try again later")
    )


def member_is_intact(directory: Path, sha256: str) -> bool:
    """Whether a member directory holds ``model.json`` and an ``actor.pth`` of this sha256."""
    actor = directory / ACTOR_FILE
    return (directory / META_FILE).is_file() and actor.is_file() and sha256_file(actor) == sha256


def _write_member(ens: Path, chosen: SelectedTrial) -> str:
    """Copy a verified bundle into ``ens/model_<trial_id>_<sha12>`` (temp folder + rename)."""
    name = member_dir_name(chosen.trial.trial_id, chosen.sha256)
    final = ens / name
    if final.exists():  # damaged (not intact): move it aside, removed with the old members
        os.rename(final, tempfile.mkdtemp(prefix=f".trash-{name}-", dir=ens))
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=ens))
    try:
        for fname in (ACTOR_FILE, META_FILE):
            with open(chosen.bundle_dir / fname, "rb") as src, open(tmp / fname, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.flush()
                os.fsync(dst.fileno())
        if sha256_file(tmp / ACTOR_FILE) != chosen.sha256:
            raise SyncError(f"{chosen.bundle_dir}: {ACTOR_FILE} changed while it was copied; run sync again")
        tmp.chmod(0o755)
        fsync_dir(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name


def _read_current(ens: Path) -> tuple[Manifest | None, str | None]:
    """``(manifest, None)``, ``(None, why it is unreadable)``, or ``(None, None)`` if missing."""
    path = manifest_path(ens)
    if not path.exists():
        return None, None
    try:
        return read_manifest(path), None
    except ManifestError as exc:
        return None, str(exc)


def _read_record(ens: Path, log: Any) -> GenerationRecord | None:
    try:
        return read_generations(ens)
    except ManifestError as exc:  # derived as well: the other sources still bound the generation
        log.warning("generation_record_unreadable", error=str(exc), note="rewritten at the next publish")
        return None


def _remove_stale(
    ens: Path, keep: set[str], trader: TraderUse | None, log: Any
) -> tuple[list[str], list[str]]:
    """Remove member folders outside ``keep`` (and leftovers of ours or of a crashed sync),
    except those the trader's current ensemble uses. Returns ``(removed, kept for the trader)``."""
    in_use = trader.member_dirs if trader is not None and trader.running else frozenset()
    removed, kept = [], []
    for entry in sorted(ens.iterdir()):
        stale_member = entry.name.startswith(MEMBER_PREFIX) and entry.name not in keep
        leftover = entry.name.startswith((".trash-", ".tmp-"))  # ours, or a crashed sync's (lock held)
        if not entry.is_dir() or not (stale_member or leftover):
            continue
        if stale_member and entry.name in in_use:
            kept.append(entry.name)
            continue
        shutil.rmtree(entry)
        if stale_member:
            removed.append(entry.name)
    if kept:
        log.info("members_kept_for_trader", kept=kept, trader_generation=trader and trader.generation)
    return removed, kept


def sync_ensemble(
    root: str | Path,
    storage: str,
    study: str,
    pipeline: PipelineSpec,
    top_n: int = DEFAULT_TOP_N,
    combine: Combine | None = None,
    log: Any = None,
) -> SyncResult:
    """Bring ``<root>/ensemble`` in line with the top ``top_n`` trials of ``study``.

    Args:
        root: runtime root.
        storage: Optuna storage URL.
        study: study name.
        pipeline: what the paper trader can feed (members must pass its spec check).
        top_n: members wanted (fewer when fewer trials are usable).
        combine: combine rule of a new manifest (default: keep the current one, else mean).
        log: structlog logger (default ``ensemble.sync``).

    Returns:
        What was done (``changed`` is False when the membership is unchanged).

    Raises:
        SyncError: the root does not exist, another sync holds the lock
            (:class:`SyncBusy`), the artifact store cannot be reached for a bundle that no
            other source has, no ranked trial is usable, or the selected trials were
            trained with different costs. The ensemble is left untouched (an unreadable
            manifest too: it is rebuilt only when there is something to rebuild it from).
        trainers.study_db.StudyDBError: unknown study or unreadable storage (untouched).
    """
    log = log or structlog.get_logger("ensemble.sync").bind(component="sync", study=study, pid=os.getpid())
    if not Path(root).is_dir():
        raise SyncError(f"{root}: the runtime root does not exist (check --root / CAPPUCCINO_ROOT)")
    ens = ensemble_dir(root)
    created = not ens.exists()
    ens.mkdir(exist_ok=True)
    try:
        return _sync_locked(ens, root, storage, study, pipeline, top_n, combine, log)
    except SyncBusy:
        raise
    except BaseException:
        # a failed first sync leaves no empty ensemble folder behind
        if created and {p.name for p in ens.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(ens, ignore_errors=True)
        raise


def _sync_locked(
    ens: Path,
    root: str | Path,
    storage: str,
    study: str,
    pipeline: PipelineSpec,
    top_n: int,
    combine: Combine | None,
    log: Any,
) -> SyncResult:
    with _sync_lock(ens), tempfile.TemporaryDirectory(prefix="cappuccino-sync-") as staging:
        current, unreadable = _read_current(ens)
        if unreadable is not None:
            log.error("manifest_unreadable", error=unreadable, note="rebuilding it from the study")
        kept_note = f"; the unreadable manifest stays as it is ({unreadable})" if unreadable else ""
        try:
            selection = select_top_n(storage, study, root, pipeline, staging, top_n, ens, log)
        except ArtifactStoreUnavailable as exc:
            raise SyncError(f"{exc}; the ensemble is unchanged{kept_note}") from None
        if not selection.selected:
            raise SyncError(
                f"study {study!r}: no usable COMPLETE trial ({len(selection.skipped)} skipped, see the log); "
                f"the ensemble is unchanged{kept_note}"
            )
        try:
            common_costs([(f"trial {s.trial.number} ({s.vin})", s.meta) for s in selection.selected])
        except BundleError as exc:
            raise SyncError(
                f"study {study!r}: the top trials cannot trade as one ensemble: {exc}; the ensemble is "
                "unchanged (a study has one execution model: train its trials with the same costs)"
                f"{kept_note}"
            ) from None
        keys = [(study, s.trial.trial_id, s.sha256) for s in selection.selected]
        intact = {
            s.trial.trial_id: member_is_intact(ens / member_dir_name(s.trial.trial_id, s.sha256), s.sha256)
            for s in selection.selected
        }
        rule: Combine = combine or (current.combine if current else "mean")
        record = _read_record(ens, log)
        trader = trader_use(root)
        if (
            current is not None
            and current.member_keys() == keys
            and current.combine == rule
            and all(intact.values())
        ):
            if record is None or record.highest < current.generation:  # a root from before the record
                write_generations(ens, GenerationRecord(highest=current.generation))
            removed, kept = _remove_stale(ens, {m.bundle_path for m in current.members}, trader, log)
            log.info("ensemble_unchanged", generation=current.generation, members=len(keys), removed=removed)
            return SyncResult(
                study,
                current.generation,
                False,
                list(current.members),
                [],
                removed,
                selection.skipped,
                None,
                kept,
            )
        added = [_write_member(ens, s) for s in selection.selected if not intact[s.trial.trial_id]]
        if added:
            fsync_dir(ens)
        members = [
            Member(
                slot=i,
                study=study,
                trial_number=s.trial.number,
                trial_id=s.trial.trial_id,
                value=s.trial.value,
                vin=s.vin,
                grade=s.grade,
                bundle_path=member_dir_name(s.trial.trial_id, s.sha256),
                sha256=s.sha256,
            )
            for i, s in enumerate(selection.selected)
        ]
        highest = highest_generation(ens, record, trader, [current.generation if current else None])
        generation = highest + 1
        rebuilt = None
        if current is None and (unreadable is not None or highest > 0):
            aside = set_aside(manifest_path(ens)) if unreadable is not None else None
            rebuilt = Rebuild(
                at=datetime.now(UTC).isoformat(),
                generation=generation,
                reason=unreadable or "no manifest",
                set_aside=aside,
            )
        history = [] if record is None else list(record.rebuilds)
        if rebuilt is not None:
            history = [*history, rebuilt][-REBUILDS_KEPT:]
        write_generations(ens, GenerationRecord(highest=generation, rebuilds=history))
        write_manifest(
            manifest_path(ens), Manifest(study=study, generation=generation, combine=rule, members=members)
        )
        touch_reload(ens)
        removed, kept = _remove_stale(ens, {m.bundle_path for m in members}, trader, log)
        if rebuilt is not None:
            log.warning(
                "manifest_rebuilt",
                generation=generation,
                reason=rebuilt.reason,
                set_aside=rebuilt.set_aside,
                previous_highest=highest,
            )
        log.info(
            "ensemble_synced",
            generation=generation,
            members=len(members),
            added=len(added),
            removed=len(removed),
            kept_for_trader=len(kept),
            skipped=len(selection.skipped),
        )
        return SyncResult(study, generation, True, members, added, removed, selection.skipped, rebuilt, kept)

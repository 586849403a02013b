"""Running a cleanup: plan, re-check the references right before deleting, remove."""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from daemon.cleanup.files import inside, read_meta
from daemon.cleanup.plan import plan_cleanup, read_references
from daemon.cleanup.result import CleanupResult, Kept, Removal
from daemon.cleanup.storage import lookup, referenced_trial_ids
from trainers.artifact_store import ArtifactStore, ArtifactStoreUnavailable, artifact_store_for

log = structlog.get_logger("cleanup")


def _still_unreferenced(
    root: Path, storage: str, removals: list[Removal]
) -> tuple[list[Removal], list[Kept]]:
    """Re-read the references just before deleting; split off removals now referenced."""
    refs = read_references(root)
    with lookup(storage) as db:
        ids = referenced_trial_ids(db, refs)
    keep, drop = [], []
    for r in removals:
        where = None
        if r.trial_id is not None and r.study is not None and r.number is not None:
            where = ids.get(r.trial_id) or refs.numbers.get((r.study, r.number))
            path = root / r.path
            if where is None and r.kind == "scratch" and not path.is_symlink():
                where = refs.match_meta(read_meta(path), r.study, r.number)
        if where:
            drop.append(Kept(r.path, f"referenced by {where} (became referenced during cleanup)"))
        else:
            keep.append(r)
    return keep, drop


def _remove(root: Path, rel: str, kind: str, store: ArtifactStore) -> None:
    if kind == "artifact":  # through the store only (a folder under the root, or S3)
        store.remove(rel.rsplit("/", 1)[-1])
        return
    path = root / rel
    if not inside(root, path):
        raise OSError(f"{path}: its folder is outside the root; left alone")
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def run_cleanup(
    root: str | Path,
    storage: str,
    keep_days: float = 7.0,
    keep_top: int = 20,
    dry_run: bool = False,
    study: str | None = None,
) -> CleanupResult:
    """Remove old logs, the scratch directories and artifacts of trials outside the top
    ``keep_top`` of their study, never anything referenced (see the module docstring).

    Args:
        root: runtime root.
        storage: Optuna storage URL (``sqlite:///<root>/optuna.db`` or ``postgresql://...``).
        keep_days: logs not modified for this many days go (>= 0).
        keep_top: COMPLETE trials kept per study (>= 1). Keep it at least the ensemble's
            ``top_n`` so the sync can always rebuild a member from its trial.
        dry_run: report what would go, touching nothing.
        study: restrict scratch directories and artifacts to this study.

    Returns:
        The :class:`CleanupResult`; in a dry run ``removed`` lists exactly what a real run
        (with nothing changed in between) removes.

    Raises:
        CleanupError: bad argument, unreadable reference file, unreachable storage; nothing
            was removed. A failure to remove one path is recorded in ``errors`` instead.
    """
    root = Path(root)
    plan = plan_cleanup(root, storage, keep_days, keep_top, study)
    if dry_run:
        return plan
    result = CleanupResult(root, dry_run=False, protected=plan.protected, skipped=plan.skipped)
    todo, late = _still_unreferenced(root, storage, plan.removed)
    result.protected.extend(late)
    store = artifact_store_for(root)
    for removal in todo:
        try:
            _remove(root, removal.path, removal.kind, store)
        except (OSError, ArtifactStoreUnavailable) as exc:
            result.errors.append(f"{removal.path}: {exc}")
            log.warning("cleanup_remove_failed", path=removal.path, error=str(exc))
            continue
        result.removed.append(removal)
        log.info("cleanup_removed", path=removal.path, size=removal.size, reason=removal.reason)
    log.info("cleanup_done", summary=result.summary(), freed_bytes=result.freed_bytes)
    return result

"""Planning a cleanup (the dry run): which logs, trial scratch directories and artifacts
go, which are kept by a reference and which are left alone (see :mod:`daemon.cleanup`)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from daemon.cleanup.files import inside, log_kind, open_files_under, path_size, read_meta
from daemon.cleanup.references import References, UnreadableReference, collect_references
from daemon.cleanup.result import CleanupError, CleanupResult, Kept, Kind, Removal
from daemon.cleanup.storage import lookup, referenced_trial_ids
from trainers.artifact_store import ArtifactStoreUnavailable, artifact_store_for
from trainers.runtime.layout import Layout
from trainers.study_db.lookup import TrialLookup, TrialRef

_CACHE_NAME = re.compile(r"^[0-9a-f]{64}_(\d+)$")  # trainers.bundle_cache.cache_key


def read_references(root: Path) -> References:
    """:func:`daemon.cleanup.references.collect_references`, its error as a :class:`CleanupError`."""
    try:
        return collect_references(root)
    except UnreadableReference as exc:
        raise CleanupError(f"{exc}; cleanup removed nothing") from None


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _trial_verdict(trial: TrialRef | None, storage: TrialLookup, keep_top: int) -> str | None:
    """Why this trial's files go, or None when they stay by rule."""
    if trial is None:
        return None
    if trial.state in ("FAIL", "PRUNED"):
        return f"{trial.state} trial {trial.number} of study {trial.study}"
    if trial.state == "COMPLETE" and trial.trial_id not in storage.top(trial.study):
        return f"COMPLETE trial {trial.number} of study {trial.study}, ranked outside the top {keep_top}"
    return None


def plan_cleanup(
    root: Path,
    storage: str,
    keep_days: float,
    keep_top: int,
    study: str | None = None,
    now: float | None = None,
) -> CleanupResult:
    """Decide what goes, touching nothing (the dry run).

    Args:
        root: runtime root.
        storage: Optuna storage URL.
        keep_days: logs not modified for this many days go (>= 0).
        keep_top: COMPLETE trials kept per study, best first (>= 1).
        study: only this study's scratch directories and artifacts (default: every study).
        now: epoch seconds the log ages are measured from (default: now).

    Raises:
        CleanupError: bad argument, unreadable reference file, unreachable storage or
            artifact store.
    """
    if keep_days < 0 or keep_top < 1:
        raise CleanupError(f"keep_days must be >= 0 and keep_top >= 1 (got {keep_days}, {keep_top})")
    root = Path(root)
    if not root.is_dir():
        raise CleanupError(f"root {root}: no such folder (check --root)")
    result = CleanupResult(root, dry_run=True)
    refs = read_references(root)
    with lookup(storage, keep_top) as db:
        protected_ids = referenced_trial_ids(db, refs)
        _plan_artifacts(root, db, refs, protected_ids, study, keep_top, result)
        _plan_scratch(root, db, refs, protected_ids, study, keep_top, result)
        _plan_cache(root, db, protected_ids, study, keep_top, result)
    _plan_logs(root, keep_days, time.time() if now is None else now, result)
    return result


def _plan_scratch(
    root: Path,
    db: TrialLookup,
    refs: References,
    protected_ids: dict[int, str],
    only: str | None,
    keep_top: int,
    result: CleanupResult,
) -> None:
    base = root / "trials"
    if not base.is_dir():
        return
    for study_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        name = study_dir.name
        if only is not None and name != only:
            continue
        if study_dir.is_symlink() or not inside(root, study_dir / "x"):
            result.skipped.append(Kept(_rel(root, study_dir), "symbolic link; left alone"))
            continue
        dirs = {int(p.name): p for p in study_dir.iterdir() if p.name.isdigit()}
        if not dirs:
            continue
        if db.study(name) is None:
            result.skipped.append(Kept(_rel(root, study_dir), f"study {name!r} is not in the storage"))
            continue
        trials = db.trials_by_number(name, sorted(dirs))
        for number, path in sorted(dirs.items()):
            trial = trials.get(number)
            rel = _rel(root, path)
            if trial is None:
                result.skipped.append(Kept(rel, f"trial {number} of study {name} is not in the storage"))
                continue
            reason = _trial_verdict(trial, db, keep_top)
            if reason is None:
                continue
            where = protected_ids.get(trial.trial_id) or (
                None if path.is_symlink() else refs.match_meta(read_meta(path), name, number)
            )
            if where:
                result.protected.append(Kept(rel, f"referenced by {where}"))
                continue
            result.removed.append(
                Removal(rel, path_size(path), "scratch", reason, name, trial.trial_id, trial.number)
            )


def _judge(
    rel: str,
    size: Callable[[], int],
    kind: Kind,
    trial: TrialRef,
    where: str | None,
    db: TrialLookup,
    keep_top: int,
    result: CleanupResult,
) -> None:
    """One candidate of a trial: removed when its trial's files go (:func:`_trial_verdict`)
    unless a reference (``where``) protects it."""
    reason = _trial_verdict(trial, db, keep_top)
    if reason is None:
        return
    if where:
        result.protected.append(Kept(rel, f"referenced by {where}"))
        return
    result.removed.append(Removal(rel, size(), kind, reason, trial.study, trial.trial_id, trial.number))


def _plan_cache(
    root: Path,
    db: TrialLookup,
    protected_ids: dict[int, str],
    only: str | None,
    keep_top: int,
    result: CleanupResult,
) -> None:
    """Cached bundles (``cache/bundles/<sha256>_<trial id>``) go with their trial's files;
    a folder of another name, or of a trial the storage does not know, is left alone."""
    base = Layout(root).bundle_cache_dir
    if not base.is_dir() or base.is_symlink():
        return
    folders: dict[int, Path] = {}
    for path in sorted(base.iterdir()):
        match = _CACHE_NAME.match(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            if not path.name.startswith("."):  # the cache's own temp folders start with a dot
                result.skipped.append(Kept(_rel(root, path), "not a cached bundle; left alone"))
            continue
        folders[int(match.group(1))] = path
    trials = db.trials_by_id(sorted(folders))
    for trial_id, path in sorted(folders.items()):
        rel = _rel(root, path)
        trial = trials.get(trial_id)
        if trial is None:
            result.skipped.append(Kept(rel, f"trial id {trial_id} is not in the storage"))
            continue
        if only is None or trial.study == only:
            where = protected_ids.get(trial_id)
            _judge(rel, lambda p=path: path_size(p), "cache", trial, where, db, keep_top, result)


def _plan_artifacts(
    root: Path,
    db: TrialLookup,
    refs: References,
    protected_ids: dict[int, str],
    only: str | None,
    keep_top: int,
    result: CleanupResult,
) -> None:
    store = artifact_store_for(root)
    try:
        files = store.list()
    except ArtifactStoreUnavailable as exc:
        raise CleanupError(f"{exc}; cleanup removed nothing") from None
    owners, study_level = db.artifact_owners(sorted(files))
    for artifact_id, size in sorted(files.items()):
        rel = store.relpath(artifact_id)
        trial = owners.get(artifact_id)
        if trial is None:
            if artifact_id not in study_level:
                result.skipped.append(Kept(rel, "no trial in the storage owns this artifact"))
            continue
        if only is None or trial.study == only:
            where = protected_ids.get(trial.trial_id) or refs.numbers.get((trial.study, trial.number))
            _judge(rel, lambda n=size: n, "artifact", trial, where, db, keep_top, result)


def _plan_logs(root: Path, keep_days: float, now: float, result: CleanupResult) -> None:
    base = root / "logs"
    if not base.is_dir() or base.is_symlink():
        return
    cutoff = now - keep_days * 86400.0
    old: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):  # never follows folder links
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            try:
                if path.lstat().st_mtime < cutoff:
                    old.append(path)
            except FileNotFoundError:
                continue
        dirnames.sort()
    if not old:
        return
    held = open_files_under(base)
    for path in old:
        rel = _rel(root, path)
        if os.path.realpath(path) in held and not path.is_symlink():
            result.skipped.append(Kept(rel, "held open by a running process"))
            continue
        age = (now - path.lstat().st_mtime) / 86400.0
        reason = f"{log_kind(path.name)} not modified for {age:.1f} days (keep {keep_days:g})"
        result.removed.append(Removal(rel, path_size(path), "log", reason))

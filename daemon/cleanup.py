"""Disk cleanup (``cappuccino clean`` and the supervisor's daily job).

What goes (each a *candidate*):

* **logs**: files under ``<root>/logs/`` (rotated ``*.log.N``, job outputs ``*.out``,
  child ``*.stdout``, stale ``*.log`` of components no longer running) not modified for
  ``keep_days`` days and not held open by any process;
* **trial scratch directories** ``<root>/trials/<study>/<number>/`` of FAIL and PRUNED
  trials, and of COMPLETE trials ranked outside the top ``keep_top`` of their study (rank:
  objective value best first, ties by trial number then trial id, finite values only: the
  ensemble's order, :mod:`ensemble.selection`);
* **artifacts** ``<root>/artifacts/<artifact_id>`` (Optuna's ``FileSystemArtifactStore``)
  whose trial's scratch directory would go by the same rule.

What never goes: anything a *reference* points at. References are read from the ensemble
manifest (``ensemble/ensemble_manifest.json`` members), every deployment slot
(``deployments/*/deployment_info.json`` and ``model.json``, ``.previous`` included) and the
archive (``trial_archive/trial_registry.json`` and the archived ``metadata.json`` /
``model.json`` files). A reference protects a trial by trial id, by (study, trial number),
by the sha256 of its actor and by its VIN; each is matched against the storage and against
the ``model.json`` inside the scratch directory, so a trial matched by any one of them is
kept. A reference file that exists but cannot be read stops the cleanup
(:class:`CleanupError`): nothing is removed when what is referenced cannot be known.

Also left alone: RUNNING and WAITING trials, scratch directories and artifacts the storage
does not know (another storage's, or a deleted study's; reported as *skipped*), and anything
whose real path leaves the root. Symbolic links are removed as links, never followed.

Removal re-reads the references right before deleting (a sync, deploy or archive may have
run since the plan was made) and drops any candidate that has become referenced.
Sizes are apparent sizes in bytes (sum of ``lstat().st_size`` of everything below a path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil
import sqlalchemy as sa
import structlog

from daemon.references import References, UnreadableReference, collect_references

log = structlog.get_logger("cleanup")

_CHUNK = 500  # bound on the length of an SQL ``IN`` list
Kind = Literal["log", "scratch", "artifact"]


class CleanupError(RuntimeError):
    """Cleanup refused (unreadable reference file, unreachable storage, bad argument);
    nothing was removed. The message names the file or setting and what to do."""


@dataclass(frozen=True)
class Removal:
    """One path that goes (or would go, in a dry run).

    Attributes:
        path: relative to the root (POSIX separators).
        size: bytes freed (apparent size of the file or of everything below the folder).
        kind: ``log``, ``scratch`` or ``artifact``.
        reason: why it goes, in words.
        study, trial_id, number: the trial a scratch directory or artifact belongs to.
    """

    path: str
    size: int
    kind: Kind
    reason: str
    study: str | None = None
    trial_id: int | None = None
    number: int | None = None


@dataclass(frozen=True)
class Kept:
    """A path that the age/rank rules would remove but that is kept, and why."""

    path: str
    reason: str


@dataclass
class CleanupResult:
    """Outcome of :func:`run_cleanup`.

    Attributes:
        root: the runtime root.
        dry_run: True when nothing was touched.
        removed: what went (dry run: what would go), in removal order.
        protected: candidates kept because a reference points at them.
        skipped: paths left alone because they cannot be attributed or are unsafe.
        errors: ``path: error`` for removals that failed (the rest still ran).
    """

    root: Path
    dry_run: bool
    removed: list[Removal] = field(default_factory=list)
    protected: list[Kept] = field(default_factory=list)
    skipped: list[Kept] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        """Bytes freed (dry run: that would be freed)."""
        return sum(r.size for r in self.removed)

    def summary(self) -> str:
        """One line: counts by kind, bytes freed, protected and failed counts."""
        kinds = {k: sum(1 for r in self.removed if r.kind == k) for k in ("log", "scratch", "artifact")}
        verb = "would free" if self.dry_run else "freed"
        parts = [f"{n} {k}" for k, n in kinds.items() if n]
        what = ", ".join(parts) or "nothing"
        line = f"{len(self.removed)} paths ({what}), {verb} {human_size(self.freed_bytes)}"
        if self.protected:
            line += f", {len(self.protected)} kept by references"
        if self.errors:
            line += f", {len(self.errors)} failed"
        return line

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for logs and ``status.json``)."""
        return {
            "root": str(self.root),
            "dry_run": self.dry_run,
            "freed_bytes": self.freed_bytes,
            "removed": [asdict(r) for r in self.removed],
            "protected": [asdict(k) for k in self.protected],
            "skipped": [asdict(k) for k in self.skipped],
            "errors": list(self.errors),
        }


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units)."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"


# --------------------------------------------------------------------------- storage
def _references(root: Path) -> References:
    """:func:`daemon.references.collect_references`, its error as a :class:`CleanupError`."""
    try:
        return collect_references(root)
    except UnreadableReference as exc:
        raise CleanupError(f"{exc}; cleanup removed nothing") from None


def _engine(storage: str) -> sa.Engine:
    """Engine on an existing Optuna RDB storage (a missing SQLite file is an error, not created).

    Raises:
        CleanupError: unparsable URL, unknown driver, or missing SQLite file.
    """
    try:
        url = sa.engine.make_url(storage)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:" and not Path(url.database).is_file():
                raise CleanupError(f"storage {url.database}: no such SQLite file (check --root / --storage)")
            kwargs["connect_args"] = {"timeout": 60.0}
        else:
            kwargs["pool_pre_ping"] = True
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise CleanupError(f"storage URL: {exc}") from None


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


@dataclass(frozen=True)
class _Trial:
    trial_id: int
    study: str
    number: int
    state: str


class _Storage:
    """The few storage lookups cleanup needs (SQL on Optuna's schema; never every trial)."""

    def __init__(self, conn: sa.Connection, keep_top: int) -> None:
        self.conn = conn
        self.keep_top = keep_top
        self._studies: dict[str, tuple[int, bool] | None] = {}
        self._top: dict[str, set[int]] = {}

    def study(self, name: str) -> tuple[int, bool] | None:
        """``(study_id, maximize)`` or None when the storage has no such study."""
        if name not in self._studies:
            row = self.conn.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
            ).first()
            if row is None:
                self._studies[name] = None
            else:
                direction = self.conn.execute(
                    sa.text(
                        "SELECT direction FROM study_directions WHERE study_id = :s "
                        "ORDER BY objective LIMIT 1"
                    ),
                    {"s": row[0]},
                ).scalar()
                self._studies[name] = (int(row[0]), str(direction).upper() != "MINIMIZE")
        return self._studies[name]

    def top(self, name: str) -> set[int]:
        """Trial ids of the best ``keep_top`` COMPLETE trials with a finite value."""
        if name not in self._top:
            info = self.study(name)
            ids: set[int] = set()
            if info is not None:
                sid, maximize = info
                order = "DESC" if maximize else "ASC"
                rows = self.conn.execute(
                    sa.text(
                        "SELECT t.trial_id FROM trials t JOIN trial_values v ON v.trial_id = t.trial_id "
                        "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.objective = 0 "
                        f"AND v.value_type = 'FINITE' ORDER BY v.value {order}, t.number ASC, "
                        "t.trial_id ASC LIMIT :k"
                    ),
                    {"s": sid, "k": self.keep_top},
                )
                ids = {int(r[0]) for r in rows}
            self._top[name] = ids
        return self._top[name]

    def trials_by_number(self, name: str, numbers: list[int]) -> dict[int, _Trial]:
        info = self.study(name)
        out: dict[int, _Trial] = {}
        if info is None:
            return out
        for chunk in _chunks(numbers):
            query = sa.text(
                "SELECT trial_id, number, state FROM trials WHERE study_id = :s AND number IN :n"
            ).bindparams(sa.bindparam("n", expanding=True))
            for tid, number, state in self.conn.execute(query, {"s": info[0], "n": chunk}):
                out[int(number)] = _Trial(int(tid), name, int(number), str(state))
        return out

    def artifact_owners(self, ids: list[str]) -> tuple[dict[str, _Trial], set[str]]:
        """``({artifact_id: trial}, {study-level artifact ids})`` for artifact files."""
        owners: dict[str, _Trial] = {}
        study_level: set[str] = set()
        for chunk in _chunks(ids):
            keys = [f"artifacts:{a}" for a in chunk]
            q = sa.text(
                "SELECT a.key, t.trial_id, s.study_name, t.number, t.state FROM trial_system_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key IN :k"
            ).bindparams(sa.bindparam("k", expanding=True))
            for key, tid, study, number, state in self.conn.execute(q, {"k": keys}):
                owners[key.split(":", 1)[1]] = _Trial(int(tid), study, int(number), str(state))
            q = sa.text(
                "SELECT a.value_json, t.trial_id, s.study_name, t.number, t.state "
                "FROM trial_user_attributes a "
                "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE a.key = 'artifact_id' AND a.value_json IN :v"
            ).bindparams(sa.bindparam("v", expanding=True))
            for raw, tid, study, number, state in self.conn.execute(q, {"v": [json.dumps(a) for a in chunk]}):
                owners.setdefault(json.loads(raw), _Trial(int(tid), study, int(number), str(state)))
            q = sa.text("SELECT key FROM study_system_attributes WHERE key IN :k").bindparams(
                sa.bindparam("k", expanding=True)
            )
            study_level |= {row[0].split(":", 1)[1] for row in self.conn.execute(q, {"k": keys})}
        return owners, study_level

    def referenced_trial_ids(self, refs: References) -> dict[int, str]:
        """Trial ids referenced directly, by (study, number), by actor sha256 or by VIN."""
        out = dict(refs.trial_ids)
        for (study, number), where in refs.numbers.items():
            for trial in self.trials_by_number(study, [number]).values():
                out.setdefault(trial.trial_id, where)
        for key, wanted in (("actor_sha256", refs.sha256), ("vin", refs.vins)):
            values = list(wanted)
            for chunk in _chunks(values):
                q = sa.text(
                    "SELECT trial_id, value_json FROM trial_user_attributes "
                    "WHERE key = :key AND value_json IN :v"
                ).bindparams(sa.bindparam("v", expanding=True))
                for tid, raw in self.conn.execute(q, {"key": key, "v": [json.dumps(v) for v in chunk]}):
                    out.setdefault(int(tid), wanted[json.loads(raw)])
        return out


# --------------------------------------------------------------------------- files
def path_size(path: Path) -> int:
    """Apparent size in bytes of a file, a symbolic link (the link itself) or a folder tree
    (links inside are counted as links, never followed)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``'s folder really is inside ``root`` (no symbolic link on the way out)."""
    real_root, real_parent = os.path.realpath(root), os.path.realpath(path.parent)
    return real_parent == real_root or real_parent.startswith(real_root + os.sep)


def open_files_under(directory: Path) -> set[str]:
    """Real paths of files under ``directory`` held open by any process we may inspect."""
    prefix = os.path.realpath(directory) + os.sep
    held: set[str] = set()
    for proc in psutil.process_iter():
        try:
            files = proc.open_files()
        except (psutil.Error, OSError):
            continue
        held.update(os.path.realpath(f.path) for f in files if os.path.realpath(f.path).startswith(prefix))
    return held


def _log_kind(name: str) -> str:
    if re.search(r"\.\d+$", name):
        return "rotated log"
    if name.endswith(".out"):
        return "job output"
    return "log file"


def _meta(scratch: Path) -> dict[str, Any] | None:
    """``model.json`` of the bundle in a scratch directory (None when absent/unreadable)."""
    for candidate in (scratch / "bundle" / "model.json", scratch / "model.json"):
        if candidate.is_file() and not candidate.is_symlink():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return None
            return data if isinstance(data, dict) else None
    return None


# --------------------------------------------------------------------------- plan
def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _trial_verdict(trial: _Trial | None, storage: _Storage, keep_top: int) -> str | None:
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
        CleanupError: bad argument, unreadable reference file, or unreachable storage.
    """
    if keep_days < 0 or keep_top < 1:
        raise CleanupError(f"keep_days must be >= 0 and keep_top >= 1 (got {keep_days}, {keep_top})")
    root = Path(root)
    if not root.is_dir():
        raise CleanupError(f"root {root}: no such folder (check --root)")
    result = CleanupResult(root, dry_run=True)
    refs = _references(root)
    engine = _engine(storage)
    try:
        with engine.connect() as conn:
            db = _Storage(conn, keep_top)
            protected_ids = db.referenced_trial_ids(refs)
            _plan_artifacts(root, db, refs, protected_ids, study, keep_top, result)
            _plan_scratch(root, db, refs, protected_ids, study, keep_top, result)
    except sa.exc.SQLAlchemyError as exc:
        raise CleanupError(
            f"storage: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]}); nothing was removed"
        ) from None
    finally:
        engine.dispose()
    _plan_logs(root, keep_days, time.time() if now is None else now, result)
    return result


def _plan_scratch(
    root: Path,
    db: _Storage,
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
        if study_dir.is_symlink() or not _inside(root, study_dir / "x"):
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
                None if path.is_symlink() else refs.match_meta(_meta(path), name, number)
            )
            if where:
                result.protected.append(Kept(rel, f"referenced by {where}"))
                continue
            result.removed.append(
                Removal(rel, path_size(path), "scratch", reason, name, trial.trial_id, trial.number)
            )


def _plan_artifacts(
    root: Path,
    db: _Storage,
    refs: References,
    protected_ids: dict[int, str],
    only: str | None,
    keep_top: int,
    result: CleanupResult,
) -> None:
    base = root / "artifacts"
    if not base.is_dir() or base.is_symlink():
        return
    files = {p.name: p for p in base.iterdir() if not p.name.startswith(".") and not p.is_dir()}
    owners, study_level = db.artifact_owners(sorted(files))
    for artifact_id, path in sorted(files.items()):
        rel = _rel(root, path)
        trial = owners.get(artifact_id)
        if trial is None:
            if artifact_id not in study_level:
                result.skipped.append(Kept(rel, "no trial in the storage owns this artifact"))
            continue
        if only is not None and trial.study != only:
            continue
        reason = _trial_verdict(trial, db, keep_top)
        if reason is None:
            continue
        where = protected_ids.get(trial.trial_id) or refs.numbers.get((trial.study, trial.number))
        if where:
            result.protected.append(Kept(rel, f"referenced by {where}"))
            continue
        result.removed.append(
            Removal(rel, path_size(path), "artifact", reason, trial.study, trial.trial_id, trial.number)
        )


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
        reason = f"{_log_kind(path.name)} not modified for {age:.1f} days (keep {keep_days:g})"
        result.removed.append(Removal(rel, path_size(path), "log", reason))


# --------------------------------------------------------------------------- run
def _still_unreferenced(
    root: Path, storage: str, removals: list[Removal]
) -> tuple[list[Removal], list[Kept]]:
    """Re-read the references just before deleting; split off removals now referenced."""
    refs = _references(root)
    engine = _engine(storage)
    try:
        with engine.connect() as conn:
            ids = _Storage(conn, 1).referenced_trial_ids(refs)
    finally:
        engine.dispose()
    keep, drop = [], []
    for r in removals:
        where = None
        if r.trial_id is not None and r.study is not None and r.number is not None:
            where = ids.get(r.trial_id) or refs.numbers.get((r.study, r.number))
            path = root / r.path
            if where is None and r.kind == "scratch" and not path.is_symlink():
                where = refs.match_meta(_meta(path), r.study, r.number)
        if where:
            drop.append(Kept(r.path, f"referenced by {where} (became referenced during cleanup)"))
        else:
            keep.append(r)
    return keep, drop


def _remove(root: Path, rel: str) -> None:
    path = root / rel
    if not _inside(root, path):
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
    for removal in todo:
        try:
            _remove(root, removal.path)
        except OSError as exc:
            result.errors.append(f"{removal.path}: {exc}")
            log.warning("cleanup_remove_failed", path=removal.path, error=str(exc))
            continue
        result.removed.append(removal)
        log.info("cleanup_removed", path=removal.path, size=removal.size, reason=removal.reason)
    log.info("cleanup_done", summary=result.summary(), freed_bytes=result.freed_bytes)
    return result


def format_result(result: CleanupResult) -> Iterable[str]:
    """Lines for the terminal: one per removed path (size in bytes and binary units),
    kept-by-reference and skipped paths, then the total."""
    verb = "would remove" if result.dry_run else "removed"
    for r in result.removed:
        yield f"{verb}  {r.path}  {r.size} bytes ({human_size(r.size)})  [{r.reason}]"
    for k in result.protected:
        yield f"kept  {k.path}  [{k.reason}]"
    for k in result.skipped:
        yield f"skipped  {k.path}  [{k.reason}]"
    for e in result.errors:
        yield f"failed  {e}"
    yield ("dry run: " if result.dry_run else "") + f"total {result.summary()}"

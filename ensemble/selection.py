"""Top-N selection: the best COMPLETE trials of a study whose bundles the trader can use.

Ranking reads Optuna's RDB schema (tables ``studies``, ``study_directions``, ``trials``,
``trial_values``, ``trial_user_attributes``, ``trial_params``) with SQLAlchemy Core and
``ORDER BY value LIMIT k``, so it never loads every trial of a study: a study of
100,000 trials ranks in about 0.1 s where ``study.get_trials()`` takes
minutes (``bench/topn_sync.py``). Only the ranked rows' user attributes and parameters
are read. Works on any URL Optuna's ``RDBStorage`` accepts (SQLite, PostgreSQL).

Order: objective value, best first (descending for a maximising study, ascending for a
minimising one), ties broken by trial number ascending (the older trial first), then
trial id. Only finite values rank; Optuna stores +-inf as a value type without a value,
and the objective never reports one.

A ranked trial is *selected* when its bundle passes every check, in this order; a trial
that fails one is skipped with one ``trial_skipped`` log line naming the reason:

* ``missing``: no ``actor_sha256`` attribute, or no bundle in any source: the trial's
  artifact (``artifact_id`` in ``<root>/artifacts``, Optuna's ``FileSystemArtifactStore``),
  else ``<root>/<bundle_path>`` when the artifact is gone, else an ensemble member
  directory of the same identity.
* ``hash``: sha256 of ``actor.pth`` differs from the trial's ``actor_sha256``.
* ``identity``: ``model.json`` names another study, trial id or hash than the trial.
* ``spec``: the observation spec cannot be fed by the trader's pipeline
  (:meth:`trainers.bundle.PipelineSpec.check`).
* ``invalid``: anything else :func:`trainers.bundle.load_bundle` rejects (unreadable
  archive or ``model.json``, NaN weights, weights that do not fit the architecture).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.distributions import json_to_distribution
from sqlalchemy.engine import Engine

from ensemble.manifest import member_dir_name
from trainers.bundle import (
    ACTOR_FILE,
    META_FILE,
    BundleError,
    ObservationSpec,
    PipelineSpec,
    load_bundle,
    read_meta,
    sha256_file,
    unpack_bundle,
)
from trainers.storage import normalize_url, redact_url

DEFAULT_TOP_N = 10
SkipReason = Literal["missing", "hash", "identity", "spec", "invalid"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Lightweight views of Optuna's RDB tables (only the columns read here). Enum columns are
# compared with inline literals so the same SQL works on SQLite (VARCHAR) and PostgreSQL
# (native enum types).
_studies = sa.table("studies", sa.column("study_id"), sa.column("study_name"))
_directions = sa.table(
    "study_directions", sa.column("study_id"), sa.column("objective"), sa.column("direction")
)
_trials = sa.table(
    "trials", sa.column("trial_id"), sa.column("number"), sa.column("study_id"), sa.column("state")
)
_values = sa.table(
    "trial_values",
    sa.column("trial_value_id"),
    sa.column("trial_id"),
    sa.column("objective"),
    sa.column("value"),
    sa.column("value_type"),
)
_user_attrs = sa.table(
    "trial_user_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json")
)
_params = sa.table(
    "trial_params",
    sa.column("trial_id"),
    sa.column("param_name"),
    sa.column("param_value"),
    sa.column("distribution_json"),
)
_COMPLETE = sa.literal_column("'COMPLETE'")
_FINITE = sa.literal_column("'FINITE'")


class SelectionError(ValueError):
    """The study cannot be ranked (unknown study, unreachable storage, several objectives)."""


@dataclass(frozen=True)
class RankedTrial:
    """A COMPLETE trial as ranked by the storage (its user attributes and decoded params)."""

    study: str
    trial_id: int
    number: int
    value: float
    user_attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectedTrial:
    """A ranked trial whose bundle passed every check.

    Attributes:
        trial: the ranked trial.
        bundle_dir: folder holding the verified ``actor.pth`` and ``model.json`` (inside the
            caller's staging folder when unpacked from the artifact).
        source: ``artifact``, ``bundle_path`` or ``ensemble``.
        meta: the bundle's ``model.json``.
    """

    trial: RankedTrial
    bundle_dir: Path
    source: str
    meta: dict[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.trial.user_attrs["actor_sha256"])

    @property
    def vin(self) -> str:
        return str(self.trial.user_attrs.get("vin") or self.meta.get("vin") or "")

    @property
    def grade(self) -> str:
        return str(self.trial.user_attrs.get("grade") or self.meta.get("grade") or "")


@dataclass(frozen=True)
class SkippedTrial:
    """A ranked trial that was not selected, with the reason and the details."""

    trial: RankedTrial
    reason: SkipReason
    detail: str


@dataclass
class Selection:
    """Result of :func:`select_top_n`: selected trials best first, and the skipped ones."""

    study: str
    selected: list[SelectedTrial]
    skipped: list[SkippedTrial]


def create_engine(storage_url: str) -> Engine:
    """A SQLAlchemy engine for an Optuna storage URL (SQLite waits up to 60 s for a lock;
    a plain ``postgresql://`` URL uses the psycopg 3 driver).

    Raises:
        SelectionError: the URL cannot be parsed, names no installed driver, or names a
            SQLite file that does not exist (it is not created).
    """
    try:
        url = sa.engine.make_url(normalize_url(storage_url))
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database or ""
            if database not in ("", ":memory:") and not Path(database).is_file():
                # sqlite would create an empty file there; a missing storage is an error
                raise SelectionError(f"storage {database}: no such SQLite file (check --root / --storage)")
            kwargs["connect_args"] = {"timeout": 60.0}
        else:
            kwargs["pool_pre_ping"] = True
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError, sa.exc.NoSuchModuleError) as exc:
        raise SelectionError(f"storage URL {redact_url(storage_url)}: {exc}") from None


def _study_row(conn: sa.Connection, study: str) -> tuple[int, bool]:
    """``(study_id, maximize)`` of a study.

    Raises:
        SelectionError: no such study, or a multi-objective study.
    """
    row = conn.execute(sa.select(_studies.c.study_id).where(_studies.c.study_name == study)).first()
    if row is None:
        known = conn.execute(sa.select(_studies.c.study_name).order_by(_studies.c.study_name).limit(20))
        names = ", ".join(r[0] for r in known) or "none"
        raise SelectionError(f"no study named {study!r} in the storage (studies: {names})")
    study_id = int(row[0])
    directions = conn.execute(
        sa.select(_directions.c.direction)
        .where(_directions.c.study_id == study_id)
        .order_by(_directions.c.objective)
    ).all()
    if len(directions) != 1:
        raise SelectionError(f"study {study!r} has {len(directions)} objectives; top-N needs exactly one")
    direction = getattr(directions[0][0], "name", directions[0][0])
    return study_id, str(direction).upper() != "MINIMIZE"


def _study_filter(conn: sa.Connection, study_id: int) -> sa.ColumnElement[bool]:
    """``trials.study_id = :id``, written so SQLite picks the faster plan.

    SQLite's planner walks the study's index and looks each trial's value up (two B-tree
    searches a trial). When the study holds at least half of the storage's values, a
    sequential scan of ``trial_values`` with a primary-key lookup of each trial is about
    twice as fast; ``study_id + 0`` keeps SQLite off the study index (the documented way
    to disqualify an index: https://sqlite.org/optoverview.html#disqualifying_where_clause_terms_using_unary_).
    Both estimates are O(log n): a study's trial numbers are dense (number = trials of the
    study created before it), and ``trial_value_id`` is the rowid. Other databases plan
    with statistics and get the plain filter.
    """
    if conn.dialect.name != "sqlite":
        return _trials.c.study_id == study_id
    last = conn.execute(
        sa.select(_trials.c.number)
        .where(_trials.c.study_id == study_id)
        .order_by(_trials.c.trial_id.desc())
        .limit(1)
    ).scalar()
    total = conn.execute(sa.select(sa.func.max(_values.c.trial_value_id))).scalar()
    if last is not None and total is not None and 2 * (int(last) + 1) >= int(total):
        return (_trials.c.study_id + 0) == study_id
    return _trials.c.study_id == study_id


def _decode_json(raw: str | None) -> Any:
    try:
        return None if raw is None else json.loads(raw)
    except json.JSONDecodeError:
        return raw


def rank_trials(
    engine: Engine, study: str, limit: int, after: tuple[float, int, int] | None = None
) -> list[RankedTrial]:
    """The best ``limit`` COMPLETE trials of ``study`` with finite values, best first.

    One ``ORDER BY value, number, trial_id LIMIT limit`` query over the study's trials,
    then one query each for the user attributes and the parameters of those trials only.
    Parameters are decoded to their external form with the stored distribution
    (``json_to_distribution(...).to_external_repr``), so a categorical comes back as its
    choice, not its index.

    Args:
        engine: engine on an Optuna RDB storage.
        study: study name.
        limit: at most this many trials (>= 1).
        after: keyset cursor ``(value, number, trial_id)`` of the last trial of a previous
            page: return the trials ranked after it (stable even while trials complete).

    Raises:
        SelectionError: unknown study, several objectives, or a database error.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    try:
        with engine.connect() as conn:
            study_id, maximize = _study_row(conn, study)
            value, number, trial_id = _values.c.value, _trials.c.number, _trials.c.trial_id
            query = (
                sa.select(trial_id, number, value)
                .join_from(_trials, _values, _values.c.trial_id == trial_id)
                .where(
                    _study_filter(conn, study_id),
                    _trials.c.state == _COMPLETE,
                    _values.c.objective == 0,
                    _values.c.value_type == _FINITE,
                )
                .order_by(value.desc() if maximize else value.asc(), number.asc(), trial_id.asc())
                .limit(limit)
            )
            if after is not None:
                v, n, tid = after
                worse = value < v if maximize else value > v
                query = query.where(
                    sa.or_(
                        worse,
                        sa.and_(value == v, sa.or_(number > n, sa.and_(number == n, trial_id > tid))),
                    )
                )
            rows = conn.execute(query).all()
            ids = [int(r[0]) for r in rows]
            attrs: dict[int, dict[str, Any]] = {i: {} for i in ids}
            params: dict[int, dict[str, Any]] = {i: {} for i in ids}
            if ids:
                for tid, key, raw in conn.execute(
                    sa.select(_user_attrs.c.trial_id, _user_attrs.c.key, _user_attrs.c.value_json).where(
                        _user_attrs.c.trial_id.in_(ids)
                    )
                ):
                    attrs[int(tid)][key] = _decode_json(raw)
                for tid, name, internal, dist in conn.execute(
                    sa.select(
                        _params.c.trial_id,
                        _params.c.param_name,
                        _params.c.param_value,
                        _params.c.distribution_json,
                    ).where(_params.c.trial_id.in_(ids))
                ):
                    params[int(tid)][name] = json_to_distribution(dist).to_external_repr(internal)
    except sa.exc.SQLAlchemyError as exc:
        raise SelectionError(
            f"storage {redact_url(str(engine.url))}: cannot read study {study!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]})"
        ) from None
    return [
        RankedTrial(study, int(r[0]), int(r[1]), float(r[2]), attrs[int(r[0])], params[int(r[0])])
        for r in rows
    ]


def count_ranked(engine: Engine, study: str) -> int:
    """How many trials :func:`rank_trials` can rank: COMPLETE trials of ``study`` with a
    finite value (one ``COUNT`` query; used for top-percent cut-offs).

    Raises:
        SelectionError: unknown study, several objectives, or a database error.
    """
    try:
        with engine.connect() as conn:
            study_id, _ = _study_row(conn, study)
            query = (
                sa.select(sa.func.count())
                .select_from(_trials)
                .join(_values, _values.c.trial_id == _trials.c.trial_id)
                .where(
                    _study_filter(conn, study_id),
                    _trials.c.state == _COMPLETE,
                    _values.c.objective == 0,
                    _values.c.value_type == _FINITE,
                )
            )
            return int(conn.execute(query).scalar_one())
    except sa.exc.SQLAlchemyError as exc:
        raise SelectionError(
            f"storage {redact_url(str(engine.url))}: cannot read study {study!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]})"
        ) from None


def iter_ranked(engine: Engine, study: str, page_size: int) -> Iterator[RankedTrial]:
    """All COMPLETE trials of ``study``, best first, fetched lazily ``page_size`` at a time.

    Raises:
        SelectionError: see :func:`rank_trials`.
    """
    after: tuple[float, int, int] | None = None
    while True:
        page = rank_trials(engine, study, page_size, after)
        yield from page
        if len(page) < page_size:
            return
        last = page[-1]
        after = (last.value, last.number, last.trial_id)
        page_size = min(page_size * 2, 1000)


class BundleSkip(Exception):
    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SkipReason = reason
        self.detail = detail


def _has_bundle(directory: Path) -> bool:
    return (directory / ACTOR_FILE).is_file() and (directory / META_FILE).is_file()


def locate_bundle(
    trial: RankedTrial, root: Path, staging_dir: Path, ensemble_dir: Path | None, sha256: str
) -> tuple[Path, str, str]:
    """Find the trial's bundle: artifact, else ``bundle_path``, else an ensemble member dir.

    Returns ``(folder, source, where)``; ``where`` names the source for messages."""
    tried: list[str] = []
    artifact_id = trial.user_attrs.get("artifact_id")
    if isinstance(artifact_id, str) and artifact_id:
        store = FileSystemArtifactStore(str(root / "artifacts"))
        try:
            reader = store.open_reader(artifact_id)
        except (ArtifactNotFound, ValueError):
            tried.append(f"artifact {artifact_id} (gone)")
        else:
            target = staging_dir / f"trial_{trial.trial_id}"
            archive = staging_dir / f"trial_{trial.trial_id}.tar"
            with reader, open(archive, "wb") as out:
                out.write(reader.read())
            try:
                unpack_bundle(archive, target)
            except BundleError as exc:
                raise BundleSkip("invalid", f"artifact {artifact_id}: {exc}") from None
            finally:
                archive.unlink(missing_ok=True)
            return target, "artifact", f"artifact {artifact_id}"
    else:
        tried.append("no artifact_id")
    bundle_path = trial.user_attrs.get("bundle_path")
    if isinstance(bundle_path, str) and bundle_path:
        rel = Path(bundle_path)
        if rel.is_absolute() or ".." in rel.parts:
            tried.append(f"bundle_path {bundle_path!r} (not inside the root)")
        elif _has_bundle(root / rel):
            return root / rel, "bundle_path", f"bundle_path {root / rel}"
        else:
            tried.append(f"{root / rel} (no bundle)")
    else:
        tried.append("no bundle_path")
    if ensemble_dir is not None:
        member = ensemble_dir / member_dir_name(trial.trial_id, sha256)
        if _has_bundle(member):
            return member, "ensemble", f"ensemble member {member}"
    raise BundleSkip("missing", "no bundle: " + "; ".join(tried))


def verify_bundle(
    trial: RankedTrial, directory: Path, where: str, sha256: str, pipeline: PipelineSpec | None
) -> dict[str, Any]:
    """Check a located bundle against its trial: sha256 of ``actor.pth``, ``model.json``
    naming the same study, trial id and hash, the observation spec against ``pipeline``
    (when given), and that the weights load. Returns ``model.json``.

    Raises:
        BundleSkip: with the reason (``hash``, ``invalid``, ``identity``, ``spec``).
    """
    digest = sha256_file(directory / ACTOR_FILE)
    if digest != sha256:
        raise BundleSkip(
            "hash", f"{where}: {ACTOR_FILE} sha256 {digest[:12]}… is not the trial's {sha256[:12]}…"
        )
    try:
        meta = read_meta(directory)
        spec = ObservationSpec.from_json(meta["observation_spec"])
    except (BundleError, KeyError, TypeError, ValueError) as exc:
        raise BundleSkip("invalid", f"{where}: {exc}") from None
    claimed = (meta.get("study"), meta.get("trial_id"), meta.get("actor_sha256"))
    if claimed != (trial.study, trial.trial_id, sha256):
        raise BundleSkip(
            "identity",
            f"{where}: model.json is study {claimed[0]!r} trial id {claimed[1]} "
            f"sha256 {str(claimed[2])[:12]}…, not study {trial.study!r} trial id {trial.trial_id}",
        )
    if pipeline is not None:
        try:
            pipeline.check(spec, where)
        except BundleError as exc:
            raise BundleSkip("spec", str(exc)) from None
    try:
        load_bundle(directory, pipeline, expect_sha256=sha256)
    except BundleError as exc:
        raise BundleSkip("invalid", str(exc)) from None
    return meta


def _verify(
    trial: RankedTrial, pipeline: PipelineSpec, root: Path, staging_dir: Path, ensemble_dir: Path | None
) -> SelectedTrial:
    """Locate and verify one trial's bundle; raises :class:`BundleSkip` with the reason."""
    sha256 = trial.user_attrs.get("actor_sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise BundleSkip("missing", "the trial has no actor_sha256 attribute (no bundle was saved)")
    directory, source, where = locate_bundle(trial, root, staging_dir, ensemble_dir, sha256)
    if not (directory / ACTOR_FILE).is_file():
        raise BundleSkip("missing", f"{where}: no {ACTOR_FILE}")
    meta = verify_bundle(trial, directory, where, sha256, pipeline)
    return SelectedTrial(trial, directory, source, meta)


def select_top_n(
    storage: str | Engine,
    study: str,
    root: str | Path,
    pipeline: PipelineSpec,
    staging_dir: str | Path,
    n: int = DEFAULT_TOP_N,
    ensemble_dir: str | Path | None = None,
    log: Any = None,
) -> Selection:
    """The best ``n`` COMPLETE trials of ``study`` with a usable bundle (see module docstring).

    Ranks lazily (``n`` plus a few spare trials first, more pages only while trials are
    skipped) and verifies bundles in rank order until ``n`` pass.

    Args:
        storage: Optuna storage URL or an engine on it.
        study: study name.
        root: runtime root (``artifacts/`` and the trials' ``bundle_path`` are under it).
        pipeline: what the trader can feed.
        staging_dir: existing folder where artifacts are unpacked; selected bundles may
            live there, so keep it until they are copied.
        n: members wanted (>= 1).
        ensemble_dir: when given, a member directory ``model_<trial_id>_<sha12>`` there is
            the last-resort source of a trial's bundle.
        log: structlog logger (default ``ensemble.selection``).

    Raises:
        SelectionError: unknown study, unreadable storage (see :func:`rank_trials`).
    """
    if n < 1:
        raise ValueError(f"top-N must be >= 1, got {n}")
    log = log or structlog.get_logger("ensemble.selection").bind(
        component="selection", study=study, pid=os.getpid()
    )
    engine = storage if isinstance(storage, Engine) else create_engine(storage)
    root, staging = Path(root), Path(staging_dir)
    ens = None if ensemble_dir is None else Path(ensemble_dir)
    selected: list[SelectedTrial] = []
    skipped: list[SkippedTrial] = []
    try:
        for trial in iter_ranked(engine, study, n + max(5, n // 2)):
            try:
                selected.append(_verify(trial, pipeline, root, staging, ens))
            except BundleSkip as skip:
                skipped.append(SkippedTrial(trial, skip.reason, skip.detail))
                log.warning(
                    "trial_skipped",
                    trial=trial.number,
                    trial_id=trial.trial_id,
                    value=trial.value,
                    reason=skip.reason,
                    detail=skip.detail,
                )
            if len(selected) >= n:
                break
    finally:
        if not isinstance(storage, Engine):
            engine.dispose()
    return Selection(study, selected, skipped)

"""Top-N selection: the best COMPLETE trials of a study whose bundles the trader can use.

Ranking is :func:`trainers.study_db.rank_trials` (``ORDER BY value LIMIT k`` on Optuna's
tables, never a load of the whole study; best first whatever the study's direction, ties
by trial number then trial id), fetched page by page with
:func:`trainers.study_db.iter_ranked` while trials are skipped.

A ranked trial is *selected* when its bundle passes every check, in this order; a trial
that fails one is skipped with one ``trial_skipped`` log line naming the reason:

* ``missing``: no ``actor_sha256`` attribute, or no bundle in any source: the trial's
  artifact (``artifact_id`` in the artifact store, :mod:`trainers.artifact_store`, through
  the verified local cache :mod:`trainers.bundle_cache`), else ``<root>/<bundle_path>``
  when the artifact is gone (a trial trained on this host), else an ensemble member
  directory of the same identity. When the store cannot be reached and no other source
  has the bundle, :class:`~trainers.artifact_store.ArtifactStoreUnavailable` is raised
  instead: an outage is never taken for a missing bundle.
* ``hash``: sha256 of ``actor.pth`` differs from the trial's ``actor_sha256``.
* ``identity``: ``model.json`` names another study, trial id or hash than the trial.
* ``spec``: the observation spec cannot be fed by the trader's pipeline
  (:meth:`trainers.bundle.PipelineSpec.check`).
* ``invalid``: anything else :func:`trainers.bundle.load_bundle` rejects (unreadable
  archive or ``model.json``, NaN weights, weights that do not fit the architecture).
* ``design``: the bundle acts differently (action scheme or decision interval,
  :class:`trainers.design.Design`) than the best selected trial: an ensemble's members act
  alike, so a study that searches decision intervals gets the ensemble of its best
  trial's interval.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import Engine

from ensemble.manifest import member_dir_name
from trainers.artifact_store import ArtifactStore, ArtifactStoreUnavailable, artifact_store_for
from trainers.bundle import (
    ACTOR_FILE,
    META_FILE,
    BundleError,
    ObservationSpec,
    PipelineSpec,
    load_bundle,
    read_meta,
    sha256_file,
)
from trainers.bundle_cache import BundleHashMismatch, fetch_bundle
from trainers.design import Design
from trainers.study_db import RankedTrial, iter_ranked, open_engine

DEFAULT_TOP_N = 10
SkipReason = Literal["missing", "hash", "identity", "spec", "invalid", "design"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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


class BundleSkip(Exception):
    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SkipReason = reason
        self.detail = detail


def _has_bundle(directory: Path) -> bool:
    return (directory / ACTOR_FILE).is_file() and (directory / META_FILE).is_file()


def locate_bundle(
    trial: RankedTrial,
    root: Path,
    staging_dir: Path,
    ensemble_dir: Path | None,
    sha256: str,
    store: ArtifactStore | None = None,
) -> tuple[Path, str, str]:
    """Find the trial's bundle: artifact (cached), else ``bundle_path``, else an ensemble member dir.

    ``store`` defaults to this process's artifact store (:func:`artifact_store_for`);
    A file store's artifact is unpacked into ``staging_dir``; a remote one's is cached.
    Returns ``(folder, source, where)``; ``where`` names the source for messages.

    Raises:
        BundleSkip: ``missing`` (no source has it), ``hash`` (the artifact's ``actor.pth`` is
            not the trial's) or ``invalid`` (the artifact is not a bundle).
        ArtifactStoreUnavailable: the store is down and no other source has the bundle.
    """
    tried: list[str] = []
    outage: ArtifactStoreUnavailable | None = None
    artifact_id = trial.user_attrs.get("artifact_id")
    if isinstance(artifact_id, str) and artifact_id:
        store = store if store is not None else artifact_store_for(root)
        try:
            target = fetch_bundle(store, artifact_id, root, sha256, trial.trial_id, staging_dir)
        except ArtifactNotFound:
            tried.append(f"artifact {artifact_id} (gone from {store.where})")
        except ArtifactStoreUnavailable as exc:
            outage = exc
            tried.append(str(exc))
        except BundleHashMismatch as exc:
            raise BundleSkip("hash", str(exc)) from None
        except BundleError as exc:
            raise BundleSkip("invalid", f"artifact {artifact_id}: {exc}") from None
        else:
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
    if outage is not None:
        raise outage
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
    trial: RankedTrial,
    pipeline: PipelineSpec,
    root: Path,
    staging_dir: Path,
    ensemble_dir: Path | None,
    store: ArtifactStore | None = None,
) -> SelectedTrial:
    """Locate and verify one trial's bundle; raises :class:`BundleSkip` with the reason."""
    sha256 = trial.user_attrs.get("actor_sha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise BundleSkip("missing", "the trial has no actor_sha256 attribute (no bundle was saved)")
    directory, source, where = locate_bundle(trial, root, staging_dir, ensemble_dir, sha256, store)
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
        root: runtime root (the bundle cache, a file store's ``artifacts/`` and the trials'
            ``bundle_path`` are under it).
        pipeline: what the trader can feed.
        staging_dir: existing folder where artifacts are unpacked; selected bundles may
            live there, so keep it until they are copied.
        n: members wanted (>= 1).
        ensemble_dir: when given, a member directory ``model_<trial_id>_<sha12>`` there is
            the last-resort source of a trial's bundle.
        log: structlog logger (default ``ensemble.selection``).

    Raises:
        trainers.study_db.StudyDBError: unknown study, unreadable storage
            (see :func:`trainers.study_db.rank_trials`).
        trainers.artifact_store.ArtifactStoreUnavailable: the artifact store is down and a
            ranked trial's bundle is in no other source (nothing is selected then).
    """
    if n < 1:
        raise ValueError(f"top-N must be >= 1, got {n}")
    log = log or structlog.get_logger("ensemble.selection").bind(
        component="selection", study=study, pid=os.getpid()
    )
    engine = storage if isinstance(storage, Engine) else open_engine(storage)
    root, staging = Path(root), Path(staging_dir)
    ens = None if ensemble_dir is None else Path(ensemble_dir)
    store = artifact_store_for(root)
    selected: list[SelectedTrial] = []
    skipped: list[SkippedTrial] = []
    acting: tuple[str, int, str] | None = None
    for trial in iter_ranked(engine, study, n + max(5, n // 2)):
        try:
            chosen = _verify(trial, pipeline, root, staging, ens, store)
            design = Design.from_meta(chosen.meta)
            acts = (design.action_scheme, design.decision_interval, design.feature_set)
            if acting is not None and acts != acting:
                raise BundleSkip(
                    "design",
                    f"acts with {acts[0]} actions every {acts[1]} bars on the {acts[2]} features, "
                    f"the ensemble's best member with {acting[0]} actions every {acting[1]} bars "
                    f"on the {acting[2]} features",
                )
            acting = acts
            selected.append(chosen)
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
    return Selection(study, selected, skipped)

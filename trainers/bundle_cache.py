"""Local copies of bundles fetched from the artifact store, keyed by sha256 and verified.

A reader on any host (sync, deployer, archive, ``evaluate``) gets a trial's bundle with
:func:`fetch_bundle`. From a remote (S3) store:
``<root>/cache/bundles/<actor_sha256>_<trial_id>/`` when it already holds an
``actor.pth`` whose sha256 is the trial's (checked at every use), else the trial's artifact
is downloaded from the store (:mod:`trainers.artifact_store`), unpacked
into a temp folder, its ``actor.pth`` checked against the sha256 and only then renamed into
place. A cached copy that no longer matches is removed and fetched again. The trial id is
part of the key because a retried trial can end with its predecessor's very weights.

So a host keeps using the bundles it already verified while the store is down, and never
reads another host's root.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from trainers.artifact_store import ArtifactStore, LocalArtifactStore, download
from trainers.bundle import ACTOR_FILE, META_FILE, BundleError, sha256_file, unpack_bundle
from trainers.runtime.layout import Layout

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleHashMismatch(BundleError):
    """The artifact's ``actor.pth`` is not the trial's ``actor_sha256``."""


def cache_dir(root: str | Path) -> Path:
    """``<root>/cache/bundles`` (:attr:`trainers.runtime.layout.Layout.bundle_cache_dir`)."""
    return Layout(root).bundle_cache_dir


def cache_key(sha256: str, trial_id: int) -> str:
    """The cache folder name of a trial's bundle: ``<sha256>_<trial_id>``."""
    return f"{sha256}_{trial_id}"


def cached(root: str | Path, sha256: str, trial_id: int) -> Path | None:
    """The verified cached copy of a trial's bundle, or None (a stale copy is removed)."""
    target = cache_dir(root) / cache_key(sha256, trial_id)
    if not target.is_dir():
        return None
    try:
        if (target / META_FILE).is_file() and sha256_file(target / ACTOR_FILE) == sha256:
            return target
    except OSError:
        pass
    shutil.rmtree(target, ignore_errors=True)
    return None


def fetch_bundle(
    store: ArtifactStore,
    artifact_id: str,
    root: str | Path,
    sha256: str,
    trial_id: int,
    scratch: str | Path | None = None,
) -> Path:
    """A trial's bundle folder, from the cache or the store (see the module docstring).

    A file store (:class:`~trainers.artifact_store.LocalArtifactStore`) is on this disk
    already: with ``scratch`` given its artifact is unpacked into
    ``<scratch>/trial_<trial_id>`` (checked the same way) and nothing is cached.

    Args:
        store: the artifact store.
        artifact_id: the trial's ``artifact_id`` user attribute.
        root: runtime root (the cache is under it).
        sha256: the trial's ``actor_sha256`` (64 hex digits).
        trial_id: the trial's id.
        scratch: an existing folder for a file store's unpacked bundle (None: cache it too).

    Returns:
        The folder holding ``actor.pth`` (sha256 checked) and ``model.json``.

    Raises:
        optuna.artifacts.exceptions.ArtifactNotFound: the store has no such artifact.
        trainers.artifact_store.ArtifactStoreUnavailable: not cached and the store cannot be reached.
        BundleError: ``sha256`` is not 64 hex digits, or the artifact is not a bundle.
        BundleHashMismatch: its ``actor.pth`` is not ``sha256`` (a :class:`BundleError`).
    """
    if not _SHA256.match(sha256):
        raise BundleError(f"artifact {artifact_id}: actor_sha256 {sha256[:70]!r} is not 64 hex digits")
    if scratch is not None and isinstance(store, LocalArtifactStore):
        target = Path(scratch) / f"trial_{trial_id}"
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=scratch) as tmp:
            _unpack_checked(store, artifact_id, sha256, Path(tmp)).rename(target)
        return target
    hit = cached(root, sha256, trial_id)
    if hit is not None:
        return hit
    base = cache_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    target = base / cache_key(sha256, trial_id)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=base) as tmp:
        unpacked = _unpack_checked(store, artifact_id, sha256, Path(tmp))
        try:
            unpacked.rename(target)
        except OSError:  # another process cached it first
            if cached(root, sha256, trial_id) is None:
                raise
    return target


def _unpack_checked(store: ArtifactStore, artifact_id: str, sha256: str, tmp: Path) -> Path:
    """Download and unpack an artifact into ``tmp/bundle``; its ``actor.pth`` must be ``sha256``."""
    unpacked = unpack_bundle(download(store, artifact_id, tmp / "bundle.tar"), tmp / "bundle")
    digest = sha256_file(unpacked / ACTOR_FILE)
    if digest != sha256:
        raise BundleHashMismatch(
            f"artifact {artifact_id}: {ACTOR_FILE} sha256 {digest[:12]}… is not the trial's {sha256[:12]}…"
        )
    return unpacked

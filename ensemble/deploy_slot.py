"""Deployment slots: ``<root>/deployments/model_<slot>/`` and their safe replacement.

A slot directory holds a verified bundle (``actor.pth``, ``model.json``, loadable with
:func:`trainers.bundle.load_bundle`) plus ``trial_metadata.json`` (the Optuna trial) and
``deployment_info.json`` (what was deployed, when, why). ``model_<slot>.previous/`` is the
deployment it replaced, kept for ``cappuccino deploy --rollback``.

Replacement never leaves the slot without a valid deployment:

1. the new slot is built and verified in a staging directory next to it
   (``.model_<slot>.staging-*``);
2. an older ``model_<slot>.previous`` is moved aside (``.model_<slot>.trash-*``);
3. staging and ``model_<slot>`` are swapped in one atomic ``renameat2(RENAME_EXCHANGE)``
   (Linux >= 3.15), so a reader sees the old slot or the new one, never none; the old
   slot then becomes ``model_<slot>.previous``;
4. the moved-aside directory is removed.

Where the kernel or file system has no atomic exchange, step 3 is two renames
(``model_<slot>`` -> ``.previous``, staging -> ``model_<slot>``); a crash between them is
repaired by :func:`repair_slot` (run before every deploy and rollback), which moves
``.previous`` back. Leftover staging and trash directories are removed by it too.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainers.atomic_io import fsync_dir, read_json
from trainers.bundle import (
    ACTOR_FILE,
    META_FILE,
    BundleError,
    atomic_write_bytes,
    atomic_write_json,
    load_bundle,
)

DEPLOYMENTS_DIR = "deployments"
TRIAL_METADATA_FILE = "trial_metadata.json"
DEPLOYMENT_INFO_FILE = "deployment_info.json"
SLOT_FILES = (ACTOR_FILE, META_FILE, TRIAL_METADATA_FILE, DEPLOYMENT_INFO_FILE)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class SlotError(RuntimeError):
    """A slot operation that cannot be done; the message names the directory and the problem."""


def deployments_dir(root: str | Path) -> Path:
    """``<root>/deployments``."""
    return Path(root) / DEPLOYMENTS_DIR


def slot_dir(root: str | Path, slot: int) -> Path:
    """``<root>/deployments/model_<slot>``."""
    return deployments_dir(root) / f"model_{slot}"


def previous_dir(root: str | Path, slot: int) -> Path:
    """``<root>/deployments/model_<slot>.previous``."""
    return deployments_dir(root) / f"model_{slot}.previous"


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths on one file system (``renameat2`` with
    ``RENAME_EXCHANGE``). Returns False, changing nothing, where unsupported.

    Raises:
        OSError: the exchange is supported but failed (e.g. a path is missing).
    """
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def read_info(directory: Path) -> dict[str, Any]:
    """Parse ``deployment_info.json`` of a slot directory.

    Raises:
        SlotError: missing or unreadable file, or not a JSON object with a sha256.
    """
    path = directory / DEPLOYMENT_INFO_FILE
    try:
        info = read_json(path)
    except FileNotFoundError:
        raise SlotError(f"{path}: missing") from None
    except ValueError as exc:
        raise SlotError(str(exc)) from None
    if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
        raise SlotError(f"{path}: not a deployment record (no sha256)")
    return info


def verify_slot(directory: Path) -> dict[str, Any]:
    """Check that a slot directory holds a complete, loadable deployment; returns its
    ``deployment_info.json``.

    Raises:
        SlotError: a missing file, a bad record, or a bundle that fails its hash or load.
    """
    if not directory.is_dir():
        raise SlotError(f"{directory}: no deployment")
    info = read_info(directory)
    if not (directory / TRIAL_METADATA_FILE).is_file():
        raise SlotError(f"{directory / TRIAL_METADATA_FILE}: missing")
    try:
        load_bundle(directory, expect_sha256=info["sha256"])
    except BundleError as exc:
        raise SlotError(str(exc)) from None
    return info


def current_deployment(root: str | Path, slot: int) -> tuple[dict[str, Any] | None, str | None]:
    """``(deployment_info, None)`` of the valid deployment in a slot, ``(None, None)`` if the
    slot is empty, or ``(None, problem)`` if it exists but is not a valid deployment."""
    directory = slot_dir(root, slot)
    if not directory.exists():
        return None, None
    try:
        return verify_slot(directory), None
    except SlotError as exc:
        return None, str(exc)


def repair_slot(root: str | Path, slot: int) -> list[str]:
    """Undo what a crash in the middle of a replacement left behind; returns what was done.

    * ``model_<slot>`` missing but ``model_<slot>.previous`` present: move it back.
    * leftover ``.model_<slot>.staging-*`` / ``.model_<slot>.trash-*`` directories: remove.
    """
    base = deployments_dir(root)
    done: list[str] = []
    if not base.is_dir():
        return done
    current, previous = slot_dir(root, slot), previous_dir(root, slot)
    if not current.exists() and previous.is_dir():
        os.rename(previous, current)
        done.append(f"restored {current.name} from {previous.name}")
    for pattern in (f".model_{slot}.staging-*", f".model_{slot}.trash-*"):
        for leftover in base.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
            done.append(f"removed {leftover.name}")
    if done:
        fsync_dir(base)
    return done


def stage_slot(
    root: str | Path,
    slot: int,
    bundle_dir: Path,
    trial_metadata: dict[str, Any],
    deployment_info: dict[str, Any],
) -> Path:
    """Build and verify a complete slot in ``.model_<slot>.staging-*`` (every file fsynced).

    Raises:
        SlotError: the staged copy does not verify (hash, load); the staging dir is removed.
    """
    base = deployments_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=base, prefix=f".model_{slot}.staging-"))
    try:
        for name in (ACTOR_FILE, META_FILE):
            atomic_write_bytes(stage / name, (bundle_dir / name).read_bytes())
        atomic_write_json(stage / TRIAL_METADATA_FILE, trial_metadata)
        atomic_write_json(stage / DEPLOYMENT_INFO_FILE, deployment_info)
        verify_slot(stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def install_slot(root: str | Path, slot: int, stage: Path) -> None:
    """Make a staged slot (from :func:`stage_slot`) the deployment of ``slot``; the
    deployment it replaces becomes ``model_<slot>.previous`` (an older one is removed).

    Raises:
        OSError: a rename failed; the slot still holds a valid deployment (old or new).
    """
    base = deployments_dir(root)
    current, previous = slot_dir(root, slot), previous_dir(root, slot)
    trash = None
    if previous.exists():
        trash = Path(tempfile.mkdtemp(dir=base, prefix=f".model_{slot}.trash-"))
        os.rename(previous, trash / previous.name)
    if not current.exists():
        os.rename(stage, current)
    elif exchange_paths(stage, current):
        os.rename(stage, previous)  # ``stage`` now holds the replaced deployment
    else:
        os.rename(current, previous)
        os.rename(stage, current)  # a crash before this line is undone by repair_slot
    fsync_dir(base)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def swap_previous(root: str | Path, slot: int) -> dict[str, Any]:
    """Rollback: swap ``model_<slot>.previous`` and ``model_<slot>`` (files are moved, not
    rewritten, so the restored deployment is byte-for-byte the one deployed before).
    Returns the restored deployment's ``deployment_info.json``.

    Raises:
        SlotError: there is no previous deployment, or it is not valid.
    """
    current, previous = slot_dir(root, slot), previous_dir(root, slot)
    if not previous.exists():
        raise SlotError(f"{previous}: no previous deployment to roll back to")
    info = verify_slot(previous)
    base = deployments_dir(root)
    if not current.exists():
        os.rename(previous, current)
    elif not exchange_paths(previous, current):
        aside = Path(tempfile.mkdtemp(dir=base, prefix=f".model_{slot}.trash-")) / current.name
        os.rename(current, aside)
        os.rename(previous, current)
        os.rename(aside, previous)
        shutil.rmtree(aside.parent, ignore_errors=True)
    fsync_dir(base)
    return info

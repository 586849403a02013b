"""The ensemble manifest (docs/ARCHITECTURE.md section 5): what the live ensemble is.

``<root>/ensemble/ensemble_manifest.json`` lists the members; each member's bundle lives in
an immutable directory ``<root>/ensemble/model_<trial_id>_<sha256[:12]>/`` named by its
identity, so the sync job never edits a live member in place: it writes new member
directories, replaces the manifest atomically (``generation`` + 1), touches
``ensemble/.reload``, and only then removes directories no member refers to.

An ensemble is identified by its ``generation`` and its content ``digest``
(:func:`content_digest`: study, combine rule and members, not the generation or the time),
which :func:`write_manifest` records in the file and :func:`read_manifest` checks, so a
manifest edited or damaged by hand does not pass for the ensemble it names.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainers.atomic_io import atomic_write_json

SCHEMA_VERSION = 1
MANIFEST_FILE = "ensemble_manifest.json"
RELOAD_FILE = ".reload"
_GENERATION_RE = re.compile(rb'"generation"\s*:\s*(\d+)')
_DIGEST_RE = re.compile(rb'"digest"\s*:\s*"([0-9a-f]{64})"')
Combine = Literal["mean", "median", "value_weighted"]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the problem."""


class Member(BaseModel):
    """One ensemble member, identified by study + trial id + sha256 of its actor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    slot: int = Field(ge=0)
    study: str
    trial_number: int = Field(ge=0)
    trial_id: int = Field(ge=0)
    value: float
    vin: str
    grade: str
    bundle_path: str  # relative to the manifest's folder
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @property
    def key(self) -> tuple[str, int, str]:
        """Identity of the member: (study, trial id, sha256)."""
        return (self.study, self.trial_id, self.sha256)


class Manifest(BaseModel):
    """The live ensemble: study, generation, combine rule and members."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    study: str
    generation: int = Field(ge=0)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    combine: Combine = "mean"
    members: list[Member]
    digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")  # content_digest(); None in old files

    def member_keys(self) -> list[tuple[str, int, str]]:
        return [m.key for m in self.members]

    @property
    def identity(self) -> tuple[int, str]:
        """``(generation, content digest)``: what the paper trader calls one ensemble."""
        return (self.generation, content_digest(self))


def content_digest(manifest: Manifest) -> str:
    """sha256 (64 hex digits) of what an ensemble trades: its study, combine rule and members
    in slot order, as canonical JSON (sorted keys, no spaces). The generation, ``created_at``
    and the recorded digest are not part of it, so the same members published twice have
    the same digest under two generations."""
    body = {
        "study": manifest.study,
        "combine": manifest.combine,
        "members": [m.model_dump(mode="json") for m in manifest.members],
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifest_path(ensemble_dir: str | Path) -> Path:
    return Path(ensemble_dir) / MANIFEST_FILE


def member_dir_name(trial_id: int, sha256: str) -> str:
    """Immutable directory name of a member: ``model_<trial_id>_<sha256[:12]>``."""
    return f"model_{trial_id}_{sha256[:12]}"


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest file.

    Raises:
        ManifestError: missing file, invalid JSON (e.g. truncated), or a schema violation
            (the message names the field).
    """
    path = Path(path)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: {where}: {first['msg']}") from None
    for m in manifest.members:
        if m.study != manifest.study:
            raise ManifestError(f"{path}: member {m.slot} is from study {m.study!r}, not {manifest.study!r}")
        if Path(m.bundle_path).is_absolute() or ".." in Path(m.bundle_path).parts:
            raise ManifestError(f"{path}: member {m.slot} bundle_path must be relative and inside")
    if manifest.digest is not None and manifest.digest != content_digest(manifest):
        raise ManifestError(
            f"{path}: digest does not match the content (edited or damaged; the sync job rebuilds it)"
        )
    return manifest


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    """Write a manifest atomically (temp file, fsync, ``os.replace``, fsync the folder), with
    its ``digest`` set to :func:`content_digest`."""
    recorded = manifest.model_copy(update={"digest": content_digest(manifest)})
    atomic_write_json(path, recorded.model_dump(mode="json"))


def peek_generation(path: str | Path) -> int | None:
    """The ``generation`` of a manifest without validating it (a regex over the raw bytes).

    Cheap enough for every bar (one small read). Works on a truncated or otherwise damaged
    manifest as long as the generation field survived; None if the file is missing or holds
    no generation.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    match = _GENERATION_RE.search(raw)
    return int(match.group(1)) if match else None


def peek_digest(path: str | Path) -> str | None:
    """The recorded ``digest`` of a manifest without validating it (see :func:`peek_generation`);
    None if the file is missing or records none."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    match = _DIGEST_RE.search(raw)
    return match.group(1).decode() if match else None


def touch_reload(ensemble_dir: str | Path) -> None:
    """Touch ``.reload`` (content: the time) to signal readers that a new manifest is in place."""
    path = Path(ensemble_dir) / RELOAD_FILE
    path.write_text(datetime.now(UTC).isoformat() + "\n")

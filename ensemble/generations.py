"""Generations only increase: the high-water mark kept apart from the manifest
(docs/ARCHITECTURE.md section 5).

The manifest is derived state: the sync job rebuilds it from the study when it is
unreadable or missing. So that a rebuilt manifest never reuses a generation a paper trader
already knows (it would take the new ensemble for the one it trades and not reload), the
highest generation ever published is kept in its own small file,
``<root>/ensemble/generations.json``, written atomically by the sync job only::

    {"highest": 7, "updated_at": "<UTC ISO 8601>",
     "rebuilds": [{"at", "generation", "reason", "set_aside"}, ...]}

``rebuilds`` lists the last :data:`REBUILDS_KEPT` manifests the sync had to rebuild: the
generation it published, why (the read error, or ``no manifest``), and the name of the
unreadable file kept aside for inspection (``ensemble_manifest.json.corrupt-<UTC time>``,
None when the manifest was missing). The supervisor's monitor raises a
``manifest_rebuilt`` alert for every such file still in ``ensemble/``.

A new generation is one more than the highest of: this file, the manifest (valid, or the
generation still legible in a damaged one), every set-aside file, and the generations the
paper trader's status file reports (in use and last rejected), so the sequence survives even
the loss of this file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ensemble.manifest import MANIFEST_FILE, ManifestError, peek_generation
from trainers.atomic_io import atomic_write_json, fsync_dir, read_json, read_json_object
from trainers.runtime.layout import Layout

GENERATIONS_FILE = "generations.json"
CORRUPT_MARK = ".corrupt-"
REBUILDS_KEPT = 20


class Rebuild(BaseModel):
    """One manifest the sync rebuilt from the study."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str  # UTC ISO 8601
    generation: int = Field(ge=1)  # the generation the rebuilt manifest got
    reason: str  # the read error of the old manifest, or "no manifest"
    set_aside: str | None = None  # file name (in ensemble/) of the unreadable manifest kept


class GenerationRecord(BaseModel):
    """The content of ``generations.json``."""

    model_config = ConfigDict(extra="forbid")

    highest: int = Field(ge=0)
    updated_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    rebuilds: list[Rebuild] = Field(default_factory=list)


def generations_path(ensemble_dir: str | Path) -> Path:
    """``<ensemble_dir>/generations.json``."""
    return Path(ensemble_dir) / GENERATIONS_FILE


def read_generations(ensemble_dir: str | Path) -> GenerationRecord | None:
    """The record, or None when there is none yet.

    Raises:
        ManifestError: the file exists but is not a valid record (the message names it).
    """
    path = generations_path(ensemble_dir)
    if not path.exists():
        return None
    try:
        return GenerationRecord.model_validate(read_json(path))
    except (OSError, ValueError, ValidationError) as exc:
        raise ManifestError(f"{path}: not a valid generation record ({exc})") from None


def write_generations(ensemble_dir: str | Path, record: GenerationRecord) -> None:
    """Write the record atomically (temp file, fsync, ``os.replace``, fsync the folder)."""
    atomic_write_json(generations_path(ensemble_dir), record.model_dump(mode="json"))


def set_aside_files(ensemble_dir: str | Path) -> list[Path]:
    """Unreadable manifests kept aside by the sync (``ensemble_manifest.json.corrupt-*``), oldest first."""
    return sorted(Path(ensemble_dir).glob(f"{MANIFEST_FILE}{CORRUPT_MARK}*"))


def set_aside(manifest: Path) -> str | None:
    """Keep an unreadable manifest as ``<name>.corrupt-<UTC time>`` next to it, for inspection.

    The manifest itself stays in place (hard link, else a copy) until the caller replaces it
    atomically, so readers never find the folder without a manifest.

    Returns:
        the new file's name, or None if the manifest vanished meanwhile.

    Raises:
        OSError: neither a link nor a copy could be made.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = manifest.with_name(f"{manifest.name}{CORRUPT_MARK}{stamp}")
    try:
        os.link(manifest, aside)
    except FileNotFoundError:
        return None
    except OSError:
        try:
            shutil.copy2(manifest, aside)
        except FileNotFoundError:
            return None
    fsync_dir(manifest.parent)
    return aside.name


@dataclass(frozen=True)
class TraderUse:
    """What the paper trader's status file (``<root>/paper_trader/status.json``) says it uses.

    Attributes:
        state: the trader's state (``trading``, ``stopped`` ...), or None.
        generation: generation of the ensemble in use (None: none, or not the ensemble).
        rejected_generation: the last generation it rejected, if any.
        member_dirs: member folder names (in ``ensemble/``) of the ensemble in use.
    """

    state: str | None
    generation: int | None
    rejected_generation: int | None
    member_dirs: frozenset[str]

    @property
    def running(self) -> bool:
        """Whether the status is that of a trader that has not stopped cleanly."""
        return self.state not in (None, "stopped")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def trader_use(root: str | Path) -> TraderUse | None:
    """Read the paper trader's status file; None when there is none (or it is unreadable)."""
    status = read_json_object(Layout(root).trader_status)
    if status is None:
        return None
    ens = status.get("ensemble")
    ens = ens if isinstance(ens, dict) else {}
    dirs = ens.get("member_dirs")
    names = frozenset(d for d in dirs if isinstance(d, str)) if isinstance(dirs, list) else frozenset()
    state = status.get("state")
    return TraderUse(
        state if isinstance(state, str) else None,
        _int(ens.get("generation")),
        _int(status.get("rejected_generation")),
        names,
    )


def highest_generation(
    ensemble_dir: str | Path,
    record: GenerationRecord | None,
    trader: TraderUse | None,
    more: Iterable[int | None] = (),
) -> int:
    """The highest generation published or seen (0 if none): the record, the manifest
    (whatever of its generation is legible), every set-aside file, the trader's generations
    and ``more``."""
    ens = Path(ensemble_dir)
    seen: list[int | None] = [None if record is None else record.highest, *more]
    seen.append(peek_generation(ens / MANIFEST_FILE))
    seen.extend(peek_generation(p) for p in set_aside_files(ens))
    if trader is not None:
        seen += [trader.generation, trader.rejected_generation]
    return max((g for g in seen if g is not None), default=0)

"""What the live ensemble, the deployment slots and the archive refer to: the trials whose
models must never be removed (read by the cleanup; usable by any view of kept models).

Sources, all optional: ``ensemble/ensemble_manifest.json`` (members), every folder in
``deployments/`` (``deployment_info.json``, ``model.json``, ``trial_metadata.json``; the
``.previous`` rollback slot and in-progress staging folders included), and
``trial_archive/trial_registry.json`` plus each archived ``metadata.json`` / ``model.json``.
The files are read generically: every JSON object anywhere in them that names a
``trial_id``, a ``study`` with a ``trial_number``, a ``sha256`` / ``actor_sha256`` or a
``vin`` is a reference, so a change of layout in one of them cannot silently drop one.
Parsed with the standard library only (no torch import: the supervisor uses this).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.atomic_io import read_json

MANIFEST = Path("ensemble") / "ensemble_manifest.json"
DEPLOYMENTS = "deployments"
ARCHIVE = "trial_archive"
REGISTRY = Path(ARCHIVE) / "trial_registry.json"
_SHA = re.compile(r"^[0-9a-f]{64}$")


class UnreadableReference(RuntimeError):
    """A reference file exists but cannot be read; the message names it and what to do."""


@dataclass
class References:
    """What the manifest, the deployment slots and the archive point at; each value names
    where the reference came from."""

    trial_ids: dict[int, str] = field(default_factory=dict)
    numbers: dict[tuple[str, int], str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    vins: dict[str, str] = field(default_factory=dict)

    def add(self, obj: Any, where: str) -> None:
        """Collect every trial identity found anywhere in a parsed JSON document."""
        if isinstance(obj, list):
            for item in obj:
                self.add(item, where)
            return
        if not isinstance(obj, dict):
            return
        study = obj.get("study", obj.get("study_name"))
        trial_id = obj.get("trial_id")
        number = obj.get("trial_number", obj.get("number"))
        if _is_int(trial_id):
            self.trial_ids.setdefault(int(trial_id), where)
        if isinstance(study, str) and _is_int(number):
            self.numbers.setdefault((study, int(number)), where)
        for key in ("sha256", "actor_sha256"):
            sha = obj.get(key)
            if isinstance(sha, str) and _SHA.match(sha):
                self.sha256.setdefault(sha, where)
        vin = obj.get("vin")
        if isinstance(vin, str) and vin:
            self.vins.setdefault(vin, where)
        for value in obj.values():
            if isinstance(value, (dict, list)):
                self.add(value, where)

    def match_meta(self, meta: dict[str, Any] | None, study: str, number: int) -> str | None:
        """Where a reference to this scratch directory comes from (its ``model.json`` and
        its place ``trials/<study>/<number>``), or None."""
        found = self.numbers.get((study, number))
        if found or not meta:
            return found
        if _is_int(meta.get("trial_id")) and int(meta["trial_id"]) in self.trial_ids:
            return self.trial_ids[int(meta["trial_id"])]
        for key in ("sha256", "actor_sha256"):
            if isinstance(meta.get(key), str) and meta[key] in self.sha256:
                return self.sha256[meta[key]]
        if isinstance(meta.get("vin"), str) and meta["vin"] in self.vins:
            return self.vins[meta["vin"]]
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise UnreadableReference(
            f"{exc}; what it refers to cannot be known. Repair or remove the file, then try again"
        ) from None


def collect_references(root: Path) -> References:
    """Read every reference file under ``root``.

    Raises:
        UnreadableReference: a reference file exists but is not readable JSON of the expected
            shape, or a deployment slot holds neither ``deployment_info.json`` nor
            ``model.json``.
    """
    refs = References()
    manifest = root / MANIFEST
    if manifest.exists():
        data = _read_json(manifest)
        members = data.get("members") if isinstance(data, dict) else None
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise UnreadableReference(f"{manifest}: no members list; repair it (run cappuccino sync)")
        for m in members:
            refs.add({**m, "study": m.get("study", data.get("study"))}, f"ensemble manifest {MANIFEST}")
    deployments = root / DEPLOYMENTS
    if deployments.is_dir():
        for slot in sorted(p for p in deployments.iterdir() if p.is_dir()):
            rel = slot.relative_to(root).as_posix()
            found = False
            for name in ("deployment_info.json", "model.json", "trial_metadata.json"):
                if (slot / name).exists():
                    refs.add(_read_json(slot / name), f"deployment {rel}")
                    found = True
            if not found and not slot.name.startswith("."):  # staging/trash folders are transient
                raise UnreadableReference(
                    f"{slot}: a deployment slot without deployment_info.json or model.json; which "
                    "trial it holds cannot be known. Repair or remove it, then try again"
                )
    if (root / REGISTRY).exists():
        refs.add(_read_json(root / REGISTRY), f"archive {REGISTRY}")
    archive = root / ARCHIVE
    if archive.is_dir():
        for entry in sorted(p for p in archive.iterdir() if p.is_dir()):
            for name in ("metadata.json", "model.json"):
                if (entry / name).exists():
                    refs.add(_read_json(entry / name), f"archive {entry.relative_to(root).as_posix()}")
    return refs

"""What a cleanup decided and did: :class:`CleanupResult` of :class:`Removal` and
:class:`Kept` entries, and :class:`CleanupError`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal


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


Kind = Literal["log", "scratch", "artifact", "cache"]


class CleanupError(RuntimeError):
    """Cleanup refused (unreadable reference file, unreachable storage, bad argument);
    nothing was removed. The message names the file or setting and what to do."""


@dataclass(frozen=True)
class Removal:
    """One path that goes (or would go, in a dry run).

    Attributes:
        path: relative to the root (POSIX separators).
        size: bytes freed (apparent size of the file or of everything below the folder).
        kind: ``log``, ``scratch``, ``artifact`` or ``cache`` (a verified local copy of a
            bundle fetched from a remote artifact store, ``cache/bundles/``).
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
        kinds = {
            k: sum(1 for r in self.removed if r.kind == k) for k in ("log", "scratch", "artifact", "cache")
        }
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

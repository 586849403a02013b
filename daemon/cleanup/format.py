"""Terminal formatting of a cleanup: sizes in binary units, one line per path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.cleanup.result import CleanupResult


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

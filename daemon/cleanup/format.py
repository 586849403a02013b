"""Terminal formatting of a cleanup: one line per path, sizes in binary units."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.cleanup.result import CleanupResult, human_size


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

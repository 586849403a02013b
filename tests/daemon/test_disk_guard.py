"""The disk guard's thresholds on the real filesystem of the test's temp folder: full below
``pause_below_mb`` or after a reported ENOSPC, room again only at ``resume_at_mb``."""

from __future__ import annotations

import errno
from pathlib import Path

from daemon.disk_guard import DiskGuard, free_mb


def test_full_below_the_pause_threshold_and_room_only_at_the_resume_threshold(tmp_path: Path) -> None:
    free = free_mb(tmp_path)
    guard = DiskGuard(tmp_path, pause_below_mb=free + 10_000, resume_at_mb=free + 20_000)
    assert guard.check() is True
    snap = guard.snapshot()
    assert snap["state"] == "full" and snap["episodes"] == 1 and "below" in snap["trigger"]
    guard.pause_below_mb = 0  # no longer below the pause threshold, but not yet at the resume one
    assert guard.check() is True
    guard.resume_at_mb = 0
    assert guard.check() is False
    snap = guard.snapshot()
    assert snap["state"] == "ok" and snap["since"] is None and snap["last_episode_s"] is not None
    assert guard.check() is False and guard.episodes == 1


def test_a_reported_enospc_makes_the_disk_full_until_the_resume_threshold(tmp_path: Path) -> None:
    free = free_mb(tmp_path)
    guard = DiskGuard(tmp_path, pause_below_mb=0, resume_at_mb=free + 10_000)
    assert guard.check() is False
    guard.report("run/children.json", OSError(errno.ENOSPC, "No space left on device"))
    assert guard.full and guard.check() is True  # plenty free by statvfs, still below resume_at
    alert = guard.alert("s")
    assert alert.kind == "disk_full" and alert.severity == "critical" and alert.study == "s"
    assert "run/children.json" in alert.message
    guard.resume_at_mb = 0
    assert guard.check() is False

"""The supervisor's sync job (daemon.jobs.sync) raises the ``manifest_rebuilt`` alert as soon
as the real ``cappuccino sync`` child has rebuilt an unreadable manifest (its resolution once
the kept file is removed: tests/ensemble/test_sync_rebuild.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.alerts import AlertSink
from daemon.config import load_config
from daemon.jobs import JobContext, sync
from daemon.scheduler import JobRunner
from ensemble.generations import set_aside_files
from ensemble.manifest import MANIFEST_FILE, read_manifest
from tests.conftest import TrainedStudy
from trainers.atomic_io import atomic_write_bytes
from trainers.storage import default_storage_url


@pytest.mark.slow
def test_sync_job_alerts_on_a_rebuilt_manifest(trained_study: TrainedStudy, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(trained_study.root, root)
    cfg = load_config(None, {"root": root, "ensemble": {"top_n": 2}})
    ctx = JobContext(cfg, root, trained_study.study_name, default_storage_url(root), JobRunner(60.0, 300.0))
    sink = AlertSink(None, root)
    manifest = root / "ensemble" / MANIFEST_FILE
    (manifest.parent).mkdir()
    atomic_write_bytes(manifest, b'{"schema_version": 1, "generation": 6, "stu')  # damaged

    outcome = sync(ctx, sink)
    assert not outcome.startswith(("failed", "timeout")), outcome
    assert outcome.endswith("(manifest rebuilt: 1 alert(s) raised)"), outcome
    assert read_manifest(manifest).generation == 7  # above the generation legible in the damaged one
    (kept,) = set_aside_files(root / "ensemble")
    assert list(sink.active) == [f"manifest_rebuilt:{kept.name}"]
    (recent,) = sink.recent
    assert recent["alert"] == "manifest_rebuilt" and recent["set_aside"] == kept.name
    assert recent["generation"] == 7 and "not valid JSON" in recent["reason"]

"""The manifest drill with a live trader: a real ``python -m paper_trader`` process replays
the hold-out bars while the ensemble manifest is corrupted, healed by the sync, removed and
rebuilt from the study. The trader never trades a generation twice, ends on the rebuilt
ensemble with a higher generation, and the member folders it uses stay on disk until it has
moved on (docs/ARCHITECTURE.md section 5)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from daemon.monitor import monitor_alerts
from ensemble.manifest import MANIFEST_FILE, read_manifest
from ensemble.sync import sync_ensemble
from paper_trader.ledger import Ledger
from tests.conftest import TrainedStudy
from tests.paper_trader.ensemble_root import (
    PIPELINE,
    bars_done,
    ensemble_root,
    finish,
    read_json,
    start_trader,
    wait_until,
)
from trainers.atomic_io import atomic_write_bytes
from trainers.storage import default_storage_url


def status(root: Path) -> dict[str, Any]:
    return read_json(root / "paper_trader" / "status.json") or {}


def trading_on(root: Path, generation: int) -> dict[str, Any]:
    """Wait until the status file shows ``generation`` in use, and return it."""
    return wait_until(
        lambda: (
            (s := status(root)).get("generation") == generation
            and (s.get("ensemble") or {}).get("generation") == generation
            and s
        ),
        f"the trader on generation {generation}",
    )


@pytest.mark.slow
def test_corrupt_remove_rebuild_drill_with_a_live_trader(trained_study: TrainedStudy, tmp_path: Path) -> None:
    study = trained_study.study_name
    root = ensemble_root(trained_study.root, tmp_path / "root", study, sync=False)
    url = default_storage_url(root)
    path = root / "ensemble" / MANIFEST_FILE
    first = sync_ensemble(root, url, study, PIPELINE, top_n=3)
    assert first.generation == 1
    proc = start_trader(root, "--speed", "20", "--min-notional", "10")
    try:
        st = trading_on(root, 1)
        assert st["ensemble"]["digest"] == read_manifest(path).digest
        assert st["ensemble"]["member_dirs"] == [m.bundle_path for m in first.members]

        # 1. corrupt: a botched edit claiming generation 2; rejected, trading goes on with 1
        text = path.read_text().replace('"generation": 1', '"generation": 2')
        atomic_write_bytes(path, text[: len(text) // 2].encode())
        st = wait_until(lambda: (s := status(root)).get("rejected_generation") == 2 and s, "the rejection")
        assert "not valid JSON" in st["rejection_reason"] and st["generation"] == 1

        # 2. the sync heals it: the bad file kept aside (and alerted), rebuilt above generation 2
        healed = sync_ensemble(root, url, study, PIPELINE, top_n=3)
        assert healed.generation == 3 and healed.rebuilt is not None and healed.rebuilt.set_aside
        assert (path.parent / healed.rebuilt.set_aside).read_bytes() == text[: len(text) // 2].encode()
        st = trading_on(root, 3)
        assert st["rejected_generation"] is None and st["rejection_reason"] is None
        healed_digest = st["ensemble"]["digest"]
        assert healed_digest == read_manifest(path).digest
        (alert,) = [a for a in monitor_alerts(root, None) if a.kind == "manifest_rebuilt"]
        assert alert.key == f"manifest_rebuilt:{healed.rebuilt.set_aside}"

        # 3. remove the manifest (what an operator used to be told to do): trading goes on with 3
        path.unlink()
        before = bars_done(root)
        wait_until(lambda: bars_done(root) >= before + 3, "bars without a manifest")
        assert status(root)["generation"] == 3 and proc.poll() is None

        # 4. rebuild it from the study with other members: generation 4, not 1 again; the
        #    member the trader still uses is kept until it has moved on
        rebuilt = sync_ensemble(root, url, study, PIPELINE, top_n=2)
        dropped = first.members[2].bundle_path
        assert rebuilt.generation == 4 and rebuilt.rebuilt is not None
        assert (rebuilt.rebuilt.reason, rebuilt.rebuilt.set_aside) == ("no manifest", None)
        assert rebuilt.kept == [dropped] and (path.parent / dropped).is_dir()
        st = trading_on(root, 4)
        assert st["ensemble"]["member_dirs"] == [m.bundle_path for m in rebuilt.members]
        assert st["ensemble"]["digest"] == read_manifest(path).digest != healed_digest
        assert st["rejected_generation"] is None and st["reload"]["reloads"] == 3
        after = sync_ensemble(root, url, study, PIPELINE, top_n=2)
        assert not after.changed and after.removed == [dropped] and not (path.parent / dropped).exists()

        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    gens = [d.generation for d in Ledger(root / "paper_trader" / "ledger.db").decisions()]
    assert gens == sorted(gens) and set(gens) == {1, 3, 4}  # never back to an older generation

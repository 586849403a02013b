"""The self-healing ensemble (ensemble.sync, ensemble.generations): an unreadable or missing
manifest is rebuilt from the study above every generation ever published, the bad file is
kept aside and alerted on, and member folders the paper trader uses are never removed.
Real storages, bundles and files; the trader's status file is written in its real format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from daemon.alerts import AlertSink
from daemon.cli import app
from daemon.monitor import monitor_alerts
from ensemble.generations import generations_path, read_generations, set_aside_files
from ensemble.manifest import MANIFEST_FILE, ManifestError, content_digest, read_manifest
from ensemble.sync import sync_ensemble
from tests.conftest import TrainedStudy
from tests.ensemble.test_selection import copy_root
from trainers.atomic_io import atomic_write_bytes, atomic_write_json
from trainers.bundle import PipelineSpec
from trainers.data import Panel

TRUNCATED = b'{"schema_version": 1, "study": '


@pytest.fixture
def pipeline(panel: Panel) -> PipelineSpec:
    return PipelineSpec(panel.symbols)


@pytest.fixture
def copied(trained_study: TrainedStudy, tmp_path: Path) -> tuple[Path, str, str]:
    """(root, storage URL, study) of a private copy of the trained study."""
    root, url = copy_root(trained_study, tmp_path)
    return root, url, trained_study.study_name


def write_trader_status(root: Path, state: str, generation: int | None, dirs: list[str], **more: Any) -> None:
    """The paper trader's status file, with the fields the sync reads (paper_trader.status)."""
    ensemble = {"generation": generation, "digest": None, "member_dirs": dirs}
    status = {"state": state, "generation": generation, "rejected_generation": None, "ensemble": ensemble}
    atomic_write_json(root / "paper_trader" / "status.json", {**status, **more})


def test_unreadable_manifest_is_kept_aside_rebuilt_above_every_generation_and_alerted(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    ens = root / "ensemble"
    assert sync_ensemble(root, url, study, pipeline, top_n=3).generation == 1
    assert sync_ensemble(root, url, study, pipeline, top_n=2).generation == 2
    record = read_generations(ens)
    assert record is not None and record.highest == 2 and record.rebuilds == []

    atomic_write_bytes(ens / MANIFEST_FILE, TRUNCATED)
    result = sync_ensemble(root, url, study, pipeline, top_n=2)
    assert result.changed and result.generation == 3
    assert result.added == []  # the intact member folders are reused
    rebuilt = result.rebuilt
    assert rebuilt is not None and rebuilt.generation == 3 and "not valid JSON" in rebuilt.reason
    assert rebuilt.set_aside is not None and rebuilt.set_aside.startswith(f"{MANIFEST_FILE}.corrupt-")
    assert (ens / rebuilt.set_aside).read_bytes() == TRUNCATED  # kept for inspection, byte for byte
    manifest = read_manifest(ens / MANIFEST_FILE)
    assert manifest.generation == 3 and manifest.digest == content_digest(manifest)
    assert [m.bundle_path for m in manifest.members] == [m.bundle_path for m in result.members]
    record = read_generations(ens)
    assert record is not None and record.highest == 3 and record.rebuilds == [rebuilt]

    # the monitor raises one manifest_rebuilt alert per kept file, until it is removed
    sink = AlertSink(None, root)
    (alert,) = [a for a in monitor_alerts(root, None) if a.kind == "manifest_rebuilt"]
    assert alert.severity == "warning" and alert.key == f"manifest_rebuilt:{rebuilt.set_aside}"
    assert alert.details["generation"] == 3 and "not valid JSON" in alert.details["reason"]
    assert f"as generation 3 and kept the bad file as ensemble/{rebuilt.set_aside}" in alert.message
    assert [a.kind for a in sink.update(monitor_alerts(root, None))] == ["manifest_rebuilt"]
    assert sink.update(monitor_alerts(root, None)) == []  # still active: not sent again
    (ens / rebuilt.set_aside).unlink()
    assert monitor_alerts(root, None) == []
    sink.update(monitor_alerts(root, None))
    assert sink.active == {}  # resolved

    # a good manifest again: nothing rebuilt, nothing published
    again = sync_ensemble(root, url, study, pipeline, top_n=2)
    assert not again.changed and again.rebuilt is None and again.generation == 3


def test_hand_edited_manifest_fails_its_digest_and_is_rebuilt(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    ens = root / "ensemble"
    first = sync_ensemble(root, url, study, pipeline)
    path = ens / MANIFEST_FILE
    text = path.read_text()
    best = f"{first.members[0].value!r}"
    assert text.count(best) == 1
    path.write_text(text.replace(best, "99.0"))  # valid JSON and schema, another content
    with pytest.raises(ManifestError, match="digest does not match the content"):
        read_manifest(path)
    result = sync_ensemble(root, url, study, pipeline)
    assert result.generation == 2 and result.rebuilt is not None
    assert "digest does not match" in result.rebuilt.reason
    assert read_manifest(path).members == first.members
    (aside,) = set_aside_files(ens)
    assert '"value": 99.0' in aside.read_text()


def test_removed_manifest_and_record_still_continue_above_every_known_generation(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    ens = root / "ensemble"
    sync_ensemble(root, url, study, pipeline, top_n=3)
    sync_ensemble(root, url, study, pipeline, top_n=2)
    (ens / MANIFEST_FILE).unlink()
    result = sync_ensemble(root, url, study, pipeline, top_n=3)
    assert result.generation == 3 and result.rebuilt is not None
    assert (result.rebuilt.reason, result.rebuilt.set_aside) == ("no manifest", None)
    assert set_aside_files(ens) == []

    # the record lost too: the trader's status still says which generations it has seen
    (ens / MANIFEST_FILE).unlink()
    generations_path(ens).unlink()
    write_trader_status(root, "trading", 7, [], rejected_generation=9)
    assert sync_ensemble(root, url, study, pipeline, top_n=3).generation == 10
    record = read_generations(ens)
    assert record is not None and record.highest == 10

    # and a damaged manifest whose generation is still legible bounds it as well
    path = ens / MANIFEST_FILE
    path.write_text(path.read_text().replace('"generation": 10', '"generation": 40')[:-30])
    generations_path(ens).unlink()
    assert sync_ensemble(root, url, study, pipeline, top_n=3).generation == 41


def test_member_folders_the_trader_uses_are_kept_until_it_moves_on(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    ens = root / "ensemble"
    first = sync_ensemble(root, url, study, pipeline, top_n=3)
    dirs = [m.bundle_path for m in first.members]
    write_trader_status(root, "trading", 1, dirs)
    second = sync_ensemble(root, url, study, pipeline, top_n=1)
    assert second.changed and second.generation == 2
    assert second.removed == [] and second.kept == sorted(dirs[1:])
    assert all((ens / d).is_dir() for d in dirs)

    # the trader moves on to generation 2: the next sync, though it publishes nothing, removes them
    write_trader_status(root, "trading", 2, dirs[:1])
    third = sync_ensemble(root, url, study, pipeline, top_n=1)
    assert not third.changed and third.removed == sorted(dirs[1:]) and third.kept == []
    assert sorted(p.name for p in ens.iterdir() if p.is_dir()) == dirs[:1]

    # a trader that stopped uses nothing
    sync_ensemble(root, url, study, pipeline, top_n=3)
    write_trader_status(root, "stopped", 3, dirs)
    fourth = sync_ensemble(root, url, study, pipeline, top_n=1)
    assert fourth.removed == sorted(dirs[1:]) and fourth.kept == []


def test_cli_says_the_manifest_was_rebuilt_and_what_it_kept(copied: tuple[Path, str, str]) -> None:
    root, _url, study = copied
    runner = CliRunner()
    args = ["sync", "--root", str(root), "--study", study]
    assert runner.invoke(app, args).exit_code == 0
    atomic_write_bytes(root / "ensemble" / MANIFEST_FILE, TRUNCATED)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"study {study}: generation 2 (new), 3 members" in res.output
    assert "manifest rebuilt from the study (" in res.output and "not valid JSON" in res.output
    (aside,) = set_aside_files(root / "ensemble")
    assert f"the unreadable file is kept as ensemble/{aside.name}" in res.output

"""Ensemble sync (ensemble.sync) and ``cappuccino sync`` on real storages, bundles and files."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from daemon.cli import app
from ensemble.manifest import MANIFEST_FILE, RELOAD_FILE, member_dir_name, read_manifest
from ensemble.policy import EnsemblePolicy
from ensemble.sync import LOCK_FILE, SyncError, sync_ensemble
from tests.conftest import TrainedStudy
from tests.ensemble.test_selection import (
    add_trial_from_bundle,
    completed,
    copy_root,
    remove_bundle,
    rewrite_bundle,
)
from trainers.bundle import ACTOR_FILE, PipelineSpec, load_bundle, sha256_file
from trainers.data import Panel
from trainers.study_db import StudyDBError


@pytest.fixture
def pipeline(panel: Panel) -> PipelineSpec:
    return PipelineSpec(panel.symbols)


@pytest.fixture
def copied(trained_study: TrainedStudy, tmp_path: Path) -> tuple[Path, str, str]:
    """(root, storage URL, study) of a private copy of the trained study."""
    root, url = copy_root(trained_study, tmp_path)
    return root, url, trained_study.study_name


def snapshot(directory: Path) -> dict[str, int]:
    """mtime (ns) of the folder and of everything below it, by relative path; the sync's
    pid lock is left out (it records who runs, not ensemble content)."""
    out = {".": directory.stat().st_mtime_ns}
    for path in directory.rglob("*"):
        if path.name == ".sync.lock":
            continue
        out[str(path.relative_to(directory))] = path.stat().st_mtime_ns
    return out


def test_first_sync_writes_members_then_manifest_then_reload(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    ref = completed(url, study)
    result = sync_ensemble(root, url, study, pipeline)
    ens = root / "ensemble"
    manifest = read_manifest(ens / MANIFEST_FILE)
    assert result.changed and result.generation == manifest.generation == 1
    assert manifest.study == study and manifest.combine == "mean"
    assert [(m.slot, m.study, m.trial_number, m.trial_id, m.sha256, m.value) for m in manifest.members] == [
        (i, study, t.number, t._trial_id, t.user_attrs["actor_sha256"], t.value) for i, t in enumerate(ref)
    ]
    assert [(m.vin, m.grade) for m in manifest.members] == [
        (t.user_attrs["vin"], t.user_attrs["grade"]) for t in ref
    ]
    for m in manifest.members:
        assert m.bundle_path == member_dir_name(m.trial_id, m.sha256)
        bundle = load_bundle(ens / m.bundle_path, pipeline, expect_sha256=m.sha256)
        assert (bundle.meta["study"], bundle.meta["trial_id"]) == (study, m.trial_id)
    assert sorted(p.name for p in ens.iterdir() if p.is_dir()) == sorted(
        m.bundle_path for m in manifest.members
    )
    assert (ens / RELOAD_FILE).stat().st_mtime_ns >= (ens / MANIFEST_FILE).stat().st_mtime_ns
    policy = EnsemblePolicy.from_manifest(ens / MANIFEST_FILE, pipeline, expected_study=study)
    assert policy.generation == 1 and len(policy.bundles) == 3


def test_second_sync_without_change_touches_nothing(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    first = sync_ensemble(root, url, study, pipeline)
    ens = root / "ensemble"
    before = snapshot(ens)
    time.sleep(0.05)  # a rewrite would now show a later mtime
    second = sync_ensemble(root, url, study, pipeline)
    assert not second.changed and second.generation == first.generation == 1
    assert second.members == first.members and second.added == second.removed == []
    assert snapshot(ens) == before  # manifest, .reload, member folders, the folder itself


def test_generation_counts_membership_changes_only(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    best, second, third = completed(url, study)
    ens = root / "ensemble"
    gens = []
    for top_n in (3, 3, 2, 2, 3):
        gens.append(sync_ensemble(root, url, study, pipeline, top_n=top_n).generation)
    assert gens == [1, 1, 2, 2, 3]
    name = member_dir_name(third._trial_id, third.user_attrs["actor_sha256"])
    # the best trial's bundle turns bad: it leaves the ensemble (generation 4), its folder goes
    rewrite_bundle(root, best, actor=lambda data: data[::-1])
    result = sync_ensemble(root, url, study, pipeline)
    assert result.generation == 4 and [m.trial_id for m in result.members] == [
        second._trial_id,
        third._trial_id,
    ]
    gone = member_dir_name(best._trial_id, best.user_attrs["actor_sha256"])
    assert result.removed == [gone] and not (ens / gone).exists() and (ens / name).is_dir()
    # its artifact and bundle folder gone: the member folder itself still serves (no change)
    remove_bundle(root, third)
    assert not sync_ensemble(root, url, study, pipeline).changed
    # ... until that is damaged too: the trial leaves the ensemble (generation 5)
    (ens / name / ACTOR_FILE).unlink()
    result = sync_ensemble(root, url, study, pipeline)
    assert result.generation == 5 and [m.trial_id for m in result.members] == [second._trial_id]
    assert result.removed == [name] and not (ens / name).exists()


def test_damaged_member_folder_is_rewritten_with_a_new_generation(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    sync_ensemble(root, url, study, pipeline)
    ens = root / "ensemble"
    m = read_manifest(ens / MANIFEST_FILE).members[1]
    (ens / m.bundle_path / ACTOR_FILE).write_bytes(b"damaged")
    result = sync_ensemble(root, url, study, pipeline)
    assert result.changed and result.generation == 2 and result.added == [m.bundle_path]
    assert sha256_file(ens / m.bundle_path / ACTOR_FILE) == m.sha256
    assert [p.name for p in ens.iterdir() if p.name.startswith((".tmp-", ".trash-"))] == []


class _Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        with self.lock:
            self.events.append((event.event_type, str(event.src_path), str(getattr(event, "dest_path", ""))))


def test_old_members_removed_only_after_the_manifest_is_replaced(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    """Watch the ensemble folder with inotify (watchdog) during a sync that swaps members:
    new member folder in place < manifest replaced < .reload touched < old member removed."""
    root, url, study = copied
    best, _second, third = completed(url, study)
    sync_ensemble(root, url, study, pipeline, top_n=2)  # best, second
    ens = root / "ensemble"
    old = str(ens / member_dir_name(best._trial_id, best.user_attrs["actor_sha256"]))
    new = str(ens / member_dir_name(third._trial_id, third.user_attrs["actor_sha256"]))
    rewrite_bundle(root, best, actor=lambda data: data + b"x")  # best drops out, third comes in
    recorder = _Recorder()
    observer = Observer()
    observer.schedule(recorder, str(ens), recursive=True)
    observer.start()
    try:
        result = sync_ensemble(root, url, study, pipeline, top_n=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with recorder.lock:
                if any(e[0] == "deleted" and e[1] == old for e in recorder.events):
                    break
            time.sleep(0.02)
    finally:
        observer.stop()
        observer.join()
    assert result.generation == 2 and result.removed == [Path(old).name]
    events = recorder.events

    def first(pred: object) -> int:
        return next(i for i, e in enumerate(events) if pred(e))  # type: ignore[operator]

    placed = first(lambda e: e[0] == "moved" and e[2] == new)
    replaced = first(lambda e: e[0] == "moved" and e[2] == str(ens / MANIFEST_FILE))
    reload = first(lambda e: e[1] == str(ens / RELOAD_FILE) and e[0] in ("modified", "created", "closed"))
    removed = first(lambda e: e[0] == "deleted" and e[1].startswith(old))
    assert placed < replaced < reload < removed, events
    assert not any(e[0] != "opened" and e[1].startswith(old) for e in events[:replaced])


def test_another_study_replaces_the_whole_membership(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    """Two studies in one storage with overlapping trial numbers: each sync loads only its
    own study's trials (by trial id and sha256), never the other's of the same number."""
    root, url, study = copied
    a_trials = completed(url, study)
    other = optuna.create_study(storage=url, study_name="other", direction="maximize")
    b0 = add_trial_from_bundle(other, root, 9.0, root / a_trials[0].user_attrs["bundle_path"])
    b1 = add_trial_from_bundle(other, root, 8.0, root / a_trials[1].user_attrs["bundle_path"])
    assert (b0.number, b1.number) == (0, 1) and {0, 1} <= {t.number for t in a_trials}
    assert b0.user_attrs["actor_sha256"] == a_trials[0].user_attrs["actor_sha256"]  # same bytes

    first = sync_ensemble(root, url, study, pipeline)
    assert [(m.study, m.trial_id) for m in first.members] == [(study, t._trial_id) for t in a_trials]
    second = sync_ensemble(root, url, "other", pipeline)
    assert second.changed and second.generation == 2
    assert [(m.study, m.trial_number, m.trial_id) for m in second.members] == [
        ("other", 0, b0._trial_id),
        ("other", 1, b1._trial_id),
    ]
    ens = root / "ensemble"
    assert sorted(second.removed) == sorted(m.bundle_path for m in first.members)
    assert sorted(p.name for p in ens.iterdir() if p.is_dir()) == sorted(
        m.bundle_path for m in second.members
    )
    for m in second.members:
        assert load_bundle(ens / m.bundle_path, pipeline, m.sha256).meta["study"] == "other"
    third = sync_ensemble(root, url, study, pipeline)
    assert third.generation == 3 and {m.study for m in third.members} == {study}


def test_failed_sync_leaves_the_ensemble_untouched(
    copied: tuple[Path, str, str], pipeline: PipelineSpec
) -> None:
    root, url, study = copied
    sync_ensemble(root, url, study, pipeline)
    ens = root / "ensemble"
    before = snapshot(ens)
    with pytest.raises(StudyDBError, match="no study named 'absent'"):
        sync_ensemble(root, url, "absent", pipeline)
    with pytest.raises(SyncError, match=r"no usable COMPLETE trial \(3 skipped"):
        sync_ensemble(root, url, study, PipelineSpec(("BTCUSD", "ETHUSD")))
    assert snapshot(ens) == before
    # an unreadable manifest is rebuilt only from a usable study: a failed sync leaves it as it is
    (ens / MANIFEST_FILE).write_text('{"schema_version": 1, "study": ')  # truncated
    with pytest.raises(
        SyncError, match=r"no usable COMPLETE trial.*unreadable manifest stays.*not valid JSON"
    ):
        sync_ensemble(root, url, study, PipelineSpec(("BTCUSD", "ETHUSD")))
    assert (ens / MANIFEST_FILE).read_text() == '{"schema_version": 1, "study": '
    assert sorted(p.name for p in ens.glob(f"{MANIFEST_FILE}*")) == [MANIFEST_FILE]  # nothing set aside


def test_one_sync_at_a_time(copied: tuple[Path, str, str], pipeline: PipelineSpec) -> None:
    root, url, study = copied
    (root / "ensemble").mkdir()
    with open(root / "ensemble" / LOCK_FILE, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SyncError, match="another sync is running"):
            sync_ensemble(root, url, study, pipeline)
        assert not (root / "ensemble" / MANIFEST_FILE).exists()
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    assert sync_ensemble(root, url, study, pipeline).generation == 1


# ---------------------------------------------------------------- cappuccino sync


def test_cli_sync_reads_current_study_and_prints_a_summary(copied: tuple[Path, str, str]) -> None:
    root, url, study = copied
    runner = CliRunner()
    (root / ".current_study").write_text(study + "\n")
    first = runner.invoke(app, ["sync", "--root", str(root)])
    assert first.exit_code == 0, first.output
    assert f"study {study}: generation 1 (new), 3 members" in first.output
    assert first.output.count("  slot ") == 3
    second = runner.invoke(app, ["sync", "--root", str(root), "--storage", url, "--top-n", "3"])
    assert second.exit_code == 0 and f"study {study}: generation 1 (unchanged), 3 members" in second.output
    third = runner.invoke(app, ["sync", "--root", str(root), "--study", study, "--top-n", "1"])
    assert third.exit_code == 0 and "generation 2 (new), 1 members" in third.output
    assert read_manifest(root / "ensemble" / MANIFEST_FILE).generation == 2


def test_cli_errors_are_one_line_and_leave_the_ensemble(copied: tuple[Path, str, str]) -> None:
    root, _url, study = copied
    runner = CliRunner()
    no_study = runner.invoke(app, ["sync", "--root", str(root)])
    assert no_study.exit_code == 1
    assert no_study.stderr.strip().splitlines() == [
        f"error: {root / '.current_study'}: missing or empty; "
        "pass --study or run bin/sync_training_study NAME"
    ]
    assert not (root / "ensemble").exists()
    absent = runner.invoke(app, ["sync", "--root", str(root), "--study", "absent"])
    assert absent.exit_code == 1 and not (root / "ensemble").exists()  # a failed first sync: no folder
    assert runner.invoke(app, ["sync", "--root", str(root), "--study", study]).exit_code == 0
    ens = root / "ensemble"
    before = snapshot(ens)
    (root / ".current_study").write_text("\n")
    cases = [
        (["sync", "--root", str(root)], "missing or empty; pass --study"),
        (["sync", "--root", str(root), "--study", "absent"], "no study named 'absent'"),
        (["sync", "--root", str(root), "--study", study, "--symbols", "BTCUSD"], "no usable COMPLETE trial"),
        (["sync", "--root", str(root), "--study", study, "--storage", "nosuchdb://x"], "storage URL"),
        (
            ["sync", "--root", str(root), "--study", study, "--storage", f"sqlite:///{root / 'none.db'}"],
            "no such SQLite file",
        ),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.output
        assert message in lines[0]
    assert snapshot(ens) == before
    assert not (root / "none.db").exists()  # a missing SQLite storage is not created
    res = runner.invoke(app, ["sync", "--root", str(root / "typo"), "--study", study])
    assert res.exit_code == 1 and "typo: the runtime root does not exist" in res.stderr
    assert not (root / "typo").exists()


@pytest.mark.slow
def test_cli_in_a_real_process(copied: tuple[Path, str, str]) -> None:
    root, _url, study = copied
    env = {**os.environ, "CAPPUCCINO_ROOT": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from daemon.cli import main; main()", "sync"]
    bad = subprocess.run([*cmd, "--study", "absent"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: no study named 'absent'")
    good = subprocess.run([*cmd, "--study", study], env=env, capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert f"study {study}: generation 1 (new), 3 members" in good.stdout

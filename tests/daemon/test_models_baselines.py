"""``cappuccino models info|list`` read each archived model's value against its study's
constant-policy baselines (real archive of a real study; baselines computed by
trainers.fold_baselines on the study's own folds), and say so when they cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ensemble.archive import run_archive
from tests.conftest import TINY, TrainedStudy
from tests.ensemble.test_archive import Graded, cli
from trainers.fold_baselines import ensure_fold_baselines
from trainers.objective import StudyData
from trainers.study_db.baselines import FOLD_BASELINES_ATTR


@pytest.fixture
def graded(trained_study: TrainedStudy, tmp_path: Path) -> Graded:
    g = Graded(trained_study, tmp_path)
    run_archive(g.root, g.url, g.name, 100, "B")
    return g


def _row(stdout: str, field: str) -> str:
    """The value column of one row of the info table (the first line that starts with it)."""
    line = next(ln for ln in stdout.splitlines() if ln.strip("│| ").startswith(field + " "))
    return line.strip("│| ").removeprefix(field).strip(" │|")


def test_info_and_list_read_the_value_against_the_baselines(graded: Graded, study_data: StudyData) -> None:
    root = str(graded.root)
    s_dir, b_dir = graded.dir_of(graded.s), graded.dir_of(graded.b)
    bare = cli("models", "info", s_dir, "--root", root)
    assert bare.exit_code == 0, bare.output
    assert _row(bare.stdout, "grade") == "S (baselines not recorded)"
    assert json.loads(cli("models", "info", s_dir, "--root", root, "--json").stdout)["baselines"] == {
        "recorded": False
    }

    record, _ = ensure_fold_baselines(graded.study, study_data, TINY)
    want = {k: record["baselines"][k]["value"] for k in ("invested", "cash")}
    info = cli("models", "info", s_dir, "--root", root)
    assert info.exit_code == 0, info.output
    beats = max(want.values()) < 0.35
    assert _row(info.stdout, "grade").startswith("S (beats both baselines)" if beats else "S (below ")
    start = record["zero_action"]["value"]
    assert record["zero_action"]["by_interval"] == {"1": start}  # the model decides every bar
    assert _row(info.stdout, "vs baselines") == (
        f"value 0.3500 · always invested {want['invested']:.4f} · always in cash {want['cash']:.4f} "
        f"· untrained start (1-bar interval) {start:.4f} (same {len(study_data.folds)} folds and costs)"
    )
    doc = json.loads(cli("models", "info", s_dir, "--root", root, "--json").stdout)["baselines"]
    assert doc["invested"] == want["invested"] and doc["cash"] == want["cash"]
    assert doc["zero_action"] == start and doc["zero_action_interval"] == 1
    assert doc["beats_baselines"] is beats and doc["n_folds"] == len(study_data.folds)

    # a study that searches intervals: the model's own interval's start, not the best one's
    searched = {**record["zero_action"], "value": start + 0.5, "by_interval": {"1": start, "24": start + 0.5}}
    graded.study.set_user_attr(FOLD_BASELINES_ATTR, {**record, "zero_action": searched})
    doc = json.loads(cli("models", "info", s_dir, "--root", root, "--json").stdout)["baselines"]
    assert (doc["zero_action"], doc["zero_action_interval"]) == (start, 1)
    assert f"untrained start (1-bar interval) {start:.4f}" in _row(
        cli("models", "info", s_dir, "--root", root).stdout, "vs baselines"
    )
    # a record without values per interval: the recorded start, for no interval in particular
    bare_start = {k: v for k, v in searched.items() if k != "by_interval"}
    graded.study.set_user_attr(FOLD_BASELINES_ATTR, {**record, "zero_action": bare_start})
    doc = json.loads(cli("models", "info", s_dir, "--root", root, "--json").stdout)["baselines"]
    assert doc["zero_action"] == start + 0.5 and "zero_action_interval" not in doc

    # a study whose cash baseline sits between the S (0.35) and the B (0.16) model
    graded.study.set_user_attr(
        FOLD_BASELINES_ATTR, {**record, "baselines": {**record["baselines"], "cash": {"value": 0.3}}}
    )
    assert _row(cli("models", "info", s_dir, "--root", root).stdout, "grade") == "S (beats both baselines)"
    below = cli("models", "info", b_dir, "--root", root)
    assert _row(below.stdout, "grade") == "B (below always in cash +0.3000)"
    listing = cli("models", "list", "--root", root)
    assert listing.exit_code == 0 and "beats baselines" in listing.stdout
    for trial, verdict in ((graded.s, "yes"), (graded.a1, "no"), (graded.a2, "no"), (graded.b, "no")):
        row = next(ln for ln in listing.stdout.splitlines() if graded.dir_of(trial) + " " in ln)
        assert f" {verdict} " in row, row


def test_an_unreadable_storage_is_said_and_the_command_still_works(graded: Graded, tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    s_dir = graded.dir_of(graded.s)
    info = cli("models", "info", s_dir, "--root", str(graded.root), "--storage", missing)
    assert info.exit_code == 0, info.output
    assert _row(info.stdout, "grade").startswith("S (baselines unknown: storage ")
    assert "no such SQLite file" in info.stdout and "integrity: ok" in info.stdout
    doc = json.loads(
        cli("models", "info", s_dir, "--root", str(graded.root), "--storage", missing, "--json").stdout
    )
    assert "no such SQLite file" in doc["baselines"]["error"]
    listing = cli("models", "list", "--root", str(graded.root), "--storage", missing)
    assert listing.exit_code == 0
    row = next(ln for ln in listing.stdout.splitlines() if s_dir + " " in ln)
    assert " - " in row

"""Trial archive and model registry (ensemble.archive, ensemble.registry, ``cappuccino archive`` and
``cappuccino models``) on a real SQLite study with real bundles and artifacts."""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState
from structlog.testing import capture_logs
from typer.testing import CliRunner

from daemon.cli import app
from ensemble.archive import ArchiveBusy, ArchiveError, allocate_dir, run_archive, top_count
from ensemble.registry import (
    ARCHIVE_FILES,
    Registry,
    RegistryError,
    archive_dir,
    read_registry,
    registry_path,
    summarise_folds,
)
from tests.conftest import TrainedStudy
from tests.ensemble.test_selection import rewrite_bundle
from trainers.bundle import ACTOR_FILE, META_FILE, pack_bundle, read_meta, save_bundle, sha256_file
from trainers.naming import GRADES, grade_for, vin_for
from trainers.search_space import ACTIVATIONS, BATCH_SIZE_CHOICES, suggest_params
from trainers.storage import default_storage_url
from trainers.study_db import StudyDBError

CREATED = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)  # one day for every clone: equal params -> equal VIN
runner = CliRunner()


# ---------------------------------------------------------------- helpers


def clone_trial(study: optuna.Study, root: Path, source: FrozenTrial, value: float) -> FrozenTrial:
    """A COMPLETE trial of ``study`` made the way the objective makes one: the source trial's
    hyperparameters (enqueued, then suggested), its actor saved as this trial's bundle, the
    bundle uploaded to the artifact store, and the same user attributes."""
    study.enqueue_trial(source.params)
    trial = study.ask()
    params = suggest_params(trial)
    src = root / source.user_attrs["bundle_path"]
    meta = {k: v for k, v in read_meta(src).items() if k not in ("schema_version", "actor_sha256")}
    vin, grade = vin_for(params.as_dict(), value, CREATED, trailing_stop=0.1), grade_for(value)
    meta.update(
        study=study.study_name,
        trial_number=trial.number,
        trial_id=trial._trial_id,
        value=value,
        vin=vin,
        grade=grade,
        created_at=CREATED.isoformat(),
    )
    bundle_path = f"trials/{study.study_name}/{trial.number}/bundle"
    state = torch.load(src / ACTOR_FILE, map_location="cpu", weights_only=True)
    digest = save_bundle(root / bundle_path, state, meta)
    tar = root / f"upload_{trial._trial_id}.tar"
    tar.write_bytes(pack_bundle(root / bundle_path))
    artifact_id = upload_artifact(
        artifact_store=FileSystemArtifactStore(str(root / "artifacts")),
        file_path=str(tar),
        study_or_trial=trial,
    )
    tar.unlink()
    attrs = {
        k: source.user_attrs[k] for k in ("fold_metrics", "data_fingerprint", "feature_pipeline_version")
    }
    attrs |= {"vin": vin, "grade": grade, "artifact_id": artifact_id, "actor_sha256": digest}
    for key, val in {**attrs, "bundle_path": bundle_path}.items():
        trial.set_user_attr(key, val)
    study.tell(trial, value)
    return study.trials[-1]


class Graded:
    """A copy of the fixture study (3 grade-F trials) plus four clones of its trial 1:
    S (0.35), A (0.25), A (0.22, same VIN as the first A) and B (0.16)."""

    def __init__(self, trained: TrainedStudy, tmp: Path) -> None:
        self.root = tmp / "root"
        shutil.copytree(trained.root, self.root)
        self.url = default_storage_url(self.root)
        self.name = trained.study_name
        self.study = optuna.load_study(study_name=self.name, storage=self.url)
        fixture = self.study.get_trials(states=(TrialState.COMPLETE,))
        assert len(fixture) == 3 and all(t.user_attrs["grade"] == "F" for t in fixture)
        self.source = next(t for t in fixture if t.number == 1)
        self.s, self.a1, self.a2, self.b = (
            clone_trial(self.study, self.root, self.source, v) for v in (0.35, 0.25, 0.22, 0.16)
        )
        assert self.a1.user_attrs["vin"] == self.a2.user_attrs["vin"] != self.s.user_attrs["vin"]

    @property
    def arch(self) -> Path:
        return archive_dir(self.root)

    def dir_of(self, trial: FrozenTrial) -> str:
        vin = trial.user_attrs["vin"]
        return f"{vin}-T{trial.number}" if trial is self.a2 else vin


@pytest.fixture
def graded(trained_study: TrainedStudy, tmp_path: Path) -> Graded:
    return Graded(trained_study, tmp_path)


def tree(directory: Path) -> dict[str, tuple[bytes | None, int]]:
    """Bytes (files) and mtime (ns) of a folder and everything below it, by relative path;
    the run lock is left out (it holds the pid of whoever runs, not archive content)."""
    out: dict[str, tuple[bytes | None, int]] = {".": (None, directory.stat().st_mtime_ns)}
    for path in sorted(directory.rglob("*")):
        if path.name == ".archive.lock":
            continue
        out[str(path.relative_to(directory))] = (
            path.read_bytes() if path.is_file() else None,
            path.stat().st_mtime_ns,
        )
    return out


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


# ---------------------------------------------------------------- archive contents


def test_archive_writes_the_four_files_with_decoded_hyperparams_and_a_registry(graded: Graded) -> None:
    result = run_archive(graded.root, graded.url, graded.name, top_percent=100, min_grade="A")
    expected = [graded.s, graded.a1, graded.a2]  # best first; B and the F trials are below grade A
    assert (result.ranked, result.top, result.eligible) == (7, 7, 3)
    assert result.added == [graded.dir_of(t) for t in expected]
    assert result.skipped == [] and result.registry_changed and result.total == 3

    registry = read_registry(graded.root)
    assert registry is not None
    assert [e.dir for e in registry.models] == result.added
    assert registry.totals == {
        "models": 3,
        "by_grade": {"S": 1, "A": 2, "B": 0, "C": 0, "D": 0, "F": 0},
        "by_algorithm": {"PPO": 3},
    }
    for trial, entry in zip(expected, registry.models, strict=True):
        folder = graded.arch / entry.dir
        assert sorted(p.name for p in folder.iterdir()) == sorted(ARCHIVE_FILES)
        bundle = graded.root / trial.user_attrs["bundle_path"]
        assert (folder / ACTOR_FILE).read_bytes() == (bundle / ACTOR_FILE).read_bytes()
        assert (folder / META_FILE).read_bytes() == (bundle / META_FILE).read_bytes()
        assert sha256_file(folder / ACTOR_FILE) == trial.user_attrs["actor_sha256"] == entry.sha256
        # hyperparameters: the decoded values of FrozenTrial.params (choices, not indices)
        hyper = json.loads((folder / "hyperparams.json").read_text())
        assert hyper == trial.params == graded.source.params
        assert hyper["activation"] in ACTIVATIONS and hyper["batch_size"] in BATCH_SIZE_CHOICES
        assert (entry.study, entry.trial_number, entry.trial_id) == (
            graded.name,
            trial.number,
            trial._trial_id,
        )
        assert (entry.vin, entry.grade, entry.value) == (
            trial.user_attrs["vin"],
            trial.user_attrs["grade"],
            trial.value,
        )
        assert entry.algorithm == "PPO" and entry.created_at == CREATED.isoformat()
        assert datetime.fromisoformat(entry.archived_at).tzinfo is not None
        folds = trial.user_attrs["fold_metrics"]
        assert entry.metrics["folds"] == len(folds) >= 1
        assert entry.metrics["sharpe"] == pytest.approx(statistics.fmean(f["sharpe"] for f in folds))
        assert entry.metrics["max_drawdown"] == max(f["max_drawdown"] for f in folds)
        metadata = json.loads((folder / "metadata.json").read_text())
        assert {k: metadata[k] for k in entry.model_dump()} == entry.model_dump(mode="json")
        assert metadata["fold_metrics"] == folds and metadata["source"] == "artifact"
        assert metadata["data_fingerprint"] == trial.user_attrs["data_fingerprint"]


def test_trials_trained_by_the_objective_archive_with_their_provenance(graded: Graded) -> None:
    result = run_archive(graded.root, graded.url, graded.name, top_percent=100, min_grade="F")
    assert len(result.added) == 7 and result.skipped == []
    fixture = [t for t in graded.study.get_trials(states=(TrialState.COMPLETE,)) if t.number < 3]
    for trial in fixture:
        folder = graded.arch / trial.user_attrs["vin"]
        metadata = json.loads((folder / "metadata.json").read_text())
        assert (metadata["trial_number"], metadata["grade"], metadata["value"]) == (
            trial.number,
            "F",
            trial.value,
        )
        assert (metadata["mode"], metadata["budget_steps"]) == ("quick", trial.user_attrs["budget_steps"])
        assert json.loads((folder / "hyperparams.json").read_text()) == trial.params
    registry = read_registry(graded.root)
    assert registry is not None and registry.totals["by_grade"] == {
        "S": 1,
        "A": 2,
        "B": 1,
        "C": 0,
        "D": 0,
        "F": 3,
    }


def test_default_cut_is_the_top_ten_percent_then_the_grade(graded: Graded) -> None:
    (graded.root / ".current_study").write_text(graded.name + "\n")
    first = run_archive(graded.root)  # defaults: current study, root's SQLite, top 10 %, grade A
    assert (first.ranked, first.top, first.eligible) == (7, 1, 1)  # ceil(0.7) = 1: the S trial
    assert first.added == [graded.dir_of(graded.s)]
    half = run_archive(graded.root, top_percent=50)  # ceil(3.5) = 4: S, A, A, B; B is below A
    assert (half.top, half.eligible) == (4, 3)
    assert half.unchanged == [graded.dir_of(graded.s)]
    assert half.added == [graded.dir_of(graded.a1), graded.dir_of(graded.a2)]
    with_b = run_archive(graded.root, top_percent=50, min_grade="b")
    assert with_b.added == [graded.dir_of(graded.b)] and len(with_b.unchanged) == 3
    registry = read_registry(graded.root)
    assert registry is not None and registry.totals["by_grade"]["B"] == 1 and registry.totals["models"] == 4


def test_top_count_and_folder_allocation() -> None:
    assert [top_count(n, 10) for n in (0, 1, 7, 10, 11, 30)] == [0, 1, 1, 1, 2, 3]
    assert top_count(3, 100) == 3 and top_count(200, 0.5) == 1
    assert allocate_dir("V", 4, set()) == "V"
    assert allocate_dir("V", 4, {"V"}) == "V-T4"
    assert allocate_dir("V", 4, {"V", "V-T4", "V-T4-2"}) == "V-T4-3"


# ---------------------------------------------------------------- idempotence


def test_re_archiving_changes_no_byte_and_no_mtime(graded: Graded) -> None:
    first = run_archive(graded.root, graded.url, graded.name, 100, "A")
    before = tree(graded.arch)
    second = run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert second.added == [] and second.repaired == [] and not second.registry_changed
    assert second.unchanged == first.added
    assert tree(graded.arch) == before
    again = cli("archive", "--root", str(graded.root), "--study", graded.name, "--top-percent", "100")
    assert again.exit_code == 0, again.output
    assert "0 added, 0 repaired, 3 unchanged, 0 skipped; registry 3 models (unchanged)" in again.output
    assert tree(graded.arch) == before


def test_a_deleted_registry_is_rebuilt_from_the_folders_unchanged(graded: Graded) -> None:
    run_archive(graded.root, graded.url, graded.name, 100, "A")
    original = registry_path(graded.root).read_bytes()
    registry_path(graded.root).unlink()
    rebuilt = run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert rebuilt.added == [] and len(rebuilt.unchanged) == 3 and rebuilt.registry_changed
    assert registry_path(graded.root).read_bytes() == original  # archived_at and all kept


# ---------------------------------------------------------------- VIN collisions


def test_trials_sharing_a_vin_get_distinct_stable_folders(graded: Graded) -> None:
    vin = graded.a1.user_attrs["vin"]
    run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert (graded.arch / vin / "metadata.json").is_file()
    assert (graded.arch / f"{vin}-T{graded.a2.number}" / "metadata.json").is_file()
    # a trial of another study with the same VIN (same params, same day, same grade)
    other = optuna.create_study(study_name="other_study", storage=graded.url, direction="maximize")
    twin = clone_trial(other, graded.root, graded.source, 0.23)
    assert twin.user_attrs["vin"] == vin and twin.number == 0
    result = run_archive(graded.root, graded.url, "other_study", 100, "A")
    assert result.added == [f"{vin}-T0"]
    registry = read_registry(graded.root)
    assert registry is not None
    sharing = sorted((e.dir, e.study, e.trial_number) for e in registry.models if e.vin == vin)
    assert sharing == [
        (vin, graded.name, graded.a1.number),
        (f"{vin}-T0", "other_study", 0),
        (f"{vin}-T{graded.a2.number}", graded.name, graded.a2.number),
    ]
    assert registry.totals["models"] == 4 and len({e.key for e in registry.models}) == 4
    # re-archiving both studies maps every trial back to its own folder
    assert run_archive(graded.root, graded.url, graded.name, 100, "A").added == []
    assert run_archive(graded.root, graded.url, "other_study", 100, "A").unchanged == [f"{vin}-T0"]
    # `models info VIN` shows the trial in the bare VIN folder and names the others
    bare = cli("models", "info", vin, "--root", str(graded.root))
    assert bare.exit_code == 0, bare.output
    assert re.search(rf"│ trial_number +│ {graded.a1.number} +│", bare.stdout), bare.stdout
    assert f"2 other archived model(s) share this VIN: {vin}-T0, {vin}-T{graded.a2.number}" in bare.stdout
    # without the bare folder the VIN is ambiguous: an error naming the folders
    registry = Registry.build([e for e in registry.models if e.dir != vin])
    registry_path(graded.root).write_bytes(registry.to_bytes())
    ambiguous = cli("models", "info", vin, "--root", str(graded.root))
    assert ambiguous.exit_code == 1
    assert (
        f"2 archived models share the VIN {vin!r} ({vin}-T0, {vin}-T{graded.a2.number})" in ambiguous.stderr
    )
    exact = cli("models", "info", f"{vin}-T0", "--root", str(graded.root), "--json")
    assert exact.exit_code == 0, exact.output
    assert json.loads(exact.stdout)["entry"]["study"] == "other_study"


# ---------------------------------------------------------------- skipped trials


def test_trials_with_a_missing_or_bad_bundle_are_skipped_with_one_log_line(graded: Graded) -> None:
    gone = clone_trial(graded.study, graded.root, graded.source, 0.24)
    (graded.root / "artifacts" / gone.user_attrs["artifact_id"]).unlink()
    shutil.rmtree(graded.root / gone.user_attrs["bundle_path"])
    bad = clone_trial(graded.study, graded.root, graded.source, 0.23)
    rewrite_bundle(graded.root, bad, actor=lambda b: b[:-1] + bytes([b[-1] ^ 1]))
    with capture_logs() as logs:
        result = run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert [(s.trial_number, s.reason) for s in result.skipped] == [
        (gone.number, "missing"),
        (bad.number, "hash"),
    ]
    skipped_lines = [e for e in logs if e["event"] == "trial_skipped"]
    assert [(e["trial"], e["reason"]) for e in skipped_lines] == [
        (gone.number, "missing"),
        (bad.number, "hash"),
    ]
    assert result.added == [graded.dir_of(t) for t in (graded.s, graded.a1, graded.a2)]
    registry = read_registry(graded.root)
    assert registry is not None
    assert {e.trial_number for e in registry.models} == {graded.s.number, graded.a1.number, graded.a2.number}


# ---------------------------------------------------------------- integrity


def test_models_info_shows_the_record_and_catches_a_tampered_actor(graded: Graded) -> None:
    run_archive(graded.root, graded.url, graded.name, 100, "A")
    name = graded.dir_of(graded.s)
    ok = cli("models", "info", name, "--root", str(graded.root))
    assert ok.exit_code == 0, ok.output
    for text in (
        name,
        graded.name,
        "hyperparams.activation",
        "metrics.sharpe",
        "walk-forward folds",
        "integrity: ok",
    ):
        assert text in ok.stdout
    record = json.loads(cli("models", "info", name, "--root", str(graded.root), "--json").stdout)
    assert record["integrity"] == "ok" and record["hyperparams"] == graded.s.params
    first_archived_at = record["entry"]["archived_at"]

    actor = graded.arch / name / ACTOR_FILE
    data = bytearray(actor.read_bytes())
    data[len(data) // 2] ^= 0xFF
    actor.write_bytes(bytes(data))
    tampered = cli("models", "info", name, "--root", str(graded.root))
    assert tampered.exit_code == 1
    assert "integrity: FAILED" in tampered.stdout
    assert f"{actor}: sha256" in tampered.stdout and "does not match the registry" in tampered.stdout
    assert tampered.stderr.startswith(f"error: integrity check failed for {name}")
    # other models are untouched and still pass
    assert cli("models", "info", graded.dir_of(graded.a1), "--root", str(graded.root)).exit_code == 0

    # re-archiving restores the damaged copy from the trial's bundle, keeping archived_at
    repaired = run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert repaired.repaired == [name] and not repaired.registry_changed
    record = json.loads(cli("models", "info", name, "--root", str(graded.root), "--json").stdout)
    assert record["integrity"] == "ok" and record["entry"]["archived_at"] == first_archived_at

    (graded.arch / name / "hyperparams.json").unlink()
    meta = json.loads((graded.arch / name / META_FILE).read_text())
    (graded.arch / name / META_FILE).write_text(json.dumps({**meta, "actor_sha256": "0" * 64}))
    broken = json.loads(cli("models", "info", name, "--root", str(graded.root), "--json").stdout)
    assert len(broken["integrity"]) == 2
    assert broken["integrity"][0].endswith("hyperparams.json: missing")
    assert "model.json: actor_sha256 " + "0" * 64 in broken["integrity"][1]


# ---------------------------------------------------------------- models list


def test_models_list_shows_and_filters_the_archive(graded: Graded) -> None:
    root = str(graded.root)
    empty = cli("models", "list", "--root", root)
    assert empty.exit_code == 0 and "no archived models" in empty.stdout
    run_archive(graded.root, graded.url, graded.name, 100, "B")
    every = cli("models", "list", "--root", root)
    assert every.exit_code == 0, every.output
    for header in ("VIN", "grade", "value", "Sharpe", "max drawdown", "created"):
        assert header in every.stdout
    dirs = [graded.dir_of(t) for t in (graded.s, graded.a1, graded.a2, graded.b)]
    positions = [every.stdout.index(d + " ") for d in dirs]
    assert positions == sorted(positions)  # best value first
    assert "0.3500" in every.stdout and "2026-01-15" in every.stdout
    only_a = cli("models", "list", "--grade", "a", "--root", root)
    assert only_a.exit_code == 0
    assert [d for d in dirs if d + " " in only_a.stdout] == dirs[1:3]
    only_s = cli("models", "list", "--grade", "S", "--study", graded.name, "--root", root)
    assert [d for d in dirs if d + " " in only_s.stdout] == dirs[:1]
    none = cli("models", "list", "--study", "nope", "--root", root)
    assert none.exit_code == 0 and "no archived models with study nope (4 in all)" in none.stdout
    bad = cli("models", "list", "--grade", "Z", "--root", root)
    assert bad.exit_code == 2 and "--grade must be one of S, A, B, C, D, F" in bad.stderr


# ---------------------------------------------------------------- errors


def test_cli_errors_name_the_problem_and_change_nothing(graded: Graded, tmp_path: Path) -> None:
    root = str(graded.root)
    cases = [
        (["--study", "absent"], 1, "error: no study named 'absent' in the storage"),
        (
            ["--study", graded.name, "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
            1,
            "no such SQLite file",
        ),
        ([], 1, f"error: {graded.root / '.current_study'}: missing or empty; pass --study"),
        (["--study", graded.name, "--top-percent", "0"], 2, "--top-percent must be in (0, 100]"),
        (["--study", graded.name, "--top-percent", "150"], 2, "--top-percent must be in (0, 100]"),
        (["--study", graded.name, "--min-grade", "X"], 2, "--min-grade must be one of S, A, B, C, D, F"),
    ]
    for args, code, message in cases:
        result = cli("archive", "--root", root, *args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not graded.arch.exists()
    empty_root = tmp_path / "empty_root"
    empty_root.mkdir()
    no_db = cli("archive", "--root", str(empty_root), "--study", graded.name)
    assert no_db.exit_code == 1 and "no such SQLite file" in no_db.stderr
    assert list(empty_root.iterdir()) == []
    no_root = cli("archive", "--root", str(tmp_path / "absent_root"), "--study", graded.name)
    assert no_root.exit_code == 1 and "the runtime root does not exist" in no_root.stderr
    unknown = cli("models", "info", "PPO-S-NOPE", "--root", root)
    assert unknown.exit_code == 1 and "does not exist (run `cappuccino archive` first)" in unknown.stderr
    run_archive(graded.root, graded.url, graded.name, 100, "A")
    unknown = cli("models", "info", "PPO-S-NOPE", "--root", root)
    assert unknown.exit_code == 1 and "no archived model 'PPO-S-NOPE'" in unknown.stderr


def test_a_corrupt_registry_stops_the_archive_and_the_views(graded: Graded) -> None:
    run_archive(graded.root, graded.url, graded.name, 100, "A")
    path = registry_path(graded.root)
    path.write_text('{"schema_version": 1, "models": [{"dir": "x"}]}')
    with pytest.raises(RegistryError, match="not a valid trial registry"):
        read_registry(graded.root)
    with pytest.raises(ArchiveError, match=str(path)):
        run_archive(graded.root, graded.url, graded.name, 100, "A")
    for args in (["archive", "--study", graded.name], ["models", "list"], ["models", "info", "x"]):
        result = cli(*args, "--root", str(graded.root))
        assert result.exit_code == 1 and str(path) in result.stderr, (args, result.output)
    assert path.read_text() == '{"schema_version": 1, "models": [{"dir": "x"}]}'


def test_one_archive_run_at_a_time(graded: Graded) -> None:
    graded.arch.mkdir()
    with open(graded.arch / ".archive.lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ArchiveBusy, match="another archive run is in progress"):
            run_archive(graded.root, graded.url, graded.name, 100, "A")
    assert not registry_path(graded.root).exists()
    assert run_archive(graded.root, graded.url, graded.name, 100, "A").total == 3


def test_unknown_study_raises_before_touching_the_root(graded: Graded) -> None:
    with pytest.raises(StudyDBError, match="no study named 'absent'"):
        run_archive(graded.root, graded.url, "absent")
    assert not graded.arch.exists()


@pytest.mark.postgres
def test_archive_from_a_postgresql_storage(graded: Graded, pg_url: str) -> None:
    driver_url = pg_url.replace("postgresql://", "postgresql+psycopg://")  # what Optuna itself needs
    study = optuna.create_study(study_name="pg_study", storage=driver_url, direction="maximize")
    for value in (0.1, 0.31, 0.26, -0.5):
        clone_trial(study, graded.root, graded.source, value)
    result = run_archive(graded.root, pg_url, "pg_study", top_percent=50, min_grade="A")
    assert (result.ranked, result.top, result.eligible) == (4, 2, 2)
    trials = {t.number: t for t in study.trials}
    assert result.added == [trials[1].user_attrs["vin"], trials[2].user_attrs["vin"]]
    assert run_archive(graded.root, pg_url, "pg_study", top_percent=50).unchanged == result.added
    registry = read_registry(graded.root)
    assert registry is not None and [e.trial_id for e in registry.models] == [
        t._trial_id for t in (trials[1], trials[2])
    ]


# ---------------------------------------------------------------- registry helpers


def test_fold_summary_and_registry_order() -> None:
    folds = [
        {"sharpe": 1.0, "excess_sharpe": 0.5, "max_drawdown": 0.1, "turnover": 2.0},
        {"sharpe": 2.0, "excess_sharpe": -0.5, "max_drawdown": 0.3, "turnover": float("nan")},
    ]
    summary = summarise_folds(folds)
    assert summary["folds"] == 2 and summary["sharpe"] == 1.5 and summary["excess_sharpe"] == 0.0
    assert summary["max_drawdown"] == 0.3 and summary["min_excess_sharpe"] == -0.5
    assert summary["turnover"] is None and summary["total_return"] is None  # NaN / absent
    assert summarise_folds([]) == {"folds": 0, **dict.fromkeys(summary.keys() - {"folds"})}
    assert Registry.build([]).totals == {
        "models": 0,
        "by_grade": dict.fromkeys(GRADES, 0),
        "by_algorithm": {},
    }

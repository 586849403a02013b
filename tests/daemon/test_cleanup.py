"""Cleanup (daemon.cleanup, ``cappuccino clean``) on a real small root: a trained study, a real
ensemble sync, real deployment slots, an archive registry, aged log files."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from daemon.cleanup import CleanupError, plan_cleanup, run_cleanup
from daemon.cli import app
from ensemble.deploy import trial_metadata
from ensemble.deploy_slot import install_slot, stage_slot, verify_slot
from ensemble.manifest import read_manifest
from ensemble.sync import sync_ensemble
from tests.conftest import TrainedStudy
from trainers.bundle import ACTOR_FILE, PipelineSpec, atomic_write_json, pack_bundle, read_meta, save_bundle
from trainers.data import Panel
from trainers.storage import default_storage_url

DAY = 86400.0


# ----------------------------------------------------------------------------- helpers
def age(path: Path, days: float) -> None:
    """Set a file's access and modification times ``days`` days into the past."""
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def write_log(path: Path, days: float, size: int = 1000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    age(path, days)


def listing(root: Path) -> dict[str, tuple[str, int, int]]:
    """Everything under ``root`` (links not followed): relative path -> (type, size, mtime ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            out[path.relative_to(root).as_posix()] = (kind, st.st_size, st.st_mtime_ns)
    return out


def tree_digest(path: Path) -> str:
    """sha256 over the relative names and bytes of every file below ``path``."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(p.relative_to(path).as_posix().encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


def db_dump(root: Path) -> list[str]:
    con = sqlite3.connect(root / "optuna.db")
    try:
        return list(con.iterdump())
    finally:
        con.close()


def add_trial(
    study: optuna.Study, root: Path, value: float, source: Path, seed: int, state: TrialState, artifact: bool
) -> FrozenTrial:
    """A trial with its own bundle (``source``'s actor, weights nudged so the sha256 is new)
    in ``trials/<study>/<number>/bundle``, optionally uploaded as its artifact, and its user
    attributes as the objective sets them."""
    trial = study.ask()
    trial.suggest_categorical("activation", ["tanh", "relu", "elu"])
    actor = torch.load(source / ACTOR_FILE, map_location="cpu", weights_only=True)
    first = next(iter(actor))
    actor[first] = actor[first] + 1e-3 * (seed + 1)
    bundle = f"trials/{study.study_name}/{trial.number}/bundle"
    meta = {**read_meta(source), "study": study.study_name, "trial_number": trial.number}
    meta.update(trial_id=trial._trial_id, value=value, vin=f"VIN-{trial.number}")
    digest = save_bundle(root / bundle, actor, meta)
    for key, val in (("vin", f"VIN-{trial.number}"), ("grade", "C"), ("actor_sha256", digest)):
        trial.set_user_attr(key, val)
    trial.set_user_attr("bundle_path", bundle)
    if artifact:  # as the objective does
        with tempfile.NamedTemporaryFile(suffix=".tar") as tmp:
            tmp.write(pack_bundle(root / bundle))
            tmp.flush()
            store = FileSystemArtifactStore(str(root / "artifacts"))
            aid = upload_artifact(artifact_store=store, file_path=tmp.name, study_or_trial=trial)
        trial.set_user_attr("artifact_id", aid)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    elif state in (TrialState.FAIL, TrialState.PRUNED):
        study.tell(trial, state=state)
    return study._storage.get_trial(trial._trial_id)


def deploy(root: Path, study: str, trial: FrozenTrial) -> None:
    """Install ``trial`` in deployment slot 0 with the real slot code (the replaced
    deployment becomes ``model_0.previous``)."""
    info = {
        "slot": 0,
        "study": study,
        "trial_number": trial.number,
        "trial_id": trial._trial_id,
        "vin": trial.user_attrs["vin"],
        "sha256": trial.user_attrs["actor_sha256"],
        "value": trial.value,
    }
    stage = stage_slot(root, 0, root / trial.user_attrs["bundle_path"], trial_metadata(study, trial), info)
    install_slot(root, 0, stage)


@dataclass
class Root:
    root: Path
    url: str
    study: str
    trials: dict[str, FrozenTrial]  # role -> trial
    artifacts: dict[str, str]  # role -> artifact id
    held_log: Path


def scratch(r: Root, role: str) -> str:
    return f"trials/{r.study}/{r.trials[role].number}"


def artifact(r: Root, role: str) -> str:
    return f"artifacts/{r.artifacts[role]}"


def build_root(trained: TrainedStudy, panel: Panel, dst: Path) -> Root:
    """The trained study plus: a real ensemble (its 3 COMPLETE trials), trials ranked below
    them (two deployed, two archived, one unreferenced), FAIL/PRUNED/RUNNING trials, scratch
    folders the storage does not know, an orphan artifact and aged logs."""
    root = dst / "root"
    shutil.copytree(trained.root, root, symlinks=True)
    url, name = default_storage_url(root), trained.study_name
    study = optuna.load_study(study_name=name, storage=url)
    best = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.value, t.number))
    assert len(best) == 3, "the fixture study must have 3 COMPLETE trials"
    sync = sync_ensemble(root, url, name, PipelineSpec(panel.symbols), top_n=3)
    assert [m.trial_id for m in sync.members] == [t._trial_id for t in best]

    source = root / best[0].user_attrs["bundle_path"]
    trials = {"top": best[0], "member_1": best[1], "member_2": best[2]}
    roles = ("previous", "deployed", "archived_id", "archived_sha", "plain")
    for i, role in enumerate(roles):
        trials[role] = add_trial(study, root, -100.0 - i, source, i, TrialState.COMPLETE, True)
    trials["failed"] = add_trial(study, root, 0.0, source, 10, TrialState.FAIL, False)
    trials["pruned"] = add_trial(study, root, 0.0, source, 11, TrialState.PRUNED, True)
    trials["running"] = add_trial(study, root, 0.0, source, 12, TrialState.RUNNING, True)
    artifacts = {
        role: t.user_attrs["artifact_id"] for role, t in trials.items() if "artifact_id" in t.user_attrs
    }

    deploy(root, name, trials["previous"])
    deploy(root, name, trials["deployed"])
    registry = {  # the archive's registry: one entry by trial id, one by VIN + sha256 only
        "entries": [
            {"vin": "VIN-x", "study": name, "trial_number": trials["archived_id"].number},
            {
                "vin": "renamed",
                "trial_id": 999_999,
                "sha256": trials["archived_sha"].user_attrs["actor_sha256"],
            },
        ],
        "totals": {"by_grade": {"C": 2}},
    }
    registry["entries"][0]["trial_id"] = trials["archived_id"]._trial_id
    atomic_write_json(root / "trial_archive" / "trial_registry.json", registry)

    # attacks: links from doomed folders to referenced models
    deployed_dir = root / "deployments" / "model_0"
    member_dir = root / "ensemble" / sync.members[1].bundle_path
    plain = root / scratch_of(name, trials["plain"])
    (plain / "link_to_deployment").symlink_to(deployed_dir, target_is_directory=True)
    (plain / "link_to_member_actor").symlink_to(member_dir / ACTOR_FILE)
    failed = root / scratch_of(name, trials["failed"])
    shutil.rmtree(failed)
    failed.symlink_to(deployed_dir, target_is_directory=True)  # the FAIL trial's folder IS a link
    (root / "trials" / name / "999").mkdir()  # no such trial
    (root / "trials" / name / "999" / "checkpoint.zip").write_bytes(b"c" * 500)
    (root / "trials" / "gone_study" / "0").mkdir(parents=True)  # study not in the storage
    (root / "trials" / "gone_study" / "0" / "events.tfevents").write_bytes(b"e" * 300)
    (root / "artifacts" / "orphan-artifact").write_bytes(b"o" * 200)

    logs = root / "logs"
    write_log(logs / "worker-0.log.1", 10)
    write_log(logs / "worker-0.log.2", 3)
    write_log(logs / "sync.out", 10, 2345)
    write_log(logs / "deploy.out", 1)
    write_log(logs / "worker-9.stdout", 30, 77)
    write_log(logs / "worker-9.log", 8)
    write_log(logs / "supervisor.log", 10)
    return Root(root, url, name, trials, artifacts, logs / "supervisor.log")


def scratch_of(study: str, trial: FrozenTrial) -> str:
    return f"trials/{study}/{trial.number}"


@pytest.fixture
def built(trained_study: TrainedStudy, panel: Panel, tmp_path: Path) -> Root:
    return build_root(trained_study, panel, tmp_path)


# ----------------------------------------------------------------------------- tests
def test_cleanup_never_removes_a_referenced_model(built: Root) -> None:
    r = built
    protected = {
        "member_1": "ensemble manifest",
        "member_2": "ensemble manifest",
        "previous": "deployment deployments/model_0.previous",
        "deployed": "deployment deployments/model_0",
        "archived_id": "archive",
        "archived_sha": "archive",
    }
    kept_paths = [scratch(r, role) for role in ("top", *protected, "running")]
    kept_paths += [artifact(r, role) for role in ("top", *protected)]
    kept_paths += [f"trials/{r.study}/999", "trials/gone_study/0", "artifacts/orphan-artifact"]
    kept_paths += ["deployments/model_0", "deployments/model_0.previous", "trial_archive", "ensemble"]
    before = {
        p: tree_digest(r.root / p) if (r.root / p).is_dir() else (r.root / p).read_bytes() for p in kept_paths
    }
    slot_info = verify_slot(r.root / "deployments" / "model_0")

    with open(r.held_log, "ab"):  # a log a process still writes to is never removed
        result = run_cleanup(r.root, r.url, keep_days=7, keep_top=1)

    assert not result.errors and not result.dry_run
    removed = {x.path for x in result.removed}
    assert removed == {
        scratch(r, "plain"),
        scratch(r, "failed"),
        scratch(r, "pruned"),
        artifact(r, "plain"),
        artifact(r, "pruned"),
        "logs/worker-0.log.1",
        "logs/sync.out",
        "logs/worker-9.stdout",
        "logs/worker-9.log",
    }
    for path in removed:
        assert not os.path.lexists(r.root / path), path
    for path, content in before.items():
        now = tree_digest(r.root / path) if (r.root / path).is_dir() else (r.root / path).read_bytes()
        assert now == content, f"{path} changed"
    # the links were removed as links: what they pointed at is whole and still verifies
    assert verify_slot(r.root / "deployments" / "model_0") == slot_info
    manifest = read_manifest(r.root / "ensemble" / "ensemble_manifest.json")
    for m in manifest.members:
        actor = r.root / "ensemble" / m.bundle_path / ACTOR_FILE
        assert hashlib.sha256(actor.read_bytes()).hexdigest() == m.sha256
    # why each was kept is reported
    reasons = {k.path: k.reason for k in result.protected}
    for role, where in protected.items():
        assert where in reasons[scratch(r, role)], (role, reasons.get(scratch(r, role)))
        assert where in reasons[artifact(r, role)], (role, reasons.get(artifact(r, role)))
    skipped = {k.path: k.reason for k in result.skipped}
    assert "held open" in skipped["logs/supervisor.log"]
    assert "not in the storage" in skipped[f"trials/{r.study}/999"]
    assert "not in the storage" in skipped["trials/gone_study"]
    assert "no trial" in skipped["artifacts/orphan-artifact"]
    assert (r.root / "logs" / "worker-0.log.2").exists() and (r.root / "logs" / "deploy.out").exists()
    # sizes: a file's size, a folder's apparent size, a link's own size
    sizes = {x.path: x.size for x in result.removed}
    assert sizes["logs/sync.out"] == 2345 and sizes["logs/worker-9.stdout"] == 77
    assert result.freed_bytes == sum(sizes.values())
    # and a second run finds nothing more to do
    assert [x.path for x in run_cleanup(r.root, r.url, keep_days=7, keep_top=1).removed] == [
        "logs/supervisor.log"  # no longer held open
    ]


def test_dry_run_touches_nothing_and_reports_what_a_real_run_removes(built: Root) -> None:
    r = built
    optuna.load_study(study_name=r.study, storage=r.url).trials  # noqa: B018 - settle SQLite's WAL files
    files_before, db_before = listing(r.root), db_dump(r.root)

    dry = run_cleanup(r.root, r.url, keep_days=7, keep_top=1, dry_run=True)

    assert listing(r.root) == files_before, "a dry run changed a file, a folder or an mtime"
    assert db_dump(r.root) == db_before
    assert dry.dry_run and dry.removed and dry.freed_bytes > 0
    real = run_cleanup(r.root, r.url, keep_days=7, keep_top=1)
    assert [(x.path, x.size, x.kind) for x in real.removed] == [(x.path, x.size, x.kind) for x in dry.removed]
    assert real.freed_bytes == dry.freed_bytes
    after = listing(r.root)
    gone = {p for p in files_before if any(p == x.path or p.startswith(x.path + "/") for x in dry.removed)}
    assert set(after) == set(files_before) - gone
    for path, (kind, size, mtime) in after.items():  # untouched files keep size and mtime
        if kind == "file" and not path.startswith("optuna.db"):
            assert files_before[path] == (kind, size, mtime), path


def test_cli_dry_run_prints_each_path_its_size_and_the_total(built: Root) -> None:
    r = built
    files_before = listing(r.root)
    args = ["clean", "--dry-run", "--keep-days", "7", "--keep-top", "1", "--root", str(r.root)]
    out = CliRunner().invoke(app, [*args, "--storage", r.url])
    assert out.exit_code == 0, out.output
    plan = plan_cleanup(r.root, r.url, 7, 1)
    lines = out.output.splitlines()
    for x in plan.removed:
        assert any(line.startswith(f"would remove  {x.path}  {x.size} bytes") for line in lines), x.path
    assert lines[-1].startswith(f"dry run: total {len(plan.removed)} paths")
    assert "would free" in lines[-1]
    assert {k: v for k, v in listing(r.root).items() if not k.startswith("optuna.db")} == {
        k: v for k, v in files_before.items() if not k.startswith("optuna.db")
    }
    # --study limits trial folders and artifacts to that study (logs still go)
    out = CliRunner().invoke(app, ["clean", "--keep-top", "1", "--root", str(r.root), "--study", "other"])
    assert out.exit_code == 0, out.output
    assert (r.root / scratch(r, "plain")).is_dir() and not (r.root / "logs" / "sync.out").exists()


def test_keep_top_keeps_the_best_trials_and_their_artifacts(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(trained_study.root, root)
    url = default_storage_url(root)
    ranked = sorted(
        optuna.load_study(study_name=trained_study.study_name, storage=url).get_trials(
            states=(TrialState.COMPLETE,)
        ),
        key=lambda t: (-t.value, t.number),
    )
    result = run_cleanup(root, url, keep_days=7, keep_top=2)
    assert {x.path for x in result.removed} == {
        f"trials/{trained_study.study_name}/{ranked[2].number}",
        f"artifacts/{ranked[2].user_attrs['artifact_id']}",
    }
    for t in ranked[:2]:
        assert (root / t.user_attrs["bundle_path"] / ACTOR_FILE).is_file()
        assert (root / "artifacts" / t.user_attrs["artifact_id"]).is_file()
    assert not (root / "trials" / trained_study.study_name / str(ranked[2].number)).exists()


@pytest.mark.parametrize(
    "damage",
    ["manifest", "registry", "slot"],
)
def test_an_unreadable_reference_stops_cleanup_before_anything_goes(built: Root, damage: str) -> None:
    r = built
    if damage == "manifest":
        path = r.root / "ensemble" / "ensemble_manifest.json"
        path.write_text(path.read_text()[:40])  # truncated
    elif damage == "registry":
        path = r.root / "trial_archive" / "trial_registry.json"
        path.write_text("{not json")
    else:
        path = r.root / "deployments" / "model_1"
        path.mkdir()
        (path / "actor.pth").write_bytes(b"weights of unknown origin")
    before = listing(r.root)
    with pytest.raises(CleanupError, match=str(path).replace(".", r"\.")):
        run_cleanup(r.root, r.url, keep_days=7, keep_top=1)
    out = CliRunner().invoke(app, ["clean", "--keep-top", "1", "--root", str(r.root), "--storage", r.url])
    assert out.exit_code == 1 and str(path) in out.output
    assert {k: v for k, v in listing(r.root).items() if not k.startswith("optuna.db")} == {
        k: v for k, v in before.items() if not k.startswith("optuna.db")
    }


def test_bad_arguments_and_missing_storage_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CleanupError, match="no such folder"):
        run_cleanup(tmp_path / "absent", "sqlite:///x.db")
    with pytest.raises(CleanupError, match="no such SQLite file"):
        run_cleanup(tmp_path, default_storage_url(tmp_path))
    assert not (tmp_path / "optuna.db").exists()  # never created
    with pytest.raises(CleanupError, match="keep_top"):
        run_cleanup(tmp_path, default_storage_url(tmp_path), keep_top=0)


@pytest.mark.postgres
def test_cleanup_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """The same rules on a PostgreSQL storage: ranks, states, artifact owners, sha256 refs."""
    root = tmp_path / "root"
    study = optuna.create_study(
        storage=pg_url.replace("postgresql://", "postgresql+psycopg://"),
        study_name="pg",
        direction="maximize",
    )
    (root / "artifacts").mkdir(parents=True)
    store = FileSystemArtifactStore(str(root / "artifacts"))
    plan = [(3.0, TrialState.COMPLETE), (2.0, TrialState.COMPLETE), (1.0, TrialState.COMPLETE)]
    plan += [(0.0, TrialState.FAIL), (0.0, TrialState.PRUNED), (0.0, TrialState.RUNNING)]
    trials = []
    for i, (value, state) in enumerate(plan):
        trial = study.ask()
        folder = root / "trials" / "pg" / str(trial.number)
        folder.mkdir(parents=True)
        (folder / "checkpoint.bin").write_bytes(b"w" * (100 + i))
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        trial.set_user_attr("actor_sha256", sha)
        tar = folder / "bundle.tar"
        tar.write_bytes(b"t" * 50)
        trial.set_user_attr(
            "artifact_id", upload_artifact(artifact_store=store, file_path=str(tar), study_or_trial=trial)
        )
        tar.unlink()
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
        trials.append(study._storage.get_trial(trial._trial_id))
    member = {
        "slot": 0,
        "study": "pg",
        "trial_number": 2,
        "trial_id": trials[2]._trial_id,
        "sha256": "0" * 64,
    }
    atomic_write_json(root / "ensemble" / "ensemble_manifest.json", {"study": "pg", "members": [member]})
    atomic_write_json(  # the deployment names its model by sha256 only
        root / "deployments" / "model_0" / "deployment_info.json",
        {"sha256": trials[1].user_attrs["actor_sha256"]},
    )
    result = run_cleanup(root, pg_url, keep_days=7, keep_top=1)
    assert {x.path for x in result.removed} == {
        "trials/pg/3",
        "trials/pg/4",
        f"artifacts/{trials[3].user_attrs['artifact_id']}",
        f"artifacts/{trials[4].user_attrs['artifact_id']}",
    }
    assert {x.path: x.size for x in result.removed if x.kind == "scratch"} == {
        "trials/pg/3": 103,
        "trials/pg/4": 104,
    }
    assert {k.path for k in result.protected} == {
        "trials/pg/1",
        "trials/pg/2",
        f"artifacts/{trials[1].user_attrs['artifact_id']}",
        f"artifacts/{trials[2].user_attrs['artifact_id']}",
    }
    assert sorted(p.name for p in (root / "trials" / "pg").iterdir()) == ["0", "1", "2", "5"]


@pytest.mark.slow
def test_the_cleanup_job_does_not_run_after_a_failed_archive(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    """The supervisor's daily job archives, then cleans. With the archive failing (its
    folder cannot be created: a file stands in its place) nothing is removed in that cycle,
    although keep_top = 1 would remove the scratch folders and artifacts of every trial but
    the best (as the second cycle, with the archive working, shows)."""
    from daemon.config import load_config
    from daemon.jobs import JobContext, cleanup
    from daemon.scheduler import JobRunner

    root = tmp_path / "root"
    shutil.copytree(trained_study.root, root)
    (root / "trial_archive").write_text("not a folder")
    cfg = load_config(
        None,
        {
            "root": root,
            "archive": {"min_grade": "F"},
            "cleanup": {"keep_top": 1, "keep_days": 0},
            "ensemble": {"top_n": 1},
        },
    )
    url = default_storage_url(root)
    ctx = JobContext(cfg, root, trained_study.study_name, url, JobRunner(60.0, 300.0))
    before = listing(root)
    outcome = cleanup(ctx)
    assert outcome.startswith("failed: cleanup skipped because the archive did not complete")
    assert {k for k in before if k.startswith(("trials/", "artifacts/"))} <= set(listing(root))

    # with a working archive the same job archives, then removes what is not kept
    (root / "trial_archive").unlink()
    outcome = cleanup(ctx)
    assert not outcome.startswith("failed"), outcome
    assert (root / "trial_archive" / "trial_registry.json").is_file()
    after = set(listing(root))
    assert {k for k in before if k.startswith("trials/") and k.count("/") == 2} - after  # some went


def test_cached_bundles_go_with_their_trials(
    trained_study: TrainedStudy, panel: Panel, tmp_path: Path
) -> None:
    """``cache/bundles/<sha256>_<trial id>`` (a remote store's verified copies) follow their
    trial's fate; the ensemble's members' copies, unknown trials' and foreign folders stay."""
    root = tmp_path / "root"
    shutil.copytree(trained_study.root, root)
    url, name = default_storage_url(root), trained_study.study_name
    ranked = sorted(
        optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.COMPLETE,)),
        key=lambda t: (-t.value, t.number),
    )
    cache = root / "cache" / "bundles"
    cache.mkdir(parents=True)
    folders = {}
    for t in ranked:
        folders[t.number] = cache / f"{t.user_attrs['actor_sha256']}_{t._trial_id}"
        shutil.copytree(root / t.user_attrs["bundle_path"], folders[t.number])
    shutil.copytree(folders[ranked[0].number], cache / f"{'a' * 64}_999999")  # no such trial
    (cache / "notes").mkdir()  # not the cache's
    # the third trial is an ensemble member: its cached copy stays although it ranks out
    sync_ensemble(root, url, name, PipelineSpec(panel.symbols), top_n=3)
    plan = plan_cleanup(root, url, keep_days=7, keep_top=1)
    cached = {x.path for x in plan.removed if x.kind == "cache"}
    assert cached == set()  # all three are members
    shutil.rmtree(root / "ensemble")
    result = run_cleanup(root, url, keep_days=7, keep_top=1)
    assert {x.path for x in result.removed if x.kind == "cache"} == {
        folders[t.number].relative_to(root).as_posix() for t in ranked[1:]
    }
    assert "2 cache" in result.summary()
    assert folders[ranked[0].number].is_dir()
    assert (cache / f"{'a' * 64}_999999").is_dir() and (cache / "notes").is_dir()
    skipped = {k.path: k.reason for k in result.skipped}
    assert skipped[f"cache/bundles/{'a' * 64}_999999"] == "trial id 999999 is not in the storage"
    assert skipped["cache/bundles/notes"] == "not a cached bundle; left alone"

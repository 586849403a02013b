"""A real 2-trial study run by the worker process on the embedded dataset (tiny budget):
trial attributes, the bundle in the artifact store, the VIN rebuilt from storage,
``--n-trials`` semantics and bad ``--data`` folders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial, TrialState

from tests.trainers._worker_proc import TINY_ARGS, reader, workers
from trainers.accounting import Costs
from trainers.bundle import ACTOR_FILE, BundleError, PipelineSpec, load_bundle, unpack_bundle
from trainers.features import FEATURE_PIPELINE_VERSION
from trainers.naming import grade_for, parse_vin, vin_for
from trainers.objective import StudyData, objective_value
from trainers.search_space import PPOParams
from trainers.storage import default_storage_url

STUDY = "study_test"
ATTRS = (
    "vin",
    "grade",
    "fold_metrics",
    "artifact_id",
    "actor_sha256",
    "data_fingerprint",
    "feature_pipeline_version",
)


@dataclass(frozen=True)
class Run:
    root: Path
    url: str
    trials: list[FrozenTrial]
    output: str


# a non-default execution model, chosen on the command line
STUDY_COSTS = Costs(
    fee=0.001, slippage=0.0005, min_cash=0.1, max_weight=0.8, trailing_stop=0.07, min_trade=0.005
)
COST_ARGS = [a for k, v in STUDY_COSTS.as_dict().items() for a in (f"--{k.replace('_', '-')}", str(v))]


def _load_trials(url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=reader(url)).get_trials()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``python -m trainers.worker --n-trials 2`` on the default SQLite storage of a temp root."""
    root = tmp_path_factory.mktemp("study_root")
    with workers(root / "logs") as ws:
        w = ws.start("--study", STUDY, "--root", str(root), "--n-trials", "2", *TINY_ARGS, *COST_ARGS)
        assert w.wait() == 0, w.describe()
    url = default_storage_url(root)
    return Run(root, url, _load_trials(url), w.output())


@pytest.mark.slow
def test_two_trials_complete_with_attributes(run: Run, study_data: StudyData) -> None:
    assert (run.root / "optuna.db").is_file()
    assert [t.state for t in run.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    for t in run.trials:
        missing = [a for a in ATTRS if t.user_attrs.get(a) in (None, "", [])]
        assert not missing, f"trial {t.number} lacks {missing}"
        assert t.user_attrs["data_fingerprint"] == study_data.fingerprint
        assert t.user_attrs["feature_pipeline_version"] == FEATURE_PIPELINE_VERSION
        folds = t.user_attrs["fold_metrics"]
        assert [m["fold"] for m in folds] == [f.index for f in study_data.folds]
        assert all(m["train_steps"] >= 256 for m in folds)
        assert t.value == pytest.approx(objective_value([m["excess_sharpe"] for m in folds]))
        assert t.user_attrs["grade"] == grade_for(t.value)
        assert set(t.params) == set(PPOParams.__dataclass_fields__)


@pytest.mark.slow
def test_bundle_from_artifact_store_loads_and_is_verified(
    run: Run, tmp_path: Path, study_data: StudyData
) -> None:
    store = FileSystemArtifactStore(str(run.root / "artifacts"))
    for t in run.trials:
        archive = tmp_path / f"{t.number}.tar"
        download_artifact(
            artifact_store=store, artifact_id=t.user_attrs["artifact_id"], file_path=str(archive)
        )
        directory = unpack_bundle(archive, tmp_path / f"bundle_{t.number}")
        state = torch.load(directory / ACTOR_FILE, weights_only=True)
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
        bundle = load_bundle(
            directory,
            PipelineSpec(("ETHUSD", "LTCUSD", "XRPUSD")),
            expect_sha256=t.user_attrs["actor_sha256"],
        )
        assert bundle.sha256 == t.user_attrs["actor_sha256"]
        assert bundle.meta["trial_number"] == t.number and bundle.meta["study"] == STUDY
        assert bundle.meta["vin"] == t.user_attrs["vin"]
        assert bundle.spec.lookback == t.params["lookback"]
        assert all(torch.equal(bundle.state[k], state[k]) for k in state)
        # the same bundle also sits under the trial's scratch folder
        assert (run.root / t.user_attrs["bundle_path"] / ACTOR_FILE).read_bytes() == (
            directory / ACTOR_FILE
        ).read_bytes()
        # the hash check is real: one flipped byte is refused
        raw = bytearray((directory / ACTOR_FILE).read_bytes())
        raw[-1] ^= 0xFF
        (directory / ACTOR_FILE).write_bytes(bytes(raw))
        with pytest.raises(BundleError, match="sha256"):
            load_bundle(directory)


@pytest.mark.slow
def test_vin_rebuilt_from_storage_equals_stored_vin(run: Run, tmp_path: Path) -> None:
    for t in _load_trials(run.url):  # read back out of storage afresh
        meta_created = datetime.fromisoformat(
            load_bundle(run.root / t.user_attrs["bundle_path"]).meta["created_at"]
        )
        vin = vin_for(t.params, t.value, meta_created, trailing_stop=STUDY_COSTS.trailing_stop)
        assert vin == t.user_attrs["vin"]
        decoded = parse_vin(t.user_attrs["vin"])
        assert decoded.net_width == t.params["net_width"] and isinstance(t.params["net_width"], int)
        assert decoded.batch_size == t.params["batch_size"]
        assert decoded.lookback == t.params["lookback"]
        assert decoded.trailing_stop == pytest.approx(STUDY_COSTS.trailing_stop)
        assert decoded.grade == t.user_attrs["grade"]
        assert math.isclose(decoded.gamma, t.params["gamma"], abs_tol=5e-5)


@pytest.mark.slow
def test_finished_study_second_run_exits_at_once(run: Run) -> None:
    assert "worker_started" in run.output
    with workers(run.root / "logs2") as ws:
        w = ws.start("--study", STUDY, "--root", str(run.root), "--n-trials", "2", *TINY_ARGS, *COST_ARGS)
        assert w.wait() == 0, w.describe()
    assert "study_complete" in w.output()
    assert "worker_started" not in w.output()  # no trial was started
    after = _load_trials(run.url)
    assert [(t.number, t.state) for t in after] == [(t.number, t.state) for t in run.trials]


def _bad_csv(folder: Path) -> Path:
    folder.mkdir()
    (folder / "ETHUSD.csv").write_text(
        "timestamp,open,high,low,close,volume\n"
        "2020-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2020-01-01T01:00:00Z,1,2,abc,1.5,10\n"
    )
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda tmp: tmp / "missing", ["missing", "does not exist"]),
        (lambda tmp: _bad_csv(tmp / "bad"), ["ETHUSD.csv", "row 3", "low"]),
    ],
    ids=["missing_folder", "bad_row"],
)
def test_bad_data_folder_exits_2_with_one_line(tmp_path: Path, make, expect: list[str]) -> None:
    folder = make(tmp_path)
    root = tmp_path / "root"
    with workers(tmp_path / "logs") as ws:
        w = ws.start("--study", STUDY, "--root", str(root), "--data", str(folder))
        assert w.wait() == 2, w.describe()
    lines = w.stderr().strip().splitlines()
    assert len(lines) == 1, w.describe()
    assert lines[0].startswith("error: ")
    for word in expect:
        assert word in lines[0]
    assert "Traceback" not in w.output()
    assert not (root / "optuna.db").exists()  # nothing was created


@pytest.mark.slow
def test_the_studys_costs_are_recorded_and_a_worker_with_other_costs_is_refused(run: Run) -> None:
    study = optuna.load_study(study_name=STUDY, storage=reader(run.url))
    assert Costs.from_dict(study.user_attrs["costs"], "study") == STUDY_COSTS
    for t in run.trials:
        meta = load_bundle(run.root / t.user_attrs["bundle_path"]).meta
        assert Costs.from_dict(meta["costs"], "bundle") == STUDY_COSTS
    with workers(run.root / "logs") as ws:
        w = ws.start(
            "--study", STUDY, "--root", str(run.root), "--n-trials", "3", *TINY_ARGS, "--fee", "0.002"
        )
        assert w.wait() == 2, w.describe()
    assert "trades with other costs: fee 0.001 (asked 0.002)" in w.output()

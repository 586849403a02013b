"""Several hosts: two runtime roots on this machine acting as host B (training) and host A
(sync, deployer, archive, evaluate, cleanup, paper trader), sharing one PostgreSQL study
and one S3-compatible artifact store (moto's server). Host B's root is deleted before host
A starts, so nothing on A can have read it."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from daemon.artifact_health import artifact_store_alert
from daemon.cleanup import run_cleanup
from ensemble.archive import ArchiveError, run_archive
from ensemble.deploy import run_deploy
from ensemble.deploy_gate import DeployThresholds
from ensemble.evaluate import evaluate
from ensemble.manifest import MANIFEST_FILE
from ensemble.policy import EnsemblePolicy
from ensemble.sync import SyncError, sync_ensemble
from paper_trader.brokers import SimBroker
from paper_trader.config import TraderConfig
from paper_trader.ledger import Ledger
from paper_trader.loop import Trader
from paper_trader.model_source import EnsembleSource
from tests.conftest import TINY
from tests.s3_server import S3Server
from trainers.artifact_store import S3ArtifactStore, artifact_store_for
from trainers.bundle import PipelineSpec
from trainers.bundle_cache import cache_dir
from trainers.data import load_panel
from trainers.objective import Objective, StudyData
from trainers.storage import make_storage
from trainers.worker import create_study

STUDY = "multihost"
LENIENT = DeployThresholds(min_grade="F", min_sharpe=-1e9, max_drawdown=1.0)
N_BARS = 12

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]


def train_on_host_b(root_b: Path, url: str, study_data: StudyData, n: int) -> list[optuna.trial.FrozenTrial]:
    """Host B: a worker's objective trains ``n`` trials into ``root_b``, bundles to the store."""
    study = create_study(make_storage(url, heartbeat_interval=None), STUDY, seed=0)
    objective = Objective(study_data, TINY, root_b)
    # the store of the process (the [artifacts] setting), as trainers/objective.py will open it
    objective.artifact_store = artifact_store_for(root_b)
    study.optimize(objective, n_trials=n)
    done = study.get_trials(states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.value, t.number))


def test_trials_of_host_b_are_synced_deployed_archived_evaluated_cleaned_and_traded_on_host_a(
    s3_server: S3Server, pg_url: str, study_data: StudyData, tmp_path: Path
) -> None:
    root_b, root_a = tmp_path / "host_b", tmp_path / "host_a"
    trials = train_on_host_b(root_b, pg_url, study_data, 3)
    assert len(trials) == 3
    store = artifact_store_for(root_a)
    assert isinstance(store, S3ArtifactStore)
    ids = {t.user_attrs["artifact_id"] for t in trials}
    assert ids <= set(store.list())
    assert not any((root_b / "artifacts").glob("*"))  # nothing went to B's disk store
    shutil.rmtree(root_b)  # host A never sees B's root
    root_a.mkdir()
    panel = load_panel()
    pipeline = PipelineSpec(panel.symbols)

    # sync: members from the store, through the verified cache
    result = sync_ensemble(root_a, pg_url, STUDY, pipeline, top_n=2)
    assert result.changed and [m.trial_id for m in result.members] == [t._trial_id for t in trials[:2]]
    policy = EnsemblePolicy.from_manifest(root_a / "ensemble" / MANIFEST_FILE, pipeline)
    assert [b.meta["trial_id"] for b in policy.bundles] == [t._trial_id for t in trials[:2]]
    cached = sorted(p.name for p in cache_dir(root_a).iterdir())
    assert cached == sorted(f"{t.user_attrs['actor_sha256']}_{t._trial_id}" for t in trials[:2])

    # deployer: the best trial's bundle from the store
    decision = run_deploy(root_a, STUDY, storage=pg_url, candidates=1, thresholds=LENIENT)
    assert decision.decision == "promoted" and decision.trial_id == trials[0]._trial_id, decision.summary()

    # archive: the best third (one trial)
    archived = run_archive(root_a, pg_url, STUDY, top_percent=30, min_grade="F")
    assert len(archived.added) == 1 and not archived.skipped

    # evaluate a trial trained on B
    report = evaluate(root_a, "trial", study=STUDY, trial=trials[1].number, storage=pg_url, window="test")
    assert report is not None

    # cleanup on A: keeps the top 1 and everything referenced; the third trial's artifact
    # (unreferenced) goes from the store, and only from there
    cleaned = run_cleanup(root_a, pg_url, keep_days=7, keep_top=1, study=STUDY)
    gone = [r for r in cleaned.removed if r.kind == "artifact"]
    third = trials[2].user_attrs["artifact_id"]
    assert [r.path for r in gone] == [f"s3://{s3_server.bucket}/artifacts/{third}"], cleaned
    assert set(store.list()) & ids == ids - {third}
    kept = {k.path for k in cleaned.protected}
    assert f"s3://{s3_server.bucket}/artifacts/{trials[1].user_attrs['artifact_id']}" in kept  # a member

    # the store goes down: a sync refuses to guess (a trial it never fetched) and leaves the
    # ensemble as it is; the trader keeps trading it
    s3_server.stop()
    alert = artifact_store_alert(root_a, STUDY)
    assert alert is not None and alert.kind == "artifact_store_unavailable" and alert.severity == "critical"
    assert s3_server.bucket in alert.message and "test-secret-key" not in alert.message
    shutil.rmtree(cache_dir(root_a))
    shutil.rmtree(root_a / "ensemble" / result.members[1].bundle_path)  # not available locally
    before = (root_a / "ensemble" / MANIFEST_FILE).read_bytes()
    with pytest.raises(SyncError, match=r"artifact store .* the ensemble is unchanged"):
        sync_ensemble(root_a, pg_url, STUDY, pipeline, top_n=2)
    assert (root_a / "ensemble" / MANIFEST_FILE).read_bytes() == before
    registry = (root_a / "trial_archive" / "trial_registry.json").read_bytes()
    with pytest.raises(ArchiveError, match=r"artifact store .* registry is unchanged"):
        run_archive(root_a, pg_url, STUDY, top_percent=100, min_grade="F")
    assert (root_a / "trial_archive" / "trial_registry.json").read_bytes() == registry
    s3_server.start()
    assert artifact_store_alert(root_a, STUDY) is None  # resolved
    assert sync_ensemble(root_a, pg_url, STUDY, pipeline, top_n=2).added == [result.members[1].bundle_path]
    s3_server.stop()
    config = TraderConfig.build(root=root_a, speed=0.0, max_bars=N_BARS, min_notional=0.0)
    ledger = Ledger(config.ledger_path)
    try:
        source = EnsembleSource(root_a, pipeline, debounce_s=0.0)
        assert Trader(config, SimBroker(), source, ledger).run() == 0
        assert len(ledger.equity_rows()) == N_BARS and ledger.decisions()
    finally:
        ledger.close()

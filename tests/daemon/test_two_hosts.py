"""Two hosts as real supervisors: a ``--role workers`` supervisor (host B: the training
workers only) and a ``--role services`` supervisor (host A: sync, deployer, archive,
cleanup, the paper trader), two runtime roots sharing one PostgreSQL study and one
S3-compatible artifact store (moto's server). Host A's ensemble is built from host B's
trials through the store and traded by A's paper trader; neither host runs the other's
children."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ensemble.manifest import read_manifest
from tests.daemon._supervisor_proc import SupervisorProc, Supervisors, clean_env, write_config
from tests.paper_trader.ensemble_root import heartbeat
from tests.s3_server import S3Server
from trainers.bundle_cache import cache_dir

STUDY = "two_hosts"

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]


def _complete(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name=STUDY, storage=url)
    except KeyError:
        return []
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _bars(root: Path) -> int:
    return int((heartbeat(root) or {}).get("bars_processed") or 0)


def _children(sup: SupervisorProc) -> set[str]:
    status = sup.status() or {}
    return {c["name"] for c in (status.get("supervisor") or {}).get("children", [])}


@pytest.mark.timeout(900)
def test_a_workers_host_and_a_services_host_share_one_study(
    s3_server: S3Server, pg_url: str, tmp_path: Path, sups: Supervisors
) -> None:
    artifacts = {"store": f"s3://{s3_server.bucket}/artifacts", "endpoint_url": s3_server.endpoint_url}
    artifacts["region"] = "us-east-1"
    shared = {"study": {"name": STUDY, "storage": pg_url}, "artifacts": artifacts}
    env = clean_env()  # no CAPPUCCINO_* variables: each host reads its own config; AWS_* stay
    root_b, root_a = tmp_path / "host_b", tmp_path / "host_a"
    cfg_b = write_config(tmp_path / "b.toml", root_b, workers={"count": 1}, **shared)
    cfg_a = write_config(
        tmp_path / "a.toml",
        root_a,
        workers={"count": 1},  # ignored by the services role
        paper_trader={"enabled": True, "speed": 20.0, "heartbeat_timeout_s": 120},
        jobs={"watchdog_interval_s": 1, "monitor_interval_s": 5, "sync_interval_s": 5},
        **shared,
    )
    host_b = sups.start(cfg_b, root_b, "--role", "workers", env=env)
    host_b.wait_for("worker-0 running on host B", lambda: host_b.running_child("worker-0"))
    host_b.wait_for("2 COMPLETE trials", lambda: len(_complete(pg_url)) >= 2, timeout=600)
    host_a = sups.start(cfg_a, root_a, "--role", "services", env=env)

    manifest = root_a / "ensemble" / "ensemble_manifest.json"
    host_a.wait_for("host A's ensemble", manifest.is_file)
    members = read_manifest(manifest).members
    trained = {t._trial_id: t for t in _complete(pg_url)}
    assert members and {m.trial_id for m in members} <= set(trained)
    for m in members:  # fetched from the store into A's verified cache, not from B's root
        assert m.sha256 == trained[m.trial_id].user_attrs["actor_sha256"]
        assert (cache_dir(root_a) / f"{m.sha256}_{m.trial_id}").is_dir()
    host_a.wait_for(
        "host A trading 5 bars", lambda: int((heartbeat(root_a) or {}).get("bars_processed") or 0) >= 5
    )

    # each host runs its own children only
    assert _children(host_b) == {"worker-0"}
    assert "paper_trader" in _children(host_a) and not any(n.startswith("worker-") for n in _children(host_a))
    assert not (root_b / "ensemble").exists() and not (root_b / "paper_trader").exists()
    assert not list(root_a.glob("trials/*/*"))  # no training on host A
    con = sqlite3.connect(f"file:{root_a / 'paper_trader' / 'ledger.db'}?mode=ro", uri=True, timeout=60)
    try:
        generations = {row[0] for row in con.execute("SELECT DISTINCT generation FROM equity")}
    finally:
        con.close()
    assert read_manifest(manifest).generation in generations | {max(generations) + 1}

    assert host_a.terminate() == 0, host_a.describe()
    assert host_b.terminate() == 0, host_b.describe()

"""One agent design from training to trading: a study whose agents act with softmax
portfolio weights every 4 bars is recorded in its bundles, synced into an ensemble, replayed
by the real paper trader, and evaluated; the trader acts only at decision bars and ends
with the evaluation's equity curve."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble.evaluate import evaluate
from ensemble.policy import EnsemblePolicy
from ensemble.sync import sync_ensemble
from paper_trader.ledger import Ledger
from tests.ensemble.designed_study import designed_root as train_designed_root
from tests.paper_trader.ensemble_root import PIPELINE, REPO
from trainers.accounting import Costs
from trainers.backtest import decision_bars
from trainers.bundle import load_bundle
from trainers.design import Design, DesignOptions
from trainers.objective import Objective, StudyData, TrainingConfig
from trainers.storage import default_storage_url, make_storage
from trainers.worker import create_study

STUDY = "designed"
INTERVAL = 4
N_BARS = 120
HOUR = 3600
DESIGN = DesignOptions("softmax", (INTERVAL,), ("excess_log_return",), 0.001)
COSTS = Costs(trailing_stop=0.0)  # without the stop every order is a decision's


@pytest.fixture(scope="module")
def designed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0, costs=COSTS, design=DESIGN)
    return train_designed_root(tmp_path_factory.mktemp("designed"), STUDY, config)


@pytest.mark.slow
def test_the_design_reaches_the_bundle_the_ensemble_and_the_trader(designed_root: Path) -> None:
    root = designed_root
    bundle_dir = next((root / "trials" / STUDY).glob("*/bundle"))
    bundle = load_bundle(bundle_dir, PIPELINE)
    meta = bundle.meta
    assert meta["schema_version"] == 3  # no predictor: readable by version-3 readers
    assert meta["action_spec"]["shape"] == [4] and meta["action_spec"]["scheme"] == "softmax"
    assert bundle.design == Design("softmax", INTERVAL, "excess_log_return", 0.001)
    assert meta["training"]["design"] == DESIGN.as_dict()
    policy = EnsemblePolicy.from_manifest(root / "ensemble" / "ensemble_manifest.json", PIPELINE)
    assert (policy.action_scheme, policy.decision_interval, policy.action_dim) == ("softmax", INTERVAL, 4)

    argv = [sys.executable, "-m", "daemon.cli", "trade", "--root", str(root), "--broker", "sim"]
    argv += ["--speed", "0", "--max-bars", str(N_BARS), "--min-notional", "0"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    ledger = Ledger(root / "paper_trader" / "ledger.db")
    decisions = ledger.decisions()
    assert len(decisions) == N_BARS
    ts = np.array([d.bar_ts for d in decisions])
    decides = decision_bars(ts, HOUR, INTERVAL)
    assert decides.sum() == N_BARS // INTERVAL
    for d, yes in zip(decisions, decides, strict=True):
        action = json.loads(d.action)
        assert (action is not None and len(action) == 4) if yes else action is None, d.bar_ts
    order_bars = {o.bar_ts for o in ledger.orders()}
    assert order_bars and order_bars <= set(ts[decides].tolist())

    traded = np.array([r.equity for r in ledger.equity_rows()]) / 10_000.0
    evaluated = evaluate(root, "ensemble", window="all").model_line.equity
    np.testing.assert_allclose(traded, evaluated[:N_BARS], rtol=1e-7, atol=0)


@pytest.mark.slow
def test_a_study_that_searches_intervals_syncs_the_best_trials_interval(tmp_path: Path) -> None:
    """Members act alike: trials of another decision interval than the best are skipped
    (reason ``design``), never mixed into the ensemble."""
    torch.set_num_threads(1)
    root = tmp_path / "root"
    root.mkdir()
    options = DesignOptions("softmax", (1, 24), ("log_return",))
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0, design=options)
    url = default_storage_url(root)
    study = create_study(make_storage(url, heartbeat_interval=None), "searched", seed=0)
    study.enqueue_trial({"decision_interval": 1})
    study.enqueue_trial({"decision_interval": 24})
    study.enqueue_trial({"decision_interval": 1})
    study.optimize(Objective(StudyData.load(None, config), config, root), n_trials=3)
    intervals = {t.number: t.params["decision_interval"] for t in study.trials}
    best = study.best_trial.params["decision_interval"]
    result = sync_ensemble(root, url, "searched", PIPELINE, top_n=3)
    members = {m.trial_number for m in result.members}
    assert members == {n for n, k in intervals.items() if k == best}
    assert {s.trial.number for s in result.skipped if s.reason == "design"} == set(intervals) - members
    policy = EnsemblePolicy.from_manifest(root / "ensemble" / "ensemble_manifest.json", PIPELINE)
    assert policy.decision_interval == best

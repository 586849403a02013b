"""End to end on data that is not hourly 24/7, generated here as seeded random walks:

* a daily single-asset equities file with weekend gaps and holidays (a session market):
  a 2-trial study by a real ``python -m trainers.worker`` (quick mode, default hold-out
  cut), an ensemble sync, and ``python -m paper_trader`` replaying 20 hold-out bars;
* 15-minute bars of two assets around the clock (24/7): a 2-trial study in this process
  (full mode), a one-member ensemble sync, and the trader loop in this process replaying
  20 hold-out bars exactly as the one backtest routine does.

Both check that the study annualises with the data's bars per year and records it, with
the resolved hold-out cut, in every bundle, and that the replay starts at that cut."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from ensemble.manifest import MANIFEST_FILE
from ensemble.policy import EnsemblePolicy
from ensemble.sync import sync_ensemble
from paper_trader.brokers import SimBroker
from paper_trader.config import TraderConfig
from paper_trader.ledger import Ledger
from paper_trader.loop import Trader
from paper_trader.model_source import EnsembleSource
from tests.conftest import TINY
from tests.paper_trader.ensemble_root import finish, start_trader
from tests.synthetic_ohlcv import every, weekdays, write_random_walk
from tests.trainers._worker_proc import REPO, TINY_ARGS
from trainers.accounting import Costs
from trainers.backtest import backtest
from trainers.bundle import PipelineSpec, load_bundle, to_numpy_policy
from trainers.data import Panel, load_panel, resolve_holdout_cut
from trainers.features import compute_features
from trainers.objective import Objective, StudyData
from trainers.storage import default_storage_url, make_storage
from trainers.worker import create_study

N_BARS = 20


def run_worker(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m trainers.worker ARGS`` to its end, output captured."""
    cmd = [sys.executable, "-m", "trainers.worker", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def bundle_metas(root: Path, study: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((root / "trials" / study).glob("*/bundle/model.json"))]


def check_trials(root: Path, url: str, study: str, panel: Panel) -> list[dict]:
    """Both trials completed and recorded the data's timeframe and resolved hold-out cut."""
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs for t in trials]
    metas = bundle_metas(root, study)
    assert len(metas) == 2
    for meta in metas:
        training = meta["training"]
        assert training["bars_per_year"] == panel.bars_per_year
        assert training["bar_seconds"] == panel.bar_seconds
        assert training["holdout_cut"] == resolve_holdout_cut(panel)
    return metas


def replay_rows(ledger: Ledger, panel: Panel) -> list:
    rows = ledger.equity_rows()
    assert len(rows) == N_BARS
    start = panel.index_of(resolve_holdout_cut(panel))
    assert [r.bar_ts for r in rows] == panel.timestamps[start : start + N_BARS].astype(np.int64).tolist()
    assert all(np.isfinite(r.equity) and r.equity > 0 for r in rows)
    return rows


@pytest.mark.slow
def test_daily_equities_with_weekend_gaps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_random_walk(data / "SPY.csv", weekdays("2018-01-01", "2021-12-31", holidays=True), seed=7)
    panel = load_panel(data)
    assert (panel.bar_seconds, panel.timeframe.continuous) == (86_400, False)
    assert 248 <= panel.bars_per_year <= 253  # about 252: weekdays less holidays
    assert np.all(np.diff(panel.timestamps.astype(np.int64)) >= 86_400) and panel.n_filled == 0

    root, study = tmp_path / "root", "daily"
    args = ["--study", study, "--root", str(root), "--data", str(data), "--n-trials", "2", *TINY_ARGS]
    done = run_worker(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    url = default_storage_url(root)
    metas = check_trials(root, url, study, panel)
    assert metas[0]["training"]["mode"] == "quick" and len(metas[0]["metrics"]["folds"]) == 5

    (root / ".current_study").write_text(study + "\n")
    result = sync_ensemble(root, url, study, PipelineSpec(panel.symbols), top_n=2)
    assert result.changed and len(result.members) == 2

    args = ["--data", str(data), "--speed", "0", "--max-bars", str(N_BARS), "--min-notional", "0"]
    proc = start_trader(root, *args, log=tmp_path / "trader.log")
    assert finish(proc) == 0, (tmp_path / "trader.log").read_text()
    ledger = Ledger(root / "paper_trader" / "ledger.db")
    try:
        replay_rows(ledger, panel)
    finally:
        ledger.close()


@pytest.mark.slow
def test_15_minute_bars_of_two_assets_around_the_clock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    times = every("2021-01-01", 220, "15min")
    write_random_walk(data / "BTCUSD.csv", times.delete([500, 501]), seed=1, start=30_000.0, vol=0.003)
    write_random_walk(data / "ETHUSD.csv", times, seed=2, start=1_000.0, vol=0.004)
    panel = load_panel(data)
    assert (panel.bar_seconds, panel.bars_per_year, panel.timeframe.continuous) == (900, 35_040, True)
    assert len(panel) == len(times) and panel.n_filled == 2

    config = dataclasses.replace(TINY, mode="full")
    study_data = StudyData.load(data, config)
    assert study_data.embargo == 96 and len(study_data.folds) == 2  # 1 day; 176 days of study data
    root, study = tmp_path / "root", "quarter_hour"
    url = default_storage_url(root)
    optuna_study = create_study(make_storage(url, heartbeat_interval=None), study, seed=0)
    optuna_study.optimize(Objective(study_data, config, root), n_trials=2)
    metas = check_trials(root, url, study, panel)
    assert metas[0]["training"]["episode_bars"] == 30 * 96

    # the fold's Sharpe ratios are annualised with 35,040 bars per year
    best = max(optuna_study.get_trials(states=[TrialState.COMPLETE]), key=lambda t: t.value)
    bundle = load_bundle(root / best.user_attrs["bundle_path"])
    fold = study_data.folds[-1]
    features = bundle.spec.norm.apply(study_data.features)
    policy, costs = to_numpy_policy(bundle.actor), Costs.from_dict(bundle.meta["costs"], "bundle")
    result = backtest(
        policy,
        features,
        study_data.panel.prices,
        fold.test_start,
        fold.test_stop,
        bundle.spec.lookback,
        costs,
        35_040,
        bundle.design.action_scheme,
    )
    assert bundle.meta["metrics"]["fold"]["sharpe"] == pytest.approx(result.metrics.sharpe, rel=1e-9)

    (root / ".current_study").write_text(study + "\n")
    pipeline = PipelineSpec(panel.symbols)
    assert sync_ensemble(root, url, study, pipeline, top_n=1).changed

    overrides = {"min_trade": 0.0, "trailing_stop": 0.0, "min_cash": 0.05, "max_weight": 1.0}
    trader_config = TraderConfig.build(
        root=root, data=data, speed=0.0, max_bars=N_BARS, min_notional=0.0, **overrides
    )
    ledger = Ledger(trader_config.ledger_path)
    try:
        source = EnsembleSource(root, pipeline, debounce_s=0.0)
        assert Trader(trader_config, SimBroker(data), source, ledger).run() == 0
        rows = replay_rows(ledger, panel)
        assert ledger.orders() and len({r.equity for r in rows}) > 1  # it traded: not a trivial match
    finally:
        ledger.close()
    # the replay equals the one backtest routine on the same bars
    (member,) = EnsemblePolicy.from_manifest(root / "ensemble" / MANIFEST_FILE, pipeline).bundles
    start = panel.index_of(resolve_holdout_cut(panel))
    replay_costs = Costs(**{**member.meta["costs"], **overrides})
    expected = backtest(
        to_numpy_policy(member.actor),
        member.spec.norm.apply(compute_features(panel.prices)),
        panel.prices,
        start,
        start + N_BARS,
        member.spec.lookback,
        replay_costs,
        action_scheme=member.design.action_scheme,
    )
    equity = np.array([r.equity for r in rows]) / trader_config.initial_cash
    np.testing.assert_allclose(equity, expected.equity, rtol=1e-7, atol=0)


@pytest.mark.slow
def test_worker_refuses_too_short_data_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_random_walk(data / "SPY.csv", weekdays("2021-01-01", "2021-12-31"), seed=3)
    args = ["--study", "short", "--root", str(tmp_path / "root"), "--data", str(data), *TINY_ARGS]
    done = run_worker(*args)
    assert done.returncode == 2
    # stderr holds the worker's JSON log lines (a tiny budget logs a warning) and the error
    (line,) = [x for x in done.stderr.splitlines() if not x.startswith("{")]
    assert line.startswith("error: quick mode needs 481.4 days (")
    assert "; the data has 202 days (145 bars, 2021-04-01 .. 2021-10-20); use --mode full" in line
    assert line.endswith("or a later --holdout-cut")

"""The simulated broker (paper_trader.brokers.sim.SimBroker) against the one backtest routine, on
a real ensemble trained by the ``trained_study`` fixture."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from ensemble.manifest import MANIFEST_FILE
from ensemble.policy import EnsemblePolicy
from paper_trader.brokers import BrokerError, SimBroker
from paper_trader.config import TraderConfig
from paper_trader.ledger import Ledger
from paper_trader.loop import Trader
from paper_trader.model_source import EnsembleSource
from tests.conftest import TrainedStudy
from tests.paper_trader.ensemble_root import PIPELINE, ensemble_root
from trainers.accounting import Costs
from trainers.backtest import backtest
from trainers.bundle import to_numpy_policy
from trainers.data import DEFAULT_HOLDOUT_CUT, DataError, Panel
from trainers.features import HISTORY_BARS, compute_features

N_BARS = 200


@pytest.fixture(scope="module")
def single_root(trained_study: TrainedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root whose ensemble is the study's best trial alone."""
    dest = tmp_path_factory.mktemp("sim") / "root"
    return ensemble_root(trained_study.root, dest, trained_study.study_name, top_n=1)


def copy_ensemble(src: Path, root: Path) -> Path:
    """A fresh root holding only ``src``'s ensemble and current study."""
    root.mkdir()
    shutil.copy2(src / ".current_study", root / ".current_study")
    shutil.copytree(src / "ensemble", root / "ensemble")
    return root


def run_trader(root: Path, panel: Panel, **settings: object) -> Ledger:
    """Run the real loop in this process over ``panel`` from the hold-out cut; returns its ledger."""
    config = TraderConfig.build(root=root, speed=0.0, **settings)
    broker = SimBroker(panel=panel)
    ledger = Ledger(config.ledger_path)
    assert Trader(config, broker, EnsembleSource(root, PIPELINE, debounce_s=0.0), ledger).run() == 0
    return ledger


@pytest.mark.slow
@pytest.mark.parametrize(("slippage", "trailing_stop"), [(0.0, 0.10), (0.0005, 0.02)])
def test_replay_reproduces_the_backtest_equity_curve(
    single_root: Path, panel: Panel, tmp_path: Path, slippage: float, trailing_stop: float
) -> None:
    root = copy_ensemble(single_root, tmp_path / "root")
    settings = {
        "min_notional": 0.0,
        "slippage": slippage,
        "fee": 0.0025,
        "min_cash": 0.05,
        "max_weight": 0.6,
        "trailing_stop": trailing_stop,
        "min_trade": 0.0,
        "initial_cash": 10_000.0,
        "max_bars": N_BARS,
    }
    ledger = run_trader(root, panel, **settings)
    rows = ledger.equity_rows()
    assert len(rows) == N_BARS

    policy = EnsemblePolicy.from_manifest(root / "ensemble" / MANIFEST_FILE, PIPELINE)
    (bundle,) = policy.bundles
    features = bundle.spec.norm.apply(compute_features(panel.prices))
    start = panel.index_of(DEFAULT_HOLDOUT_CUT)
    costs = Costs(0.0025, slippage, min_cash=0.05, max_weight=0.6, trailing_stop=trailing_stop, min_trade=0.0)
    policy_fn = to_numpy_policy(bundle.actor)
    scheme = bundle.design.action_scheme
    lookback = bundle.spec.lookback
    result = backtest(
        policy_fn, features, panel.prices, start, start + N_BARS, lookback, costs, action_scheme=scheme
    )
    equity = np.array([r.equity for r in rows]) / 10_000.0
    assert rows[0].bar_ts == int(panel.timestamps[start].astype("int64"))
    np.testing.assert_allclose(equity, result.equity, rtol=1e-7, atol=0)
    # the comparison is not trivial: the model traded on most bars and lost fees
    orders = ledger.orders()
    assert len({o.bar_ts for o in orders}) > N_BARS // 2
    assert sum(r.fees for r in rows) > 0
    if trailing_stop == 0.02:
        assert any(o.reason == "trailing_stop" for o in orders)
    # the ledger is consistent: positions = sum of fills, cash = initial - paid - fees
    fills = ledger.fills()
    state = ledger.state()
    for j, sym in enumerate(state.symbols):
        bought = sum(f.qty for f in fills if f.symbol == sym)
        assert state.qty[j] == pytest.approx(bought, rel=1e-9, abs=1e-12)
    paid = sum(f.qty * f.price + f.fee for f in fills)
    assert state.cash == pytest.approx(10_000.0 - paid, rel=1e-9)


@pytest.mark.slow
def test_decisions_use_bars_up_to_t_only(single_root: Path, panel: Panel, tmp_path: Path) -> None:
    """A replay whose data ends right after bar t+k decides bars <= t+k exactly like a replay
    that has all the later bars: nothing from the future reaches a decision."""
    start = panel.index_of(DEFAULT_HOLDOUT_CUT)
    k = 40
    short = panel.slice(0, start + k)
    decisions = []
    for name, data in (("short", short), ("full", panel)):
        root = copy_ensemble(single_root, tmp_path / name)
        ledger = run_trader(root, data, max_bars=k, min_notional=1.0)
        decisions.append([(d.bar_ts, d.action, d.planned, d.n_orders) for d in ledger.decisions()])
    assert len(decisions[0]) == k  # the short replay ran to its end
    assert decisions[0] == decisions[1]


def test_replay_starts_at_the_holdout_cut_with_earlier_bars_as_history(panel: Panel) -> None:
    broker = SimBroker(panel=panel)
    stop = threading.Event()
    first = broker.next_bar(None, stop)
    assert first is not None and not broker.finished
    start = panel.index_of(DEFAULT_HOLDOUT_CUT)
    assert first.ts == int(panel.timestamps[start].astype("int64"))
    assert first.iso == "2019-07-01T00:00:00Z"
    hist = broker.history(first, HISTORY_BARS)
    assert hist.shape == (HISTORY_BARS, panel.n_assets, 5)
    np.testing.assert_array_equal(hist[-1], panel.prices[start])
    np.testing.assert_array_equal(hist[0], panel.prices[start - HISTORY_BARS + 1])
    second = broker.next_bar(first.ts, stop)
    assert second is not None and second.ts == first.ts + 3600
    np.testing.assert_array_equal(second.open, panel.prices[start + 1, :, 0])
    last = broker.next_bar(int(panel.timestamps[-1].astype("int64")), stop)
    assert last is None and broker.finished  # the replay is over after the last bar


def test_a_bar_not_in_the_data_is_an_error(panel: Panel) -> None:
    broker = SimBroker(panel=panel)
    with pytest.raises(BrokerError, match="is not in the replayed data"):
        broker.next_bar(int(panel.timestamps[-1].astype("int64")) + 1800, threading.Event())


def test_a_cut_after_the_data_is_refused(panel: Panel) -> None:
    with pytest.raises(DataError, match="after the last bar"):
        SimBroker(panel=panel, holdout_cut="2031-01-01T00:00:00Z")


def test_a_paced_replay_withholds_the_next_bar_until_it_is_due(panel: Panel) -> None:
    """At 0.001 bars per second the second bar is due 1000 s after the first: asking for it
    within a short wait gives nothing (and the replay is not over); a stop request ends it."""
    broker = SimBroker(panel=panel, speed=0.001)
    stop = threading.Event()
    first = broker.next_bar(None, stop, timeout_s=0.05)
    assert first is not None
    for _ in range(3):
        assert broker.next_bar(first.ts, stop, timeout_s=0.05) is None
        assert not broker.finished
    stop.set()
    assert broker.next_bar(first.ts, stop, timeout_s=60.0) is None
    flat_out = SimBroker(panel=panel, speed=0.0)
    bar = flat_out.next_bar(first.ts, threading.Event(), timeout_s=0.0)
    assert bar is not None and bar.ts == first.ts + 3600

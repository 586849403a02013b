"""The long feature set from training to trading: a study started with ``feature_set =
"long"`` records the set in its bundles, a bundle replays its last fold's backtest, the
ensemble kernel equals every member's own actor (and refuses members of another set), and
the real paper trader, which computes the features over its last ``LONG_HISTORY_BARS``
bars only, decides exactly what the kernel decides on features of the whole panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ensemble.backtests import bundle_backtest
from ensemble.policy import EnsembleError, EnsemblePolicy
from tests.ensemble.designed_study import designed_root, trade_replay
from tests.ensemble.test_policy import make_bundle
from tests.ensemble.test_predictor_trading import MANIFEST, own_action
from tests.paper_trader.ensemble_root import PIPELINE
from trainers.bundle import load_bundle
from trainers.data import load_panel
from trainers.design import DesignOptions
from trainers.features import ALL_FEATURE_NAMES, LONG_HISTORY_BARS, compute_features
from trainers.objective import StudyData, TrainingConfig

STUDY = "long_view"
DESIGN = DesignOptions("softmax", (1,), ("log_return",), feature_set="long")


@pytest.fixture(scope="module")
def long_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0, design=DESIGN)
    data = StudyData.load(None, config)
    assert data.feature_names == ALL_FEATURE_NAMES and data.features.shape[2] == 16
    return designed_root(tmp_path_factory.mktemp("long"), STUDY, config)


@pytest.mark.slow
def test_the_bundle_records_the_long_set_and_replays_its_fold(long_root: Path) -> None:
    panel = load_panel(None)
    raw = compute_features(panel.prices, ALL_FEATURE_NAMES)
    for bundle_dir in sorted((long_root / "trials" / STUDY).glob("*/bundle")):
        bundle = load_bundle(bundle_dir, PIPELINE)
        assert bundle.design.feature_set == "long" and bundle.meta["design"]["feature_set"] == "long"
        assert bundle.spec.feature_names == ALL_FEATURE_NAMES
        assert bundle.spec.norm.mean.shape == (panel.n_assets, 16)
        fold, last = bundle.meta["fold"], bundle.meta["metrics"]["fold"]
        result = bundle_backtest(
            bundle, panel.prices, raw, fold["test_start"], fold["test_stop"], timestamps=panel.timestamps
        )
        assert result.metrics.sharpe == pytest.approx(last["sharpe"], rel=1e-4, abs=1e-6)
        # the base columns alone are not enough for it
        with pytest.raises(ValueError, match="lack the model's 16 features"):
            bundle.observation_features(raw[:, :, :12])


@pytest.mark.slow
def test_the_kernel_equals_each_members_own_actor_and_refuses_another_set(
    long_root: Path, tmp_path: Path
) -> None:
    panel = load_panel(None)
    policy = EnsemblePolicy.from_manifest(long_root.joinpath(*MANIFEST), PIPELINE)
    assert policy.feature_names == ALL_FEATURE_NAMES and policy.price_history_bars == LONG_HISTORY_BARS
    raw = compute_features(panel.prices[-3000:], ALL_FEATURE_NAMES)
    rng = np.random.default_rng(0)
    for t in (1800, 2500, 2999):
        weights = rng.dirichlet(np.ones(panel.n_assets + 1))[: panel.n_assets]
        window = raw[t + 1 - policy.max_lookback : t + 1]
        want = np.array([own_action(b, raw, t, weights) for b in policy.bundles])
        np.testing.assert_allclose(policy.member_actions(window, weights), want, atol=2e-5)
    base_dir = tmp_path / "base"
    make_bundle(base_dir, panel.symbols, raw[:, :, :12], 16, 2, "tanh", 7, seed=1, scheme="softmax")
    base = load_bundle(base_dir, PIPELINE)
    assert base.design.feature_set == "base"
    with pytest.raises(EnsembleError, match="members observe different symbols or features"):
        EnsemblePolicy.from_bundles([*policy.bundles, base])
    # a base member reads the leading columns of the long raw features
    alone = EnsemblePolicy.from_bundles([base])
    t = 2999
    np.testing.assert_array_equal(
        alone.act(raw[t - 6 : t + 1], np.zeros(3)), alone.act(raw[t - 6 : t + 1, :, :12], np.zeros(3))
    )


@pytest.mark.slow
def test_the_paper_trader_decides_what_the_kernel_decides_on_the_whole_panel(long_root: Path) -> None:
    done, decisions = trade_replay(long_root, 6)
    assert "short_history" not in done.stdout + done.stderr
    assert len(decisions) == 6
    panel = load_panel(None)
    raw = compute_features(panel.prices, ALL_FEATURE_NAMES)
    policy = EnsemblePolicy.from_manifest(long_root.joinpath(*MANIFEST), PIPELINE)
    first = decisions[0]  # the account starts in cash: weights 0
    t = int(np.searchsorted(panel.timestamps.astype("datetime64[s]").astype(np.int64), first.bar_ts))
    want = policy.act(raw[t + 1 - policy.max_lookback : t + 1], np.zeros(panel.n_assets))
    action = first.action if isinstance(first.action, list | np.ndarray) else json.loads(first.action)
    np.testing.assert_allclose(np.asarray(action, dtype=np.float64), want, atol=1e-6)

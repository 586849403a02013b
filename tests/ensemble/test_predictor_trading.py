"""The GRU predictor channel from training to trading: a study whose trials observe a
predictor fitted per fold records it in their bundles, a bundle replays its last fold's
backtest, the ensemble kernel (also mixed with a member without a predictor) equals every
member's own actor, no observation or action at a bar depends on a later bar, and the real
paper trader trades the ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble.backtests import bundle_backtest
from ensemble.policy import EnsemblePolicy
from tests.ensemble.designed_study import designed_root, trade_replay
from tests.ensemble.test_policy import make_bundle
from tests.paper_trader.ensemble_root import PIPELINE
from trainers.bundle import SCHEMA_VERSION, Bundle, load_bundle
from trainers.data import load_panel
from trainers.design import DesignOptions
from trainers.features import compute_features
from trainers.objective import StudyData, TrainingConfig
from trainers.observation import build_observations

STUDY = "predicted"
HORIZON = 4
DESIGN = DesignOptions("softmax", (1,), ("log_return",), predictor_horizons=(HORIZON,))
MANIFEST = ("ensemble", "ensemble_manifest.json")


@pytest.fixture(scope="module")
def predicted_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0, design=DESIGN)
    return designed_root(tmp_path_factory.mktemp("predicted"), STUDY, config)


def own_action(bundle: Bundle, raw: np.ndarray, t: int, weights: np.ndarray) -> np.ndarray:
    """A member's own actor on its own observation at bar ``t`` (the backtest's path)."""
    features = bundle.observation_features(raw)
    lookback = bundle.spec.lookback
    obs = build_observations(features, np.array([t]), lookback, weights.reshape(1, -1))
    return bundle.actor.act(torch.from_numpy(obs)).numpy()[0]


@pytest.mark.slow
def test_the_bundle_carries_the_predictor_and_replays_its_fold(predicted_root: Path) -> None:
    panel = load_panel(None)
    raw = compute_features(panel.prices)
    for bundle_dir in sorted((predicted_root / "trials" / STUDY).glob("*/bundle")):
        bundle = load_bundle(bundle_dir, PIPELINE)
        meta = bundle.meta
        assert meta["schema_version"] == SCHEMA_VERSION == 4
        assert bundle.design.predictor_horizon == HORIZON
        assert bundle.spec.predictor is not None and bundle.spec.predictor.horizon == HORIZON
        assert bundle.predictor is not None
        assert meta["observation_spec"]["n_channels"] == len(bundle.spec.feature_names) + 1
        last = meta["metrics"]["fold"]
        assert 0.0 < last["predictor_validation_accuracy"] < 1.0
        assert not any(k.startswith("predictor.") for k in bundle.state)  # the actor's own
        # the bundle alone (features, predictor, actor) reproduces the fold's backtest
        fold = meta["fold"]
        result = bundle_backtest(
            bundle, panel.prices, raw, fold["test_start"], fold["test_stop"], timestamps=panel.timestamps
        )
        assert result.metrics.sharpe == pytest.approx(last["sharpe"], rel=1e-4, abs=1e-6)
        assert result.metrics.turnover == pytest.approx(last["turnover"], rel=1e-4, abs=1e-6)
        # a window without the predictor's history before it is refused, not fed zeros
        history = bundle.spec.history_bars
        assert history == bundle.spec.lookback + bundle.spec.predictor.sequence_bars - 1
        with pytest.raises(ValueError, match=f"needs {history} bars of history"):
            bundle_backtest(bundle, panel.prices, raw, history - 2, history + 50)


@pytest.mark.slow
def test_the_ensemble_kernel_equals_each_members_own_actor(predicted_root: Path, tmp_path: Path) -> None:
    panel = load_panel(None)
    raw = compute_features(panel.prices[-900:])
    trained = EnsemblePolicy.from_manifest(predicted_root.joinpath(*MANIFEST), PIPELINE).bundles
    plain_dir = tmp_path / "plain"
    make_bundle(plain_dir, panel.symbols, raw, 16, 2, "tanh", 7, seed=1, scheme="softmax")
    plain = load_bundle(plain_dir, PIPELINE)
    assert plain.predictor is None
    rng = np.random.default_rng(0)
    for members in (trained, [*trained, plain]):
        policy = EnsemblePolicy.from_bundles(members)
        history = max(b.spec.lookback for b in members) + trained[0].spec.predictor.sequence_bars - 1
        assert policy.max_lookback == history
        for t in (400, 555, 899):
            weights = rng.dirichlet(np.ones(panel.n_assets + 1))[: panel.n_assets]
            window = raw[t + 1 - policy.max_lookback : t + 1]
            got = policy.member_actions(window, weights)
            want = np.array([own_action(b, raw, t, weights) for b in members])
            np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.slow
def test_no_observation_or_action_depends_on_a_later_bar(predicted_root: Path) -> None:
    panel = load_panel(None)
    prices = panel.prices[-700:]
    policy = EnsemblePolicy.from_manifest(predicted_root.joinpath(*MANIFEST), PIPELINE)
    bundle = policy.bundles[0]
    raw = compute_features(prices)
    obs = bundle.observation_features(raw)
    weights = np.full(panel.n_assets, 1.0 / (panel.n_assets + 1))
    for t in (300, 500, 698):
        future = prices.copy()
        future[t + 1 :] *= np.linspace(0.5, 2.0, len(future) - t - 1)[:, None, None]  # another future
        raw_future = compute_features(future)
        obs_future = bundle.observation_features(raw_future)
        np.testing.assert_array_equal(obs_future[: t + 1], obs[: t + 1])
        assert not np.allclose(obs_future[t + 1 :, :, -1], obs[t + 1 :, :, -1])  # the channel moved
        window = slice(t + 1 - policy.max_lookback, t + 1)
        np.testing.assert_array_equal(
            policy.act(raw_future[window], weights), policy.act(raw[window], weights)
        )


@pytest.mark.slow
def test_the_paper_trader_trades_a_predictor_ensemble(predicted_root: Path) -> None:
    _, decisions = trade_replay(predicted_root, 30)
    assert len(decisions) == 30 and all(d.action is not None for d in decisions)


@pytest.mark.slow
def test_the_predictor_channel_reaches_the_training_observation() -> None:
    """The option changes training: the fold's environment observes one more channel per
    asset and bar, and it is the channel of a predictor fitted on that fold's training slice."""
    from trainers.design import Design
    from trainers.objective import FoldLearner
    from trainers.predictor import fit_fold_predictor
    from trainers.predictor_spec import PredictorSpec
    from trainers.search_space import PPOParams

    torch.set_num_threads(1)
    config = TrainingConfig(budget_steps=256, n_envs=2, seed=0)
    data = StudyData.load(None, config)
    fold, params = data.folds[0], PPOParams(lookback=5)
    plain = FoldLearner(data, fold, params, config, 0, Design())
    with_predictor = FoldLearner(data, fold, params, config, 0, Design(predictor_horizon=HORIZON))
    n_assets = data.panel.n_assets
    assert with_predictor.env.core.obs_dim == plain.env.core.obs_dim + params.lookback * n_assets
    np.testing.assert_array_equal(with_predictor.features[:, :, :-1], plain.features)
    close = data.panel.prices[:, :, 3]
    first = fold.train_start - params.lookback
    kept, channel = fit_fold_predictor(
        plain.features,
        close,
        fold.train_start,
        fold.train_stop,
        PredictorSpec(HORIZON),
        0,
        first,
        fold.test_stop,
    )
    seen = slice(first, fold.test_stop)
    np.testing.assert_allclose(with_predictor.features[seen, :, -1], channel[seen], atol=1e-6)
    assert np.abs(channel[seen]).max() > 0.01  # an opinion, not a constant 0
    # the fold's backtest reads the kept network's channel, the agent a cross-fitted one
    test = slice(fold.test_start, fold.test_stop)
    np.testing.assert_allclose(channel[test], kept.channel(plain.features)[test], atol=1e-6)
    assert 0.3 < with_predictor.predictor.report["out_of_fold_accuracy"] < 0.7

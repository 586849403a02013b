"""Every sampled hyperparameter changes what is trained.

For each field of :class:`PPOParams`, one walk-forward fold is trained with the defaults and
with only that field changed (same seed, same data); the trained actor must differ in shape
or in value. Training the defaults twice gives identical actors, so a difference can only
come from the changed parameter.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import optuna
import pytest
import torch
from stable_baselines3 import PPO

from trainers.accounting import COST_FIELDS, Costs
from trainers.algorithms import model_kwargs
from trainers.design import Design
from trainers.env import PortfolioCore, PortfolioVecEnv
from trainers.features import ALL_FEATURE_NAMES, FEATURE_NAMES, compute_features
from trainers.objective import FoldResult, StudyData, TrainingConfig, train_fold
from trainers.search_space import (
    ACTIVATIONS,
    BATCH_SIZE_CHOICES,
    LOOKBACK_CHOICES,
    N_STEPS_CHOICES,
    WIDTH_CHOICES,
    PPOParams,
    suggest_params,
)

N_ENVS = 4
BASE = PPOParams()
ROLLOUT = BASE.n_steps * N_ENVS
# two rollouts: a parameter that acts only through the data of the next rollout (ent_coef
# via log_std) reaches the actor as well
# the default execution model, with a tight stop that triggers often
CONFIG = TrainingConfig(budget_steps=2 * ROLLOUT, n_envs=N_ENVS, seed=0, costs=Costs(trailing_stop=0.02))
SEED = 7


def _other(choices: tuple[object, ...] | list[object], default: object) -> object:
    return next(c for c in choices if c != default)


# one value per field, inside the search space and away from the default
CHANGES: dict[str, object] = {
    "learning_rate": 1e-5,
    "n_steps": _other(N_STEPS_CHOICES, BASE.n_steps),
    # below the rollout size (a minibatch >= the rollout is the whole rollout)
    "batch_size": min(BATCH_SIZE_CHOICES),
    "n_epochs": 2,
    "gamma": 0.9,
    "gae_lambda": 0.8,
    "clip_range": 0.1,
    "ent_coef": 1e-2,
    "net_width": _other(WIDTH_CHOICES, BASE.net_width),
    "net_depth": 1 if BASE.net_depth != 1 else 2,
    "activation": _other(list(ACTIVATIONS), BASE.activation),
    "lookback": _other(LOOKBACK_CHOICES, BASE.lookback),
}

# one value per field of the study's execution model, away from CONFIG's
COST_CHANGES: dict[str, float] = {
    "fee": 0.01,
    "slippage": 0.002,
    "min_cash": 0.5,
    "max_weight": 0.2,
    "trailing_stop": 0.30,
    "min_trade": 0.2,
}


def _train(data: StudyData, params: PPOParams, config: TrainingConfig = CONFIG) -> FoldResult:
    return train_fold(data, data.folds[0], params, config, SEED)


def _same_actor(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def base_actor(study_data: StudyData) -> dict[str, torch.Tensor]:
    return _train(study_data, BASE).state


def test_changes_cover_every_field_inside_the_search_space() -> None:
    assert set(CHANGES) == {f.name for f in dataclasses.fields(PPOParams)}
    assert CHANGES["batch_size"] < ROLLOUT  # else both sizes would mean "the whole rollout"
    for params in (BASE, *(dataclasses.replace(BASE, **{k: v}) for k, v in CHANGES.items())):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FixedTrial warns about values outside the space
            assert suggest_params(optuna.trial.FixedTrial(params.as_dict())) == params
    for name, value in CHANGES.items():
        assert getattr(BASE, name) != value, name


def test_suggest_params_covers_exactly_the_fields() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    fields = {f.name for f in dataclasses.fields(PPOParams)}
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial)
        assert set(trial.params) == fields
        assert params.as_dict() == trial.params
        study.tell(trial, 0.0)


@pytest.mark.slow
def test_training_is_reproducible(study_data: StudyData, base_actor: dict[str, torch.Tensor]) -> None:
    assert _same_actor(_train(study_data, BASE).state, base_actor)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_parameter_changes_the_trained_actor(
    study_data: StudyData, base_actor: dict[str, torch.Tensor], name: str
) -> None:
    changed = dataclasses.replace(BASE, **{name: CHANGES[name]})
    state = _train(study_data, changed).state
    assert not _same_actor(state, base_actor), f"{name}={CHANGES[name]} trained the same actor"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COST_CHANGES))
def test_the_studys_costs_change_the_trained_actor(
    study_data: StudyData, base_actor: dict[str, torch.Tensor], name: str
) -> None:
    """The study's execution model is what training sees: each field of it changes the actor."""
    assert set(COST_CHANGES) == set(COST_FIELDS)
    costs = Costs(**{**CONFIG.costs.as_dict(), name: COST_CHANGES[name]})
    state = _train(study_data, BASE, dataclasses.replace(CONFIG, costs=costs)).state
    assert not _same_actor(state, base_actor), f"costs {name}={COST_CHANGES[name]} trained the same actor"


def test_trailing_stop_triggers_on_the_training_slice(study_data: StudyData) -> None:
    """The stops compared above really act in the fold's train slice: always-invested
    portfolios on the same episodes end with different values and weights."""
    fold = study_data.folds[0]
    outcome = {}
    tight_stop, loose_stop = CONFIG.costs.trailing_stop, COST_CHANGES["trailing_stop"]
    for stop in (tight_stop, loose_stop):
        core = PortfolioCore(
            study_data.features,
            study_data.panel.prices,
            fold.train_start,
            fold.train_stop,
            BASE.lookback,
            16,
            Costs(trailing_stop=stop),
            CONFIG.for_data(study_data).episode_bars,
            seed=0,
        )
        core.reset()
        flat_asset_bars = 0
        for _ in range(core.episode_bars):
            core.step(np.ones((core.n, core.n_assets)))  # always fully invested, unless stopped
            flat_asset_bars += int((core.weights == 0.0).sum())
        outcome[stop] = (core.value.copy(), flat_asset_bars)
    tight, loose = outcome[tight_stop], outcome[loose_stop]
    assert tight[1] > loose[1]  # the tight stop takes positions off more often
    assert not np.array_equal(tight[0], loose[0])


# one change per item of the agent design, away from CONFIG's (softmax, every bar, log return)
DESIGN_CHANGES: dict[str, object] = {
    "action_scheme": "scores",
    "decision_interval": 4,
    "reward": "differential_sharpe",
    "turnover_penalty": 0.05,
    "predictor_horizon": 4,  # the observation gains the predictor channel (test_predictor_trading.py)
    "feature_set": "long",  # trained on study data that carry the long set (long_study_data)
}


@pytest.fixture(scope="module")
def long_study_data(study_data: StudyData) -> StudyData:
    """The same study with the long feature set computed: base designs read its leading columns."""
    features = compute_features(study_data.panel.prices, ALL_FEATURE_NAMES)
    return dataclasses.replace(study_data, features=features, feature_names=ALL_FEATURE_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DESIGN_CHANGES))
def test_each_design_item_changes_the_trained_actor(
    study_data: StudyData, long_study_data: StudyData, base_actor: dict[str, torch.Tensor], name: str
) -> None:
    assert set(DESIGN_CHANGES) == {f.name for f in dataclasses.fields(Design)} - {"algorithm"}
    assert getattr(Design(), name) != DESIGN_CHANGES[name]
    design = dataclasses.replace(Design(), **{name: DESIGN_CHANGES[name]})
    data = long_study_data if name == "feature_set" else study_data
    state = train_fold(data, data.folds[0], BASE, CONFIG, SEED, design=design).state
    assert not _same_actor(state, base_actor), f"{name}={DESIGN_CHANGES[name]} trained the same actor"


@pytest.mark.slow
def test_a_base_design_reads_only_the_base_columns_of_long_study_data(
    long_study_data: StudyData, base_actor: dict[str, torch.Tensor]
) -> None:
    result = train_fold(long_study_data, long_study_data.folds[0], BASE, CONFIG, SEED, design=Design())
    assert _same_actor(result.state, base_actor)
    assert result.norm.mean.shape == (3, len(FEATURE_NAMES))


def test_a_long_design_on_base_study_data_is_refused(study_data: StudyData) -> None:
    with pytest.raises(
        ValueError, match="feature_set 'long': the study's data carry 12 features, not the set's 16"
    ):
        train_fold(study_data, study_data.folds[0], BASE, CONFIG, SEED, design=Design(feature_set="long"))


@pytest.mark.slow
def test_excess_reward_changes_the_trained_actor(
    study_data: StudyData, base_actor: dict[str, torch.Tensor]
) -> None:
    design = Design(reward="excess_log_return")
    state = train_fold(study_data, study_data.folds[0], BASE, CONFIG, SEED, design=design).state
    assert not _same_actor(state, base_actor)


def test_each_sampled_value_reaches_the_sb3_attribute_it_names(study_data: StudyData) -> None:
    """Distinct values for every field, read back from the Stable-Baselines3 model: a swap
    (say gamma and GAE lambda) or a dropped parameter fails here."""
    params = PPOParams(
        learning_rate=1.23e-4,
        n_steps=256,
        batch_size=512,
        n_epochs=7,
        gamma=0.97,
        gae_lambda=0.91,
        clip_range=0.33,
        ent_coef=4.5e-3,
        net_width=64,
        net_depth=1,
        activation="elu",
        lookback=20,
    )
    fold = study_data.folds[0]
    env = PortfolioVecEnv(
        study_data.features, study_data.panel.prices, fold.train_start, fold.train_stop, params.lookback, 2
    )
    model = PPO("MlpPolicy", env, **model_kwargs(params, 3, "cpu", SEED))
    read = {
        "learning_rate": model.learning_rate,
        "n_steps": model.n_steps,
        "batch_size": model.batch_size,
        "n_epochs": model.n_epochs,
        "gamma": model.gamma,
        "gae_lambda": model.gae_lambda,
        "clip_range": model.clip_range(1.0),
        "ent_coef": model.ent_coef,
        "net_width": model.policy.mlp_extractor.policy_net[0].out_features,
        "net_depth": sum(isinstance(m, torch.nn.Linear) for m in model.policy.mlp_extractor.policy_net),
        "activation": type(model.policy.mlp_extractor.policy_net[1]).__name__.lower(),
        "lookback": (model.observation_space.shape[0] - 3 - 1) // (3 * len(FEATURE_NAMES)),
    }
    assert read == params.as_dict()
    value_net = [m for m in model.policy.mlp_extractor.value_net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in value_net] == [64]  # the critic has the same shape

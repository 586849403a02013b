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

from trainers.accounting import COST_FIELDS, Costs
from trainers.env import PortfolioCore
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

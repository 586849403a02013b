"""A2C, SAC and TD3 next to PPO: each one's search space round-trips, each sampled value
reaches the Stable-Baselines3 attribute it names and changes the trained actor, and the
exported numpy-ready actor acts exactly as SB3's deterministic policy."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import optuna
import pytest
import torch

from trainers.actor import Actor
from trainers.algorithms import (
    SQUASH,
    A2CParams,
    SACParams,
    TD3Params,
    build_model,
    export_actor,
    params_from_dict,
    suggest_algorithm_params,
)
from trainers.design import Design
from trainers.env import PortfolioVecEnv
from trainers.objective import StudyData, TrainingConfig, train_fold

N_ENVS = 4
SEED = 7
BUDGET = 512
CONFIG = TrainingConfig(budget_steps=BUDGET, n_envs=N_ENVS, seed=0)

BASES = {"a2c": A2CParams(), "sac": SACParams(), "td3": TD3Params()}
# one value per algorithm-specific field, inside the search space and away from the default
CHANGES: dict[str, dict[str, object]] = {
    "a2c": {"n_steps": 16, "gae_lambda": 0.85, "ent_coef": 1e-2, "vf_coef": 1.0, "max_grad_norm": 0.3},
    "sac": {"batch_size": 64, "tau": 0.05, "gradient_steps": 3, "ent_coef": 0.1},
    "td3": {
        "batch_size": 64,
        "tau": 0.05,
        "gradient_steps": 3,
        "policy_delay": 1,
        "target_noise": 0.4,
        "action_noise": 0.5,
    },
}
SHARED = ("learning_rate", "gamma", "net_width", "net_depth", "activation", "lookback")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _train(data: StudyData, algorithm: str, params: object) -> dict[str, torch.Tensor]:
    design = Design(algorithm=algorithm)
    return train_fold(data, data.folds[0], params, CONFIG, SEED, design=design).state  # type: ignore[arg-type]


def test_changes_cover_every_specific_field_and_round_trip() -> None:
    for algorithm, base in BASES.items():
        fields = {f.name for f in dataclasses.fields(base)}
        assert set(CHANGES[algorithm]) == fields - set(SHARED), algorithm
        for name, value in CHANGES[algorithm].items():
            assert getattr(base, name) != value, (algorithm, name)
        changed = dataclasses.replace(base, **CHANGES[algorithm])
        assert params_from_dict(algorithm, changed.as_dict()) == changed


def test_suggest_samples_each_algorithms_own_space() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for algorithm, base in BASES.items():
        trial = study.ask()
        params = suggest_algorithm_params(trial, algorithm)
        assert type(params) is type(base)
        specific = {k for k in trial.params if k.startswith(f"{algorithm}_")}
        assert {k.removeprefix(f"{algorithm}_") for k in specific} == set(CHANGES[algorithm])
        assert set(trial.params) - specific == set(SHARED)
        study.tell(trial, 0.0)
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'"):
        suggest_algorithm_params(study.ask(), "dqn")


@pytest.fixture(scope="module")
def env(study_data: StudyData) -> PortfolioVecEnv:
    fold = study_data.folds[0]
    return PortfolioVecEnv(
        study_data.features, study_data.panel.prices, fold.train_start, fold.train_stop, 10, N_ENVS
    )


def test_each_value_reaches_the_sb3_attribute_it_names(env: PortfolioVecEnv) -> None:
    a2c = build_model("a2c", dataclasses.replace(BASES["a2c"], **CHANGES["a2c"]), env, "cpu", SEED)
    assert (a2c.n_steps, a2c.gae_lambda, a2c.ent_coef, a2c.vf_coef, a2c.max_grad_norm) == (
        16,
        0.85,
        1e-2,
        1.0,
        0.3,
    )
    sac = build_model("sac", dataclasses.replace(BASES["sac"], **CHANGES["sac"]), env, "cpu", SEED)
    assert (sac.batch_size, sac.tau, sac.gradient_steps, sac.ent_coef) == (64, 0.05, 3, 0.1)
    td3 = build_model("td3", dataclasses.replace(BASES["td3"], **CHANGES["td3"]), env, "cpu", SEED)
    assert (td3.batch_size, td3.tau, td3.gradient_steps, td3.policy_delay) == (64, 0.05, 3, 1)
    assert td3.target_policy_noise == 0.4
    assert np.allclose(td3.action_noise._sigma, 0.5)
    for model, base in ((a2c, BASES["a2c"]), (sac, BASES["sac"]), (td3, BASES["td3"])):
        assert model.learning_rate == base.learning_rate and model.gamma == base.gamma


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", sorted(BASES))
def test_the_exported_actor_acts_as_sb3s_deterministic_policy(env: PortfolioVecEnv, algorithm: str) -> None:
    params = BASES[algorithm]
    model = build_model(algorithm, params, env, "cpu", SEED)
    model.learn(total_timesteps=BUDGET)
    actor = Actor(
        env.core.obs_dim,
        env.core.action_dim,
        params.net_width,
        params.net_depth,
        params.activation,
        SQUASH[algorithm],
    )
    actor.load_state_dict(export_actor(algorithm, model))
    obs = env.reset()
    expected, _ = model.predict(obs, deterministic=True)
    got = actor.act(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def base_actors(study_data: StudyData) -> dict[str, dict[str, torch.Tensor]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {a: _train(study_data, a, p) for a, p in BASES.items()}


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "name"), [(a, n) for a in sorted(CHANGES) for n in sorted(CHANGES[a])])
def test_each_parameter_changes_the_trained_actor(
    study_data: StudyData, base_actors: dict[str, dict[str, torch.Tensor]], algorithm: str, name: str
) -> None:
    changed = dataclasses.replace(BASES[algorithm], **{name: CHANGES[algorithm][name]})
    state = _train(study_data, algorithm, changed)
    assert not _same(state, base_actors[algorithm]), f"{algorithm} {name} trained the same actor"


@pytest.mark.slow
def test_training_each_algorithm_is_reproducible(
    study_data: StudyData, base_actors: dict[str, dict[str, torch.Tensor]]
) -> None:
    for algorithm, params in BASES.items():
        assert _same(_train(study_data, algorithm, params), base_actors[algorithm]), algorithm

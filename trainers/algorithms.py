"""The training algorithms a study can search: Stable-Baselines3's PPO, A2C, SAC and TD3,
each with its own search space, built into an SB3 model and exported to the same plain
actor (:class:`trainers.actor.Actor`).

Search spaces (Optuna parameter names; a study's trials of different algorithms share only
the names whose distributions agree):

* shared by all: ``learning_rate`` (1e-5..1e-3, log), ``gamma`` (0.9..0.999), ``net_width``,
  ``net_depth``, ``activation``, ``lookback`` (:mod:`trainers.search_space`);
* PPO (Schulman et al. 2017): the rest of :class:`trainers.search_space.PPOParams`;
* A2C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning"):
  ``a2c_n_steps``, ``a2c_gae_lambda``, ``a2c_ent_coef``, ``a2c_vf_coef``,
  ``a2c_max_grad_norm``;
* SAC (Haarnoja et al. 2018, "Soft Actor-Critic"): ``sac_batch_size``, ``sac_tau``,
  ``sac_gradient_steps``, ``sac_ent_coef`` (a fixed entropy coefficient);
* TD3 (Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in
  Actor-Critic Methods"): ``td3_batch_size``, ``td3_tau``, ``td3_gradient_steps``,
  ``td3_policy_delay``, ``td3_target_noise``, ``td3_action_noise`` (std of the Gaussian
  exploration noise).

The deterministic actor: PPO and A2C act with the mean of their Gaussian policy, clipped to
[-1, 1] (``squash = "clip"``); SAC and TD3 with ``tanh`` of their actor's last layer
(``squash = "tanh"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from trainers.search_space import (
    NetworkParams,
    PPOParams,
    activation_class,
    suggest_network,
    suggest_params,
)

if TYPE_CHECKING:
    import torch
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

ALGORITHMS: tuple[str, ...] = ("ppo", "a2c", "sac", "td3")
SQUASH: dict[str, str] = {"ppo": "clip", "a2c": "clip", "sac": "tanh", "td3": "tanh"}
OFF_POLICY_BATCH_CHOICES = (64, 128, 256, 512)
LEARNING_STARTS = 256  # env steps of random actions before an off-policy learner trains


Params = NetworkParams
"""Any algorithm's parameters (:class:`trainers.search_space.NetworkParams` and its own)."""


@dataclass(frozen=True)
class A2CParams(NetworkParams):
    """A2C's search-space point (see the module docstring for the Optuna names)."""

    n_steps: int = 5
    gae_lambda: float = 1.0
    ent_coef: float = 1e-4
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


@dataclass(frozen=True)
class OffPolicyParams(NetworkParams):
    """What SAC and TD3 share: minibatch size, target-network update rate (Polyak ``tau``)
    and gradient steps per env step."""

    batch_size: int = 256
    tau: float = 0.005
    gradient_steps: int = 1


@dataclass(frozen=True)
class SACParams(OffPolicyParams):
    """SAC's search-space point."""

    ent_coef: float = 0.01


@dataclass(frozen=True)
class TD3Params(OffPolicyParams):
    """TD3's search-space point."""

    policy_delay: int = 2
    target_noise: float = 0.2
    action_noise: float = 0.1


PARAMS: dict[str, type[NetworkParams]] = {
    "ppo": PPOParams,
    "a2c": A2CParams,
    "sac": SACParams,
    "td3": TD3Params,
}


def suggest_algorithm_params(trial: optuna.Trial, algorithm: str) -> Params:
    """Sample the parameters of ``algorithm`` (one of :data:`ALGORITHMS`).

    Raises:
        ValueError: unknown algorithm.
    """
    if algorithm == "ppo":
        return suggest_params(trial)
    if algorithm == "a2c":
        return A2CParams(
            **suggest_network(trial),
            n_steps=trial.suggest_categorical("a2c_n_steps", [5, 16, 64]),
            gae_lambda=trial.suggest_float("a2c_gae_lambda", 0.8, 1.0),
            ent_coef=trial.suggest_float("a2c_ent_coef", 1e-6, 1e-2, log=True),
            vf_coef=trial.suggest_float("a2c_vf_coef", 0.25, 1.0),
            max_grad_norm=trial.suggest_float("a2c_max_grad_norm", 0.3, 5.0, log=True),
        )
    if algorithm == "sac":
        return SACParams(
            **suggest_network(trial),
            batch_size=trial.suggest_categorical("sac_batch_size", list(OFF_POLICY_BATCH_CHOICES)),
            tau=trial.suggest_float("sac_tau", 0.001, 0.05, log=True),
            gradient_steps=trial.suggest_int("sac_gradient_steps", 1, 4),
            ent_coef=trial.suggest_float("sac_ent_coef", 1e-4, 0.1, log=True),
        )
    if algorithm == "td3":
        return TD3Params(
            **suggest_network(trial),
            batch_size=trial.suggest_categorical("td3_batch_size", list(OFF_POLICY_BATCH_CHOICES)),
            tau=trial.suggest_float("td3_tau", 0.001, 0.05, log=True),
            gradient_steps=trial.suggest_int("td3_gradient_steps", 1, 4),
            policy_delay=trial.suggest_int("td3_policy_delay", 1, 3),
            target_noise=trial.suggest_float("td3_target_noise", 0.05, 0.4),
            action_noise=trial.suggest_float("td3_action_noise", 0.05, 0.5),
        )
    raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")


def params_from_dict(algorithm: str, data: dict[str, Any]) -> Params:
    """Parameters recorded by :meth:`as_dict` (``model.json``'s ``hyperparameters``).

    Raises:
        ValueError: unknown algorithm.
    """
    if algorithm not in PARAMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    return PARAMS[algorithm].from_dict(data)


def rollout_batch(algorithm: str, params: Params, n_envs: int) -> int:
    """Samples per gradient step, for the VIN's B field: the minibatch of PPO, SAC and TD3,
    the whole rollout (``n_steps * n_envs``) of A2C."""
    if algorithm == "a2c":
        return int(params.n_steps) * n_envs  # type: ignore[attr-defined]
    return int(params.batch_size)  # type: ignore[attr-defined]


def model_kwargs(params: Params, n_actions: int, device: str, seed: int | None) -> dict[str, Any]:
    """Keyword arguments of the SB3 class of ``params``'s algorithm (``n_actions`` sizes
    TD3's exploration noise)."""
    arch = [params.net_width] * params.net_depth
    act = activation_class(params.activation)
    common = {"learning_rate": params.learning_rate, "gamma": params.gamma, "device": device}
    common |= {"seed": seed, "verbose": 0}
    if isinstance(params, PPOParams):
        return {
            **common,
            "n_steps": params.n_steps,
            "batch_size": params.batch_size,
            "n_epochs": params.n_epochs,
            "gae_lambda": params.gae_lambda,
            "clip_range": params.clip_range,
            "ent_coef": params.ent_coef,
            "policy_kwargs": {"net_arch": {"pi": arch, "vf": arch}, "activation_fn": act},
        }
    if isinstance(params, A2CParams):
        return {
            **common,
            "n_steps": params.n_steps,
            "gae_lambda": params.gae_lambda,
            "ent_coef": params.ent_coef,
            "vf_coef": params.vf_coef,
            "max_grad_norm": params.max_grad_norm,
            "policy_kwargs": {"net_arch": {"pi": arch, "vf": arch}, "activation_fn": act},
        }
    if not isinstance(params, OffPolicyParams):
        raise ValueError(f"unknown parameters {type(params).__name__}")
    off_policy = {
        "batch_size": params.batch_size,
        "tau": params.tau,
        "gradient_steps": params.gradient_steps,
        "learning_starts": LEARNING_STARTS,
        "buffer_size": 200_000,
        "policy_kwargs": {"net_arch": {"pi": arch, "qf": arch}, "activation_fn": act},
    }
    if isinstance(params, SACParams):
        return {**common, **off_policy, "ent_coef": params.ent_coef}
    if isinstance(params, TD3Params):
        import numpy as np
        from stable_baselines3.common.noise import NormalActionNoise

        noise = NormalActionNoise(np.zeros(n_actions), np.full(n_actions, params.action_noise))
        return {
            **common,
            **off_policy,
            "policy_delay": params.policy_delay,
            "target_policy_noise": params.target_noise,
            "action_noise": noise,
        }
    raise ValueError(f"unknown parameters {type(params).__name__}")


def build_model(algorithm: str, params: Params, env: VecEnv, device: str, seed: int | None) -> BaseAlgorithm:
    """The untrained SB3 model of ``algorithm`` on ``env``.

    Raises:
        ValueError: unknown algorithm.
    """
    from stable_baselines3 import A2C, PPO, SAC, TD3

    classes = {"ppo": PPO, "a2c": A2C, "sac": SAC, "td3": TD3}
    if algorithm not in classes:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    n_actions = int(env.action_space.shape[0])
    return classes[algorithm]("MlpPolicy", env, **model_kwargs(params, n_actions, device, seed))


def export_actor(algorithm: str, model: BaseAlgorithm) -> dict[str, torch.Tensor]:
    """The deterministic actor's tensors under :class:`trainers.actor.Actor`'s keys
    (``policy_net.<i>.*``, ``action_net.*``), CPU copies.

    Raises:
        ValueError: unknown algorithm.
    """
    import torch.nn as nn

    from trainers.actor import actor_state_from_sb3

    if algorithm in ("ppo", "a2c"):
        return actor_state_from_sb3(model.policy)
    if algorithm == "sac":
        hidden = model.actor.latent_pi  # type: ignore[attr-defined]
        head = model.actor.mu  # type: ignore[attr-defined]
    elif algorithm == "td3":
        layers = list(model.actor.mu)  # type: ignore[attr-defined]  # [..., Linear, Tanh]
        last = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
        hidden, head = nn.Sequential(*layers[:last]), layers[last]
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    state = {f"policy_net.{k}": v for k, v in hidden.state_dict().items()}
    state.update({f"action_net.{k}": v for k, v in head.state_dict().items()})
    return {k: v.detach().cpu().clone() for k, v in state.items()}

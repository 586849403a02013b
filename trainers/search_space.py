"""The PPO hyperparameter search space and its mapping onto what is trained.

Every parameter sampled here changes the trained model (``tests/trainers`` proves it for
each one): PPO's optimiser and rollout settings, the actor/critic network shape and the
observation lookback. The execution model (fees, cash reserve, trailing stop ...) is not
searched: each study chooses one :class:`trainers.accounting.Costs`, so that every member of
an ensemble trades under the same rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    import torch.nn as nn

ACTIVATIONS: tuple[str, ...] = ("tanh", "relu", "elu")
DEFAULT_BUDGET_STEPS = 30_000  # env steps per fold; such agents are reported not to learn below


def activation_class(name: str) -> type[nn.Module]:
    """The torch module class of a hidden activation name (``tanh``, ``relu``, ``elu``).

    Raises:
        ValueError: unknown name.
    """
    import torch.nn as nn

    classes = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
    if name not in classes:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(classes)}")
    return classes[name]


N_STEPS_CHOICES = (128, 256, 512, 1024)  # x n_envs (16) = rollouts of 2K-16K samples
BATCH_SIZE_CHOICES = (256, 512, 1024, 2048)  # all <= the smallest rollout at 16 envs
WIDTH_CHOICES = (64, 128, 256, 512)
LOOKBACK_CHOICES = (5, 10, 20)


@dataclass(frozen=True)
class NetworkParams:
    """What every algorithm's search space has (see :mod:`trainers.algorithms`).

    Attributes:
        learning_rate: optimiser step size.
        gamma: discount factor per bar.
        net_width, net_depth: hidden units per layer and hidden layers of both the actor
            and the critic MLP.
        activation: hidden activation, one of :data:`ACTIVATIONS`.
        lookback: bars in the observation window.
    """

    learning_rate: float = 3e-4
    gamma: float = 0.99
    net_width: int = 128
    net_depth: int = 2
    activation: str = "tanh"
    lookback: int = 10

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """The parameters recorded by :meth:`as_dict` (unknown keys are ignored)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def suggest_network(trial: optuna.Trial) -> dict[str, Any]:
    """Sample the :class:`NetworkParams` fields (the Optuna names are the field names)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "gamma": trial.suggest_float("gamma", 0.9, 0.999),
        "net_width": trial.suggest_categorical("net_width", list(WIDTH_CHOICES)),
        "net_depth": trial.suggest_int("net_depth", 1, 2),
        "activation": trial.suggest_categorical("activation", list(ACTIVATIONS)),
        "lookback": trial.suggest_categorical("lookback", list(LOOKBACK_CHOICES)),
    }


@dataclass(frozen=True)
class PPOParams(NetworkParams):
    """One point of PPO's search space: :class:`NetworkParams` and

    Attributes:
        n_steps: rollout length per env (rollout size = ``n_steps * n_envs``).
        batch_size: minibatch size in samples.
        n_epochs: passes over each rollout.
        gamma: discount factor per bar.
        gae_lambda: GAE lambda (Schulman et al. 2016).
        clip_range: PPO clip epsilon (Schulman et al. 2017).
        ent_coef: entropy bonus coefficient.
    """

    n_steps: int = 128
    batch_size: int = 512
    n_epochs: int = 5
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 1e-4


def suggest_params(trial: optuna.Trial) -> PPOParams:
    """Sample :class:`PPOParams` from a trial (the search space of the study)."""
    return PPOParams(
        **suggest_network(trial),
        n_steps=trial.suggest_categorical("n_steps", list(N_STEPS_CHOICES)),
        batch_size=trial.suggest_categorical("batch_size", list(BATCH_SIZE_CHOICES)),
        n_epochs=trial.suggest_int("n_epochs", 2, 8),
        gae_lambda=trial.suggest_float("gae_lambda", 0.8, 1.0),
        clip_range=trial.suggest_float("clip_range", 0.1, 0.4),
        ent_coef=trial.suggest_float("ent_coef", 1e-6, 1e-2, log=True),
    )

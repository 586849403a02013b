"""The deterministic actor of a trained policy (PPO, A2C, SAC or TD3) as a plain torch module.

Its ``state_dict`` keys match Stable-Baselines3's ``ActorCriticPolicy``
(``policy_net.<i>.*`` from ``mlp_extractor.policy_net`` and ``action_net.*``), so a bundle's
``actor.pth`` is a plain tensor dict that loads with ``torch.load(weights_only=True)`` and
needs no SB3 at inference. The deterministic action of SB3's Gaussian policy is its mean,
``action_net(policy_net(obs))``, clipped to the action bounds [-1, 1] (``squash = "clip"``);
SAC's and TD3's is ``tanh`` of it (``squash = "tanh"``; :mod:`trainers.algorithms`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from trainers.search_space import ACTIVATIONS, activation_class

SQUASHES: tuple[str, ...] = ("clip", "tanh")


class Actor(nn.Module):
    """MLP ``obs (batch, obs_dim) -> action mean (batch, action_dim)``; ``action_dim`` is
    ``n_assets`` (score actions) or ``n_assets + 1`` (softmax actions, cash last; see
    :func:`trainers.accounting.action_dim`).

    Raises:
        ValueError: unknown activation or squash, or non-positive sizes.
    """

    def __init__(
        self, obs_dim: int, action_dim: int, width: int, depth: int, activation: str, squash: str = "clip"
    ) -> None:
        super().__init__()
        if squash not in SQUASHES:
            raise ValueError(f"unknown squash {squash!r}; known: {', '.join(SQUASHES)}")
        self.squash = squash
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        if min(obs_dim, action_dim, width, depth) <= 0:
            raise ValueError("obs_dim, action_dim, width and depth must be positive")
        layers: list[nn.Module] = []
        last = obs_dim
        for _ in range(depth):
            layers += [nn.Linear(last, width), activation_class(activation)()]
            last = width
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(last, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_net(self.policy_net(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions in [-1, 1], ``(batch, action_dim)``."""
        out = self.forward(obs)
        return (out.tanh() if self.squash == "tanh" else out).clamp(-1.0, 1.0)


def actor_state_from_sb3(policy: nn.Module) -> dict[str, torch.Tensor]:
    """Extract the actor tensors of an SB3 ``ActorCriticPolicy`` (CPU copies)."""
    state = {f"policy_net.{k}": v for k, v in policy.mlp_extractor.policy_net.state_dict().items()}
    state.update({f"action_net.{k}": v for k, v in policy.action_net.state_dict().items()})
    return {k: v.detach().cpu().clone() for k, v in state.items()}

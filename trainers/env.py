"""Trading environments over an aligned panel: a numpy-vectorised SB3 ``VecEnv`` and the
single-env gymnasium form of the same dynamics.

Both run :class:`PortfolioCore`, which steps ``n`` portfolios at once with the shared
accounting of :mod:`trainers.accounting` and the observation layout of
:mod:`trainers.observation`. Episodes start at a random bar of the slice, last
``episode_bars`` bars (or until the slice ends) and end by truncation (a time limit, so
PPO bootstraps the value of the last state). Reward: ``ln(V[t+1] / V[t])``, the log
return of portfolio value net of fees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from trainers.accounting import (
    Costs,
    action_to_weights,
    apply_trailing_stop,
    rebalance_step,
    update_hwm,
)
from trainers.observation import build_observations, observation_dim

DEFAULT_EPISODE_DAYS = 30  # a training episode: 30 calendar days of the data's bars
DEFAULT_EPISODE_BARS = 24 * DEFAULT_EPISODE_DAYS  # 720: 30 days of hourly 24/7 bars


class PortfolioCore:
    """State and dynamics of ``n`` portfolios trading one slice of a panel.

    Args:
        features: ``(T, n_assets, n_features)`` normalised features, float32.
        prices: ``(T, n_assets, 5)`` OHLCV.
        start, stop: the slice ``[start, stop)`` of bars the episodes may use; decisions
            are made at bars ``>= max(start, lookback - 1)`` and ``<= stop - 2``.
        lookback: bars in the observation window.
        n: number of portfolios.
        costs: fees and risk limits.
        episode_bars: bars per episode (capped by the slice).
        seed: seed of the start-offset generator.

    Raises:
        ValueError: the slice is too short for one step, or shapes disagree.
    """

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        start: int,
        stop: int,
        lookback: int,
        n: int,
        costs: Costs,
        episode_bars: int = DEFAULT_EPISODE_BARS,
        seed: int | None = None,
    ) -> None:
        if features.shape[:2] != prices.shape[:2]:
            raise ValueError(f"features {features.shape} and prices {prices.shape} differ")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        self.open = np.ascontiguousarray(prices[:, :, 0])
        self.close = np.ascontiguousarray(prices[:, :, 3])
        self.lookback = int(lookback)
        self.first = max(int(start), self.lookback - 1)
        self.last = int(stop) - 2  # last decision bar: it needs bar t+1
        if self.last < self.first:
            raise ValueError(f"slice [{start}, {stop}) is too short for lookback {lookback} and one step")
        self.n = int(n)
        self.costs = costs
        self.episode_bars = max(1, min(int(episode_bars), self.last - self.first + 1))
        self.n_assets = prices.shape[1]
        self.obs_dim = observation_dim(self.lookback, self.n_assets, features.shape[2])
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n, dtype=np.int64)
        self.end = np.zeros(n, dtype=np.int64)
        self.value = np.ones(n)
        self.weights = np.zeros((n, self.n_assets))
        self.hwm = np.zeros((n, self.n_assets))

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Start new episodes (all cash, value 1) for the portfolios in ``mask`` (bool (n,))."""
        mask = np.ones(self.n, dtype=bool) if mask is None else mask
        k = int(mask.sum())
        if k == 0:
            return
        latest = self.last - self.episode_bars + 1
        t0 = self.rng.integers(self.first, latest + 1, size=k)
        self.t[mask] = t0
        self.end[mask] = t0 + self.episode_bars
        self.value[mask] = 1.0
        self.weights[mask] = 0.0
        self.hwm[mask] = 0.0

    def observe(self) -> np.ndarray:
        """``(n, obs_dim)`` float32 observations at the current bars."""
        return build_observations(self.features, self.t, self.lookback, self.weights)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``(n, n_assets)`` actions; returns ``(reward (n,) float32, done (n,) bool,
        turnover (n,))``. Finished portfolios keep their final state until :meth:`reset`."""
        t = self.t
        close_t, open_next, close_next = self.close[t], self.open[t + 1], self.close[t + 1]
        target = action_to_weights(action, self.costs)
        target, _ = apply_trailing_stop(target, self.weights, self.hwm, close_t, self.costs.trailing_stop)
        value, weights, _, turnover = rebalance_step(
            self.value, self.weights, target, close_t, open_next, close_next, self.costs
        )
        reward = np.log(value / self.value).astype(np.float32)
        self.hwm = update_hwm(self.hwm, weights, close_next)
        self.value, self.weights = value, weights
        self.t = t + 1
        done = self.t >= self.end
        return reward, done, turnover


def _spaces(core: PortfolioCore) -> tuple[spaces.Box, spaces.Box]:
    obs = spaces.Box(-np.inf, np.inf, shape=(core.obs_dim,), dtype=np.float32)
    act = spaces.Box(-1.0, 1.0, shape=(core.n_assets,), dtype=np.float32)
    return obs, act


class PortfolioVecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` stepping ``n_envs`` portfolios with numpy array
    operations (no Python loop over envs in a step).

    Observations ``(n_envs, obs_dim)`` float32 (see :mod:`trainers.observation`);
    actions ``(n_envs, n_assets)`` in [-1, 1]; rewards ``(n_envs,)`` log returns.
    Finished envs reset automatically; their last observation is in
    ``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` is True.
    Constructor arguments are those of :class:`PortfolioCore` with ``n = n_envs``.
    """

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        start: int,
        stop: int,
        lookback: int,
        n_envs: int,
        costs: Costs | None = None,
        episode_bars: int = DEFAULT_EPISODE_BARS,
        seed: int | None = None,
    ) -> None:
        self.core = PortfolioCore(
            features, prices, start, stop, lookback, n_envs, costs or Costs(), episode_bars, seed
        )
        obs_space, act_space = _spaces(self.core)
        self.render_mode = None  # read by VecEnv.__init__ (no rendering)
        super().__init__(n_envs, obs_space, act_space)
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        if seed is not None:
            self.core.rng = np.random.default_rng(seed)
        self._reset_seeds()
        self._reset_options()
        self.core.reset()
        return self.core.observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs, -1)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        assert self._actions is not None, "step_async must be called first"
        reward, done, _ = self.core.step(self._actions)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            final = self.core.observe()
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = True
            self.core.reset(done)
        return self.core.observe(), reward, done, infos

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs


class PortfolioEnv(gym.Env):
    """Single-env gymnasium form of :class:`PortfolioVecEnv` (same core, ``n = 1``).

    ``reset`` returns ``(obs (obs_dim,), {})``; ``step`` returns
    ``(obs, reward, terminated=False, truncated, info)`` with ``truncated`` at the end of
    the episode; ``info`` carries ``value`` and ``turnover``.
    """

    metadata = {"render_modes": []}  # noqa: RUF012
    render_mode = None

    def __init__(
        self,
        features: np.ndarray,
        prices: np.ndarray,
        start: int,
        stop: int,
        lookback: int,
        costs: Costs | None = None,
        episode_bars: int = DEFAULT_EPISODE_BARS,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.core = PortfolioCore(
            features, prices, start, stop, lookback, 1, costs or Costs(), episode_bars, seed
        )
        self.observation_space, self.action_space = _spaces(self.core)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self.core.rng = np.random.default_rng(seed)
        self.core.reset()
        return self.core.observe()[0], {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        reward, done, turnover = self.core.step(np.asarray(action, dtype=np.float64)[None, :])
        info = {"value": float(self.core.value[0]), "turnover": float(turnover[0])}
        return self.core.observe()[0], float(reward[0]), False, bool(done[0]), info

"""Trading environments over an aligned panel: a numpy-vectorised SB3 ``VecEnv`` and the
single-env gymnasium form of the same dynamics.

Both run :class:`PortfolioCore`, which steps ``n`` portfolios at once with the shared
accounting of :mod:`trainers.accounting` and the observation layout of
:mod:`trainers.observation`. Episodes start at a random bar of the slice, last
``episode_bars`` bars (or until the slice ends) and end by truncation (a time limit, so
PPO bootstraps the value of the last state).

One step is one decision: the action's target weights are traded at the next open, then
held (no trade, weights drift; the trailing stop still applies) for the rest of the
``decision_interval`` bars. The reward of a step (:data:`REWARDS`), from the portfolio
values ``V`` at the decision bar ``t`` and ``k = decision_interval`` bars later, net of fees:

* ``log_return``: ``ln(V[t+k] / V[t])``;
* ``excess_log_return``: ``ln(V[t+k] / V[t]) - ln(B[t+k] / B[t])`` where ``B`` is the
  equal-weight portfolio of the assets bought at ``t`` (``B[t+k] / B[t] =
  mean_i(close_i[t+k] / close_i[t])``), the benchmark of every fold;
* ``differential_sharpe``: the differential Sharpe ratio of Moody & Saffell (2001,
  "Learning to Trade via Direct Reinforcement", IEEE Trans. Neural Networks 12(4), eq. 6):
  ``D = (B' dA - A' dB / 2) / (B' - A'^2)^(3/2)`` with the step's simple return ``R``,
  ``dA = R - A'``, ``dB = R^2 - B'`` and the moving moments ``A = A' + eta dA``,
  ``B = B' + eta dB`` (``eta`` = :data:`DSR_ETA`, both 0 at the start of an episode;
  ``D = 0`` while ``B' - A'^2`` is not positive, and ``D`` is clipped to ±10 as a numerical
  guard for the first steps of an episode).

Each reward can carry a turnover penalty: ``reward -= turnover_penalty * turnover`` with
``turnover = sum |target - w|`` of the step's trade (on top of the fees already in ``V``).
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
    action_dim,
    action_to_weights,
    apply_trailing_stop,
    drifted_weights,
    rebalance_step,
    update_hwm,
)
from trainers.design import REWARDS
from trainers.observation import build_observations, observation_dim

DEFAULT_EPISODE_DAYS = 30  # a training episode: 30 calendar days of the data's bars
DEFAULT_EPISODE_BARS = 24 * DEFAULT_EPISODE_DAYS  # 720: 30 days of hourly 24/7 bars
DSR_ETA = 0.01  # adaptation rate of the differential Sharpe ratio's moving moments (~100 steps)
DSR_CLIP = 10.0


class PortfolioCore:
    """State and dynamics of ``n`` portfolios trading one slice of a panel.

    Args:
        features: ``(T, n_assets, n_channels)`` normalised features (and predictor channel), float32.
        prices: ``(T, n_assets, 5)`` OHLCV.
        start, stop: the slice ``[start, stop)`` of bars the episodes may use; decisions
            are made at bars ``>= max(start, lookback - 1)`` and ``<= stop - 2``.
        lookback: bars in the observation window.
        n: number of portfolios.
        costs: fees and risk limits.
        episode_bars: bars per episode (capped by the slice).
        seed: seed of the start-offset generator.
        action_scheme: how actions map to weights (:data:`trainers.accounting.ACTION_SCHEMES`).
        decision_interval: bars per step (the target is held in between).
        reward: one of :data:`REWARDS` (module docstring).
        turnover_penalty: reward subtracted per unit of turnover (>= 0).

    Raises:
        ValueError: the slice is too short for one step, shapes disagree, or an unknown
            scheme or reward, a decision interval < 1 or a negative penalty.
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
        action_scheme: str = "scores",
        decision_interval: int = 1,
        reward: str = "log_return",
        turnover_penalty: float = 0.0,
    ) -> None:
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; known: {', '.join(REWARDS)}")
        if int(decision_interval) < 1 or turnover_penalty < 0.0:
            raise ValueError("decision_interval must be >= 1 and turnover_penalty >= 0")
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
        self.action_scheme = action_scheme
        self.action_dim = action_dim(action_scheme, self.n_assets)
        self.interval = int(decision_interval)
        self.reward_kind = reward
        self.turnover_penalty = float(turnover_penalty)
        self.obs_dim = observation_dim(self.lookback, self.n_assets, features.shape[2])
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n, dtype=np.int64)
        self.end = np.zeros(n, dtype=np.int64)
        self.value = np.ones(n)
        self.weights = np.zeros((n, self.n_assets))
        self.hwm = np.zeros((n, self.n_assets))
        self.dsr_a = np.zeros(n)
        self.dsr_b = np.zeros(n)

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
        self.dsr_a[mask] = 0.0
        self.dsr_b[mask] = 0.0

    def observe(self) -> np.ndarray:
        """``(n, obs_dim)`` float32 observations at the current bars."""
        return build_observations(self.features, self.t, self.lookback, self.weights)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``(n, action_dim)`` actions for one decision interval; returns ``(reward (n,)
        float32, done (n,) bool, turnover (n,))``. Finished portfolios keep their final
        state until :meth:`reset`."""
        first_target = action_to_weights(action, self.costs, self.action_scheme)
        start_value = self.value.copy()
        start_close = self.close[np.minimum(self.t, self.last)]
        turnover = np.zeros(self.n)
        active = self.t < self.end
        for j in range(self.interval):
            t = np.minimum(self.t, self.last)
            close_t, open_next, close_next = self.close[t], self.open[t + 1], self.close[t + 1]
            target = first_target if j == 0 else drifted_weights(self.weights, close_t, open_next)
            target, _ = apply_trailing_stop(target, self.weights, self.hwm, close_t, self.costs.trailing_stop)
            value, weights, _, to = rebalance_step(
                self.value, self.weights, target, close_t, open_next, close_next, self.costs
            )
            hwm = update_hwm(self.hwm, weights, close_next)
            self.value = np.where(active, value, self.value)
            self.weights = np.where(active[:, None], weights, self.weights)
            self.hwm = np.where(active[:, None], hwm, self.hwm)
            turnover += np.where(active, to, 0.0)
            self.t = self.t + active
            active = active & (self.t < self.end)
        reward = self._reward(start_value, start_close) - self.turnover_penalty * turnover
        return reward.astype(np.float32), self.t >= self.end, turnover

    def _reward(self, start_value: np.ndarray, start_close: np.ndarray) -> np.ndarray:
        """The step's reward before the turnover penalty (module docstring)."""
        log_return = np.log(self.value / start_value)
        if self.reward_kind == "log_return":
            return log_return
        if self.reward_kind == "excess_log_return":
            end_close = self.close[np.minimum(self.t, self.last + 1)]
            return log_return - np.log((end_close / start_close).mean(axis=1))
        r = self.value / start_value - 1.0
        a, b = self.dsr_a, self.dsr_b
        da, db = r - a, r * r - b
        var = b - a * a
        ok = var > 1e-12
        d = np.where(ok, (b * da - 0.5 * a * db) / np.where(ok, var, 1.0) ** 1.5, 0.0)
        self.dsr_a, self.dsr_b = a + DSR_ETA * da, b + DSR_ETA * db
        return np.clip(d, -DSR_CLIP, DSR_CLIP)


def _spaces(core: PortfolioCore) -> tuple[spaces.Box, spaces.Box]:
    obs = spaces.Box(-np.inf, np.inf, shape=(core.obs_dim,), dtype=np.float32)
    act = spaces.Box(-1.0, 1.0, shape=(core.action_dim,), dtype=np.float32)
    return obs, act


class PortfolioVecEnv(VecEnv):
    """Stable-Baselines3 ``VecEnv`` stepping ``n_envs`` portfolios with numpy array
    operations (no Python loop over envs in a step).

    Observations ``(n_envs, obs_dim)`` float32 (see :mod:`trainers.observation`);
    actions ``(n_envs, action_dim)`` in [-1, 1]; rewards ``(n_envs,)`` (module docstring).
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
        **design: Any,
    ) -> None:
        self.core = PortfolioCore(
            features, prices, start, stop, lookback, n_envs, costs or Costs(), episode_bars, seed, **design
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
        **design: Any,
    ) -> None:
        super().__init__()
        self.core = PortfolioCore(
            features, prices, start, stop, lookback, 1, costs or Costs(), episode_bars, seed, **design
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

"""The trading environments (trainers.env): env checkers, the SB3 VecEnv contract, and the
vectorised env having exactly the dynamics of the single env."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from trainers.accounting import Costs
from trainers.env import PortfolioEnv, PortfolioVecEnv
from trainers.features import N_FEATURES, WARMUP_BARS, NormStats, compute_features
from trainers.observation import observation_dim

from .test_features import synthetic_prices

N_BARS, N_ASSETS, LOOKBACK = 400, 3, 5
COSTS = Costs(fee=0.0025, slippage=0.0005, min_cash=0.05, max_weight=0.6, trailing_stop=0.02, min_trade=0.01)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """``(normalised features (T, 3, 12) float32, prices (T, 3, 5))`` of a volatile random walk."""
    prices = synthetic_prices(N_BARS, N_ASSETS, seed=11)
    feats = compute_features(prices)
    norm = NormStats.fit(feats[WARMUP_BARS:300]).apply(feats)
    return norm, prices


def make_vec(data: tuple[np.ndarray, np.ndarray], n_envs: int, **kw: object) -> PortfolioVecEnv:
    feats, prices = data
    args = {"costs": COSTS, "episode_bars": 40, "seed": 7, **kw}
    return PortfolioVecEnv(feats, prices, WARMUP_BARS, N_BARS, LOOKBACK, n_envs, **args)


def make_single(data: tuple[np.ndarray, np.ndarray], **kw: object) -> PortfolioEnv:
    feats, prices = data
    args = {"costs": COSTS, "episode_bars": 40, "seed": 7, **kw}
    return PortfolioEnv(feats, prices, WARMUP_BARS, N_BARS, LOOKBACK, **args)


def test_gymnasium_env_checker_passes(data: tuple[np.ndarray, np.ndarray]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(make_single(data))
    # only the notes about the unbounded feature space and the absent render modes may remain
    allowed = ("infinity", "render modes")
    unexpected = [str(w.message) for w in caught if not any(a in str(w.message) for a in allowed)]
    assert unexpected == []


def test_sb3_env_checker_passes(data: tuple[np.ndarray, np.ndarray]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(make_single(data), warn=True)
    assert [str(w.message) for w in caught] == []


def test_single_env_episode(data: tuple[np.ndarray, np.ndarray]) -> None:
    env = make_single(data, episode_bars=12)
    obs, info = env.reset(seed=3)
    assert obs.shape == (observation_dim(LOOKBACK, N_ASSETS, N_FEATURES),) and obs.dtype == np.float32
    assert info == {}
    assert obs[-1] == 1.0 and (obs[-1 - N_ASSETS : -1] == 0).all()  # all cash
    rng = np.random.default_rng(0)
    for k in range(12):
        obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, N_ASSETS).astype(np.float32))
        assert isinstance(reward, float) and np.isfinite(reward)
        assert terminated is False
        assert truncated is (k == 11)
        assert info["value"] > 0 and info["turnover"] >= 0
    assert env.observation_space.contains(obs)


def test_vec_env_contract(data: tuple[np.ndarray, np.ndarray]) -> None:
    n = 6
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        venv = make_vec(data, n, episode_bars=10)
    assert [str(w.message) for w in caught] == []
    assert venv.render_mode is None
    assert isinstance(venv, VecEnv)
    assert venv.num_envs == n
    obs_dim = observation_dim(LOOKBACK, N_ASSETS, N_FEATURES)
    assert venv.observation_space.shape == (obs_dim,)
    assert venv.action_space.shape == (N_ASSETS,)
    assert len(venv.seed(5)) == n
    obs = venv.reset()
    assert obs.shape == (n, obs_dim) and obs.dtype == np.float32
    assert all(venv.observation_space.contains(o) for o in obs)
    np.testing.assert_array_equal(obs[:, -1], 1.0)
    rng = np.random.default_rng(1)
    n_done = 0
    for k in range(25):
        actions = rng.uniform(-1, 1, (n, N_ASSETS)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        assert obs.shape == (n, obs_dim) and obs.dtype == np.float32
        assert rewards.shape == (n,) and rewards.dtype == np.float32
        assert dones.shape == (n,) and dones.dtype == np.bool_
        assert isinstance(infos, list) and len(infos) == n
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
        # every episode starts together and lasts 10 bars: all end at steps 10 and 20
        assert dones.all() == ((k + 1) % 10 == 0) and dones.any() == dones.all()
        for i in range(n):
            if dones[i]:
                n_done += 1
                term = infos[i]["terminal_observation"]
                assert term.shape == (obs_dim,) and term.dtype == np.float32
                assert infos[i]["TimeLimit.truncated"] is True
                # the returned observation is the start of a new episode: all cash
                assert obs[i, -1] == 1.0 and (obs[i, -1 - N_ASSETS : -1] == 0).all()
                assert not np.array_equal(term, obs[i])
            else:
                assert "terminal_observation" not in infos[i]
    assert n_done == 2 * n
    assert venv.get_attr("num_envs") == [n] * n
    assert venv.get_attr("num_envs", indices=[0, 2]) == [n, n]
    assert venv.env_is_wrapped(VecMonitor) == [False] * n
    venv.close()


def test_vec_env_terminal_observation_is_the_last_state(data: tuple[np.ndarray, np.ndarray]) -> None:
    """The terminal observation carries the weights the episode ended with (not a reset state)."""
    venv = make_vec(data, 2, episode_bars=3)
    venv.reset()
    full = np.full((2, N_ASSETS), 0.9, dtype=np.float32)
    for _ in range(2):
        venv.step(full)
    obs, _, dones, infos = venv.step(full)
    assert dones.all()
    for i in range(2):
        term = infos[i]["terminal_observation"]
        assert term[-1] < 0.5  # mostly invested, while the new episode's observation is all cash
        assert term[-1] == pytest.approx(1.0 - term[-1 - N_ASSETS : -1].sum(), abs=1e-6)
        assert obs[i, -1] == 1.0


def test_vec_env_seed_reproducible(data: tuple[np.ndarray, np.ndarray]) -> None:
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        venv = make_vec(data, 4, seed=None)
        venv.seed(seed)
        first = venv.reset()
        rng = np.random.default_rng(2)
        rewards = [venv.step(rng.uniform(-1, 1, (4, N_ASSETS)))[1] for _ in range(60)]
        return first, np.array(rewards)

    a, b, c = run(42), run(42), run(43)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def _step_singles(envs: list[PortfolioEnv], actions: np.ndarray) -> tuple[np.ndarray, ...]:
    out = [env.step(a) for env, a in zip(envs, actions, strict=True)]
    obs = np.stack([o[0] for o in out])
    rewards = np.array([o[1] for o in out])
    truncated = np.array([o[3] for o in out])
    values = np.array([o[4]["value"] for o in out])
    return obs, rewards, truncated, values


def test_vec_env_matches_single_envs_from_random_starts(data: tuple[np.ndarray, np.ndarray]) -> None:
    """n single envs started at the vec env's (random) start bars and fed the same actions
    follow exactly the same trajectory: same observations, rewards, values and ends."""
    n = 5
    venv = make_vec(data, n, episode_bars=30, seed=123)
    obs_v = venv.reset()
    starts = venv.core.t.copy()
    assert len(set(starts.tolist())) > 1  # the starts really differ
    singles = []
    for i in range(n):
        env = make_single(data, episode_bars=30)
        env.reset(seed=i)
        env.core.t[:] = starts[i]  # start the single env on the same bar
        env.core.end[:] = venv.core.end[i]
        singles.append(env)
    obs_s = np.stack([env.core.observe()[0] for env in singles])
    np.testing.assert_array_equal(obs_v, obs_s)
    rng = np.random.default_rng(9)
    for _ in range(29):
        actions = rng.uniform(-1, 1, (n, N_ASSETS)).astype(np.float32)
        obs_v, rew_v, done_v, _ = venv.step(actions)
        obs_s, rew_s, trunc_s, val_s = _step_singles(singles, actions)
        np.testing.assert_array_equal(obs_v, obs_s)
        np.testing.assert_array_equal(rew_v, rew_s.astype(np.float32))
        np.testing.assert_array_equal(venv.core.value, val_s)
        assert not done_v.any() and not trunc_s.any()
    actions = rng.uniform(-1, 1, (n, N_ASSETS)).astype(np.float32)
    _, rew_v, done_v, infos = venv.step(actions)
    obs_s, rew_s, trunc_s, _ = _step_singles(singles, actions)
    assert done_v.all() and trunc_s.all()
    np.testing.assert_array_equal(rew_v, rew_s.astype(np.float32))
    np.testing.assert_array_equal(np.stack([info["terminal_observation"] for info in infos]), obs_s)


def test_vec_env_matches_single_envs_over_several_episodes(data: tuple[np.ndarray, np.ndarray]) -> None:
    """With one possible start bar (episode = whole slice) no state is copied: fresh envs,
    auto-reset and manual reset give identical trajectories over three episodes."""
    feats, prices = data
    start, stop = 300, 340  # decisions at 300 .. 338: 39 steps per episode
    n = 3
    venv = PortfolioVecEnv(feats, prices, start, stop, LOOKBACK, n, COSTS, episode_bars=10_000, seed=0)
    singles = [
        PortfolioEnv(feats, prices, start, stop, LOOKBACK, COSTS, episode_bars=10_000) for _ in range(n)
    ]
    obs_v = venv.reset()
    obs_s = np.stack([env.reset(seed=i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs_v, obs_s)
    rng = np.random.default_rng(4)
    total = np.zeros(n)
    for episode in range(3):
        for k in range(39):
            actions = rng.uniform(-1, 1, (n, N_ASSETS))
            obs_v, rew_v, done_v, infos = venv.step(actions)
            obs_s, rew_s, trunc_s, _ = _step_singles(singles, actions)
            np.testing.assert_array_equal(rew_v, rew_s.astype(np.float32))
            np.testing.assert_array_equal(done_v, trunc_s)
            total += rew_s
            if k < 38:
                np.testing.assert_array_equal(obs_v, obs_s)
            else:
                assert done_v.all(), episode
                np.testing.assert_array_equal(np.stack([i["terminal_observation"] for i in infos]), obs_s)
                obs_s = np.stack([env.reset()[0] for env in singles])
                np.testing.assert_array_equal(obs_v, obs_s)
    assert np.isfinite(total).all()


def test_trailing_stop_fires_in_the_env(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A 2% trailing stop on a volatile walk forces exits although the action keeps buying."""
    venv = make_vec(data, 8, episode_bars=200)
    venv.reset()
    buy = np.ones((8, N_ASSETS), dtype=np.float32)
    flat_after_buy = 0
    for k in range(199):
        held_before = venv.core.weights > 0
        venv.step(buy)
        if k > 0:
            flat_after_buy += int((held_before & (venv.core.weights == 0)).sum())
    assert flat_after_buy > 0


def test_ppo_learns_on_the_vec_env(data: tuple[np.ndarray, np.ndarray]) -> None:
    """SB3 PPO runs end to end on the VecEnv (rollouts, auto-reset bootstrapping, updates)."""
    venv = VecMonitor(make_vec(data, 4, episode_bars=16))
    model = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=128)
    assert model.num_timesteps == 128
    assert len(model.ep_info_buffer) >= 4  # VecMonitor saw the auto-reset episodes end


def test_slice_too_short_raises(data: tuple[np.ndarray, np.ndarray]) -> None:
    feats, prices = data
    with pytest.raises(ValueError, match="too short"):
        PortfolioVecEnv(feats, prices, 100, 101, LOOKBACK, 2)
    with pytest.raises(ValueError, match="differ"):
        PortfolioVecEnv(feats[:-1], prices, 100, 200, LOOKBACK, 2)

"""Env-steps per second of ``PortfolioVecEnv`` vs SB3 ``DummyVecEnv`` of ``PortfolioEnv``.

Same data, same lookback, same random actions; n_envs = 1, 16, 256; one core.
Target (issue 2): at 256 envs >= 10x the DummyVecEnv and >= 500,000 env-steps/s.

    python bench/env_throughput.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv

from trainers.env import PortfolioEnv, PortfolioVecEnv

from _common import pin_one_core, training_slice

LOOKBACK = 10


def steps_per_second(env, n_envs: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(64, n_envs, env.action_space.shape[0])).astype(np.float32)
    env.reset()
    for k in range(5):  # warm-up
        env.step(actions[k])
    steps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for k in range(16):
            env.step(actions[(steps + k) % 64])
        steps += 16
    return steps * n_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per case")
    args = parser.parse_args()
    print(f"machine: {pin_one_core()}")
    features, prices, start, stop = training_slice()
    print(f"data: {prices.shape[1]} assets, train slice {stop - start} bars, lookback {LOOKBACK}")
    print(f"{'n_envs':>7} {'PortfolioVecEnv':>17} {'DummyVecEnv':>13} {'ratio':>7}")
    result = {}
    for n in (1, 16, 256):
        vec = PortfolioVecEnv(features, prices, start, stop, LOOKBACK, n, seed=0)
        dummy = DummyVecEnv(
            [lambda i=i: PortfolioEnv(features, prices, start, stop, LOOKBACK, seed=i) for i in range(n)]
        )
        fast = steps_per_second(vec, n, args.seconds)
        slow = steps_per_second(dummy, n, args.seconds)
        result[n] = (fast, slow)
        print(f"{n:>7} {fast:>17,.0f} {slow:>13,.0f} {fast / slow:>6.1f}x")
    fast, slow = result[256]
    ok = fast / slow >= 10 and fast >= 500_000
    print(
        f"target at 256 envs: >= 10x and >= 500,000 env-steps/s -> {fast / slow:.1f}x, "
        f"{fast:,.0f}/s: {'MET' if ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()

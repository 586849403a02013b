"""PPO learn steps per second with ``PortfolioVecEnv`` vs SB3 ``DummyVecEnv`` of ``PortfolioEnv``.

Same data, same hyperparameters, same seed, one core and one torch thread; the whole
``PPO.learn`` is timed (rollouts and gradient updates). Two points of the search space are
measured: the default point ``PPOParams()`` and its cheapest corner (1 hidden layer of 64,
2 epochs, the largest batch, lookback 5), because the gradient updates cost the same with
either env and so bound the ratio. Target (issue 2): >= 2x.

    python bench/ppo_throughput.py [--steps 32768] [--n-envs 16]
"""

from __future__ import annotations

import argparse
import time

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from trainers.env import PortfolioEnv, PortfolioVecEnv
from trainers.objective import TrainingConfig, ppo_kwargs
from trainers.search_space import PPOParams

from _common import pin_one_core, training_slice


def learn_rate(env, params: PPOParams, steps: int) -> float:
    model = PPO("MlpPolicy", env, **ppo_kwargs(params, TrainingConfig(), seed=0))
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=32_768, help="env steps per run")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    print(f"machine: {pin_one_core()}")
    features, prices, start, stop = training_slice()
    points = {
        "default": PPOParams(),
        "cheapest": PPOParams(
            n_epochs=2, net_width=64, net_depth=1, batch_size=2048, lookback=5, n_steps=512
        ),
    }
    header = f"{'point':>9} {'n_envs':>7} {'PortfolioVecEnv':>17} {'DummyVecEnv':>13} {'ratio':>7}"
    print(header + "   (learn steps/s)")
    ratios = {}
    for label, params in points.items():
        for n in args.n_envs:
            lb = params.lookback
            vec = PortfolioVecEnv(features, prices, start, stop, lb, n, seed=0)
            dummy = DummyVecEnv(
                [lambda i=i: PortfolioEnv(features, prices, start, stop, lb, seed=i) for i in range(n)]  # noqa: B023
            )
            fast = learn_rate(vec, params, args.steps)
            slow = learn_rate(dummy, params, args.steps)
            ratios[(label, n)] = fast / slow
            print(f"{label:>9} {n:>7} {fast:>17,.0f} {slow:>13,.0f} {fast / slow:>6.2f}x")
    for label, params in points.items():
        print(f"{label}: {params.as_dict()}")
    for (label, n), r in ratios.items():
        print(f"target >= 2x at the {label} point, {n} envs: {'MET' if r >= 2 else 'NOT MET'} ({r:.2f}x)")


if __name__ == "__main__":
    main()

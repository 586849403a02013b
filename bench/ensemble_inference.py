"""Per-bar latency of the batched 10-member ensemble vs calling each member's SB3 policy.

Builds 10 real members (tiny PPO runs with Stable-Baselines3 on
:class:`trainers.env.PortfolioVecEnv` over the embedded dataset's study bars), mixed like a
real top 10 (widths 64-512, depths 1-3, every activation, lookbacks 5-30); saves them as
bundles with a manifest and loads the ensemble with :meth:`EnsemblePolicy.from_manifest`.
Then, over hold-out bars (never seen in training), it times per bar:

* ensemble: ``EnsemblePolicy.act(raw_features, weights)`` (normalisation, one batched pass,
  mean combine);
* baseline: for each member, normalise its window, build its observation
  (:func:`trainers.observation.build_observations`) and call the SB3
  ``policy.predict(obs, deterministic=True)``; then the mean of the actions.

Both run on one thread (torch and OpenBLAS: the script re-runs itself with
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1`` unless they are set), in alternating blocks of
bars so that background load hits both alike. Per bar it records the wall-clock latency and
the thread's CPU time; the latter leaves out time the OS gave to other processes, so it is
the figure to read on a shared machine (the process's CPU time / wall time is printed).
Targets (issue 3): >= 5x faster (ratio of median per-bar latency) and ensemble p99 < 1 ms.

    python bench/ensemble_inference.py [--bars 3000] [--train-steps 128]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO

from ensemble.manifest import MANIFEST_FILE, Manifest, Member, member_dir_name, write_manifest
from ensemble.policy import EnsemblePolicy
from trainers.actor import actor_state_from_sb3
from trainers.bundle import ObservationSpec, PipelineSpec, save_bundle
from trainers.data import DEFAULT_HOLDOUT_CUT, load_panel
from trainers.env import PortfolioVecEnv
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats, compute_features
from trainers.objective import TrainingConfig, ppo_kwargs
from trainers.observation import build_observations
from trainers.search_space import PPOParams

# (width, depth, activation, lookback) of a plausible top 10
MEMBERS = [
    (512, 2, "tanh", 30),
    (512, 1, "relu", 10),
    (256, 3, "tanh", 20),
    (256, 2, "elu", 10),
    (256, 2, "tanh", 5),
    (128, 3, "relu", 30),
    (128, 2, "tanh", 20),
    (128, 1, "elu", 10),
    (64, 2, "tanh", 30),
    (64, 3, "relu", 5),
]
BLOCK = 100  # bars per alternating timing block


def build_members(root: Path, train_steps: int) -> tuple[Path, list, np.ndarray, int, tuple[str, ...]]:
    """Train the members, save bundles + manifest; returns (manifest path, SB3 policies,
    raw features of the whole panel, first hold-out bar, symbols)."""
    panel = load_panel()
    raw = compute_features(panel.prices)
    cut = int(np.searchsorted(panel.timestamps, np.datetime64(DEFAULT_HOLDOUT_CUT.rstrip("Z"), "s")))
    train_start, train_stop = 2000, cut
    norm = NormStats.fit(raw[train_start:train_stop])
    features = norm.apply(raw)
    config = TrainingConfig(budget_steps=train_steps, n_envs=2)
    policies, members = [], []
    for i, (width, depth, activation, lookback) in enumerate(MEMBERS):
        params = PPOParams(
            n_steps=64,
            batch_size=64,
            n_epochs=1,
            net_width=width,
            net_depth=depth,
            activation=activation,
            lookback=lookback,
        )
        env = PortfolioVecEnv(
            features, panel.prices, train_start, train_stop, lookback, 2, config.costs(0.1), seed=i
        )
        model = PPO("MlpPolicy", env, **ppo_kwargs(params, config, seed=i))
        model.learn(total_timesteps=train_steps)
        model.policy.set_training_mode(False)
        policies.append(model.policy)
        spec = ObservationSpec(panel.symbols, FEATURE_NAMES, lookback, FEATURE_PIPELINE_VERSION, norm)
        meta = {
            "algorithm": "PPO",
            "architecture": {
                "type": "mlp",
                "obs_dim": spec.obs_dim,
                "n_assets": panel.n_assets,
                "width": width,
                "depth": depth,
                "activation": activation,
            },
            "observation_spec": spec.to_json(),
            "hyperparameters": params.as_dict(),
            "study": "bench_ensemble",
            "trial_number": i,
            "trial_id": i + 1,
        }
        tmp = root / f"new_{i}"
        sha = save_bundle(tmp, actor_state_from_sb3(model.policy), meta)
        name = member_dir_name(i + 1, sha)
        tmp.rename(root / name)
        members.append(
            Member(
                slot=i,
                study="bench_ensemble",
                trial_number=i,
                trial_id=i + 1,
                value=1.0 - 0.05 * i,
                vin=f"bench-{i}",
                grade="A",
                bundle_path=name,
                sha256=sha,
            )
        )
        print(f"  member {i}: width={width} depth={depth} activation={activation} lookback={lookback}")
    path = root / MANIFEST_FILE
    write_manifest(path, Manifest(study="bench_ensemble", generation=1, members=members))
    return path, policies, raw, cut, panel.symbols


def baseline_act(policies: list, bundles: list, raw: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Loop over members: own observation, SB3 ``predict``; mean action."""
    actions = []
    w = weights.reshape(1, -1)
    for policy, b in zip(policies, bundles, strict=True):
        lb = b.spec.lookback
        obs = build_observations(b.spec.norm.apply(raw[-lb:]), np.array([lb - 1]), lb, w)[0]
        action, _ = policy.predict(obs, deterministic=True)
        actions.append(action)
    return np.mean(actions, axis=0)


def stats(ns: list[int]) -> tuple[float, float, float]:
    us = np.asarray(ns) / 1e3
    return float(np.percentile(us, 50)), float(np.percentile(us, 99)), float(us.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=3000, help="bars timed per method")
    parser.add_argument("--train-steps", type=int, default=128, help="PPO env steps per member")
    args = parser.parse_args()
    threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if any(os.environ.get(k) != v for k, v in threads.items()):  # BLAS reads them at import
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **threads})
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench_ensemble_") as tmp:
        print(f"training {len(MEMBERS)} members ({args.train_steps} PPO steps each):")
        path, policies, raw, cut, symbols = build_members(Path(tmp), args.train_steps)
        policy = EnsemblePolicy.from_manifest(path, PipelineSpec(symbols), expected_study="bench_ensemble")

    n_params = sum(v.numel() for b in policy.bundles for v in b.state.values())
    print(
        f"ensemble: {policy.n_members} members, {n_params * 4 / 1e6:.1f} MB of actor weights, "
        f"batched groups {list(policy.batch_groups)}, max lookback {policy.max_lookback}"
    )

    L = policy.max_lookback
    rng = np.random.default_rng(0)
    bars = cut + L + np.arange(args.bars) % (len(raw) - cut - L)
    weights = rng.dirichlet(np.ones(policy.n_assets + 1), size=args.bars)[:, : policy.n_assets]
    windows = [raw[t + 1 - L : t + 1] for t in bars]

    # same decisions (float32 summation order aside)
    diff = 0.0
    for k in range(0, args.bars, max(1, args.bars // 50)):
        base = baseline_act(policies, policy.bundles, windows[k], weights[k])
        diff = max(diff, float(np.abs(policy.act(windows[k], weights[k]) - base).max()))
    print(f"max |ensemble - baseline| over 50 bars: {diff:.2e}")

    # per bar: wall-clock latency, and this thread's CPU time (which leaves out the time the
    # OS gave to other processes: the figure to read on a busy machine)
    wall: dict[str, list[int]] = {"ensemble": [], "baseline": []}
    cpu: dict[str, list[int]] = {"ensemble": [], "baseline": []}
    runs = {
        "ensemble": lambda k: policy.act(windows[k], weights[k]),
        "baseline": lambda k: baseline_act(policies, policy.bundles, windows[k], weights[k]),
    }
    for k in range(50):  # warm-up
        for run in runs.values():
            run(k)
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for start in range(0, args.bars, BLOCK):
        for name, run in runs.items():
            for k in range(start, min(start + BLOCK, args.bars)):
                t0, c0 = wall_clock(), cpu_clock()
                run(k)
                cpu[name].append(cpu_clock() - c0)
                wall[name].append(wall_clock() - t0)
    cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    print(
        f"per-bar latency over {args.bars} bars, microseconds (process CPU time / wall time {cpu_share:.2f}):"
    )
    for title, data in (("wall clock", wall), ("thread CPU time", cpu)):
        e50, e99, emean = stats(data["ensemble"])
        b50, b99, bmean = stats(data["baseline"])
        print(f"  {title}:")
        print(f"    batched ensemble  p50 {e50:8.1f}  p99 {e99:8.1f}  mean {emean:8.1f}")
        print(f"    SB3 predict loop  p50 {b50:8.1f}  p99 {b99:8.1f}  mean {bmean:8.1f}")
        ratio = b50 / e50
        print(f"    speed-up {ratio:.1f}x (p50), {bmean / emean:.1f}x (mean), {b99 / e99:.1f}x (p99)")
        print(
            f"    targets: >= 5x faster (p50) {'met' if ratio >= 5 else 'NOT met'}; "
            f"p99 < 1 ms {'met' if e99 < 1000 else 'NOT met'} ({e99:.0f} us)"
        )


if __name__ == "__main__":
    main()

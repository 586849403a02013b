"""Training on a CUDA device: seconds per trial on the GPU against the CPU, per algorithm, and
whether a bundle trained on the GPU replays its fold in a process that sees no GPU.

For each algorithm (``--algorithms``) and each device (``cpu``, and ``cuda`` where torch sees
one), one worker process (``python -m trainers.worker --device D --algorithms A``) trains one
quick-mode trial on its own SQLite study: five walk-forward folds, ``--budget-steps`` env
steps each, the default design, the embedded data, one torch thread per process. All run at
once, so keep ``2 x algorithms`` at or below the machine's cores. Baseline: the same trial on
the CPU, measured in the same run; the ratio is CPU seconds / GPU seconds (above 1: the GPU
is faster).

Then a child process with ``CUDA_VISIBLE_DEVICES`` empty loads every trial's bundle (its last
fold's actor, exported to CPU tensors) and backtests it on that fold's test bars; the Sharpe
ratio must equal the one the trial recorded (``model.json`` ``metrics.fold.sharpe``).

    python bench/device_training.py [--algorithms ppo,a2c,sac,td3] [--budget-steps 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

from ensemble.backtests import bundle_backtest
from trainers.bundle import PipelineSpec, load_bundle
from trainers.data import load_panel
from trainers.features import ALL_FEATURE_NAMES, compute_features

STUDY = "bench_device_training"


def train(root: Path, algorithm: str, device: str, budget_steps: int, seed: int) -> subprocess.Popen:
    """Start one worker for one trial; its log is ``root/worker.log``."""
    root.mkdir(parents=True)
    cmd = [sys.executable, "-m", "trainers.worker", "--study", STUDY, "--root", str(root)]
    cmd += ["--storage", f"sqlite:///{root / 'optuna.db'}", "--n-trials", "1", "--mode", "quick"]
    cmd += ["--algorithms", algorithm, "--device", device, "--budget-steps", str(budget_steps)]
    cmd += ["--seed", str(seed)]
    log = open(root / "worker.log", "w")  # noqa: SIM115
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def replay(roots: list[Path]) -> list[dict]:
    """In a process that sees no GPU: each root's bundles against their recorded fold Sharpe."""
    panel = load_panel(None)
    raw = compute_features(panel.prices, ALL_FEATURE_NAMES)
    out = []
    for root in roots:
        for bundle_dir in sorted((root / "trials" / STUDY).glob("*/bundle")):
            bundle = load_bundle(bundle_dir, PipelineSpec(panel.symbols))
            fold, recorded = bundle.meta["fold"], bundle.meta["metrics"]["fold"]["sharpe"]
            result = bundle_backtest(
                bundle, panel.prices, raw, fold["test_start"], fold["test_stop"], timestamps=panel.timestamps
            )
            out.append(
                {
                    "root": root.name,
                    "cuda_visible": torch.cuda.is_available(),
                    "recorded_sharpe": recorded,
                    "replayed_sharpe": result.metrics.sharpe,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algorithms", default="ppo,a2c,sac,td3")
    parser.add_argument("--budget-steps", type=int, default=10_000, help="env steps per fold")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the roots (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--replay", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay is not None:  # the child: no GPU visible
        print(json.dumps(replay(args.replay)))
        return

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    gpu = torch.cuda.get_device_name(0) if "cuda" in devices else "none"
    print(f"torch {torch.__version__}, GPU {gpu}, {os.cpu_count()} cores; {args.budget_steps} steps per fold")
    base = args.keep or Path(tempfile.mkdtemp(prefix="cappuccino-device-"))
    runs = {}
    for alg in args.algorithms.split(","):
        for device in devices:
            root = base / f"{alg}-{device}"
            runs[(alg, device)] = (root, time.time(), train(root, alg, device, args.budget_steps, args.seed))
    ended: dict[tuple[str, str], float] = {}
    while len(ended) < len(runs):  # poll, so that each worker's time ends when it ends
        for key, (_, _, proc) in runs.items():
            if key not in ended and proc.poll() is not None:
                ended[key] = time.time()
        time.sleep(0.5)
    results = []
    for (alg, device), (root, t0, proc) in runs.items():
        rc = proc.returncode
        seconds = ended[(alg, device)] - t0
        trials = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root / 'optuna.db'}").trials
        value = trials[0].value if trials and trials[0].value is not None else None
        state = trials[0].state.name if trials else "none"
        results.append(
            {"algorithm": alg, "device": device, "rc": rc, "seconds": seconds, "state": state, "value": value}
        )
        if rc != 0:
            print(f"{alg}/{device}: worker exited {rc}; last log lines:")
            print("".join((root / "worker.log").read_text().splitlines(True)[-15:]))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    child = subprocess.run(
        [sys.executable, __file__, "--replay", *(str(r[0]) for r in runs.values())],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    replays = json.loads(child.stdout.splitlines()[-1]) if child.returncode == 0 else []
    if child.returncode != 0:
        print("replay failed:", child.stderr[-3000:])

    print(f"\n{'algorithm':<9} {'device':<6} {'state':<9} {'value':>7} {'seconds':>8} {'cpu/gpu':>7}")
    by = {(r["algorithm"], r["device"]): r for r in results}
    for r in results:
        cpu = by.get((r["algorithm"], "cpu"))
        ratio = f"{cpu['seconds'] / r['seconds']:.2f}" if r["device"] == "cuda" and cpu else ""
        value = "n/a" if r["value"] is None else f"{r['value']:+.3f}"
        print(
            f"{r['algorithm']:<9} {r['device']:<6} {r['state']:<9} {value:>7} {r['seconds']:>8.1f} {ratio:>7}"
        )
    print(f"\nReplayed with no GPU visible ({len(replays)} bundles; recorded vs replayed fold Sharpe):")
    for r in replays:
        got, want = r["replayed_sharpe"], r["recorded_sharpe"]
        print(f"  {r['root']:<10} cuda visible {r['cuda_visible']}: {want:+.6f} vs {got:+.6f}", end="")
        print(f" (|diff| {abs(got - want):.1e})")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "replays": replays}, indent=1))


if __name__ == "__main__":
    main()

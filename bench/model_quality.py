"""Model quality per agent design: does training find models that beat the baselines?

Each variant (a set of worker options) gets the same compute budget: ``--workers`` worker
processes on a fresh study for ``--minutes`` of wall-clock time, quick mode, the default
budget per fold, on the embedded data (or ``--data``). Then, per variant:

* the best trial's value next to the values of the two constant policies (always fully
  invested, always cash) on the same walk-forward folds (``fold_baselines``): the
  objective is the excess Sharpe ratio over equal-weight buy-and-hold, mean - 0.1 std over
  the folds;
* where the study's design starts: the value of its zero action on the same folds, as the
  study records it (``fold_baselines``' ``zero_action``: an untrained agent's
  deterministic action is about 0; under ``softmax`` that is equal weights over the assets
  and cash, rebalanced at each decision bar). A best value at or below it says training
  added nothing to the starting point. Also the number of COMPLETE
  trials above the always-invested value (how easy that baseline is on these folds);
* the top-10 ensemble (``sync``) evaluated on the validation window (the window models are
  chosen on) and on the test window (reported once, never chosen on): Sharpe ratio with its
  95% bootstrap interval, against equal-weight buy-and-hold and the 50-day trend filter,
  on the same bars with the same costs.

Choose defaults on the fold values and the validation column; the test column is there to
be reported, not tuned on.

    python bench/model_quality.py [--minutes 30] [--workers 2] [--variants a,b] [--holdout-cut DATE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ensemble.evaluate import evaluate
from ensemble.sync import sync_ensemble
from trainers.algorithms import ALGORITHMS
from trainers.bundle import PipelineSpec
from trainers.data import load_panel
from trainers.design import (
    DEFAULT_ACTION_SCHEME,
    DEFAULT_ALGORITHMS,
    RECOMMENDED_DECISION_INTERVALS,
    RECOMMENDED_REWARDS,
)
from trainers.study_db import open_engine
from trainers.study_db.baselines import read_study_baselines


def _design(scheme: str, intervals: str, rewards: str, *extra: str) -> list[str]:
    return ["--action-scheme", scheme, "--decision-intervals", intervals, "--rewards", rewards, *extra]


# the worker's default design, spelled out from its defaults: the variants below change one item
DEFAULT_DESIGN = _design(
    DEFAULT_ACTION_SCHEME,
    ",".join(map(str, RECOMMENDED_DECISION_INTERVALS)),
    ",".join(RECOMMENDED_REWARDS),
)

VARIANTS: dict[str, list[str]] = {
    "default": [],  # the worker's defaults: softmax, a 24-bar interval, the excess reward, PPO
    "scores": _design("scores", "1", "log_return"),  # the first design
    "softmax": _design("softmax", "1", "log_return"),
    "softmax-excess": _design("softmax", "1", "excess_log_return"),
    "softmax-dsr": _design("softmax", "1", "differential_sharpe"),
    "softmax-k": _design("softmax", "1,4,24", "log_return"),
    "softmax-k24": _design("softmax", "24", "log_return"),
    "softmax-k24-excess": _design("softmax", "24", "excess_log_return"),
    "softmax-penalty": [*DEFAULT_DESIGN, "--turnover-penalty", "0.0025"],
    "softmax-ladder": [*DEFAULT_DESIGN, "--budget-ladder", "10000,30000,90000"],
    # each other algorithm on the default design
    **{a: [*DEFAULT_DESIGN, "--algorithms", a] for a in ALGORITHMS if a not in DEFAULT_ALGORITHMS},
    "long": ["--feature-set", "long"],  # the default, observing weeks of history too
    "predictor": ["--predictor-horizons", "24"],  # the default, observing a GRU's 24-bar forecast
    "predictor-search": ["--predictor-horizons", "0,4,24"],
    "softmax-search": _design("softmax", "1,4,24", "log_return,excess_log_return,differential_sharpe"),
}
STUDY = "model_quality"
STOP_GRACE_S = 90


def run_variant(name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant for the budget, then sync and evaluate its ensemble."""
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'optuna.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trainers.worker", "--study", STUDY, "--root", str(root), "--storage", url]
    cmd += ["--n-trials", "100000", "--max-trials-per-process", "100000", "--mode", "quick"]
    if args.holdout_cut:
        cmd += ["--holdout-cut", args.holdout_cut]
    if args.data:
        cmd += ["--data", str(args.data)]
    cmd += VARIANTS[name]
    procs = []
    t0 = time.time()
    for i in range(args.workers):
        log = open(root / f"worker{i}.log", "w")  # noqa: SIM115
        argv = [*cmd, "--seed", str(1000 * i + args.seed)]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True))
        time.sleep(3)  # the first worker creates the study and its fold baselines
    try:
        time.sleep(max(0.0, args.minutes * 60 - (time.time() - t0)))
    finally:
        for p in procs:  # SIGTERM: a trial in its last fold finishes, the others are re-queued
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + STOP_GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    minutes = (time.time() - t0) / 60
    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    count = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    baselines = read_study_baselines(open_engine(url), STUDY)
    out: dict[str, Any] = {"variant": name, "options": " ".join(VARIANTS[name]), "minutes": minutes}
    out["trials"] = count
    out["best_value"] = study.best_value if count["COMPLETE"] else None
    out["best_params"] = study.best_params if count["COMPLETE"] else None
    out["baselines"] = baselines.values() if baselines else None
    out["zero_action"] = baselines.zero_action if baselines else None
    out["above_invested"] = sum(
        t.state == TrialState.COMPLETE and t.value > baselines.invested for t in trials if baselines
    )
    if not count["COMPLETE"]:
        return out
    panel = load_panel(args.data)
    sync_ensemble(root, url, STUDY, PipelineSpec(panel.symbols), top_n=10)
    for window in ("validation", "test"):
        ev = evaluate(root, "ensemble", study=STUDY, window=window, storage=url, data=args.data)
        lines = {line.name: line.figures for line in ev.lines}
        model = ev.model_line.figures
        out[window] = {
            "bars": ev.n_bars,
            "first_bar": ev.first_bar,
            "last_bar": ev.last_bar,
            "sharpe": model["sharpe"],
            "sharpe_low": model["sharpe_low"],
            "sharpe_high": model["sharpe_high"],
            "exposure": model["exposure"],
            "total_return": model["total_return"],
            "buy_and_hold": lines["equal-weight buy-and-hold"]["sharpe"],
            "trend": next(v["sharpe"] for k, v in lines.items() if k.startswith("trend filter")),
        }
    return out


def _f(v: Any, fmt: str = "+.2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    print("Fold values (objective: excess Sharpe over equal-weight buy-and-hold, mean - 0.1 std):")
    print(
        f"{'variant':<16} {'complete':>8} {'pruned':>6} {'best':>7} {'invested':>8} {'cash':>6} "
        f"{'zero act':>8} {'>invested':>9}  beats both"
    )
    for r in results:
        b = r["baselines"] or {}
        best = r["best_value"]
        beats = best is not None and b and best > max(b.values())
        print(
            f"{r['variant']:<16} {r['trials']['COMPLETE']:>8} {r['trials']['PRUNED']:>6} {_f(best):>7} "
            f"{_f(b.get('invested')):>8} {_f(b.get('cash')):>6} {_f(r.get('zero_action')):>8} "
            f"{r.get('above_invested', 0):>9}  {'yes' if beats else 'no'}"
        )
    for window in ("validation", "test"):
        first = next((r[window] for r in results if window in r), None)
        if first is None:
            continue
        print()
        print(
            f"Top-10 ensemble, {window} window ({first['bars']} hourly bars, {first['first_bar'][:10]} .. "
            f"{first['last_bar'][:10]}): annualised Sharpe [95% bootstrap interval]"
        )
        print(
            f"{'variant':<16} {'ensemble':>8} {'interval':>16} {'exposure':>8} {'buy&hold':>8} {'trend':>6}"
        )
        for r in results:
            w = r.get(window)
            if not w:
                continue
            interval = f"[{w['sharpe_low']:+.2f}, {w['sharpe_high']:+.2f}]"
            print(
                f"{r['variant']:<16} {w['sharpe']:>+8.2f} {interval:>16} {w['exposure']:>8.2f} "
                f"{w['buy_and_hold']:>+8.2f} {w['trend']:>+6.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per variant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--holdout-cut", default=None, help="another hold-out cut (UTC date)")
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: embedded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="folder for the roots (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    base = args.keep or Path(tempfile.mkdtemp(prefix="cappuccino-quality-"))
    print(
        f"{len(names)} variants x {args.minutes:g} min x {args.workers} workers, quick mode, "
        f"hold-out cut {args.holdout_cut or 'default'}; roots under {base}",
        flush=True,
    )
    results = []
    for name in names:
        r = run_variant(name, base / name, args)
        results.append(r)
        print(json.dumps(r, default=str), flush=True)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

"""Completed trials per hour: W worker processes on one SQLite study, quick mode, default
budget (30,000 env steps per fold), embedded dataset, for a fixed wall-clock time.

Counts trials that COMPLETE (and, separately, PRUNED and FAIL) inside the window and
extrapolates to one hour. Baseline named by issue 2: a reference GPU system of this kind
reports about 2 completed trials per hour; target >= 60 on a 2-core machine with 2 workers.

    python bench/trials_per_hour.py [--minutes 10] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

REFERENCE_PER_HOUR = 2.0
STUDY = "bench_trials_per_hour"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="root to keep (default: temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="cappuccino-bench-"))
    url = f"sqlite:///{root / 'optuna.db'}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "trainers.worker", "--study", STUDY, "--root", str(root)]
    cmd += ["--n-trials", "100000", "--max-trials-per-process", "100000", "--mode", "quick"]
    procs = []
    t0 = time.time()
    for i in range(args.workers):
        log = open(root / f"worker{i}.log", "w")  # noqa: SIM115
        argv = [*cmd, "--seed", str(1000 * i)]
        procs.append(subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True))
        time.sleep(2)  # let the first worker create the study
    try:
        time.sleep(args.minutes * 60 - (time.time() - t0))
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    elapsed_h = (time.time() - t0) / 3600
    trials = optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    secs = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    per_hour = count[TrialState.COMPLETE] / elapsed_h
    print(f"root: {root}")
    print(f"workers: {args.workers}, window: {elapsed_h * 60:.1f} min, quick mode, default budget")
    print(
        f"trials: {count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{count[TrialState.FAIL]} failed, {count[TrialState.RUNNING]} running at the end"
    )
    if secs:
        print(f"seconds per completed trial: median {secs[len(secs) // 2]:.0f}, max {secs[-1]:.0f}")
    print(f"completed trials/hour: {per_hour:.1f}")
    finished = (count[TrialState.COMPLETE] + count[TrialState.PRUNED]) / elapsed_h
    print(f"finished (complete + pruned) trials/hour: {finished:.1f}")
    print(
        f"vs reference GPU system (~{REFERENCE_PER_HOUR:.0f}/hour): {per_hour / REFERENCE_PER_HOUR:.0f}x; "
        f"target >= 60/hour: {'MET' if per_hour >= 60 else 'NOT MET'}"
    )
    if done:
        best = max(done, key=lambda t: t.value)
        print(f"best: trial {best.number} value {best.value:.3f} {best.user_attrs.get('vin')}")


if __name__ == "__main__":
    main()

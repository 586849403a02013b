"""Wall time a resume saves: a full-mode trial (26 walk-forward folds on the embedded data)
run uninterrupted, against the same trial SIGKILLed once 3/4 of its folds are done and
retried by a second worker, which resumes at the first unfinished fold.

Baseline (named by issue 11): the retry without checkpoints, which would train every fold
again, i.e. the uninterrupted trial's wall time. Prints both trials' wall times, the retry's,
the time saved and the ratio, and checks that the resumed value equals the uninterrupted one.

    python bench/resume_savings.py [--budget-steps 10000] [--fraction 0.75] [--keep DIR]
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

STUDY = "bench_resume"
HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


def _worker(root: Path, args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "trainers.worker", "--study", STUDY, "--root", str(root)]
    cmd += ["--mode", "full", "--n-trials", "1", "--seed", "0", "--n-envs", str(args.n_envs)]
    cmd += ["--budget-steps", str(args.budget_steps), *HEARTBEAT]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env, start_new_session=True)


def _trials(root: Path) -> list[optuna.trial.FrozenTrial]:
    if not (root / "optuna.db").is_file():  # the worker has not created its study yet
        return []
    try:
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{root / 'optuna.db'}")
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-steps", type=int, default=10_000, help="env steps per fold")
    parser.add_argument("--n-envs", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.75, help="share of folds done at the kill")
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="cappuccino-resume-"))
    base.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    ref_root = base / "uninterrupted"
    t0 = time.perf_counter()
    w = _worker(ref_root, args, base / "uninterrupted.log")
    if w.wait() != 0:
        raise SystemExit(f"uninterrupted worker failed; see {base / 'uninterrupted.log'}")
    uninterrupted_s = time.perf_counter() - t0
    (ref,) = _trials(ref_root)
    n_folds = len(ref.user_attrs["fold_metrics"])
    kill_at = int(n_folds * args.fraction)

    root = base / "killed"
    t0 = time.perf_counter()
    victim = _worker(root, args, base / "victim.log")
    while True:
        running = [t for t in _trials(root) if t.state == TrialState.RUNNING]
        if running and len(running[0].user_attrs.get("fold_metrics") or []) >= kill_at:
            break
        if victim.poll() is not None:
            raise SystemExit(f"the victim exited before fold {kill_at}; see {base / 'victim.log'}")
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    before_kill_s = time.perf_counter() - t0
    time.sleep(4)  # older than the grace period: the next worker fails and retries the trial
    t1 = time.perf_counter()
    successor = _worker(root, args, base / "successor.log")
    if successor.wait() != 0:
        raise SystemExit(f"successor failed; see {base / 'successor.log'}")
    retry_s = time.perf_counter() - t1
    retry = next(t for t in _trials(root) if t.state == TrialState.COMPLETE)

    print(f"roots under {base}")
    print(
        f"full mode, {n_folds} folds, {args.budget_steps} env steps per fold, {args.n_envs} envs, one worker"
    )
    print(f"uninterrupted trial: {uninterrupted_s:7.1f} s (value {ref.value:+.4f})")
    print(f"killed after {kill_at}/{n_folds} folds at {before_kill_s:7.1f} s")
    print(
        f"retry resumed at fold {retry.user_attrs['resumed_from_fold']}: {retry_s:7.1f} s "
        f"(value {retry.value:+.4f}, {'equal' if retry.value == ref.value else 'DIFFERENT'})"
    )
    print(
        f"saved by resuming: {uninterrupted_s - retry_s:7.1f} s of the {uninterrupted_s:.1f} s a retry "
        f"from fold 0 would take ({(uninterrupted_s - retry_s) / uninterrupted_s:.0%}); "
        f"retry wall time ratio {uninterrupted_s / retry_s:.1f}x"
    )


if __name__ == "__main__":
    main()

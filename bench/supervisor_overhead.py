"""Supervisor overhead: RSS and CPU of the supervisor process alone (not its children) while
it manages real training workers (quick mode), sampled with psutil over a fixed window.

Targets (issue 4): RSS < 150 MB, CPU < 2 % of one core. Baselines measured in the same run:
a bare Python interpreter (the RSS floor of any Python process) and the workers it manages
(the supervisor's CPU as a fraction of the work it supervises).

    python bench/supervisor_overhead.py [--seconds 60] [--workers 2] [--budget-steps 30000]
        [--paper-trader auto|on|off] [--keep DIR]
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

import psutil

REPO = Path(__file__).resolve().parents[1]
TARGET_RSS_MB = 150.0
TARGET_CPU_PERCENT = 2.0
STUDY = "bench_supervisor_overhead"


def _paper_trader_works(env: dict[str, str]) -> bool:
    """Whether ``python -m paper_trader --help`` runs (the paper trader is installed)."""
    result = subprocess.run(
        [sys.executable, "-m", "paper_trader", "--help"], cwd=REPO, env=env, capture_output=True, check=False
    )
    return result.returncode == 0


def _config(path: Path, root: Path, workers: int, budget: int, paper_trader: bool) -> None:
    path.write_text(
        f'root = "{root}"\n\n[study]\nname = "{STUDY}"\nmode = "quick"\nbudget_steps = {budget}\n'
        f"n_trials = 100000\n\n[workers]\ncount = {workers}\n\n"
        f"[paper_trader]\nenabled = {'true' if paper_trader else 'false'}\nspeed = 1.0\n"
    )


def _status(root: Path, pid: int) -> dict[str, Any] | None:
    try:
        data = json.loads((root / "run" / "status.json").read_text())
    except (OSError, ValueError):
        return None
    sup = data.get("supervisor") or {}
    return sup if sup.get("pid") == pid else None


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def _bare_interpreter_rss_mb(env: dict[str, str]) -> float:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        time.sleep(1.0)
        return psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="sampling window")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-steps", type=int, default=30_000, help="env steps per fold")
    parser.add_argument("--paper-trader", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--keep", type=Path, default=None, help="root to keep (default: temp dir)")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPPUCCINO_")}
    env["OMP_NUM_THREADS"] = "1"
    trader = args.paper_trader == "on" or (args.paper_trader == "auto" and _paper_trader_works(env))
    base = args.keep or Path(tempfile.mkdtemp(prefix="cappuccino-bench-"))
    root = base / "root"
    cfg = base / "bench.toml"
    _config(cfg, root, args.workers, args.budget_steps, trader)
    bare_rss = _bare_interpreter_rss_mb(env)

    out = open(base / "supervisor.out", "wb")  # noqa: SIM115
    argv = [sys.executable, "-m", "daemon.cli", "supervise", "--config", str(cfg)]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    names = [f"worker-{i}" for i in range(args.workers)] + (["paper_trader"] if trader else [])
    try:
        deadline = time.monotonic() + 600
        children: dict[str, int] = {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                print(f"supervisor exited with {proc.returncode}; see {base / 'supervisor.out'}")
                return 1
            sup = _status(root, proc.pid) or {}
            running = {c["name"]: c["pid"] for c in sup.get("children", []) if c.get("state") == "running"}
            if all(n in running for n in names):
                children = running
                break
            time.sleep(0.5)
        else:
            print("children did not start within 600 s")
            return 1
        time.sleep(5.0)  # let the workers get past their imports into training
        me = psutil.Process(proc.pid)
        kids = {n: psutil.Process(p) for n, p in children.items()}
        cpu0, t0 = _cpu_s(me), time.monotonic()
        kid_cpu0 = {n: _cpu_s(p) for n, p in kids.items()}
        rss: list[float] = []
        while time.monotonic() - t0 < args.seconds:
            rss.append(me.memory_info().rss / 2**20)
            time.sleep(1.0)
        wall = time.monotonic() - t0
        cpu_pct = 100.0 * (_cpu_s(me) - cpu0) / wall
        kid_pct = {}
        for n, p in kids.items():
            try:
                kid_pct[n] = 100.0 * (_cpu_s(p) - kid_cpu0[n]) / wall
            except psutil.NoSuchProcess:  # a worker restarted in the window (trial quota)
                kid_pct[n] = float("nan")
        final = _status(root, proc.pid) or {}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(300)
        out.close()

    rss_max, rss_mean = max(rss), sum(rss) / len(rss)
    workers_pct = sum(v for n, v in kid_pct.items() if n.startswith("worker-") and v == v)
    load = os.getloadavg()
    print(
        f"supervisor overhead over {wall:.0f} s, {args.workers} workers "
        f"(quick, {args.budget_steps} steps/fold)"
    )
    print(
        f"  paper trader: {'on' if trader else 'off'}; load average {load[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"  RSS  max {rss_max:6.1f} MB  mean {rss_mean:6.1f} MB   target < {TARGET_RSS_MB:.0f} MB  "
        f"max/target {rss_max / TARGET_RSS_MB:.2f}  {'OK' if rss_max < TARGET_RSS_MB else 'MISSED'}"
    )
    print(
        f"  CPU  {cpu_pct:6.2f} % of one core           target < {TARGET_CPU_PERCENT:.0f} %    "
        f"cpu/target {cpu_pct / TARGET_CPU_PERCENT:.2f}  {'OK' if cpu_pct < TARGET_CPU_PERCENT else 'MISSED'}"
    )
    print(
        f"  baseline: bare Python interpreter RSS {bare_rss:.1f} MB -> supervisor/bare "
        f"{rss_max / bare_rss:.1f}x"
    )
    for n, v in kid_pct.items():
        print(f"  baseline: {n} CPU {v:.1f} % of one core")
    if workers_pct > 0:
        print(f"  supervisor CPU / workers' CPU = {cpu_pct / workers_pct:.4f}")
    jobs = final.get("jobs") or {}
    print("  jobs in the window: " + ", ".join(f"{k} {v.get('runs')} runs" for k, v in jobs.items()))
    print(f"  supervisor exit code after SIGTERM: {code}")
    return 0 if rss_max < TARGET_RSS_MB and cpu_pct < TARGET_CPU_PERCENT and code == 0 else 2


if __name__ == "__main__":
    sys.exit(main())

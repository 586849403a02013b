"""Hot-reload latency of the paper trader (issue 3, "Hot reload"; target p99 < 1 s).

A real trader (``python -m paper_trader``, simulated broker replaying the hold-out bars at
``--speed`` bars per second) trades a 10-member ensemble in a temporary root. The bench then
publishes ``--replacements`` new ensembles the way ensemble sync does (new member directory
written first, then ``os.replace`` of the manifest with ``generation`` + 1, then a touch of
``ensemble/.reload``) and measures, for each, the time from ``os.replace`` to the first bar
decided by the new generation. That time is read from the trader's heartbeat file, which the
trader writes after every bar with the generation that decided it and its wall-clock time
(``time``, the same clock as this process's ``time.time()``). The ledger's ``decisions``
table is checked afterwards: every generation decided bars, in order.

Baseline, measured in the same run: a restart (launch of a fresh trader process until its
first decision), which is what picking up a new ensemble costs without hot reload.

Members are realistic sizes (widths 64-512, depth 2, lookbacks 5-30, random weights), so
the latency includes hashing and loading the new manifest's ten bundles.

Replacements are ``--gap`` seconds apart (after the previous generation decided; sync itself
runs every 10 minutes), plus a random part of two bars so they land at every bar phase.
With ``--gap 0`` they come back to back and the watcher's debounce window (which follows each
load, DESIGN: a burst becomes at most two loads) adds up to its ``debounce_s`` to each.

Usage: ``python bench/reload_latency.py [--replacements 50] [--speed 50] [--gap 0.5]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ensemble.manifest import MANIFEST_FILE, Manifest, Member, member_dir_name, touch_reload
from trainers.accounting import Costs
from trainers.actor import Actor
from trainers.bundle import ObservationSpec, save_bundle
from trainers.data import load_panel
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats

STUDY = "bench_reload"
TARGET_P99_S = 1.0
N_MEMBERS = 10
WIDTHS = (64, 128, 256, 512)
LOOKBACKS = (5, 10, 20, 30)
DETECT_TIMEOUT_S = 30.0


def make_member(ensemble_dir: Path, trial_id: int, symbols: tuple[str, ...]) -> Member:
    """Write one immutable member directory (random weights, valid model.json)."""
    torch.manual_seed(trial_id)
    lookback = LOOKBACKS[trial_id % len(LOOKBACKS)]
    width = WIDTHS[(trial_id // len(LOOKBACKS)) % len(WIDTHS)]
    n, f = len(symbols), len(FEATURE_NAMES)
    norm = NormStats(np.zeros((n, f)), np.ones((n, f)))
    spec = ObservationSpec(symbols, FEATURE_NAMES, lookback, FEATURE_PIPELINE_VERSION, norm)
    actor = Actor(spec.obs_dim, n, width, 2, "tanh")
    meta = {
        "algorithm": "PPO",
        "architecture": {
            "type": "mlp",
            "obs_dim": spec.obs_dim,
            "n_assets": n,
            "width": width,
            "depth": 2,
            "activation": "tanh",
        },
        "observation_spec": spec.to_json(),
        "action_spec": {"shape": [n], "low": -1.0, "high": 1.0},
        "costs": Costs().as_dict(),
        "hyperparameters": {"lookback": lookback, "net_width": width, "net_depth": 2},
        "study": STUDY,
        "trial_number": trial_id,
        "trial_id": trial_id,
        "value": 0.01 * trial_id,
        "vin": f"BENCH-{trial_id}",
        "grade": "A",
        "metrics": {},
        "data_fingerprint": "bench",
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    tmp = ensemble_dir / f".building_{trial_id}"
    sha = save_bundle(tmp, actor.state_dict(), meta)
    name = member_dir_name(trial_id, sha)
    os.replace(tmp, ensemble_dir / name)
    return Member(
        slot=0,
        study=STUDY,
        trial_number=trial_id,
        trial_id=trial_id,
        value=0.01 * trial_id,
        vin=f"BENCH-{trial_id}",
        grade="A",
        bundle_path=name,
        sha256=sha,
    )


def manifest_bytes(generation: int, members: list[Member]) -> bytes:
    slots = [m.model_copy(update={"slot": i}) for i, m in enumerate(members)]
    data = Manifest(study=STUDY, generation=generation, members=slots).model_dump(mode="json")
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def replace_manifest(ensemble_dir: Path, data: bytes) -> float:
    """Sync's publish step: temp file + fsync, ``os.replace`` (timed), fsync the folder, touch
    ``.reload``. Returns the wall-clock time of the ``os.replace``."""
    tmp = ensemble_dir / f".{MANIFEST_FILE}.bench.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    t0 = time.time()
    os.replace(tmp, ensemble_dir / MANIFEST_FILE)
    dfd = os.open(ensemble_dir, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    touch_reload(ensemble_dir)
    return t0


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_for_generation(hb_path: Path, generation: int, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll the heartbeat (every 2 ms) until a bar decided by ``generation`` is reported."""
    deadline = time.monotonic() + DETECT_TIMEOUT_S
    while time.monotonic() < deadline:
        hb = read_heartbeat(hb_path)
        gen = None if hb is None else hb.get("generation")
        if gen is not None and gen >= generation and hb["bars_processed"]:
            return hb
        if proc.poll() is not None:
            raise RuntimeError(f"the trader exited (code {proc.returncode}); see its log")
        time.sleep(0.002)
    raise RuntimeError(f"generation {generation} did not decide a bar within {DETECT_TIMEOUT_S} s")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replacements", type=int, default=50)
    ap.add_argument("--speed", type=float, default=50.0, help="replay speed, bars per second")
    ap.add_argument(
        "--gap",
        type=float,
        default=0.5,
        help="seconds between a generation deciding and the next replacement (sync runs every "
        "10 min; 0 = back to back, which the watcher's debounce then partly coalesces)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary root")
    args = ap.parse_args()

    symbols = load_panel().symbols
    root = Path(tempfile.mkdtemp(prefix="cappuccino_reload_bench_"))
    ensemble_dir = root / "ensemble"
    ensemble_dir.mkdir()
    (root / ".current_study").write_text(STUDY + "\n")
    trial_ids = itertools.count()
    members = [make_member(ensemble_dir, next(trial_ids), symbols) for _ in range(N_MEMBERS)]
    replace_manifest(ensemble_dir, manifest_bytes(1, members))
    # One new member per generation (the top 10 usually changes by one), written up front
    # as sync writes member directories before it replaces the manifest.
    newcomers = [make_member(ensemble_dir, next(trial_ids), symbols) for _ in range(args.replacements)]

    hb_path = root / "run" / "heartbeats" / "paper_trader.json"
    log_path = root / "trader_stdout.log"
    cmd = [sys.executable, "-m", "paper_trader", "--root", str(root), "--speed", str(args.speed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print(
        f"trader: python -m paper_trader --root <tmp> --speed {args.speed:g} (bars/s); "
        f"{args.replacements} replacements, {args.gap:g} s (+ up to 2 bars) after each decides"
    )
    with open(log_path, "wb") as log:
        launched = time.time()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    latencies: list[float] = []
    replaced_at: dict[int, float] = {}
    decided_at: dict[int, float] = {}
    try:
        first = wait_for_generation(hb_path, 1, proc)
        restart_s = first["time"] - launched
        rng = random.Random(0)
        for i, newcomer in enumerate(newcomers):
            generation = i + 2
            members[i % N_MEMBERS] = newcomer
            t0 = replace_manifest(ensemble_dir, manifest_bytes(generation, members))
            hb = wait_for_generation(hb_path, generation, proc)
            if hb["generation"] != generation:
                raise RuntimeError(f"heartbeat jumped to generation {hb['generation']} past {generation}")
            latencies.append(hb["time"] - t0)
            replaced_at[generation], decided_at[generation] = t0, hb["time"]
            time.sleep(args.gap + rng.uniform(0.0, 2.0 / max(args.speed, 1.0)))  # vary the bar phase
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    with sqlite3.connect(root / "paper_trader" / "ledger.db") as db:
        gens = [g for (g,) in db.execute("SELECT generation FROM decisions ORDER BY bar_ts")]
    decided = sorted(set(gens))
    ordered = all(a <= b for a, b in itertools.pairwise(gens))
    phases = log_phases(log_text(root, log_path), replaced_at, decided_at)
    p50, p99, worst = pct(latencies, 50), pct(latencies, 99), max(latencies)
    print(f"machine: {os.cpu_count()} cores, shared with other work (figures are indicative)")
    print(f"ensemble: {N_MEMBERS} members (widths {WIDTHS}, depth 2, lookbacks {LOOKBACKS})")
    print(
        f"replacements: {len(latencies)}; bars decided: {len(gens)}; generations deciding: "
        f"{decided[0]}..{decided[-1]} ({len(decided)} distinct), in order: {ordered}"
    )
    print(
        f"os.replace -> new generation decides: p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, "
        f"max {worst * 1e3:.0f} ms (bar interval {1e3 / args.speed:.0f} ms)"
    )
    if phases:
        print(
            f"phases (median over {len(phases['load'])} generations, from the trader's log): "
            + ", ".join(f"{k} {np.median(v) * 1e3:.0f} ms" for k, v in phases.items())
        )
    print(
        f"baseline (restart: launch -> first decision): {restart_s * 1e3:.0f} ms; "
        f"restart / hot-reload p50 = {restart_s / p50:.1f}x"
    )
    print(
        f"target p99 < {TARGET_P99_S:.0f} s: {'met' if p99 < TARGET_P99_S else 'NOT met'} "
        f"(p99 / target = {p99 / TARGET_P99_S:.2f})"
    )
    if args.keep:
        print(f"root kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    ok = len(decided) == len(latencies) + 1 and ordered
    return 0 if ok and p99 < TARGET_P99_S else 1


def log_text(root: Path, stdout_log: Path) -> str:
    """The trader's log file (``<root>/logs/paper_trader.log``), else its captured stdout."""
    for path in (root / "logs" / "paper_trader.log", stdout_log):
        if path.exists() and path.stat().st_size:
            return path.read_text(errors="replace")
    return ""


def log_phases(
    text: str, replaced_at: dict[int, float], decided_at: dict[int, float]
) -> dict[str, list[float]]:
    """Split each latency with the trader's JSON log lines: ``event`` (os.replace -> the
    watcher starts loading = reload time minus its ``load_s``), ``load`` (``load_s``), ``swap``
    (loaded -> the loop swaps it in between bars) and ``decide`` (swap -> the bar's heartbeat).
    Empty if the log is not JSON lines."""
    loaded: dict[int, tuple[float, float]] = {}
    swapped: dict[int, float] = {}
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            when = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if rec.get("event") == "ensemble_reloaded":
            loaded[rec["generation"]] = (when, float(rec["load_s"]))
        elif rec.get("event") == "model_swapped":
            swapped[rec["generation"]] = when
    phases: dict[str, list[float]] = {"event": [], "load": [], "swap": [], "decide": []}
    for g, t0 in replaced_at.items():
        if g not in loaded or g not in swapped:
            continue
        done, load_s = loaded[g]
        phases["event"].append(done - load_s - t0)
        phases["load"].append(load_s)
        phases["swap"].append(swapped[g] - done)
        phases["decide"].append(decided_at[g] - swapped[g])
    return phases if phases["load"] else {}


if __name__ == "__main__":
    sys.exit(main())

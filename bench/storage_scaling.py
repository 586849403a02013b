"""Storage scaling: Optuna ask/tell throughput with 1, 4 and 16 concurrent worker processes on
SQLite and on PostgreSQL, and the sync's top-10 selection on a 100,000-trial PostgreSQL study.

Ask/tell: each worker process opens the storage the way training workers do
(:func:`trainers.storage.make_storage`: SQLite in WAL mode with a busy timeout, PostgreSQL
with pre-ping; no heartbeat thread) and, after a common start barrier, repeats for
``--seconds``: ``ask`` (TPE sampler, 4 float parameters), ``tell`` a random value. Reported
per backend and worker count: finished trials per second (all workers together) and the
median and 99th percentile of the wall time of one ``tell`` (ms). A trial of the real
objective takes minutes, so the storage is never the bottleneck while ``trials/s`` here is
far above ``workers / trial duration``; the p99 of a ``tell`` shows the queueing.

Top-10: the study of ``bench/topn_sync.py`` (same generator: real search-space parameters,
user attributes, intermediate values, 85/10/5 % COMPLETE/PRUNED/FAIL, real bundles for the
best trials) inserted into a fresh PostgreSQL database, then
:func:`ensemble.selection.select_top_n` (new engine each run, as the sync job) timed, median of
``--runs``. The database (``cappuccino_bench_<random>``) is dropped at the end.

Needs the PostgreSQL server of ``--pg`` (default: 127.0.0.1:5432, user postgres, trust auth).

Usage: ``python bench/storage_scaling.py [--seconds 8] [--workers 1,4,16] [--topn-trials 100000]
[--runs 5] [--pg "host=127.0.0.1 port=5432 user=postgres"]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import psycopg

STUDY = "bench_scaling"


@contextmanager
def pg_database(conninfo: str, keep: bool = False):  # type: ignore[no-untyped-def]
    """A new database on the server; yields its ``postgresql://`` URL, dropped afterwards."""
    name = f"cappuccino_bench_{uuid.uuid4().hex[:10]}"
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    with psycopg.connect(conninfo + " dbname=postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            host, port, user = params.get("host", "127.0.0.1"), params.get("port", 5432), params.get("user")
            yield f"postgresql://{user}@{host}:{port}/{name}"
        finally:
            if not keep:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _worker(url: str, seconds: float, seed: int, barrier: Any, out: Any) -> None:
    from trainers.storage import make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(url, heartbeat_interval=None)
    study = optuna.load_study(
        study_name=STUDY, storage=storage, sampler=optuna.samplers.TPESampler(seed=seed)
    )
    rng = np.random.default_rng(seed)
    tells: list[float] = []
    barrier.wait()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        trial = study.ask()
        for k in range(4):
            trial.suggest_float(f"x{k}", 0.0, 1.0)
        t0 = time.perf_counter()
        study.tell(trial, float(rng.normal()))
        tells.append(time.perf_counter() - t0)
    out.put(tells)


def ask_tell(url: str, workers: int, seconds: float) -> dict[str, float]:
    """Run ``workers`` processes for ``seconds``; trials/s and tell latency percentiles (ms)."""
    from trainers.storage import make_storage

    optuna.create_study(
        storage=make_storage(url, heartbeat_interval=None),
        study_name=STUDY,
        direction="maximize",
        load_if_exists=True,
    )
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, seconds, i, barrier, out)) for i in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    t0 = time.perf_counter()
    tells: list[float] = []
    for _ in procs:
        tells += out.get()
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    ms = np.array(tells) * 1000.0
    return {
        "trials": len(tells),
        "trials_per_s": len(tells) / elapsed,
        "tell_p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
        "tell_p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"),
    }


def topn_on_postgres(url: str, n: int, runs: int) -> dict[str, float]:
    """Build the topn_sync study in ``url`` and time the sync's selection (median, ms)."""
    import sqlalchemy as sa
    import torch
    from topn_sync import STUDY as TOPN_STUDY
    from topn_sync import SYMBOLS, TOP, insert_study

    from ensemble.selection import select_top_n
    from trainers.bundle import PipelineSpec

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cappuccino-bench-") as tmp:
        root = Path(tmp)
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        t0 = time.perf_counter()
        top = insert_study(engine, root, TOPN_STUDY, n, seed=0, bundles=15)
        built = time.perf_counter() - t0
        with engine.begin() as conn:
            conn.execute(sa.text("ANALYZE"))
        engine.dispose()
        pipeline = PipelineSpec(SYMBOLS)
        times = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory(dir=root) as staging:
                t0 = time.perf_counter()
                sel = select_top_n(url, TOPN_STUDY, root, pipeline, staging, TOP)
                times.append(time.perf_counter() - t0)
            assert [s.trial.trial_id for s in sel.selected] == top, (
                "selection differs from the expected top 10"
            )
        return {"trials": n, "build_s": built, "select_median_ms": statistics.median(times) * 1000.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="ask/tell run per worker count")
    parser.add_argument("--workers", default="1,4,16", help="comma-separated worker counts")
    parser.add_argument("--topn-trials", type=int, default=100_000, help="0: skip the top-10 part")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres", help="libpq conninfo")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = [int(c) for c in args.workers.split(",")]
    head = ("backend", "workers", "trials", "trials/s", "tell p50 ms", "tell p99 ms")
    print(f"{head[0]:<10} {head[1]:>7} {head[2]:>7} {head[3]:>9} {head[4]:>11} {head[5]:>11}")
    for backend in ("sqlite", "postgresql"):
        for n in counts:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory(prefix="cappuccino-bench-") as tmp:
                    r = ask_tell(f"sqlite:///{tmp}/optuna.db", n, args.seconds)
            else:
                with pg_database(args.pg) as url:
                    r = ask_tell(url, n, args.seconds)
            print(
                f"{backend:<10} {n:>7} {r['trials']:>7} {r['trials_per_s']:>9.1f} "
                f"{r['tell_p50_ms']:>11.1f} {r['tell_p99_ms']:>11.1f}",
                flush=True,
            )
    if args.topn_trials:
        with pg_database(args.pg) as url:
            r = topn_on_postgres(url, args.topn_trials, args.runs)
        print(
            f"top-10 selection on PostgreSQL, {r['trials']:,} trials: median {r['select_median_ms']:.0f} ms "
            f"over {args.runs} runs (study built in {r['build_s']:.0f} s)"
        )


if __name__ == "__main__":
    main()

"""Top-N selection on a 100,000-trial SQLite study: SQL ranking vs ``get_trials()`` + sort.

Builds (once; cached under ``bench/results/``, git-ignored) an Optuna SQLite storage with a
study of ``--trials`` trials shaped like the real objective's: the PPO search space's
parameters (with their Optuna distributions), the objective's user attributes (VIN,
grade, per-fold metrics, bundle hash and path, ...), one intermediate value per fold,
85 % COMPLETE, 10 % PRUNED (with a value), 5 % FAIL, values with ties; plus a second,
smaller study in the same storage. Rows are inserted directly into Optuna's schema (the
study itself is created by Optuna) in batches; real bundles are written for the best
trials so the full selection (hash and spec checks) runs.

Timed, in one run:

* ``rank``: :func:`trainers.study_db.rank_trials`, top 10 (one engine, median of runs);
* ``select``: :func:`ensemble.selection.select_top_n`, top 10, as the sync job calls it
  (new engine, ranking, 10 bundles unpacked-or-read and verified; median of runs);
* ``sync``: :func:`ensemble.sync.sync_ensemble` without a membership change (median);
* baseline: ``optuna.load_study(...).get_trials(states=(COMPLETE,))`` and a sort by
  (value desc, number asc), top 10 (``--baseline-runs``, default 1: it takes about a minute).

Both ways must return the same ten trials. Targets (issue 3): baseline / select >= 20 and
select < 200 ms.

Usage: ``python bench/topn_sync.py [--trials 100000] [--runs 7] [--baseline-runs 1] [--rebuild]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy as sa
import torch
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState

from ensemble.selection import select_top_n
from ensemble.sync import sync_ensemble
from trainers.actor import Actor
from trainers.bundle import ObservationSpec, PipelineSpec, save_bundle
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats
from trainers.search_space import suggest_params
from trainers.storage import default_storage_url
from trainers.study_db import open_engine, rank_trials

STUDY = "bench_topn"
OTHER = "bench_other"
SYMBOLS = ("ETHUSD", "LTCUSD", "XRPUSD")
TOP = 10
N_BUNDLES = 15  # the best trials get real bundles (selection fetches a few spare)
FOLDS = 3
BATCH = 5000
RESULTS = Path(__file__).resolve().parent / "results"


def search_space() -> dict[str, optuna.distributions.BaseDistribution]:
    """The objective's parameter distributions (asked from a throwaway in-memory study)."""
    trial = optuna.create_study().ask()
    suggest_params(trial)
    return dict(trial.distributions)


def sample_internal(
    dist: optuna.distributions.BaseDistribution, rng: np.random.Generator, n: int
) -> np.ndarray:
    """``n`` internal representations (floats as Optuna stores them) of ``dist``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.integers(0, len(dist.choices), n).astype(np.float64)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.integers(dist.low, dist.high + 1, n).astype(np.float64)
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    if dist.log:
        return np.exp(rng.uniform(np.log(dist.low), np.log(dist.high), n))
    if dist.step is not None:
        steps = round((dist.high - dist.low) / dist.step)
        return dist.low + dist.step * rng.integers(0, steps + 1, n)
    return rng.uniform(dist.low, dist.high, n)


def write_bundle(root: Path, study: str, number: int, trial_id: int, value: float) -> tuple[str, str]:
    """A real (untrained) bundle for one trial; returns (sha256, bundle_path)."""
    lookback, width = 10, 64
    norm = NormStats(
        np.zeros((len(SYMBOLS), len(FEATURE_NAMES))), np.ones((len(SYMBOLS), len(FEATURE_NAMES)))
    )
    spec = ObservationSpec(SYMBOLS, FEATURE_NAMES, lookback, FEATURE_PIPELINE_VERSION, norm)
    torch.manual_seed(trial_id)
    actor = Actor(spec.obs_dim, len(SYMBOLS), width, 2, "tanh")
    meta = {
        "algorithm": "PPO",
        "architecture": {
            "type": "mlp",
            "obs_dim": spec.obs_dim,
            "n_assets": len(SYMBOLS),
            "width": width,
            "depth": 2,
            "activation": "tanh",
        },
        "observation_spec": spec.to_json(),
        "study": study,
        "trial_number": number,
        "trial_id": trial_id,
        "value": value,
        "vin": f"BENCH-{number}",
        "grade": "A",
    }
    rel = f"trials/{study}/{number}/bundle"
    return save_bundle(root / rel, actor.state_dict(), meta), rel


def insert_study(engine: sa.Engine, root: Path, name: str, n: int, seed: int, bundles: int) -> list[int]:
    """Insert ``n`` trials of study ``name`` (created by Optuna); returns the expected top-10
    trial ids (value desc, number asc)."""
    optuna.create_study(storage=str(engine.url), study_name=name, direction="maximize")
    md = sa.MetaData()
    md.reflect(engine)
    t_trials, t_values = md.tables["trials"], md.tables["trial_values"]
    t_params, t_attrs = md.tables["trial_params"], md.tables["trial_user_attributes"]
    t_inter = md.tables["trial_intermediate_values"]
    with engine.connect() as conn:
        study_id = conn.execute(
            sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": name}
        ).scalar()
        first_id = (conn.execute(sa.text("SELECT MAX(trial_id) FROM trials")).scalar() or 0) + 1
    rng = np.random.default_rng(seed)
    space = search_space()
    dist_json = {k: distribution_to_json(d) for k, d in space.items()}
    internal = {k: sample_internal(d, rng, n) for k, d in space.items()}
    values = np.round(rng.normal(0.0, 1.0, n), 3)  # 3 decimals: many ties
    states = rng.choice(["COMPLETE", "PRUNED", "FAIL"], size=n, p=[0.85, 0.10, 0.05])
    ids = first_id + np.arange(n)
    complete = np.flatnonzero(states == "COMPLETE")
    ranked = complete[np.lexsort((complete, -values[complete]))]
    with_bundle = {
        int(i): write_bundle(root, name, int(i), int(ids[i]), float(values[i])) for i in ranked[:bundles]
    }
    start = datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    for lo in range(0, n, BATCH):
        rows_t, rows_v, rows_p, rows_a, rows_i = [], [], [], [], []
        for i in range(lo, min(lo + BATCH, n)):
            tid, state = int(ids[i]), str(states[i])
            began = start + timedelta(minutes=7 * i)
            rows_t.append(
                {
                    "trial_id": tid,
                    "number": i,
                    "study_id": study_id,
                    "state": state,
                    "datetime_start": began,
                    "datetime_complete": began + timedelta(minutes=6),
                }
            )
            if state != "FAIL":
                rows_v.append(
                    {"trial_id": tid, "objective": 0, "value": float(values[i]), "value_type": "FINITE"}
                )
            rows_p += [
                {
                    "trial_id": tid,
                    "param_name": k,
                    "param_value": float(internal[k][i]),
                    "distribution_json": dist_json[k],
                }
                for k in space
            ]
            folds = [
                {
                    "excess_sharpe": float(values[i]) + 0.01 * f,
                    "sharpe": 0.5,
                    "total_return": 0.1,
                    "max_drawdown": 0.2,
                    "turnover": 3.0,
                    "benchmark_sharpe": 0.4,
                }
                for f in range(FOLDS)
            ]
            rows_i += [
                {
                    "trial_id": tid,
                    "step": f,
                    "intermediate_value": folds[f]["excess_sharpe"],
                    "intermediate_value_type": "FINITE",
                }
                for f in range(FOLDS if state != "FAIL" else 1)
            ]
            sha, rel = with_bundle.get(i, (f"{tid:064x}", f"trials/{name}/{i}/bundle"))
            attrs = {
                "mode": "quick",
                "budget_steps": 20000,
                "data_fingerprint": "f" * 16,
                "feature_pipeline_version": FEATURE_PIPELINE_VERSION,
                "fold_metrics": folds,
            }
            if state == "COMPLETE":
                attrs |= {
                    "vin": f"BENCH-{i}",
                    "grade": "B",
                    "artifact_id": None,
                    "actor_sha256": sha,
                    "bundle_path": rel,
                }
            elif state == "FAIL":
                attrs["fail_reason"] = "TrialFailed: synthetic"
            rows_a += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()]
        with engine.begin() as conn:
            conn.execute(t_trials.insert(), rows_t)
            conn.execute(t_values.insert(), rows_v)
            conn.execute(t_params.insert(), rows_p)
            conn.execute(t_attrs.insert(), rows_a)
            conn.execute(t_inter.insert(), rows_i)
    return [int(ids[i]) for i in ranked[:TOP]]


def build(root: Path, n: int) -> list[int]:
    """Build (or reuse) the cached storage; returns the expected top-10 trial ids."""
    done = root / "built.json"
    if done.exists():
        return json.loads(done.read_text())["top"]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    engine = sa.create_engine(default_storage_url(root))
    t0 = time.perf_counter()
    top = insert_study(engine, root, STUDY, n, seed=0, bundles=N_BUNDLES)
    insert_study(engine, root, OTHER, max(n // 50, 10), seed=1, bundles=0)
    engine.dispose()
    best = optuna.load_study(study_name=STUDY, storage=default_storage_url(root)).best_trial
    assert best._trial_id == top[0], "optuna disagrees on the best trial of the built study"
    print(f"built {n:,} trials in {time.perf_counter() - t0:.1f} s -> {root}")
    done.write_text(json.dumps({"trials": n, "top": top}))
    return top


def timed(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    """Median wall time (s) of ``runs`` calls and the last result."""
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline-runs", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    root = RESULTS / f"topn_{args.trials}"
    if args.rebuild:
        shutil.rmtree(root, ignore_errors=True)
    expected = build(root, args.trials)
    url = default_storage_url(root)
    pipeline = PipelineSpec(SYMBOLS)

    engine = open_engine(url)
    rank_trials(engine, STUDY, TOP)  # warm the page cache the same way for both approaches
    t_rank, ranked = timed(lambda: rank_trials(engine, STUDY, TOP), args.runs)
    engine.dispose()
    with tempfile.TemporaryDirectory() as staging:
        t_select, selection = timed(lambda: select_top_n(url, STUDY, root, pipeline, staging, TOP), args.runs)
    ens_root = Path(tempfile.mkdtemp(prefix="topn_sync_"))
    try:
        (ens_root / "trials").symlink_to(root / "trials")  # the bundles; storage stays at url
        sync_ensemble(ens_root, url, STUDY, pipeline, TOP)  # first sync writes the members
        t_sync, result = timed(lambda: sync_ensemble(ens_root, url, STUDY, pipeline, TOP), args.runs)
    finally:
        shutil.rmtree(ens_root)

    def baseline() -> list[int]:
        study = optuna.load_study(study_name=STUDY, storage=url)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t._trial_id for t in sorted(trials, key=lambda t: (-t.value, t.number))[:TOP]]

    t_base, base_top = timed(baseline, args.baseline_runs)
    assert [r.trial_id for r in ranked] == expected == base_top, "the approaches disagree on the top 10"
    assert [s.trial.trial_id for s in selection.selected] == expected  # type: ignore[union-attr]
    assert not result.changed  # type: ignore[union-attr]

    print(f"study: {args.trials:,} trials ({STUDY}) + {max(args.trials // 50, 10):,} ({OTHER}), SQLite")
    print(f"baseline get_trials()+sort top-{TOP}: {t_base * 1e3:10.1f} ms  (median of {args.baseline_runs})")
    print(f"rank_trials top-{TOP} (SQL):          {t_rank * 1e3:10.1f} ms  (median of {args.runs})")
    print(f"select_top_n top-{TOP} (+10 bundles):  {t_select * 1e3:10.1f} ms  (median of {args.runs})")
    print(f"sync_ensemble, no change:           {t_sync * 1e3:10.1f} ms  (median of {args.runs})")
    print(f"ratio baseline / rank_trials:   {t_base / t_rank:8.1f}x")
    print(f"ratio baseline / select_top_n:  {t_base / t_select:8.1f}x  (target >= 20x, select < 200 ms)")


if __name__ == "__main__":
    main()

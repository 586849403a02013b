"""Top-N selection (ensemble.selection) on real SQLite / PostgreSQL storages and real bundles."""

from __future__ import annotations

import itertools
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from structlog.testing import capture_logs

from ensemble.selection import select_top_n
from tests.conftest import TrainedStudy
from trainers.bundle import (
    ACTOR_FILE,
    PipelineSpec,
    atomic_write_json,
    pack_bundle,
    read_meta,
    save_bundle,
    unpack_bundle,
)
from trainers.data import Panel
from trainers.storage import default_storage_url, prepare_sqlite
from trainers.study_db import StudyDBError, iter_ranked, open_engine, rank_trials
from trainers.study_db.ranking import _study_filter

# ---------------------------------------------------------------- helpers (also used by test_sync)


def copy_root(trained: TrainedStudy, dst: Path) -> tuple[Path, str]:
    """A private copy of the trained study's root and its storage URL."""
    root = dst / "root"
    shutil.copytree(trained.root, root)
    return root, default_storage_url(root)


def completed(url: str, study: str) -> list[FrozenTrial]:
    """COMPLETE trials, best first (value desc, number asc): the reference order."""
    trials = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (-t.value, t.number))


def rewrite_bundle(
    root: Path,
    trial: FrozenTrial,
    actor: Callable[[bytes], bytes] | None = None,
    meta: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Change a trial's bundle in both places it is kept (its artifact and its bundle_path)."""
    artifact = root / "artifacts" / trial.user_attrs["artifact_id"]
    bundle = root / trial.user_attrs["bundle_path"]
    for directory in (bundle, None):
        if directory is None:  # the artifact: unpack, change, repack
            directory = unpack_bundle(artifact, root / f"unpacked_{trial.number}")
        if actor is not None:
            (directory / ACTOR_FILE).write_bytes(actor((directory / ACTOR_FILE).read_bytes()))
        if meta is not None:
            atomic_write_json(directory / "model.json", meta(read_meta(directory)))
        if directory != bundle:
            artifact.write_bytes(pack_bundle(directory))
            shutil.rmtree(directory)


def remove_bundle(root: Path, trial: FrozenTrial, artifact: bool = True, bundle_path: bool = True) -> None:
    if artifact:
        (root / "artifacts" / trial.user_attrs["artifact_id"]).unlink()
    if bundle_path:
        shutil.rmtree(root / trial.user_attrs["bundle_path"])


def add_trial_from_bundle(
    study: optuna.Study, root: Path, value: float, source: Path, bundle_path: str | None = None
) -> FrozenTrial:
    """A COMPLETE trial of ``study`` whose bundle carries ``source``'s actor, written for this
    study and trial id (same actor bytes, so the same sha256). With ``bundle_path`` the
    trial's attribute points there instead (and no bundle is written)."""
    trial = study.ask()
    trial.suggest_categorical("activation", ["tanh", "relu", "elu"])
    src_meta = read_meta(source)
    if bundle_path is None:
        bundle_path = f"trials/{study.study_name}/{trial.number}/bundle"
        state = torch.load(source / ACTOR_FILE, map_location="cpu", weights_only=True)
        meta = {
            **src_meta,
            "study": study.study_name,
            "trial_number": trial.number,
            "trial_id": trial._trial_id,
            "value": value,
        }
        digest = save_bundle(root / bundle_path, state, meta)
    else:
        digest = src_meta["actor_sha256"]
    for key, val in (("vin", f"VIN-{trial.number}"), ("grade", "B"), ("actor_sha256", digest)):
        trial.set_user_attr(key, val)
    trial.set_user_attr("bundle_path", bundle_path)
    study.tell(trial, value)
    return study.trials[-1]


def populate(storage: str, name: str, n: int, seed: int, direction: str = "maximize") -> optuna.Study:
    """A synthetic study: ``n`` trials with many tied values, float/int/categorical params,
    user attrs, and some PRUNED (with a value), FAIL and RUNNING trials."""
    if storage.startswith("sqlite"):
        prepare_sqlite(storage)  # WAL, as the workers run it
    study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    dists = {
        "learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
        "activation": CategoricalDistribution(["tanh", "relu", "elu"]),
        "n_steps": CategoricalDistribution([128, 256, 512]),
        "net_depth": IntDistribution(1, 3),
    }
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        params = {
            "learning_rate": 10 ** rng.uniform(-5, -3),
            "activation": rng.choice(["tanh", "relu", "elu"]),
            "n_steps": rng.choice([128, 256, 512]),
            "net_depth": rng.randint(1, 3),
        }
        attrs = {"vin": f"{name}-{i}", "fold_metrics": [{"excess_sharpe": rng.random()}]}
        value = round(rng.uniform(-1.0, 1.0), 1)  # ~20 distinct values: many ties
        state, kind = TrialState.COMPLETE, i % 9
        if kind == 3:  # a PRUNED trial keeps a (high) value; it must never rank
            state, value = TrialState.PRUNED, 5.0
        elif kind == 5:
            state, value = TrialState.FAIL, None
        elif kind == 7 and i > n // 2:
            state, value = TrialState.RUNNING, None
        trials.append(
            create_trial(
                state=state,
                value=value,
                params=params,
                distributions=dists,
                user_attrs=attrs,
                intermediate_values={0: 5.0} if state == TrialState.PRUNED else {},
            )
        )
    study.add_trials(trials)
    return study


def assert_ranked_like_optuna(url: str, name: str, k: int) -> None:
    """rank_trials == optuna's get_trials + sort (order, ids, values, params, user attrs)."""
    study = optuna.load_study(study_name=name, storage=url)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    ref = sorted(
        study.get_trials(states=(TrialState.COMPLETE,)),
        key=lambda t: ((-t.value if maximize else t.value), t.number),
    )
    engine = open_engine(url)
    try:
        got = rank_trials(engine, name, k)
        want = ref[:k]
        assert [(r.number, r.trial_id, r.value) for r in got] == [
            (t.number, t._trial_id, t.value) for t in want
        ]
        assert [r.params for r in got] == [t.params for t in want]
        assert [r.user_attrs for r in got] == [t.user_attrs for t in want]
        assert all(r.study == name for r in got)
        # keyset pages of 4 walk the whole ranking, no trial twice, none missed
        assert [r.trial_id for r in iter_ranked(engine, name, 4)] == [t._trial_id for t in ref]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- ranking


def test_rank_order_tie_break_params_and_state_filter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    study = populate(url, "ties", 60, seed=1)
    values = [t.value for t in completed(url, "ties")]
    assert len(values) != len(set(values)), "the synthetic study must contain ties"
    assert_ranked_like_optuna(url, "ties", 10)
    assert_ranked_like_optuna(url, "ties", 1000)  # more than there are

    engine = open_engine(url)
    ranked = rank_trials(engine, "ties", 10)
    engine.dispose()
    # ties: equal values in trial-number order; a categorical param decodes to its choice
    for a, b in itertools.pairwise(ranked):
        assert a.value > b.value or (a.value == b.value and a.number < b.number)
    assert all(r.params["activation"] in ("tanh", "relu", "elu") for r in ranked)
    assert all(isinstance(r.params["net_depth"], int) for r in ranked)
    pruned = {t.number for t in study.get_trials(states=(TrialState.PRUNED,))}
    assert pruned and all(t.value == 5.0 for t in study.get_trials(states=(TrialState.PRUNED,)))
    assert not pruned & {r.number for r in ranked}


def test_minimising_study_ranks_ascending(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    populate(url, "min", 30, seed=2, direction="minimize")
    assert_ranked_like_optuna(url, "min", 7)


def test_rank_never_returns_another_studys_trials(tmp_path: Path) -> None:
    """Three studies in one storage with the same trial numbers: only the asked study ranks,
    whichever SQLite plan is used (index walk for a minority study, value scan for a
    majority study)."""
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    a = populate(url, "a", 20, seed=3)
    b = optuna.create_study(storage=url, study_name="b", direction="maximize")
    for t in a.trials:  # same numbers, better values
        b.add_trial(optuna.trial.create_trial(value=100.0 + t.number, params={}, distributions={}))
    populate(url, "big", 90, seed=8)
    engine = open_engine(url)
    try:
        got = rank_trials(engine, "a", 50)
        with engine.connect() as conn:
            plans = {
                name: "+"
                in str(_study_filter(conn, optuna.load_study(study_name=name, storage=url)._study_id))
                for name in ("a", "big")
            }
    finally:
        engine.dispose()
    assert plans == {"a": False, "big": True}
    a_ids = {t._trial_id for t in a.trials}
    assert got and all(r.trial_id in a_ids and r.value < 100 for r in got)
    for name in ("a", "b", "big"):
        assert_ranked_like_optuna(url, name, 5)


def test_unknown_study_is_one_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    populate(url, "present", 3, seed=4)
    engine = open_engine(url)
    with pytest.raises(StudyDBError, match=r"no study named 'absent' .*present"):
        rank_trials(engine, "absent", 10)
    engine.dispose()
    with pytest.raises(StudyDBError, match="storage URL"):
        open_engine("nosuchdb://x")


@pytest.mark.postgres
def test_rank_on_postgresql(pg_url: str) -> None:
    driver_url = pg_url.replace("postgresql://", "postgresql+psycopg://")  # what Optuna itself needs
    populate(driver_url, "pg_ties", 40, seed=5)
    populate(driver_url, "pg_other", 15, seed=6)
    populate(driver_url, "pg_min", 12, seed=7, direction="minimize")
    assert_ranked_like_optuna(pg_url, "pg_ties", 10)  # plain postgresql:// URL (psycopg 3)
    assert_ranked_like_optuna(driver_url, "pg_other", 10)
    assert_ranked_like_optuna(driver_url, "pg_min", 5)
    with pytest.raises(StudyDBError, match="no study named 'nope'"):
        rank_trials(open_engine(pg_url), "nope", 3)


# ---------------------------------------------------------------- selection with bundles


@pytest.fixture
def pipeline(panel: Panel) -> PipelineSpec:
    """What the paper trader feeds by default: the embedded dataset's symbols."""
    return PipelineSpec(panel.symbols)


def _select(root: Path, url: str, study: str, pipeline: PipelineSpec, tmp: Path, n: int = 10) -> Any:
    staging = tmp / f"staging_{uuid.uuid4().hex[:6]}"
    staging.mkdir()
    with capture_logs() as logs:
        selection = select_top_n(url, study, root, pipeline, staging, n)
    skips = [e for e in logs if e["event"] == "trial_skipped"]
    return selection, skips


def test_selects_trained_trials_best_first(
    trained_study: TrainedStudy, pipeline: PipelineSpec, tmp_path: Path
) -> None:
    ref = completed(trained_study.storage_url, trained_study.study_name)
    assert len(ref) == 3
    selection, skips = _select(
        trained_study.root, trained_study.storage_url, trained_study.study_name, pipeline, tmp_path
    )
    assert skips == [] and selection.skipped == []
    assert [s.trial.trial_id for s in selection.selected] == [t._trial_id for t in ref]
    for s, t in zip(selection.selected, ref, strict=True):
        assert s.source == "artifact"
        assert s.sha256 == t.user_attrs["actor_sha256"] and s.vin == t.user_attrs["vin"]
        assert s.trial.params == t.params
        assert s.meta["study"] == trained_study.study_name and s.meta["trial_id"] == t._trial_id
    top2, _ = _select(
        trained_study.root, trained_study.storage_url, trained_study.study_name, pipeline, tmp_path, n=2
    )
    assert [s.trial.number for s in top2.selected] == [t.number for t in ref[:2]]


def test_missing_bundle_is_skipped_and_logged(
    trained_study: TrainedStudy, pipeline: PipelineSpec, tmp_path: Path
) -> None:
    root, url = copy_root(trained_study, tmp_path)
    best, second, third = completed(url, trained_study.study_name)
    remove_bundle(root, best)  # artifact and bundle folder gone
    remove_bundle(root, second, bundle_path=False)  # artifact gone: falls back to bundle_path
    selection, skips = _select(root, url, trained_study.study_name, pipeline, tmp_path)
    assert [s.trial.number for s in selection.selected] == [second.number, third.number]
    assert [s.source for s in selection.selected] == ["bundle_path", "artifact"]
    assert [(s.trial.number, s.reason) for s in selection.skipped] == [(best.number, "missing")]
    assert len(skips) == 1
    assert skips[0]["trial"] == best.number and skips[0]["reason"] == "missing"
    assert "gone" in skips[0]["detail"] and "no bundle" in skips[0]["detail"]


def test_tampered_actor_is_skipped_and_logged(
    trained_study: TrainedStudy, pipeline: PipelineSpec, tmp_path: Path
) -> None:
    root, url = copy_root(trained_study, tmp_path)
    best, second, third = completed(url, trained_study.study_name)
    rewrite_bundle(root, best, actor=lambda data: data + b"\0")  # artifact and folder
    remove_bundle(root, third, bundle_path=False)
    (root / third.user_attrs["bundle_path"] / ACTOR_FILE).write_bytes(b"not the trained weights")
    selection, skips = _select(root, url, trained_study.study_name, pipeline, tmp_path)
    assert [s.trial.number for s in selection.selected] == [second.number]
    assert [(s.trial.number, s.reason) for s in selection.skipped] == [
        (best.number, "hash"),
        (third.number, "hash"),
    ]
    assert [(e["trial"], e["reason"]) for e in skips] == [(best.number, "hash"), (third.number, "hash")]
    assert "sha256" in skips[0]["detail"] and "artifact" in skips[0]["detail"]
    assert "bundle_path" in skips[1]["detail"]


def test_incompatible_spec_is_skipped_and_logged(
    trained_study: TrainedStudy, pipeline: PipelineSpec, tmp_path: Path
) -> None:
    root, url = copy_root(trained_study, tmp_path)
    best, second, third = completed(url, trained_study.study_name)

    def old_pipeline(meta: dict[str, Any]) -> dict[str, Any]:
        meta["observation_spec"]["feature_pipeline_version"] = "0-retired"
        return meta

    rewrite_bundle(root, second, meta=old_pipeline)  # actor.pth (and its hash) unchanged
    selection, skips = _select(root, url, trained_study.study_name, pipeline, tmp_path)
    assert [s.trial.number for s in selection.selected] == [best.number, third.number]
    assert [(e["trial"], e["reason"]) for e in skips] == [(second.number, "spec")]
    assert "v0-retired" in skips[0]["detail"] and "cannot be fed" in skips[0]["detail"]

    # a trader with other symbols can feed none of them: every trial skipped, nothing selected
    selection, skips = _select(root, url, trained_study.study_name, PipelineSpec(("BTCUSD",)), tmp_path)
    assert selection.selected == [] and [e["reason"] for e in skips] == ["spec"] * 3


def test_bundle_of_another_study_is_never_selected(
    trained_study: TrainedStudy, pipeline: PipelineSpec, tmp_path: Path
) -> None:
    """Study B's trial points at study A's bundle of the same trial number (same bytes, same
    sha256): model.json names study A, so B skips it rather than loading A's model."""
    root, url = copy_root(trained_study, tmp_path)
    a_trials = completed(url, trained_study.study_name)
    other = optuna.create_study(storage=url, study_name="other", direction="maximize")
    own = add_trial_from_bundle(other, root, 50.0, root / a_trials[0].user_attrs["bundle_path"])
    borrowed = add_trial_from_bundle(
        other, root, 60.0, root / a_trials[1].user_attrs["bundle_path"], a_trials[1].user_attrs["bundle_path"]
    )
    assert {own.number, borrowed.number} <= {t.number for t in a_trials}  # overlapping numbers
    selection, skips = _select(root, url, "other", pipeline, tmp_path)
    assert [s.trial.trial_id for s in selection.selected] == [own._trial_id]
    assert selection.selected[0].meta["study"] == "other"
    assert [(e["trial_id"], e["reason"]) for e in skips] == [(borrowed._trial_id, "identity")]
    assert repr(trained_study.study_name) in skips[0]["detail"]
    # and study A still selects only its own three trials
    selection, _ = _select(root, url, trained_study.study_name, pipeline, tmp_path)
    assert [s.trial.trial_id for s in selection.selected] == [t._trial_id for t in a_trials]

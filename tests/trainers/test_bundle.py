"""Model bundles (trainers.bundle): save/load, hash and spec checks, weights-only loading,
and the tar form used as the Optuna artifact."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainers.accounting import Costs
from trainers.actor import Actor
from trainers.bundle import (
    ACTOR_FILE,
    META_FILE,
    SCHEMA_VERSION,
    BundleError,
    ObservationSpec,
    PipelineSpec,
    atomic_write_bytes,
    atomic_write_json,
    bundle_costs,
    common_costs,
    load_bundle,
    pack_bundle,
    read_meta,
    save_bundle,
    sha256_file,
    to_numpy_policy,
    unpack_bundle,
)
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, N_FEATURES, NormStats

SYMBOLS = ("ETHUSD", "LTCUSD", "XRPUSD")
LOOKBACK = 5


def make_spec(lookback: int = LOOKBACK) -> ObservationSpec:
    rng = np.random.default_rng(0)
    norm = NormStats(rng.normal(size=(3, N_FEATURES)), rng.uniform(0.5, 2.0, (3, N_FEATURES)))
    return ObservationSpec(SYMBOLS, FEATURE_NAMES, lookback, FEATURE_PIPELINE_VERSION, norm)


def make_actor(spec: ObservationSpec, width: int = 16, depth: int = 2, activation: str = "tanh") -> Actor:
    torch.manual_seed(0)
    return Actor(spec.obs_dim, len(spec.symbols), width, depth, activation)


def make_meta(
    spec: ObservationSpec, width: int = 16, depth: int = 2, activation: str = "tanh"
) -> dict[str, Any]:
    return {
        "algorithm": "PPO",
        "architecture": {"type": "mlp", "width": width, "depth": depth, "activation": activation},
        "observation_spec": spec.to_json(),
        "study": "s1",
        "trial_number": 3,
        "vin": "PPO-A-N16B256-L3E4G99-LB5TD10-20260214",
        "data_fingerprint": "ab" * 32,
    }


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    spec = make_spec()
    directory = tmp_path / "bundle"
    save_bundle(directory, make_actor(spec).state_dict(), make_meta(spec))
    return directory


def test_save_load_round_trip(tmp_path: Path) -> None:
    spec = make_spec()
    actor = make_actor(spec, width=32, depth=3, activation="elu")
    meta = make_meta(spec, width=32, depth=3, activation="elu")
    digest = save_bundle(tmp_path / "b", actor.state_dict(), meta)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [ACTOR_FILE, META_FILE]  # no temp files
    assert digest == sha256_file(tmp_path / "b" / ACTOR_FILE)
    assert digest == hashlib.sha256((tmp_path / "b" / ACTOR_FILE).read_bytes()).hexdigest()

    bundle = load_bundle(tmp_path / "b", PipelineSpec(SYMBOLS), expect_sha256=digest)
    assert bundle.sha256 == digest
    # no predictor: written as version 3, which readers from before version 4 still read
    assert bundle.meta == {**meta, "schema_version": 3, "actor_sha256": digest}
    assert bundle.spec == spec
    np.testing.assert_array_equal(bundle.spec.norm.mean, spec.norm.mean)
    np.testing.assert_array_equal(bundle.spec.norm.std, spec.norm.std)
    assert bundle.spec.obs_dim == LOOKBACK * 3 * N_FEATURES + 3 + 1
    for key, value in actor.state_dict().items():
        assert torch.equal(bundle.state[key], value)
    obs = torch.randn(7, spec.obs_dim)
    assert torch.equal(bundle.actor.act(obs), actor.act(obs))
    assert not bundle.actor.training


def test_actor_loads_weights_only(bundle_dir: Path) -> None:
    state = torch.load(bundle_dir / ACTOR_FILE, weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(make_actor(make_spec()).state_dict())
    meta = json.loads((bundle_dir / META_FILE).read_text())
    assert meta["schema_version"] == 3 < SCHEMA_VERSION  # 4 only with a predictor
    assert meta["actor_sha256"] == sha256_file(bundle_dir / ACTOR_FILE)


def test_tampered_actor_fails_the_hash_check(bundle_dir: Path) -> None:
    data = bytearray((bundle_dir / ACTOR_FILE).read_bytes())
    data[-20] ^= 0x01
    (bundle_dir / ACTOR_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"actor\.pth: sha256 .* does not match model\.json") as info:
        load_bundle(bundle_dir)
    assert str(bundle_dir) in str(info.value)


def test_expected_hash_is_checked(bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="does not match expected"):
        load_bundle(bundle_dir, expect_sha256="0" * 64)
    digest = sha256_file(bundle_dir / ACTOR_FILE)
    assert load_bundle(bundle_dir, expect_sha256=digest).sha256 == digest


def test_pickled_objects_are_refused(bundle_dir: Path) -> None:
    """An actor.pth holding arbitrary Python objects (with a matching hash) never loads."""
    state = torch.load(bundle_dir / ACTOR_FILE, weights_only=True)
    state["policy_net.0.weight"] = Path("not-a-tensor")
    torch.save(state, bundle_dir / ACTOR_FILE)
    meta = json.loads((bundle_dir / META_FILE).read_text())
    meta["actor_sha256"] = sha256_file(bundle_dir / ACTOR_FILE)
    atomic_write_json(bundle_dir / META_FILE, meta)
    with pytest.raises(BundleError, match="weights do not load into the declared actor"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "pipeline",
    [
        PipelineSpec(("BTCUSD", "LTCUSD", "XRPUSD")),
        PipelineSpec(("LTCUSD", "ETHUSD", "XRPUSD")),  # same symbols, other order
        PipelineSpec(SYMBOLS[:2]),
        PipelineSpec(SYMBOLS, feature_pipeline_version="999"),
        PipelineSpec(SYMBOLS, feature_names=FEATURE_NAMES[:-1]),
        PipelineSpec(SYMBOLS, max_lookback=LOOKBACK - 1),
    ],
)
def test_spec_mismatch_names_both_specs(bundle_dir: Path, pipeline: PipelineSpec) -> None:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir, pipeline)
    msg = str(info.value)
    assert str(bundle_dir) in msg
    spec = make_spec()
    assert spec.describe() in msg
    assert pipeline.describe() in msg
    assert "symbols=['ETHUSD', 'LTCUSD', 'XRPUSD']" in msg and "lookback=5" in msg


@pytest.mark.parametrize("pipeline", [PipelineSpec(SYMBOLS, max_lookback=LOOKBACK), PipelineSpec(SYMBOLS)])
def test_matching_pipeline_passes(bundle_dir: Path, pipeline: PipelineSpec) -> None:
    """A pipeline that can feed the spec (the lookback at its limit, or below the default
    limit) gets the bundle as saved: its spec, its hash and an actor acting like the saved one."""
    spec = make_spec()
    bundle = load_bundle(bundle_dir, pipeline)
    assert bundle.spec == spec and bundle.spec.lookback <= pipeline.max_lookback
    assert bundle.spec.symbols == pipeline.symbols
    assert bundle.spec.feature_names == pipeline.feature_names[: len(spec.feature_names)] == FEATURE_NAMES
    assert bundle.sha256 == sha256_file(bundle_dir / ACTOR_FILE)
    obs = torch.randn(4, spec.obs_dim)
    assert torch.equal(bundle.actor.act(obs), make_actor(spec).act(obs))


def test_nan_weights_rejected(tmp_path: Path) -> None:
    spec = make_spec()
    state = make_actor(spec).state_dict()
    state["action_net.bias"][1] = float("nan")
    save_bundle(tmp_path / "nan", state, make_meta(spec))
    with pytest.raises(BundleError, match="NaN or inf"):
        load_bundle(tmp_path / "nan")
    state["action_net.bias"][1] = float("inf")
    save_bundle(tmp_path / "inf", state, make_meta(spec))
    with pytest.raises(BundleError, match="NaN or inf"):
        load_bundle(tmp_path / "inf")


def test_weights_not_fitting_the_architecture(tmp_path: Path) -> None:
    spec = make_spec()
    save_bundle(tmp_path / "b", make_actor(spec, width=16).state_dict(), make_meta(spec, width=32))
    with pytest.raises(BundleError, match="weights do not load into the declared actor"):
        load_bundle(tmp_path / "b")


def test_bad_meta(bundle_dir: Path, tmp_path: Path) -> None:
    meta_path = bundle_dir / META_FILE
    good = json.loads(meta_path.read_text())

    atomic_write_json(meta_path, {**good, "schema_version": 99})
    with pytest.raises(BundleError, match=r"schema_version must be one of \(1, 2, 3, 4\)"):
        load_bundle(bundle_dir)

    meta_path.write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_meta(bundle_dir)

    bad_arch = {**good, "architecture": {"width": 16, "depth": 2, "activation": "swish"}}
    atomic_write_json(meta_path, bad_arch)
    with pytest.raises(BundleError, match="bad observation spec or architecture"):
        load_bundle(bundle_dir)

    bad_predictor = json.loads(json.dumps(good))
    bad_predictor["observation_spec"]["predictor"] = {
        "kind": "gru",
        "horizon": 0,
        "sequence_bars": 24,
        "hidden": 16,
    }
    atomic_write_json(meta_path, bad_predictor)
    with pytest.raises(BundleError, match=r"bad observation spec or architecture.*horizon"):
        load_bundle(bundle_dir)
    bad_predictor["observation_spec"]["predictor"]["horizon"] = 4  # declared, but no tensors
    atomic_write_json(meta_path, bad_predictor)
    with pytest.raises(BundleError, match="weights do not load"):
        load_bundle(bundle_dir)

    bad_norm = json.loads(json.dumps(good))
    bad_norm["observation_spec"]["normalisation"]["std"][0][0] = 0.0
    atomic_write_json(meta_path, bad_norm)
    with pytest.raises(BundleError, match="non-positive std"):
        load_bundle(bundle_dir)

    meta_path.unlink()
    with pytest.raises(BundleError, match=r"model\.json: missing"):
        load_bundle(bundle_dir)

    atomic_write_json(meta_path, good)
    (bundle_dir / ACTOR_FILE).unlink()
    with pytest.raises(BundleError, match=r"actor\.pth: missing"):
        load_bundle(bundle_dir)


def test_pack_unpack_round_trip(bundle_dir: Path, tmp_path: Path) -> None:
    data = pack_bundle(bundle_dir)
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == [ACTOR_FILE, META_FILE]
    out = unpack_bundle(archive, tmp_path / "unpacked")
    assert out == tmp_path / "unpacked"
    for name in (ACTOR_FILE, META_FILE):
        assert (out / name).read_bytes() == (bundle_dir / name).read_bytes()
    original = load_bundle(bundle_dir)
    restored = load_bundle(out, PipelineSpec(SYMBOLS), expect_sha256=original.sha256)
    assert restored.meta == original.meta


def test_unpack_rejects_non_bundles(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(BundleError, match="not a bundle archive"):
        unpack_bundle(junk, tmp_path / "out")
    partial = tmp_path / "partial.tar"
    (tmp_path / ACTOR_FILE).write_bytes(b"x")
    with tarfile.open(partial, "w") as tar:
        tar.add(tmp_path / ACTOR_FILE, arcname=ACTOR_FILE)
    with pytest.raises(BundleError, match=r"partial\.tar: not a bundle archive"):
        unpack_bundle(partial, tmp_path / "out2")


def test_to_numpy_policy(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    policy = to_numpy_policy(bundle.actor)
    obs = np.random.default_rng(1).normal(0, 50, (4, bundle.spec.obs_dim)).astype(np.float32)
    actions = policy(obs)
    assert isinstance(actions, np.ndarray) and actions.shape == (4, 3)
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    np.testing.assert_array_equal(actions, bundle.actor.act(torch.from_numpy(obs)).numpy())


def test_atomic_writes_replace_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"b": 1, "a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp file left behind


def test_costs_are_read_from_the_bundle_and_must_agree_across_an_ensemble() -> None:
    costs = Costs(fee=0.001, slippage=0.0005, min_cash=0.1, max_weight=0.6, trailing_stop=0.05, min_trade=0.0)
    v2 = {"schema_version": 2, "costs": costs.as_dict()}
    assert bundle_costs(v2, "b") == costs
    # version 1 recorded three fields in its action spec; the rest is what v1 training used
    v1 = {"schema_version": 1, "action_spec": {"fee": 0.004, "min_cash": 0.2, "trailing_stop": 0.07}}
    assert bundle_costs(v1, "old") == Costs(fee=0.004, slippage=0.0, min_cash=0.2, trailing_stop=0.07)
    with pytest.raises(BundleError, match=r"b: model.json: costs: missing min_trade"):
        bundle_costs(
            {"schema_version": 2, "costs": {k: v for k, v in costs.as_dict().items() if k != "min_trade"}},
            "b",
        )
    with pytest.raises(BundleError, match=r"costs.fee: Input should be less than 1"):
        bundle_costs({"schema_version": 2, "costs": {**costs.as_dict(), "fee": 1.5}}, "b")
    assert common_costs([("a", v2), ("b", dict(v2))]) == costs
    other = {"schema_version": 2, "costs": {**costs.as_dict(), "trailing_stop": 0.2}}
    with pytest.raises(
        BundleError, match=r"a and c were trained with different costs \(trailing_stop 0.05 vs 0.2\)"
    ):
        common_costs([("a", v2), ("b", v2), ("c", other)])

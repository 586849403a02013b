"""EnsemblePolicy: the batched stacked-weights pass equals every member's own actor, the
combine rules, and the rejections of a bad manifest or member (each naming what is wrong)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble.manifest import MANIFEST_FILE, Manifest, Member, member_dir_name, write_manifest
from ensemble.policy import EnsembleError, EnsemblePolicy
from trainers.accounting import Costs, action_dim
from trainers.actor import Actor
from trainers.bundle import Bundle, ObservationSpec, PipelineSpec, load_bundle, save_bundle
from trainers.data import Panel
from trainers.features import FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats, compute_features
from trainers.observation import build_observations

STUDY = "policy_test_study"

# (width, depth, activation, lookback): every activation, depth and lookback choice, widths
# that share a batched group (tiny ones) and widths that get groups of their own (512)
MIXED = [
    (8, 1, "tanh", 5),
    (16, 3, "relu", 30),
    (32, 2, "elu", 10),
    (64, 2, "tanh", 20),
    (16, 1, "elu", 30),
    (512, 3, "tanh", 10),
    (512, 1, "relu", 5),
    (8, 2, "relu", 20),
    (32, 3, "tanh", 5),
    (64, 1, "elu", 10),
    (256, 2, "elu", 30),
]


@pytest.fixture(scope="module")
def raw_features(panel: Panel) -> np.ndarray:
    """``(600, n_assets, n_features)`` raw features of the embedded dataset's last bars."""
    return compute_features(panel.prices[-600:])


def make_bundle(
    directory: Path,
    symbols: tuple[str, ...],
    raw: np.ndarray,
    width: int,
    depth: int,
    activation: str,
    lookback: int,
    seed: int,
    value: float = 0.0,
    output_bias: np.ndarray | None = None,
    squash: str = "clip",
    scheme: str = "scores",
    interval: int = 1,
) -> str:
    """Save a bundle of an actor with random weights and normalisation fitted on a slice of
    ``raw``; returns its sha256. With
    ``output_bias`` every weight is 0 and the action is exactly that bias (clipped)."""
    gen = torch.Generator().manual_seed(seed)
    spec = ObservationSpec(
        symbols,
        FEATURE_NAMES,
        lookback,
        FEATURE_PIPELINE_VERSION,
        NormStats.fit(raw[seed % 50 : seed % 50 + 300]),
    )
    actor = Actor(spec.obs_dim, action_dim(scheme, len(symbols)), width, depth, activation, squash)
    # weights: SB3's hidden-layer gain sqrt(2) (orthogonal init there, Gaussian here); output
    # biases large enough that some actions reach the clip bounds
    state = {}
    for k, v in actor.state_dict().items():
        bias_scale = 1.0 if k.startswith("action_net") else 0.1
        scale = math.sqrt(2.0 / v.shape[1]) if v.ndim == 2 else bias_scale
        state[k] = torch.randn(v.shape, generator=gen) * scale
    if output_bias is not None:
        state = {k: torch.zeros_like(v) for k, v in state.items()}
        state["action_net.bias"] = torch.as_tensor(output_bias, dtype=torch.float32)
    meta = {
        "algorithm": "SAC" if squash == "tanh" else "PPO",
        "architecture": {
            "type": "mlp",
            "obs_dim": spec.obs_dim,
            "n_assets": len(symbols),
            "width": width,
            "depth": depth,
            "activation": activation,
            "squash": squash,
        },
        "action_spec": {
            "shape": [action_dim(scheme, len(symbols))],
            "scheme": scheme,
            "decision_interval": interval,
        },
        "training": {"bar_seconds": 3600},
        "observation_spec": spec.to_json(),
        "costs": Costs().as_dict(),
        "study": STUDY,
        "trial_number": seed,
        "trial_id": seed + 1,
        "value": value,
        "vin": f"VIN-{seed}",
        "grade": "A",
    }
    return save_bundle(directory, state, meta)


def own_actions(bundles: list[Bundle], raw: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The per-member loop: each member's ``Actor.act`` on its own observation."""
    out = []
    for b in bundles:
        lb = b.spec.lookback
        feats = b.spec.norm.apply(raw[-lb:])
        obs = build_observations(feats, np.array([lb - 1]), lb, weights.reshape(1, -1))
        out.append(b.actor.act(torch.from_numpy(obs)).numpy()[0])
    return np.array(out)


def load_all(tmp_path: Path, panel: Panel, raw: np.ndarray, archs: list[tuple]) -> list[Bundle]:
    bundles = []
    for i, (width, depth, act, lookback) in enumerate(archs):
        d = tmp_path / f"m{i}"
        make_bundle(d, panel.symbols, raw, width, depth, act, lookback, seed=i)
        bundles.append(load_bundle(d, PipelineSpec(panel.symbols)))
    return bundles


def decision_points(raw: np.ndarray, n_assets: int, n: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (raw window ending at a bar, current weights) pairs, weights incl. all-cash."""
    rng = np.random.default_rng(7)
    points = []
    for k in range(n):
        end = 100 + 37 * k
        w = np.zeros(n_assets) if k == 0 else rng.dirichlet(np.ones(n_assets + 1))[:n_assets]
        points.append((raw[end - 40 : end], w))
    return points


@pytest.mark.parametrize(
    "archs",
    [
        pytest.param(MIXED, id="mixed-widths-depths-activations-lookbacks"),
        pytest.param([a for a in MIXED if a[0] <= 64], id="small-mixed-members"),
        pytest.param([(512, 3, "tanh", 30)], id="single-member"),
    ],
)
def test_batched_pass_equals_each_members_own_actor(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray, archs: list[tuple]
) -> None:
    bundles = load_all(tmp_path, panel, raw_features, archs)
    policy = EnsemblePolicy.from_bundles(bundles)
    assert policy.max_lookback == max(a[3] for a in archs)
    assert sorted(i for g in policy.batch_groups for i in g) == list(range(len(archs)))
    clipped = 0
    for raw, w in decision_points(raw_features, policy.n_assets):
        expected = own_actions(bundles, raw, w)
        got = policy.member_actions(raw, w)
        assert got.shape == (len(archs), policy.n_assets)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(policy.act(raw, w), expected.mean(axis=0), rtol=0, atol=1e-5)
        clipped += int((np.abs(expected) == 1.0).sum())
    assert clipped > 0  # the clip at the action bounds was exercised


def test_mixed_members_are_batched_in_few_groups_with_mixing_inside(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    policy = EnsemblePolicy.from_bundles(load_all(tmp_path, panel, raw_features, MIXED))
    groups = policy.batch_groups
    assert 1 < len(groups) < len(MIXED)
    # some group holds members of different widths, depths, activations and lookbacks at once
    assert any(all(len({MIXED[i][k] for i in g}) > 1 for k in range(4)) for g in groups)


def constant_policy(
    tmp_path: Path, panel: Panel, raw: np.ndarray, biases: list[list[float]], combine: str, values=None
) -> EnsemblePolicy:
    bundles = []
    for i, b in enumerate(biases):
        d = tmp_path / f"c{i}"
        make_bundle(d, panel.symbols, raw, 16, 2, "tanh", 5, seed=i, output_bias=np.array(b))
        bundles.append(load_bundle(d))
    return EnsemblePolicy.from_bundles(bundles, combine=combine, values=values)


BIASES = [[0.1, -0.4, 1.7], [0.5, 0.2, 0.3], [-0.2, 0.6, -3.0], [0.3, 0.0, 0.2]]
ACTIONS = np.array([[0.1, -0.4, 1.0], [0.5, 0.2, 0.3], [-0.2, 0.6, -1.0], [0.3, 0.0, 0.2]])


@pytest.mark.parametrize(
    ("combine", "values", "expected"),
    [
        ("mean", None, ACTIONS.mean(axis=0)),
        ("median", None, [0.2, 0.1, 0.25]),  # mean of the two middle actions (even count)
        # softmax of values 0, ln 2, ln 3, ln 4 = weights 1/10, 2/10, 3/10, 4/10
        ("value_weighted", [0.0, math.log(2), math.log(3), math.log(4)], [0.17, 0.18, -0.06]),
    ],
)
def test_combine_rules_on_known_member_actions(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray, combine: str, values, expected
) -> None:
    policy = constant_policy(tmp_path, panel, raw_features, BIASES, combine, values)
    raw, w = decision_points(raw_features, policy.n_assets, 1)[0]
    np.testing.assert_allclose(policy.member_actions(raw, w), ACTIONS, atol=1e-7)
    got = policy.act(raw, w)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_median_of_odd_count_and_value_weighted_shift_invariance(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    raw, w = decision_points(raw_features, 3, 1)[0]
    med = constant_policy(tmp_path / "a", panel, raw_features, BIASES[:3], "median")
    np.testing.assert_allclose(med.act(raw, w), [0.1, 0.2, 0.3], atol=1e-7)
    # softmax is unchanged by adding a constant to every value (and huge values do not overflow)
    big = constant_policy(tmp_path / "b", panel, raw_features, BIASES, "value_weighted", [1e6, 1e6, 1e6, 1e6])
    np.testing.assert_allclose(big.act(raw, w), ACTIONS.mean(axis=0), atol=1e-7)


def test_bad_combine_settings_are_rejected(tmp_path: Path, panel: Panel, raw_features: np.ndarray) -> None:
    with pytest.raises(EnsembleError, match="value_weighted needs one finite objective value"):
        constant_policy(tmp_path / "a", panel, raw_features, BIASES, "value_weighted")
    with pytest.raises(EnsembleError, match="unknown combine rule 'vote'"):
        constant_policy(tmp_path / "b", panel, raw_features, BIASES, "vote")
    with pytest.raises(EnsembleError, match="3 values for 4 members"):
        constant_policy(tmp_path / "c", panel, raw_features, BIASES, "mean", [1.0, 2.0, 3.0])
    with pytest.raises(EnsembleError, match="at least one member"):
        EnsemblePolicy.from_bundles([])


def test_from_bundles_rejects_nan_weights_and_mixed_symbols(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    bundles = load_all(tmp_path, panel, raw_features, MIXED[:3])
    with torch.no_grad():
        bundles[2].actor.policy_net[2].weight[0, 0] = float("nan")  # changed after loading
    with pytest.raises(EnsembleError, match=f"member 2 \\({bundles[2].path}\\): weights contain NaN"):
        EnsemblePolicy.from_bundles(bundles)
    other = tmp_path / "other_symbols"
    make_bundle(other, panel.symbols[::-1], raw_features, 8, 1, "tanh", 5, seed=0)
    with pytest.raises(EnsembleError, match="members observe different symbols or features"):
        EnsemblePolicy.from_bundles([*bundles[:2], load_bundle(other)])


def test_act_rejects_bad_inputs(tmp_path: Path, panel: Panel, raw_features: np.ndarray) -> None:
    policy = EnsemblePolicy.from_bundles(load_all(tmp_path, panel, raw_features, MIXED[:3]))
    raw, w = decision_points(raw_features, 3, 1)[0]
    with pytest.raises(ValueError, match="need 30 bars of features, got 29"):
        policy.act(raw[-29:], w)
    with pytest.raises(ValueError, match=r"must have shape \(L, 3, >= 12\)"):
        policy.act(raw[:, :2], w)
    with pytest.raises(ValueError, match=r"must have shape \(L, 3, >= 12\), got \(\d+, 3, 11\)"):
        policy.act(raw[:, :, :11], w)
    bad = raw.copy()
    bad[-3, 1, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in the last 30 bars"):
        policy.act(bad, w)
    with pytest.raises(ValueError, match="weights must be 3 finite fractions"):
        policy.act(raw, np.array([0.5, np.nan, 0.0]))


# --- from_manifest --------------------------------------------------------------------------


def write_ensemble(root: Path, panel: Panel, raw: np.ndarray, archs: list[tuple]) -> Path:
    """An ensemble folder as the sync job writes it; returns the manifest path."""
    members = []
    for i, (width, depth, act, lookback) in enumerate(archs):
        tmp = root / f"tmp{i}"
        sha = make_bundle(tmp, panel.symbols, raw, width, depth, act, lookback, seed=i)
        name = member_dir_name(i + 1, sha)
        tmp.rename(root / name)
        members.append(
            Member(
                slot=i,
                study=STUDY,
                trial_number=i,
                trial_id=i + 1,
                value=0.5 - 0.1 * i,
                vin=f"VIN-{i}",
                grade="A",
                bundle_path=name,
                sha256=sha,
            )
        )
    path = root / MANIFEST_FILE
    write_manifest(path, Manifest(study=STUDY, generation=7, combine="value_weighted", members=members))
    return path


@pytest.fixture
def ensemble_dir(tmp_path: Path, panel: Panel, raw_features: np.ndarray) -> Path:
    return write_ensemble(tmp_path / "ensemble", panel, raw_features, MIXED[:4])


def test_from_manifest_loads_members_in_manifest_order(
    ensemble_dir: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    policy = EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols), expected_study=STUDY)
    assert (policy.study, policy.generation, policy.combine) == (STUDY, 7, "value_weighted")
    assert policy.values == pytest.approx([0.5, 0.4, 0.3, 0.2])
    assert [b.meta["vin"] for b in policy.bundles] == ["VIN-0", "VIN-1", "VIN-2", "VIN-3"]
    raw, w = decision_points(raw_features, 3, 2)[1]
    expected = own_actions(policy.bundles, raw, w)
    np.testing.assert_allclose(policy.member_actions(raw, w), expected, atol=1e-5)
    p = np.exp(np.array([0.5, 0.4, 0.3, 0.2]) - 0.5)
    np.testing.assert_allclose(policy.act(raw, w), (p / p.sum()) @ expected, atol=1e-5)


def manifest_data(path: Path) -> dict:
    return json.loads(path.read_text())


def test_from_manifest_rejects_a_hash_mismatch(ensemble_dir: Path, panel: Panel) -> None:
    data = manifest_data(ensemble_dir)
    data["members"][2]["sha256"] = data["members"][1]["sha256"]
    write_manifest(ensemble_dir, Manifest.model_validate(data))  # as the sync would: digest matches
    with pytest.raises(EnsembleError) as exc:
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols))
    msg = str(exc.value)
    assert "member 2 (VIN-2)" in msg and "sha256" in msg and data["members"][2]["bundle_path"] in msg


def test_from_manifest_rejects_changed_weights(ensemble_dir: Path, panel: Panel) -> None:
    member = manifest_data(ensemble_dir)["members"][0]
    actor = ensemble_dir.parent / member["bundle_path"] / "actor.pth"
    data = bytearray(actor.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    actor.write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match=r"member 0 \(VIN-0\).*actor.pth: sha256"):
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols))


def test_from_manifest_rejects_a_missing_bundle(ensemble_dir: Path, panel: Panel) -> None:
    member = manifest_data(ensemble_dir)["members"][3]
    shutil.rmtree(ensemble_dir.parent / member["bundle_path"])
    with pytest.raises(EnsembleError) as exc:
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols))
    assert "member 3 (VIN-3)" in str(exc.value)
    assert f"{member['bundle_path']}/model.json: missing" in str(exc.value)


def test_from_manifest_rejects_nan_weights(
    ensemble_dir: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    data = manifest_data(ensemble_dir)
    bundle_dir = ensemble_dir.parent / data["members"][1]["bundle_path"]
    bundle = load_bundle(bundle_dir)
    state = dict(bundle.state)
    state["action_net.weight"] = state["action_net.weight"].clone()
    state["action_net.weight"][0, 0] = float("nan")
    data["members"][1]["sha256"] = save_bundle(bundle_dir, state, bundle.meta)
    write_manifest(ensemble_dir, Manifest.model_validate(data))  # as the sync would: digest matches
    with pytest.raises(EnsembleError, match=r"member 1 \(VIN-1\).*NaN or inf"):
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols))


def test_from_manifest_rejects_a_spec_mismatch(ensemble_dir: Path, panel: Panel) -> None:
    # member 1 has lookback 30: a pipeline that feeds at most 20 bars cannot serve it
    with pytest.raises(EnsembleError) as exc:
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols, max_lookback=20))
    msg = str(exc.value)
    assert "member 1 (VIN-1)" in msg and "lookback=30" in msg and "lookback<=20" in msg
    with pytest.raises(EnsembleError, match=r"member 0 \(VIN-0\).*cannot be fed"):
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(("BTCUSD", "ETHUSD", "XRPUSD")))


def test_from_manifest_rejects_another_study(ensemble_dir: Path, panel: Panel) -> None:
    with pytest.raises(EnsembleError) as exc:
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols), expected_study="other")
    msg = str(exc.value)
    assert str(ensemble_dir) in msg and repr(STUDY) in msg and "'other'" in msg


def test_from_manifest_rejects_truncated_json(ensemble_dir: Path, panel: Panel) -> None:
    raw = ensemble_dir.read_bytes()
    ensemble_dir.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(EnsembleError) as exc:
        EnsemblePolicy.from_manifest(ensemble_dir, PipelineSpec(panel.symbols))
    assert str(ensemble_dir) in str(exc.value) and "not valid JSON" in str(exc.value)


def test_from_manifest_rejects_a_missing_manifest(tmp_path: Path, panel: Panel) -> None:
    path = tmp_path / MANIFEST_FILE
    with pytest.raises(EnsembleError, match=f"{path}: no manifest"):
        EnsemblePolicy.from_manifest(path, PipelineSpec(panel.symbols))


@pytest.mark.slow
def test_trained_bundles_match_their_own_actors(
    trained_study, panel: Panel, raw_features: np.ndarray
) -> None:
    """Real PPO-trained bundles of the fixture study, batched, equal their own actors."""
    dirs = sorted((trained_study.root / "trials" / trained_study.study_name).glob("*/bundle"))
    assert dirs
    bundles = [load_bundle(d, PipelineSpec(panel.symbols)) for d in dirs]
    policy = EnsemblePolicy.from_bundles(bundles, "median")
    for raw, w in decision_points(raw_features, policy.n_assets, 5):
        expected = own_actions(bundles, raw, w)
        np.testing.assert_allclose(policy.member_actions(raw, w), expected, rtol=0, atol=1e-5)
        np.testing.assert_allclose(policy.act(raw, w), np.median(expected, axis=0), atol=1e-5)


def test_softmax_members_of_two_algorithms_act_as_their_own_actors(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    """SAC's tanh-squashed actors and PPO's clipped ones in one batched pass, with n + 1
    outputs (softmax logits for the assets and cash)."""
    bundles = []
    for i, (width, squash) in enumerate([(32, "tanh"), (64, "clip"), (32, "clip"), (64, "tanh")]):
        d = tmp_path / f"m{i}"
        make_bundle(
            d, panel.symbols, raw_features, width, 2, "relu", 5, seed=i, squash=squash, scheme="softmax"
        )
        bundles.append(load_bundle(d, PipelineSpec(panel.symbols)))
    policy = EnsemblePolicy.from_bundles(bundles)
    assert (policy.action_scheme, policy.action_dim, policy.decision_interval) == ("softmax", 4, 1)
    for raw, w in decision_points(raw_features, len(panel.symbols)):
        expected = own_actions(bundles, raw, w)
        np.testing.assert_allclose(policy.member_actions(raw, w), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(policy.act(raw, w), expected.mean(axis=0), rtol=1e-5, atol=1e-5)


def test_members_that_act_differently_are_refused(
    tmp_path: Path, panel: Panel, raw_features: np.ndarray
) -> None:
    designs = [("softmax", 1), ("scores", 1), ("softmax", 4)]
    bundles = []
    for i, (scheme, interval) in enumerate(designs):
        d = tmp_path / f"m{i}"
        make_bundle(
            d, panel.symbols, raw_features, 16, 1, "tanh", 5, seed=i, scheme=scheme, interval=interval
        )
        bundles.append(load_bundle(d, PipelineSpec(panel.symbols)))
    with pytest.raises(EnsembleError, match="members act differently"):
        EnsemblePolicy.from_bundles(bundles[:2])
    with pytest.raises(EnsembleError, match="members act differently"):
        EnsemblePolicy.from_bundles([bundles[0], bundles[2]])
    every_4 = EnsemblePolicy.from_bundles([bundles[2]])
    assert [every_4.decides_at(h * 3600) for h in range(8)] == [True, False, False, False] * 2

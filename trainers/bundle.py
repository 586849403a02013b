"""Model bundles: what a trial leaves behind (docs/ARCHITECTURE.md section 4).

A bundle is a directory with

* ``actor.pth``: the actor's plain ``state_dict`` (tensors only; loads with
  ``torch.load(..., weights_only=True)``), see :class:`trainers.actor.Actor`;
* ``model.json``: schema version, algorithm, architecture, observation spec, action spec,
  the execution model it was trained and must be traded with (``costs``, see
  :class:`trainers.accounting.Costs`), hyperparameters, study, trial number and id,
  metrics, data fingerprint, creation time, VIN, grade, objective value and the sha256 of
  ``actor.pth``.

Schema versions: 4 (current) adds the optional predictor channel: its
:class:`trainers.predictor_spec.PredictorSpec` in ``observation_spec.predictor`` and its
network's tensors in ``actor.pth`` under ``predictor.*`` (one file, one hash); a bundle
without ``observation_spec.predictor`` observes the features alone. 3 adds the action
scheme and decision interval to ``action_spec`` and the trial's ``design``
(:class:`trainers.design.Design`); a version-2 bundle acts with scores at every bar. 2
records ``costs``; 1 recorded only ``fee``, ``min_cash`` and ``trailing_stop`` in its
``action_spec`` and is read as those with the rest of the costs at what version-1 training
used (no slippage, maximum weight 1, a 0.01 minimum trade).

Loading checks the hash and the observation spec against the consumer's pipeline; a
mismatch raises :class:`BundleError` naming both specs.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers.accounting import DEFAULT_MIN_TRADE, Costs, action_dim
from trainers.atomic_io import atomic_write_bytes, atomic_write_json, read_json, sha256_file
from trainers.design import Design
from trainers.features import ALL_FEATURE_NAMES, FEATURE_PIPELINE_VERSION, NormStats
from trainers.observation import observation_dim
from trainers.predictor_spec import PredictorSpec

if TYPE_CHECKING:  # torch is imported where it is used: consumers that only read specs stay light
    import torch

    from trainers.actor import Actor
    from trainers.predictor import GRUPredictor

SCHEMA_VERSION = 4  # written for a bundle with a predictor; 3 without (older readers read it)
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
ACTOR_FILE = "actor.pth"
META_FILE = "model.json"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle and the problem."""


@dataclass(frozen=True)
class ObservationSpec:
    """What a model observes (see :mod:`trainers.observation` for the layout).

    The window has ``n_channels`` values per asset and bar: the normalised features in
    ``feature_names`` order, then the predictor channel when ``predictor`` is set
    (:mod:`trainers.predictor`).
    """

    symbols: tuple[str, ...]
    feature_names: tuple[str, ...]
    lookback: int
    feature_pipeline_version: str
    norm: NormStats = field(compare=False)
    predictor: PredictorSpec | None = None

    @property
    def n_channels(self) -> int:
        """Values per asset and bar in the window: features plus the predictor channel."""
        return len(self.feature_names) + (self.predictor is not None)

    @property
    def history_bars(self) -> int:
        """Bars of features one observation needs: the lookback, plus the predictor's
        sequence less one."""
        return self.lookback + (self.predictor.sequence_bars - 1 if self.predictor else 0)

    @property
    def obs_dim(self) -> int:
        return observation_dim(self.lookback, len(self.symbols), self.n_channels)

    def to_json(self) -> dict[str, Any]:
        out = {
            "symbols": list(self.symbols),
            "feature_names": list(self.feature_names),
            "lookback": self.lookback,
            "feature_pipeline_version": self.feature_pipeline_version,
            "layout": "window(lookback, n_assets, n_channels) + weights(n_assets) + cash(1)",
            "n_channels": self.n_channels,
            "obs_dim": self.obs_dim,
            "normalisation": self.norm.to_json(),
        }
        if self.predictor is not None:
            out["predictor"] = self.predictor.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObservationSpec:
        predictor = data.get("predictor")
        return cls(
            symbols=tuple(data["symbols"]),
            feature_names=tuple(data["feature_names"]),
            lookback=int(data["lookback"]),
            feature_pipeline_version=str(data["feature_pipeline_version"]),
            norm=NormStats.from_json(data["normalisation"]),
            predictor=None if predictor is None else PredictorSpec.from_json(predictor),
        )

    def describe(self) -> str:
        extra = f" predictor=h{self.predictor.horizon}" if self.predictor else ""
        return (
            f"symbols={list(self.symbols)} features={len(self.feature_names)} "
            f"pipeline=v{self.feature_pipeline_version} lookback={self.lookback}{extra}"
        )


@dataclass(frozen=True)
class PipelineSpec:
    """What a consumer (the paper trader, the deployer) can feed a model: the features
    ``feature_names`` (every feature set is a prefix of them, so a model whose names are a
    prefix reads the leading columns)."""

    symbols: tuple[str, ...]
    feature_names: tuple[str, ...] = ALL_FEATURE_NAMES
    feature_pipeline_version: str = FEATURE_PIPELINE_VERSION
    max_lookback: int = 256

    def describe(self) -> str:
        return (
            f"symbols={list(self.symbols)} features={len(self.feature_names)} "
            f"pipeline=v{self.feature_pipeline_version} lookback<={self.max_lookback}"
        )

    def check(self, spec: ObservationSpec, where: str) -> None:
        """Raise :class:`BundleError` naming both specs unless ``spec`` can be fed."""
        ok = (
            spec.symbols == self.symbols
            and 0 < len(spec.feature_names) <= len(self.feature_names)
            and spec.feature_names == self.feature_names[: len(spec.feature_names)]
            and spec.feature_pipeline_version == self.feature_pipeline_version
            and 1 <= spec.lookback <= self.max_lookback
            and spec.norm.mean.shape == (len(self.symbols), len(spec.feature_names))
        )
        if not ok:
            raise BundleError(
                f"{where}: observation spec [{spec.describe()}] cannot be fed by this "
                f"pipeline [{self.describe()}]"
            )


@dataclass
class Bundle:
    """A loaded, verified bundle.

    Raises:
        BundleError: a spec with a predictor but no network, or the reverse.
    """

    path: Path
    meta: dict[str, Any]
    spec: ObservationSpec
    actor: Actor
    state: dict[str, torch.Tensor]
    predictor: GRUPredictor | None = None

    def __post_init__(self) -> None:
        if (self.predictor is None) != (self.spec.predictor is None):
            raise BundleError(f"{self.path}: the observation spec and the predictor network disagree")

    def predictor_channel(self, raw_features: np.ndarray) -> np.ndarray | None:
        """The predictor channel ``(T, n_assets)`` float32 of ``(T, n_assets, F)`` raw
        features (0 at bars with fewer than ``sequence_bars`` bars before them), or None for
        a bundle without a predictor. See :meth:`observation_features` for ``F``."""
        return self._channel(self._normalised(raw_features))

    def _normalised(self, raw_features: np.ndarray) -> np.ndarray:
        """The spec's features (the leading columns) of raw features, normalised.

        Raises:
            ValueError: fewer columns than the spec's features.
        """
        n = len(self.spec.feature_names)
        if raw_features.ndim != 3 or raw_features.shape[2] < n:
            raise ValueError(
                f"{self.path}: raw features {raw_features.shape} lack the model's {n} features "
                f"({self.spec.feature_names[-1]} last)"
            )
        return self.spec.norm.apply(raw_features[:, :, :n])

    def _channel(self, features: np.ndarray) -> np.ndarray | None:
        """:meth:`predictor_channel` of already normalised features."""
        if self.predictor is None or self.spec.predictor is None:
            return None
        from trainers.predictor import predictor_channel

        return predictor_channel(self.predictor, features, self.spec.predictor.sequence_bars)

    def observation_features(self, raw_features: np.ndarray) -> np.ndarray:
        """What the actor's window reads: ``(T, n_assets, F)`` raw features
        (:func:`trainers.features.compute_features`, ``F`` at least the spec's features, of
        which it reads the leading columns) -> ``(T, n_assets, n_channels)`` float32,
        normalised, with :meth:`predictor_channel` appended when the bundle has one.

        Raises:
            ValueError: fewer than the spec's features.
        """
        features = self._normalised(raw_features)
        channel = self._channel(features)
        if channel is None:
            return features
        from trainers.predictor import with_channel

        return with_channel(features, channel)

    @property
    def sha256(self) -> str:
        return str(self.meta["actor_sha256"])

    @property
    def design(self) -> Design:
        """How the actor's actions are traded (scheme, decision interval) and were learnt."""
        return Design.from_meta(self.meta)


def common_costs(metas: list[tuple[str, dict[str, Any]]]) -> Costs:
    """The one execution model of several bundles (an ensemble's members).

    Args:
        metas: ``(label, model.json)`` per bundle, the label naming it in messages.

    Raises:
        BundleError: no bundle, an invalid ``costs``, or bundles whose costs disagree (the
            message names the first two that differ and the fields).
    """
    if not metas:
        raise BundleError("no bundle to take costs from")
    first_label, first_meta = metas[0]
    first = bundle_costs(first_meta, first_label)
    for label, meta in metas[1:]:
        diff = first.differences(bundle_costs(meta, label))
        if diff:
            fields = ", ".join(f"{k} {a:g} vs {b:g}" for k, (a, b) in diff.items())
            raise BundleError(f"{first_label} and {label} were trained with different costs ({fields})")
    return first


def trained_bar_seconds(meta: dict[str, Any]) -> int | None:
    """The bar interval (seconds) a bundle was trained on (``model.json``'s training record;
    None for bundles that predate it)."""
    value = meta.get("training", {}).get("bar_seconds") if isinstance(meta.get("training"), dict) else None
    return int(value) if isinstance(value, int) and value > 0 else None


def save_bundle(directory: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> str:
    """Write ``actor.pth`` and ``model.json`` into ``directory``; returns the sha256.

    ``meta`` must hold ``architecture`` and ``observation_spec``; ``schema_version`` (4 with
    a predictor, else 3, so that readers of version 3 still read it) and ``actor_sha256``
    are filled in here.
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    atomic_write_bytes(directory / ACTOR_FILE, buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    spec = meta.get("observation_spec")
    version = SCHEMA_VERSION if isinstance(spec, dict) and spec.get("predictor") else 3
    atomic_write_json(directory / META_FILE, {**meta, "schema_version": version, "actor_sha256": digest})
    return digest


def read_meta(directory: str | Path) -> dict[str, Any]:
    """Parse ``model.json`` of a bundle.

    Raises:
        BundleError: missing or unreadable ``model.json``, or another schema version.
    """
    path = Path(directory) / META_FILE
    try:
        meta = read_json(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing") from None
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(meta, dict) or meta.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise BundleError(f"{path}: schema_version must be one of {READABLE_SCHEMA_VERSIONS}")
    return meta


def bundle_costs(meta: dict[str, Any], where: str) -> Costs:
    """The execution model a bundle was trained with and must be traded with.

    Raises:
        BundleError: ``costs`` (version 2) or the action spec's cost fields (version 1) are
            missing or invalid; the message names the bundle and the field.
    """
    try:
        if meta.get("schema_version") == 1:
            spec = meta.get("action_spec")
            if not isinstance(spec, dict) or not {"fee", "min_cash", "trailing_stop"} <= set(spec):
                raise ValueError(f"{where}: model.json action_spec lacks fee, min_cash or trailing_stop")
            legacy = {
                "fee": spec["fee"],
                "min_cash": spec["min_cash"],
                "trailing_stop": spec["trailing_stop"],
            }
            return Costs.from_dict({**Costs(min_trade=DEFAULT_MIN_TRADE).as_dict(), **legacy}, where)
        return Costs.from_dict(meta.get("costs"), f"{where}: model.json")
    except ValueError as exc:
        raise BundleError(str(exc)) from None


def load_bundle(
    directory: str | Path, pipeline: PipelineSpec | None = None, expect_sha256: str | None = None
) -> Bundle:
    """Load and verify a bundle.

    Args:
        directory: the bundle folder.
        pipeline: the consumer's pipeline; when given, the observation spec must match it.
        expect_sha256: when given (from a manifest or trial attributes), the actor hash
            must equal it as well as ``model.json``'s.

    Raises:
        BundleError: missing file, hash mismatch, spec mismatch, non-finite weights, or
            weights that do not fit the declared architecture.
    """
    import torch

    from trainers.actor import Actor
    from trainers.predictor import load_predictor, split_state

    directory = Path(directory)
    meta = read_meta(directory)
    actor_path = directory / ACTOR_FILE
    if not actor_path.is_file():
        raise BundleError(f"{actor_path}: missing")
    digest = sha256_file(actor_path)
    for name, expected in (("model.json", meta.get("actor_sha256")), ("expected", expect_sha256)):
        if expected is not None and digest != expected:
            raise BundleError(
                f"{actor_path}: sha256 {digest[:12]}… does not match {name} {str(expected)[:12]}…"
            )
    try:
        spec = ObservationSpec.from_json(meta["observation_spec"])
        arch = meta["architecture"]
        design = Design.from_meta(meta)
        actor = Actor(
            spec.obs_dim,
            action_dim(design.action_scheme, len(spec.symbols)),
            int(arch["width"]),
            int(arch["depth"]),
            arch["activation"],
            str(arch.get("squash", "clip")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{directory / META_FILE}: bad observation spec or architecture ({exc})") from None
    if pipeline is not None:
        pipeline.check(spec, str(directory))
    predictor = None
    try:
        state = torch.load(actor_path, map_location="cpu", weights_only=True)
        actor_state, predictor_state = split_state(state)
        actor.load_state_dict(actor_state)
        if spec.predictor is not None:
            predictor = load_predictor(spec.predictor, len(spec.feature_names), predictor_state)
        elif predictor_state:
            raise ValueError("predictor tensors without observation_spec.predictor")
    except Exception as exc:  # torch raises many types for corrupt or mismatched files
        raise BundleError(f"{actor_path}: weights do not load into the declared actor ({exc})") from None
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise BundleError(f"{actor_path}: weights contain NaN or inf")
    actor.eval()
    return Bundle(directory, meta, spec, actor, actor_state, predictor)


def pack_bundle(directory: str | Path) -> bytes:
    """The bundle as an uncompressed tar (``actor.pth``, ``model.json``) for the artifact store."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in (ACTOR_FILE, META_FILE):
            tar.add(Path(directory) / name, arcname=name)
    return buf.getvalue()


def unpack_bundle(archive: str | Path, directory: str | Path) -> Path:
    """Extract a :func:`pack_bundle` tar into ``directory`` (only the two bundle files).

    Raises:
        BundleError: the archive is unreadable or lacks a bundle file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r") as tar:
            for name in (ACTOR_FILE, META_FILE):
                member = tar.getmember(name)
                src = tar.extractfile(member)
                if src is None:
                    raise KeyError(name)
                (directory / name).write_bytes(src.read())
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise BundleError(f"{archive}: not a bundle archive ({exc})") from None
    return directory


def to_numpy_policy(actor: Actor) -> Any:
    """Wrap an actor as a backtest policy ``(n, obs_dim) float32 -> (n, n_assets)``."""

    import torch

    def policy(obs: np.ndarray) -> np.ndarray:
        return actor.act(torch.from_numpy(obs)).numpy()

    return policy

"""Ensemble policy: several verified bundles acting as one.

INTERFACE (stable; the implementation below is a simple per-member loop, to be replaced by
a batched stacked-weights forward pass):

* ``EnsemblePolicy.from_manifest(path, pipeline, expected_study=None)`` -> policy; raises
  :class:`EnsembleError` naming the manifest/member and the problem.
* ``EnsemblePolicy.from_bundles(bundles, combine="mean", values=None, generation=0, study="")``.
* ``policy.max_lookback``: bars of normalised-feature history the policy needs.
* ``policy.act(raw_features, weights)``: ``raw_features (L >= max_lookback, n_assets,
  n_features)`` raw (un-normalised) features of the most recent bars, last row = decision
  bar; ``weights (n_assets,)`` current weights -> combined action ``(n_assets,)`` in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ensemble.manifest import Combine, ManifestError, read_manifest
from trainers.bundle import Bundle, BundleError, PipelineSpec, load_bundle
from trainers.observation import build_observations


class EnsembleError(ValueError):
    """An ensemble that cannot be loaded; the message names the manifest or member."""


@dataclass
class EnsemblePolicy:
    """Members and the rule that combines their actions."""

    bundles: list[Bundle]
    combine: Combine = "mean"
    values: list[float] = field(default_factory=list)
    generation: int = 0
    study: str = ""

    def __post_init__(self) -> None:
        if not self.bundles:
            raise EnsembleError("an ensemble needs at least one member")
        symbols = {b.spec.symbols for b in self.bundles}
        if len(symbols) != 1:
            raise EnsembleError(f"members trade different symbols: {sorted(symbols)}")

    @classmethod
    def from_bundles(
        cls,
        bundles: list[Bundle],
        combine: Combine = "mean",
        values: list[float] | None = None,
        generation: int = 0,
        study: str = "",
    ) -> EnsemblePolicy:
        return cls(list(bundles), combine, list(values or []), generation, study)

    @classmethod
    def from_manifest(
        cls, path: str | Path, pipeline: PipelineSpec, expected_study: str | None = None
    ) -> EnsemblePolicy:
        """Load a manifest and every member bundle (hash and spec checked).

        Raises:
            EnsembleError: bad manifest, another study than ``expected_study``, a member
                that is missing, fails its hash, has NaN weights or a spec mismatch.
        """
        path = Path(path)
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            raise EnsembleError(str(exc)) from None
        if expected_study is not None and manifest.study != expected_study:
            raise EnsembleError(
                f"{path}: ensemble of study {manifest.study!r}, but the current study is {expected_study!r}"
            )
        bundles = []
        for m in manifest.members:
            try:
                bundles.append(load_bundle(path.parent / m.bundle_path, pipeline, expect_sha256=m.sha256))
            except BundleError as exc:
                raise EnsembleError(f"{path}: member {m.slot} ({m.vin}): {exc}") from None
        if not bundles:
            raise EnsembleError(f"{path}: no members")
        return cls(
            bundles,
            manifest.combine,
            [m.value for m in manifest.members],
            manifest.generation,
            manifest.study,
        )

    @property
    def max_lookback(self) -> int:
        return max(b.spec.lookback for b in self.bundles)

    @property
    def n_assets(self) -> int:
        return len(self.bundles[0].spec.symbols)

    def member_actions(self, raw_features: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``(n_members, n_assets)`` deterministic actions of every member."""
        out = np.empty((len(self.bundles), self.n_assets), dtype=np.float32)
        t = np.array([len(raw_features) - 1])
        w = np.asarray(weights, dtype=np.float64).reshape(1, -1)
        for i, b in enumerate(self.bundles):
            feats = b.spec.norm.apply(raw_features[-b.spec.lookback :])
            obs = build_observations(feats, t - (len(raw_features) - len(feats)), b.spec.lookback, w)
            out[i] = b.actor.act(torch.from_numpy(obs)).numpy()[0]
        return out

    def act(self, raw_features: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Combined action ``(n_assets,)`` in [-1, 1] (see the module docstring)."""
        if len(raw_features) < self.max_lookback:
            raise ValueError(f"need {self.max_lookback} bars of features, got {len(raw_features)}")
        actions = self.member_actions(raw_features, weights)
        if self.combine == "median":
            return np.median(actions, axis=0)
        if self.combine == "value_weighted" and self.values:
            v = np.asarray(self.values, dtype=np.float64)
            w = np.exp(v - v.max())  # softmax of objective values
            return (w[:, None] * actions).sum(axis=0) / w.sum()
        return actions.mean(axis=0)

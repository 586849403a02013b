"""Ensemble policy: several verified bundles acting as one, in one batched forward pass.

INTERFACE (stable):

* ``EnsemblePolicy.from_manifest(path, pipeline, expected_study=None)`` -> policy; raises
  :class:`EnsembleError` naming the manifest/member and the problem.
* ``EnsemblePolicy.from_bundles(bundles, combine="mean", values=None, generation=0, study="")``.
* ``policy.bundles``, ``policy.combine``, ``policy.values``, ``policy.generation``,
  ``policy.study``, ``policy.n_members``, ``policy.batch_groups`` (member indices per batched
  group).
* ``policy.max_lookback``: bars of feature history the policy needs (the longest lookback,
  plus a predictor's sequence less one when a member observes a predictor channel,
  :mod:`trainers.predictor`); ``policy.n_assets``. Members with and without a predictor
  mix: the window then has ``C = F + 1`` channels per asset and bar, and a member without
  one has zero weights on the extra channel; each predictor member's channel is computed
  from its own normalised features at every call (one GRU pass per member).
* ``policy.costs``: the members' one execution model (:class:`trainers.accounting.Costs`);
  members trained with different costs are refused with :class:`EnsembleError`.
* ``policy.action_scheme``, ``policy.decision_interval``, ``policy.action_dim``: how the
  members' actions become weights and how often they decide (one for all members, else
  :class:`EnsembleError`). With softmax actions the mean combine averages the members'
  logits, i.e. the combined weights are the normalised geometric mean of the members'
  weights (a log-linear opinion pool; Genest & Zidek 1986, "Combining Probability
  Distributions", Statistical Science 1(1)).
* ``policy.member_actions(raw_features, weights)`` -> ``(n_members, action_dim)`` float32,
  each member's deterministic action in [-1, 1], in ``bundles`` order.
* ``policy.act(raw_features, weights)``: ``raw_features (L >= max_lookback, n_assets,
  F >= n_features)`` raw (un-normalised) features of the most recent bars, last row = decision
  bar (``compute_features(prices, policy.feature_names)``; the members read the leading
  ``n_features`` columns, since every feature set is a prefix of the pipeline's names);
  ``weights (n_assets,)`` current weights -> combined action ``(action_dim,)`` float64 in
  [-1, 1].

Combine rules (``combine``), over the members' clipped actions ``a_i``:

* ``mean`` (default): ``sum_i a_i / n``.
* ``median``: per-asset median (mean of the two middle actions for an even count).
* ``value_weighted``: ``sum_i p_i a_i`` with ``p = softmax(values)``, i.e.
  ``p_i = exp(v_i - max v) / sum_j exp(v_j - max v)``, where ``v_i`` is member ``i``'s
  objective value (the trial's excess Sharpe score, :mod:`trainers.objective`), temperature 1.

How the batched pass works (all prepared once, at load time):

Members are sorted by (width, lookback) and split into contiguous *groups* by a small
dynamic programme minimising an estimated per-bar cost (bytes of padded weights read plus a
fixed cost per numpy call), so a mixed top 10 runs as a few groups. Inside a group every
member's layers are zero-padded to the group's widest layer and stacked in ``nn.Linear``
layout ``(members, out, in)``:

* first layer ``(M, W, D)``, ``D = A + 1 + L * A * C`` for the group's longest lookback
  ``L`` and ``C`` channels per asset and bar (the ``F`` features, plus the predictor
  channel when any member has one); the input is ``[weights (A), cash (1), window newest
  bar first (L, A, C)]``, so a member with a shorter lookback (or without a predictor) has
  zero columns for the older bars (or the extra channel), which therefore do not change
  its output;
* hidden layer ``k`` ``(n_k, W, W)`` holds only the ``n_k`` members deeper than ``k``
  (members are ordered by depth, deepest first, so they form a prefix); shallower members
  keep their last hidden state;
* output layer ``(M, A, W)``.

Padded hidden units have zero incoming and zero outgoing weights, so whatever the
activation gives at 0 never reaches a real unit. Activations are applied in place on
contiguous runs of members.

Per bar: one numpy broadcast normalises the raw window for every member at once
(``clip((x - mean) / std, ±5)`` in float64, then float32: exactly
:meth:`trainers.features.NormStats.apply`) into a shared input buffer; then per group one
copy of its rows and one stacked ``np.matmul`` (OpenBLAS gemv per member) + bias per layer.
With predictor members, the window is per member instead (``(n, L, A, C)``): the features
are broadcast into it and each predictor member's GRU (one torch call over its ``L * A``
sequences) writes its channel before the same normalisation.

Why numpy and not ``torch.baddbmm``: measured on the development CPU (AMD EPYC, one
thread, CPU time) for ``(5, 128, 1084) @ (5, 1084, 1)``: ``torch.baddbmm`` 0.79 ms with a
plain contiguous ``(5, 1084, 1)`` input (a slow non-BLAS path), 0.077 ms with the input
strided as a transposed ``(5, 1, 1084)``, ``np.matmul`` 0.043 ms; for ``(4, 128, 128)``
0.069 / 0.009 / 0.005 ms. A small numpy call also costs ~1 µs against ~4 µs for a torch
call. Results equal the torch actors to float32 rounding (``tests/ensemble/test_policy.py``).
OpenBLAS follows ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` (set them to 1 to keep
inference on one core).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch.nn as nn

from ensemble.manifest import Combine, ManifestError, read_manifest
from trainers.accounting import Costs, action_dim
from trainers.backtest import decision_bars
from trainers.bundle import (
    Bundle,
    BundleError,
    PipelineSpec,
    common_costs,
    load_bundle,
    trained_bar_seconds,
)
from trainers.features import NORM_CLIP, history_bars

COMBINE_RULES: tuple[str, ...] = ("mean", "median", "value_weighted")

# Cost model of the grouping (microseconds on one core; only their ratio matters): reading
# one float32 weight (~35 GB/s from cache) and one small numpy call.
_US_PER_FLOAT = 1.1e-4
_US_PER_CALL = 1.5


def _tanh(v: np.ndarray, tmp: np.ndarray) -> None:
    np.tanh(v, out=v)


def _relu(v: np.ndarray, tmp: np.ndarray) -> None:
    np.maximum(v, 0.0, out=v)


def _elu(v: np.ndarray, tmp: np.ndarray) -> None:
    """ELU (alpha 1, as ``torch.nn.ELU``): ``max(x, 0) + expm1(min(x, 0))``."""
    np.minimum(v, 0.0, out=tmp)
    np.expm1(tmp, out=tmp)
    np.maximum(v, 0.0, out=v)
    np.add(v, tmp, out=v)


Activation = Callable[[np.ndarray, np.ndarray], None]
_INPLACE_ACT: dict[str, Activation] = {"tanh": _tanh, "relu": _relu, "elu": _elu}


class EnsembleError(ValueError):
    """An ensemble that cannot be loaded; the message names the manifest or member."""


@dataclass(frozen=True)
class _Member:
    """One actor unpacked into float32 arrays (``nn.Linear`` layout ``(out, in)``)."""

    index: int  # position in ``bundles``
    lookback: int
    width: int
    depth: int
    activation: str
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # depth hidden layers + output layer
    squash: str = "clip"  # "tanh": SAC's and TD3's actors squash their output
    channels: int = 0  # values per asset and bar in the member's window (features + predictor)


def _unpack(index: int, bundle: Bundle) -> _Member:
    actor = bundle.actor
    linears = [m for m in actor.policy_net if isinstance(m, nn.Linear)] + [actor.action_net]
    activation = str(bundle.meta["architecture"]["activation"])
    layers = tuple(
        (lin.weight.detach().float().numpy(), lin.bias.detach().float().numpy()) for lin in linears
    )
    if not all(np.isfinite(a).all() for layer in layers for a in layer):
        raise EnsembleError(f"member {index} ({bundle.path}): weights contain NaN or inf")
    width, depth = linears[0].out_features, len(linears) - 1
    return _Member(
        index, bundle.spec.lookback, width, depth, activation, layers, actor.squash, bundle.spec.n_channels
    )


def _runs(acts: Sequence[str]) -> tuple[tuple[int, int, Activation], ...]:
    """Maximal runs ``(start, stop, in-place activation)`` of equal activations."""
    out: list[tuple[int, int, str]] = []
    for i, a in enumerate(acts):
        if out and out[-1][2] == a:
            out[-1] = (out[-1][0], i + 1, a)
        else:
            out.append((i, i + 1, a))
    return tuple((s, e, _INPLACE_ACT[a]) for s, e, a in out)


class _Group:
    """Members evaluated by one stack of batched matrix products (see the module docstring).

    Args:
        members: the group's members.
        x: ``(members of the whole ensemble, D_max)`` float32 input shared by all groups:
            ``[weights (A), cash (1), window newest bar first (L_max, A, C)]``; this group
            reads rows ``start : start + len(members)`` and its first ``D`` columns.
        start: first row of this group in ``x``.
        row: ``A * C`` inputs per bar (``C`` channels: the features, then the predictor
            channel when any member of the ensemble has one; a member without it has zero
            weights there).
    """

    def __init__(self, members: list[_Member], x: np.ndarray, start: int, row: int, n_assets: int) -> None:
        self.members = self.order(members)
        m = self.m = len(members)
        n_out = members[0].layers[-1][0].shape[0]  # the action dimension
        head = n_assets + 1  # weights + cash
        d_in = head + max(mem.lookback for mem in members) * row
        width = max(mem.width for mem in members)
        self.src = x[start : start + m, :d_in]  # view of the shared input
        self.x = np.zeros((m, d_in, 1), dtype=np.float32)  # contiguous copy (BLAS-friendly)
        self.h = np.zeros((m, width, 1), dtype=np.float32)
        self.tmp = np.zeros((m, width, 1), dtype=np.float32)

        w1 = np.zeros((m, width, d_in), dtype=np.float32)
        b1 = np.zeros((m, width, 1), dtype=np.float32)
        channels = row // n_assets
        for j, mem in enumerate(self.members):
            w, b = mem.layers[0]
            own = mem.lookback * n_assets * mem.channels
            # the actor's columns: window oldest bar first, then weights and cash
            window = np.zeros((mem.width, mem.lookback, n_assets, channels), dtype=np.float32)
            window[..., : mem.channels] = w[:, :own].reshape(mem.width, mem.lookback, n_assets, mem.channels)
            window = window[:, ::-1].reshape(mem.width, mem.lookback * row)
            w1[j, : mem.width, head : head + mem.lookback * row] = window
            w1[j, : mem.width, :head] = w[:, own:]
            b1[j, : mem.width, 0] = b
        self.first = (w1, b1, _runs([mem.activation for mem in self.members]))

        self.hidden: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, tuple]] = []
        for k in range(1, max(mem.depth for mem in members)):
            deep = [mem for mem in self.members if mem.depth > k]  # a prefix
            wk = np.zeros((len(deep), width, width), dtype=np.float32)
            bk = np.zeros((len(deep), width, 1), dtype=np.float32)
            for j, mem in enumerate(deep):
                w, b = mem.layers[k]
                wk[j, : mem.width, : mem.width] = w
                bk[j, : mem.width, 0] = b
            y = np.zeros((len(deep), width, 1), dtype=np.float32)
            self.hidden.append((len(deep), wk, bk, y, _runs([mem.activation for mem in deep])))

        wo = np.zeros((m, n_out, width), dtype=np.float32)
        bo = np.zeros((m, n_out, 1), dtype=np.float32)
        for j, mem in enumerate(self.members):
            w, b = mem.layers[-1]
            wo[j, :, : mem.width] = w
            bo[j, :, 0] = b
        self.out = (wo, bo)

    @staticmethod
    def order(members: list[_Member]) -> list[_Member]:
        """Deepest first, so the members of every hidden layer form a prefix; then by
        activation, so equal activations form few runs."""
        return sorted(members, key=lambda m: (-m.depth, m.activation, m.index))

    def forward(self, out: np.ndarray) -> None:
        """Write the group's unclipped actions ``(M, action_dim, 1)`` into ``out`` (the shared
        input must hold the current bar)."""
        np.copyto(self.x[:, :, 0], self.src)
        w1, b1, runs = self.first
        h, tmp = self.h, self.tmp
        np.matmul(w1, self.x, out=h)
        np.add(h, b1, out=h)
        for s, e, act in runs:
            act(h[s:e], tmp[s:e])
        for n, wk, bk, y, runs in self.hidden:
            np.matmul(wk, h[:n], out=y)
            np.add(y, bk, out=y)
            for s, e, act in runs:
                act(y[s:e], tmp[s:e])
            if n == self.m:
                h = y
            else:
                h[:n] = y
        wo, bo = self.out
        np.matmul(wo, h, out=out)
        np.add(out, bo, out=out)


def _group_cost(members: Sequence[_Member], row: int) -> float:
    """Estimated per-bar cost (µs) of one group: padded weights read + calls made."""
    width = max(m.width for m in members)
    depth = max(m.depth for m in members)
    lookback = max(m.lookback for m in members)
    n_assets = members[0].layers[-1][0].shape[0]
    floats = len(members) * width * (lookback * row + n_assets + 1 + n_assets)
    floats += sum(max(m.depth - 1, 0) for m in members) * width * width
    calls = 5 + 3 * depth + 2 * len({m.activation for m in members}) * depth
    return floats * _US_PER_FLOAT + calls * _US_PER_CALL


def _partition(members: list[_Member], row: int) -> list[list[_Member]]:
    """Split members, sorted by (width, lookback), into contiguous groups of least total
    estimated cost (exact dynamic programme over contiguous splits, O(n^3) for n members)."""
    order = sorted(members, key=lambda m: (m.width, m.lookback, m.depth, m.index))
    n = len(order)
    best = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + _group_cost(order[i:j], row)
            if c < best[j]:
                best[j], cut[j] = c, i
    groups: list[list[_Member]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


@dataclass(eq=False)
class EnsemblePolicy:
    """Members, the rule that combines their actions, and their stacked weights.

    Not re-entrant per instance beyond a lock: :meth:`act` reuses preallocated buffers,
    so concurrent calls on one instance are serialised.

    Raises:
        EnsembleError: no member, members with different symbols/features or different
            costs (execution models), an unknown
            combine rule, ``values`` not one finite number per member for
            ``value_weighted``, or non-finite weights.
    """

    bundles: list[Bundle]
    combine: Combine = "mean"
    values: list[float] = field(default_factory=list)
    generation: int = 0
    study: str = ""

    def __post_init__(self) -> None:
        if not self.bundles:
            raise EnsembleError("an ensemble needs at least one member")
        specs = {
            (b.spec.symbols, b.spec.feature_names, b.spec.feature_pipeline_version) for b in self.bundles
        }
        if len(specs) != 1:
            raise EnsembleError(f"members observe different symbols or features: {sorted(specs)}")
        try:
            self.costs: Costs = common_costs(
                [(f"member {i} ({b.path})", b.meta) for i, b in enumerate(self.bundles)]
            )
        except BundleError as exc:
            raise EnsembleError(str(exc)) from None
        designs = {(b.design.action_scheme, b.design.decision_interval) for b in self.bundles}
        if len(designs) != 1:
            raise EnsembleError(
                f"members act differently (action scheme, decision interval): {sorted(designs)}"
            )
        self.action_scheme, self.decision_interval = designs.pop()
        self._bar_seconds = trained_bar_seconds(self.bundles[0].meta)
        if self.decision_interval > 1 and self._bar_seconds is None:
            raise EnsembleError(
                f"members decide every {self.decision_interval} bars but record no bar interval"
            )
        self._n_assets = len(self.bundles[0].spec.symbols)
        self._action_dim = action_dim(self.action_scheme, self._n_assets)
        self._n_features = len(self.bundles[0].spec.feature_names)
        self._window_bars = max(b.spec.lookback for b in self.bundles)
        # a predictor channel over the whole window needs its sequence's bars before it
        extra = [b.spec.predictor.sequence_bars - 1 for b in self.bundles if b.spec.predictor]
        self._max_lookback = self._window_bars + max(extra, default=0)
        self._channels = self._n_features + bool(extra)
        self._price_history_bars = max(history_bars(self.feature_names), self._max_lookback)
        if self.combine not in COMBINE_RULES:
            raise EnsembleError(f"unknown combine rule {self.combine!r}; known: {list(COMBINE_RULES)}")
        n = len(self.bundles)
        if self.values and len(self.values) != n:
            raise EnsembleError(f"{len(self.values)} values for {n} members")
        combine_weights: np.ndarray | None = None  # per member, bundles order; None = median
        if self.combine == "value_weighted":
            v = np.asarray(self.values, dtype=np.float64)
            if len(v) != n or not np.isfinite(v).all():
                raise EnsembleError("value_weighted needs one finite objective value per member")
            p = np.exp(v - v.max())
            combine_weights = p / p.sum()
        elif self.combine == "mean":
            combine_weights = np.full(n, 1.0 / n)

        members = [_unpack(i, b) for i, b in enumerate(self.bundles)]
        row = self._n_assets * self._channels
        parts = [_Group.order(g) for g in _partition(members, row)]
        # internal member order = the groups' orders concatenated
        order = np.array([m.index for g in parts for m in g])
        # (n, A, C): the predictor channel is already in [-1, 1]: mean 0, std 1
        means = np.zeros((n, self._n_assets, self._channels))
        stds = np.ones((n, self._n_assets, self._channels))
        for j, i in enumerate(order):
            means[j, :, : self._n_features] = self.bundles[i].spec.norm.mean
            stds[j, :, : self._n_features] = self.bundles[i].spec.norm.std
        if not (np.isfinite(means).all() and np.isfinite(stds).all() and (stds > 0).all()):
            raise EnsembleError("a member's normalisation statistics are not finite and positive")
        # (n, window_bars * A * C): each member's statistics repeated for every bar of the
        # flattened window, so one broadcast with a long inner loop normalises all of it
        self._mean = np.tile(means.reshape(n, row), (1, self._window_bars))
        self._std = np.tile(stds.reshape(n, row), (1, self._window_bars))
        # members with a predictor: (row in internal order, bundle); their channel is
        # computed per bar into the per-member window (n, window_bars, A, C)
        self._predictors = [(j, self.bundles[i]) for j, i in enumerate(order) if self.bundles[i].predictor]
        self._window = (
            np.zeros((n, self._window_bars, self._n_assets, self._channels)) if self._predictors else None
        )
        # shared input [weights, cash, window newest bar first] of every member, and views
        head = self._n_assets + 1
        self._x = np.zeros((n, head + self._window_bars * row), dtype=np.float32)
        self._x_head = self._x[:, :head]
        self._x_window = self._x[:, head:]
        self._z = np.empty(self._x_window.shape)  # float64 scratch
        self._head = np.empty(head)
        self._groups: list[_Group] = []
        self._slices: list[np.ndarray] = []
        self._actions_3d = np.zeros((n, self._action_dim, 1), dtype=np.float32)
        self._actions = self._actions_3d[:, :, 0]  # (n, action_dim) view, internal order
        start = 0
        for g in parts:
            self._groups.append(_Group(g, self._x, start, row, self._n_assets))
            self._slices.append(self._actions_3d[start : start + len(g)])
            start += len(g)
        self._combine_weights = None if combine_weights is None else combine_weights[order]
        squashed = [i for i, m in enumerate(m for g in parts for m in g) if m.squash == "tanh"]
        self._tanh_rows = np.array(squashed, dtype=np.int64)  # internal order
        self._inverse = np.argsort(order)  # internal order -> bundles order
        self._lock = threading.Lock()

    @classmethod
    def from_bundles(
        cls,
        bundles: list[Bundle],
        combine: Combine = "mean",
        values: list[float] | None = None,
        generation: int = 0,
        study: str = "",
    ) -> EnsemblePolicy:
        """An ensemble of already loaded (verified) bundles; ``values`` are the members'
        objective values, needed for ``value_weighted``.

        Raises:
            EnsembleError: see the class docstring.
        """
        return cls(list(bundles), combine, list(values or []), generation, study)

    @classmethod
    def from_manifest(
        cls, path: str | Path, pipeline: PipelineSpec, expected_study: str | None = None
    ) -> EnsemblePolicy:
        """Load a manifest and every member bundle (hash and spec checked).

        Raises:
            EnsembleError: bad manifest (missing, truncated JSON, schema), another study
                than ``expected_study``, a member that is missing, fails its hash, has NaN
                weights or an observation spec ``pipeline`` cannot feed; the message names
                the manifest and the member (slot, VIN, bundle folder).
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
        try:
            return cls(
                bundles,
                manifest.combine,
                [m.value for m in manifest.members],
                manifest.generation,
                manifest.study,
            )
        except EnsembleError as exc:
            raise EnsembleError(f"{path}: {exc}") from None

    @property
    def max_lookback(self) -> int:
        """Bars of feature history :meth:`act` needs: the longest member lookback, plus the
        longest predictor sequence less one when a member has a predictor channel."""
        return self._max_lookback

    @property
    def n_assets(self) -> int:
        return self._n_assets

    def decides_at(self, ts: int) -> bool:
        """Whether the bar starting at ``ts`` (UTC epoch seconds) is a decision bar
        (:func:`trainers.backtest.decision_bars`); always True for a 1-bar interval."""
        if self.decision_interval <= 1 or self._bar_seconds is None:
            return True
        return bool(decision_bars(np.array([int(ts)]), self._bar_seconds, self.decision_interval)[0])

    @property
    def action_dim(self) -> int:
        """Length of an action: ``n_assets`` (scores) or ``n_assets + 1`` (softmax)."""
        return self._action_dim

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features every member observes (a set of :data:`trainers.features.FEATURE_SETS`)."""
        return self.bundles[0].spec.feature_names

    @property
    def price_history_bars(self) -> int:
        """Bars of prices to compute :attr:`feature_names` from so that they equal training's
        (:func:`trainers.features.history_bars`), at least :attr:`max_lookback`."""
        return self._price_history_bars

    @property
    def n_members(self) -> int:
        return len(self.bundles)

    @property
    def batch_groups(self) -> tuple[tuple[int, ...], ...]:
        """Member indices (``bundles`` order) of each batched group, for logs and tests."""
        return tuple(tuple(m.index for m in g.members) for g in self._groups)

    def _check(self, raw_features: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = np.asarray(raw_features, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        if raw.ndim != 3 or raw.shape[1] != self._n_assets or raw.shape[2] < self._n_features:
            raise ValueError(
                f"raw_features must have shape (L, {self._n_assets}, >= {self._n_features}), got {raw.shape}"
            )
        lookback = self._max_lookback
        if len(raw) < lookback:
            raise ValueError(f"need {lookback} bars of features, got {len(raw)}")
        raw = raw[-lookback:, :, : self._n_features]
        if not np.isfinite(raw).all():
            raise ValueError(f"raw_features contain NaN or inf in the last {lookback} bars")
        if w.shape != (self._n_assets,) or not np.isfinite(w).all():
            raise ValueError(f"weights must be {self._n_assets} finite fractions, got {weights!r}")
        return raw, w

    def _forward(self, raw: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Clipped actions ``(n_members, action_dim)`` float32 in internal order (a view of
        the reused buffer: copy it before releasing the lock).

        ``raw`` is ``(max_lookback, A, F)``: normalised for every member in one broadcast,
        exactly :meth:`trainers.features.NormStats.apply` (float64, clip, then float32). With
        predictor members, each one's channel (:meth:`trainers.bundle.Bundle.predictor_channel`)
        is written into its row of a per-member window first.
        """
        window = raw[len(raw) - self._window_bars :][::-1]  # newest bar first
        if self._window is not None:
            self._window[:, :, :, : self._n_features] = window
            for j, bundle in self._predictors:
                sequence = bundle.spec.predictor.sequence_bars
                channel = bundle.predictor_channel(raw[len(raw) - self._window_bars - sequence + 1 :])
                self._window[j, :, :, self._n_features] = channel[sequence - 1 :][::-1]
            z = np.subtract(self._window.reshape(len(self._x), -1), self._mean, out=self._z)
        else:
            z = np.subtract(window.reshape(-1), self._mean, out=self._z)
        np.divide(z, self._std, out=z)
        np.maximum(z, -NORM_CLIP, out=z)  # two plain ufunc calls cost less than np.clip
        np.minimum(z, NORM_CLIP, out=self._x_window, casting="same_kind")
        head = self._head
        head[:-1] = w
        head[-1] = 1.0 - w.sum()  # cash, as trainers.observation computes it
        self._x_head[:] = head
        for g, out in zip(self._groups, self._slices, strict=True):
            g.forward(out)
        if len(self._tanh_rows):
            self._actions[self._tanh_rows] = np.tanh(self._actions[self._tanh_rows])
        np.maximum(self._actions, -1.0, out=self._actions)
        return np.minimum(self._actions, 1.0, out=self._actions)

    def member_actions(self, raw_features: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Every member's deterministic action, equal to its own ``Actor.act`` on its own
        observation (:func:`trainers.observation.build_observations`).

        Args:
            raw_features: ``(L >= max_lookback, n_assets, n_features)`` raw features.
            weights: ``(n_assets,)`` current weights (fractions; cash = 1 - sum).

        Returns:
            ``(n_members, action_dim)`` float32 in [-1, 1], in ``bundles`` order.

        Raises:
            ValueError: wrong shapes, too few bars, or non-finite inputs.
        """
        raw, w = self._check(raw_features, weights)
        with self._lock:
            return self._forward(raw, w)[self._inverse]

    def act(self, raw_features: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Combined action ``(action_dim,)`` float64 in [-1, 1] by ``combine`` (module
        docstring); arguments and errors as :meth:`member_actions`."""
        raw, w = self._check(raw_features, weights)
        with self._lock:
            actions = self._forward(raw, w)
            if self._combine_weights is None:
                return np.median(actions, axis=0).astype(np.float64)
            return self._combine_weights @ actions

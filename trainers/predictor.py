"""Optional supervised predictor features: a small GRU that estimates, per asset, the
probability that the next ``horizon`` bars' return is positive, fitted per walk-forward fold
on that fold's training slice only; its output is one more feature channel of the
observation (:mod:`trainers.observation`).

The seed pipeline fed LSTM/GRU predictors into PPO; this is that idea made causal and
per fold:

* input: the normalised features (:meth:`trainers.features.NormStats.apply`) of one asset
  over the ``sequence_bars`` bars ending at bar ``t``, ``(sequence_bars, n_features)``; one
  network is shared by all assets;
* target: ``1`` if ``close[t + horizon] > close[t]`` else ``0``. Only bars with
  ``t + horizon`` inside the training slice are used, so no label looks past it;
* network: a one-layer GRU (Cho et al. 2014, "Learning Phrase Representations using RNN
  Encoder-Decoder for Statistical Machine Translation", EMNLP) of
  :data:`trainers.predictor_spec.HIDDEN` units, then a linear layer to one logit; trained
  with binary cross-entropy and Adam (Kingma & Ba 2015) for :data:`STEPS` minibatches of
  :data:`BATCH` from at most :data:`MAX_SAMPLES` (bar, asset) samples of the first 80% of
  the slice's bars. The last 20% (after a purge of ``horizon`` bars) give the reported
  validation accuracy (a diagnostic; nothing is chosen on it);
* the agent trains on a cross-fitted channel inside its training slice, never on the
  network's in-sample output (:func:`fit_fold_predictor`);
* channel: ``2 p - 1`` in [-1, 1] (0 = no opinion), where ``p = sigmoid(logit)``; bars
  without ``sequence_bars`` of history get 0.

The channel at bar ``t`` depends on bars ``t - sequence_bars + 1 .. t`` only (no state is
carried between windows), so a consumer that keeps ``lookback + sequence_bars - 1`` bars of
features (the paper trader, :class:`ensemble.policy.EnsemblePolicy`) computes what the
fold's backtest saw (equal to float rounding: batch sizes differ). A bundle keeps the
network's tensors in its ``actor.pth`` under the :data:`trainers.predictor_spec.STATE_PREFIX` keys and its
:class:`PredictorSpec` in ``model.json``'s ``observation_spec.predictor``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from trainers.predictor_spec import STATE_PREFIX, PredictorSpec

STEPS = 300  # gradient steps per fit, whatever the slice's size
MAX_SAMPLES = 16_384  # (bar, asset) training samples per fit
BATCH = 256
LEARNING_RATE = 3e-3
VALIDATION_FRACTION = 0.2
CROSS_FIT_BLOCKS = 2  # contiguous blocks of the training slice for the agent's channel
_CHUNK = 8192  # sequences per inference call


class GRUPredictor(nn.Module):
    """``(batch, sequence_bars, n_features)`` normalised features -> ``(batch,)`` logits of
    an up move over the next ``horizon`` bars."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1]).squeeze(-1)


@dataclass
class FittedPredictor:
    """A fitted predictor, its spec and the fit's figures (accuracies are fractions)."""

    spec: PredictorSpec
    model: GRUPredictor
    report: dict[str, float]

    def state(self) -> dict[str, torch.Tensor]:
        """The network's tensors under :data:`STATE_PREFIX` (CPU copies)."""
        return {STATE_PREFIX + k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def channel(self, features: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """:func:`predictor_channel` of this predictor."""
        return predictor_channel(self.model, features, self.spec.sequence_bars, start, stop)


def _sequences(features: np.ndarray, bars: np.ndarray, assets: np.ndarray, length: int) -> np.ndarray:
    """``(n, length, n_features)`` windows ending at ``bars[i]`` of asset ``assets[i]``."""
    idx = bars[:, None] + np.arange(1 - length, 1)  # (n, length)
    return np.ascontiguousarray(features[idx, assets[:, None]], dtype=np.float32)


def fit_predictor(
    features: np.ndarray,
    close: np.ndarray,
    start: int,
    stop: int,
    spec: PredictorSpec,
    seed: int | None = None,
    exclude: tuple[int, int] | None = None,
) -> FittedPredictor:
    """Fit a :class:`GRUPredictor` on the training slice ``[start, stop)`` (module docstring).

    Args:
        features: ``(T, n_assets, n_features)`` normalised features (float32).
        close: ``(T, n_assets)`` close prices.
        start, stop: the training slice; labels never use a bar at or after ``stop``.
        spec: horizon, sequence length and width.
        seed: seeds the sampling and the network's initialisation (the global torch RNG is
            left as it was).
        exclude: decision bars ``[a, b)`` left out of the fit (a cross-fit's held-out block
            with its purge, :func:`fit_fold_predictor`).

    Returns:
        The fitted predictor; ``report`` holds ``train_samples``, ``validation_samples``,
        ``validation_accuracy`` and ``validation_up_rate`` (the accuracy of always
        predicting the majority class is ``max(rate, 1 - rate)``). The validation bars are
        the last 20% of the eligible bars, ``horizon`` bars after the last fitted one, so
        no fitted label overlaps them.

    Raises:
        ValueError: the slice has too few bars for one training and one validation sample.
    """
    first = max(int(start), spec.sequence_bars - 1)
    last = int(stop) - 1 - spec.horizon  # label close[t + h] with t + h <= stop - 1
    bars = np.arange(first, last + 1)
    if exclude is not None:
        bars = bars[(bars < exclude[0]) | (bars >= exclude[1])]
    n_val = int(len(bars) * VALIDATION_FRACTION)
    if len(bars) - n_val - spec.horizon < 2 or n_val < 1:
        raise ValueError(
            f"training slice [{start}, {stop}) is too short for a predictor of horizon {spec.horizon} "
            f"reading {spec.sequence_bars} bars"
        )
    n_assets = close.shape[1]
    labels = (close[bars + spec.horizon] > close[bars]).astype(np.float32)  # (n_bars, A)
    rng = np.random.default_rng(seed)
    # the purge: the last fitted label (t + h) ends before the first validation bar
    fit_bars = np.arange(len(bars) - n_val - spec.horizon)
    val_bars = np.arange(len(bars) - n_val, len(bars))
    pairs = np.stack(np.meshgrid(fit_bars, np.arange(n_assets), indexing="ij"), -1).reshape(-1, 2)
    if len(pairs) > MAX_SAMPLES:
        pairs = pairs[rng.choice(len(pairs), MAX_SAMPLES, replace=False)]
    x = torch.from_numpy(_sequences(features, bars[pairs[:, 0]], pairs[:, 1], spec.sequence_bars))
    y = torch.from_numpy(labels[pairs[:, 0], pairs[:, 1]])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0 if seed is None else int(seed))
        model = GRUPredictor(features.shape[2], spec.hidden)
        optimiser = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        loss_fn = nn.BCEWithLogitsLoss()
        model.train()
        steps = 0
        while steps < STEPS:  # epochs of shuffled minibatches
            order = torch.from_numpy(rng.permutation(len(x)))
            for i in range(0, len(x), BATCH):
                batch = order[i : i + BATCH]
                optimiser.zero_grad()
                loss_fn(model(x[batch]), y[batch]).backward()
                optimiser.step()
                steps += 1
                if steps == STEPS:
                    break
    model.eval()
    vb = np.repeat(val_bars, n_assets)
    va = np.tile(np.arange(n_assets), len(val_bars))
    with torch.no_grad():
        logits = model(torch.from_numpy(_sequences(features, bars[vb], va, spec.sequence_bars)))
    truth = labels[vb, va]
    report = {
        "train_samples": float(len(x)),
        "validation_samples": float(len(truth)),
        "validation_accuracy": float(((logits.numpy() > 0) == (truth > 0.5)).mean()),
        "validation_up_rate": float(truth.mean()),
    }
    return FittedPredictor(spec, model, report)


def fit_fold_predictor(
    features: np.ndarray,
    close: np.ndarray,
    start: int,
    stop: int,
    spec: PredictorSpec,
    seed: int | None,
    channel_start: int,
    channel_stop: int,
) -> tuple[FittedPredictor, np.ndarray]:
    """The predictor of one walk-forward fold and the channel its agent trains on.

    The predictor kept (bundle, backtests, trader) is fitted on the whole training slice.
    The agent must not train on that network's in-sample output (it would learn to trust
    memorised labels), so inside ``[start, stop)`` the channel is *cross-fitted*: the slice
    is cut into :data:`CROSS_FIT_BLOCKS` contiguous blocks and each block's channel comes
    from a network fitted on the other blocks, purged of every decision bar whose label
    overlaps the block's labels (``[block start - horizon, block stop + horizon +
    sequence_bars)``); purged k-fold cross-validation, López de Prado (2018), "Advances in
    Financial Machine Learning", ch. 7. Outside the slice (the lookback bars before it, the
    embargo and the test slice) the kept network's output is used: its labels never reach
    those bars' future.

    Args:
        features, close, start, stop, spec, seed: as :func:`fit_predictor`.
        channel_start, channel_stop: the bars whose channel is computed.

    Returns:
        The kept predictor (its ``report`` also holds ``out_of_fold_accuracy`` and
        ``out_of_fold_samples``: the cross-fitted channel's sign against the labels of the
        slice) and the ``(T, n_assets)`` channel (0 outside ``[channel_start, channel_stop)``).

    Raises:
        ValueError: a block leaves too few bars to fit on.
    """
    kept = fit_predictor(features, close, start, stop, spec, seed)
    channel = kept.channel(features, channel_start, channel_stop)
    edges = np.linspace(start, stop, CROSS_FIT_BLOCKS + 1).astype(int)
    base = 0 if seed is None else int(seed)
    for i, (b0, b1) in enumerate(itertools.pairwise(edges)):
        purge = (int(b0) - spec.horizon, int(b1) + spec.horizon + spec.sequence_bars)
        part = fit_predictor(features, close, start, stop, spec, base + 1 + i, exclude=purge)
        lo, hi = max(int(b0), channel_start), min(int(b1), channel_stop)
        if lo < hi:
            channel[lo:hi] = part.channel(features, lo, hi)[lo:hi]
    bars = np.arange(
        max(start, spec.sequence_bars - 1, channel_start), min(stop - spec.horizon, channel_stop)
    )
    up = close[bars + spec.horizon] > close[bars]
    kept.report["out_of_fold_samples"] = float(up.size)
    kept.report["out_of_fold_accuracy"] = float(((channel[bars] > 0) == up).mean()) if up.size else 0.0
    return kept, channel


@torch.no_grad()
def predictor_channel(
    model: GRUPredictor, features: np.ndarray, sequence_bars: int, start: int = 0, stop: int | None = None
) -> np.ndarray:
    """The predictor channel ``2 p - 1`` of every asset at bars ``[start, stop)``.

    Args:
        model: the fitted network.
        features: ``(T, n_assets, n_features)`` normalised features (float32).
        sequence_bars: bars the network reads.
        start, stop: the bars to compute (default all); other bars, and bars with fewer
            than ``sequence_bars`` bars of history, are 0.

    Returns:
        ``(T, n_assets)`` float32 in [-1, 1].
    """
    T, n_assets = features.shape[:2]
    out = np.zeros((T, n_assets), dtype=np.float32)
    first = max(int(start), sequence_bars - 1)
    stop = T if stop is None else min(int(stop), T)
    if first >= stop:
        return out
    span = features[first - sequence_bars + 1 : stop]
    windows = np.lib.stride_tricks.sliding_window_view(span, sequence_bars, 0)
    # (bars, A, F, S) -> (bars * A, S, F)
    seqs = np.ascontiguousarray(windows.transpose(0, 1, 3, 2), dtype=np.float32).reshape(
        -1, sequence_bars, features.shape[2]
    )
    probs = np.empty(len(seqs), dtype=np.float32)
    for i in range(0, len(seqs), _CHUNK):
        probs[i : i + _CHUNK] = torch.sigmoid(model(torch.from_numpy(seqs[i : i + _CHUNK]))).numpy()
    out[first:stop] = (2.0 * probs - 1.0).reshape(stop - first, n_assets)
    return out


def load_predictor(spec: PredictorSpec, n_features: int, state: dict[str, torch.Tensor]) -> GRUPredictor:
    """The network of a bundle from its ``actor.pth`` tensors (keys under :data:`STATE_PREFIX`).

    Raises:
        RuntimeError: missing or mismatched tensors (``load_state_dict``).
    """
    model = GRUPredictor(n_features, spec.hidden)
    own = {k[len(STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
    model.load_state_dict(own)
    model.eval()
    return model


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``actor.pth`` tensors -> (the actor's, the predictor's)."""
    actor = {k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)}
    return actor, {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}


def with_channel(features: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """``(T, A, F)`` features and a ``(T, A)`` channel -> ``(T, A, F + 1)`` float32."""
    return np.concatenate([features, channel[:, :, None]], axis=2).astype(np.float32, copy=False)

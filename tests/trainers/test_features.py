"""Causality, finiteness and normalisation of the feature pipeline (trainers.features)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainers.data import Panel
from trainers.features import (
    FEATURE_NAMES,
    HISTORY_BARS,
    N_FEATURES,
    NORM_CLIP,
    WARMUP_BARS,
    NormStats,
    compute_features,
)


def synthetic_prices(n_bars: int, n_assets: int = 2, seed: int = 0) -> np.ndarray:
    """A random-walk OHLCV panel ``(n_bars, n_assets, 5)`` with consistent high/low."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_bars, n_assets)), axis=0))
    opn = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0, 0.002, (n_bars, n_assets)))
    high = np.maximum(opn, close) * (1 + rng.uniform(0, 0.01, (n_bars, n_assets)))
    low = np.minimum(opn, close) * (1 - rng.uniform(0, 0.01, (n_bars, n_assets)))
    volume = rng.lognormal(3, 1, (n_bars, n_assets))
    return np.stack([opn, high, low, close, volume], axis=2)


def perturb_after(prices: np.ndarray, t: int, seed: int) -> np.ndarray:
    """Copy of ``prices`` with every field of bars ``> t`` changed (still valid OHLCV)."""
    out = prices.copy()
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 0.2, out[t + 1 :].shape[:2]))
    out[t + 1 :, :, :4] *= scale[:, :, None]
    out[t + 1 :, :, 1] *= 1.05  # widen the range of later bars
    out[t + 1 :, :, 4] = rng.lognormal(6, 2, out[t + 1 :, :, 4].shape)
    return out


def test_shape_and_names() -> None:
    feats = compute_features(synthetic_prices(100, 3))
    assert feats.shape == (100, 3, N_FEATURES)
    assert feats.dtype == np.float64
    assert len(FEATURE_NAMES) == N_FEATURES == 12
    with pytest.raises(ValueError, match="shape"):
        compute_features(np.ones((10, 3, 4)))


@pytest.mark.parametrize("t", [0, 1, 2, 13, 25, WARMUP_BARS - 1, WARMUP_BARS, 150, 298])
def test_features_are_causal(t: int) -> None:
    prices = synthetic_prices(300, 2, seed=1)
    base = compute_features(prices)
    for seed in range(3):
        changed = compute_features(perturb_after(prices, t, seed))
        np.testing.assert_array_equal(changed[: t + 1], base[: t + 1])
        if t + 1 < len(prices):
            assert not np.array_equal(changed[t + 1], base[t + 1])  # the perturbation is seen


def test_single_bar_change_does_not_leak_backwards() -> None:
    prices = synthetic_prices(200, 2, seed=2)
    base = compute_features(prices)
    for t in (5, 40, 120):
        bumped = prices.copy()
        bumped[t + 1, 0, 3] *= 1.003  # the close of the next bar only
        bumped[t + 1, 1, 4] *= 10.0  # volume of the next bar
        feats = compute_features(bumped)
        np.testing.assert_array_equal(feats[: t + 1], base[: t + 1])
        assert not np.array_equal(feats[t + 1], base[t + 1])


def test_features_on_a_prefix_equal_features_on_the_whole() -> None:
    prices = synthetic_prices(400, 3, seed=3)
    whole = compute_features(prices)
    for t in (10, 64, 399):
        np.testing.assert_allclose(compute_features(prices[: t + 1]), whole[: t + 1], rtol=0, atol=1e-12)


def test_history_bars_reproduce_training_values(panel: Panel) -> None:
    """A consumer that computes features over the last HISTORY_BARS bars gets the training values."""
    prices = panel.prices[:3000]
    whole = compute_features(prices)
    tail = compute_features(prices[-HISTORY_BARS:])
    np.testing.assert_allclose(tail[-1], whole[-1], rtol=1e-9, atol=1e-9)


def test_features_finite_after_warmup(panel: Panel) -> None:
    feats = compute_features(panel.prices)
    assert np.isfinite(feats[WARMUP_BARS:]).all()
    assert np.isfinite(feats).all()  # the warm-up bars are zero-filled, never NaN
    rsi = feats[:, :, FEATURE_NAMES.index("rsi_14")]
    adx = feats[:, :, FEATURE_NAMES.index("adx_14")]
    assert rsi.min() >= 0.0 and rsi.max() <= 1.0
    assert adx.min() >= 0.0 and adx.max() <= 1.0


def test_features_finite_on_flat_prices_and_zero_volume() -> None:
    prices = np.ones((120, 2, 5))
    prices[:, :, 4] = 0.0
    feats = compute_features(prices)
    assert np.isfinite(feats).all()


def test_norm_stats_fitted_on_the_training_slice_only() -> None:
    feats = compute_features(synthetic_prices(500, 2, seed=4))
    train = slice(WARMUP_BARS, 300)
    stats = NormStats.fit(feats[train])
    assert stats.mean.shape == stats.std.shape == (2, N_FEATURES)
    np.testing.assert_allclose(stats.mean, feats[train].mean(axis=0))
    changed = feats.copy()
    changed[300:] = 1e6  # values outside the slice
    changed[:WARMUP_BARS] = -1e6
    other = NormStats.fit(changed[train])
    np.testing.assert_array_equal(other.mean, stats.mean)
    np.testing.assert_array_equal(other.std, stats.std)
    z = stats.apply(feats[train])
    assert z.dtype == np.float32
    inner = np.abs(z) < NORM_CLIP
    # a z-score of the training slice has mean ~0 (clipping aside)
    assert np.abs(np.where(inner, z, 0).mean(axis=0)).max() < 0.5
    assert np.abs(stats.apply(changed[300:])).max() == NORM_CLIP


def test_norm_stats_constant_feature_gets_unit_std() -> None:
    feats = np.zeros((10, 1, N_FEATURES))
    stats = NormStats.fit(feats)
    assert (stats.std == 1.0).all()
    with pytest.raises(ValueError, match="at least 2 bars"):
        NormStats.fit(feats[:1])


def test_norm_stats_json_round_trip() -> None:
    feats = compute_features(synthetic_prices(200, 3, seed=5))
    stats = NormStats.fit(feats[WARMUP_BARS:])
    text = json.dumps(stats.to_json())
    back = NormStats.from_json(json.loads(text))
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)
    np.testing.assert_array_equal(back.apply(feats), stats.apply(feats))


@pytest.mark.parametrize(
    ("mean", "std", "problem"),
    [
        ([[0.0, 1.0]], [[1.0, float("nan")]], "NaN"),
        ([[0.0, 1.0]], [[1.0, 0.0]], "non-positive"),
        ([[0.0, 1.0]], [[1.0, -2.0]], "non-positive"),
        ([[float("nan"), 1.0]], [[1.0, 1.0]], "NaN"),
        ([[0.0, float("inf")]], [[1.0, 1.0]], "inf"),
        ([[0.0, 1.0]], [[1.0]], "differ"),
        ([0.0, 1.0], [1.0, 1.0], "differ"),
    ],
)
def test_norm_stats_from_json_rejects_bad_values(mean: list, std: list, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        NormStats.from_json({"mean": mean, "std": std})

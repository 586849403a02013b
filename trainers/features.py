"""Causal per-asset technical features and their normalisation.

Every feature at bar ``t`` uses bars ``<= t`` only. Exponential smoothings start at the
first bar given; after :data:`HISTORY_BARS` bars their dependence on the starting point
is below 1e-15, so a consumer (the paper trader) that feeds the last ``HISTORY_BARS`` bars
gets the same values as training, which computed them over the whole panel.

Formulas:
    * log returns ``ln(close_t / close_{t-h})`` for h in :data:`RETURN_HORIZONS`.
    * MACD(12, 26, 9): Appel (1979); line = EMA12(close) - EMA26(close), signal = EMA9(line),
      histogram = line - signal; all divided by close to be scale free.
    * RSI(14): Wilder (1978), "New Concepts in Technical Trading Systems"; Wilder smoothing
      (EMA with alpha = 1/14) of gains and losses; scaled to [0, 1].
    * CCI(14): Lambert (1980); (TP - SMA14(TP)) / (0.015 * mean absolute deviation),
      TP = (high + low + close) / 3.
    * DX(14), ADX(14): Wilder (1978); directional movement over the true range, both
      Wilder-smoothed; scaled to [0, 1].
    * ATR-normalised range: (high - low) / ATR14 (Wilder-smoothed true range).
    * volume z-score: z-score of ln(1 + volume) over a rolling 48-bar window.

Every window here is a number of bars, whatever the bar interval: the indicators are
defined on bars (RSI(14) is 14 bars of hourly, 15-minute or daily data alike), so the
feature warm-up :data:`WARMUP_BARS` is a bar count too, not a number of days. It is the
longest window a feature needs (MACD's 26 + 9 bars, the 48-bar volume z-score, with
margin); converting it from days would make daily data wait months, or intraday data
lose windows, for no change in what the features mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURE_PIPELINE_VERSION = "1"
RETURN_HORIZONS = (1, 4, 24)
FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_return_{h}" for h in RETURN_HORIZONS),
    "macd_line",
    "macd_signal",
    "macd_hist",
    "rsi_14",
    "cci_14",
    "dx_14",
    "adx_14",
    "atr_range_14",
    "volume_z_48",
)
N_FEATURES = len(FEATURE_NAMES)
WARMUP_BARS = 64  # bars (any interval): first bar whose features all rest on full windows
HISTORY_BARS = 512  # bars a consumer feeds so exponential smoothings match training
NORM_CLIP = 5.0
_EPS = 1e-12


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """EMA along axis 0 of ``(T, n)``, seeded with the first value (pandas ``adjust=False``)."""
    return pd.DataFrame(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()


def _span(n: int) -> float:
    return 2.0 / (n + 1.0)


def _rolling(x: np.ndarray, window: int) -> pd.core.window.rolling.Rolling:
    return pd.DataFrame(x).rolling(window, min_periods=window)


def compute_features(prices: np.ndarray) -> np.ndarray:
    """Features of every asset at every bar.

    Args:
        prices: ``(T, n_assets, 5)`` OHLCV (see :data:`trainers.data.FIELDS`).

    Returns:
        ``(T, n_assets, N_FEATURES)`` float64 in :data:`FEATURE_NAMES` order, not yet
        normalised. Values that need more history than is available (the first bars) are 0.
    """
    if prices.ndim != 3 or prices.shape[2] != 5:
        raise ValueError(f"prices must have shape (T, n_assets, 5), got {prices.shape}")
    o, h, low, c, v = (prices[:, :, k] for k in range(5))
    del o
    T, n = c.shape
    out = np.zeros((T, n, N_FEATURES), dtype=np.float64)
    logc = np.log(c)
    k = 0
    for hz in RETURN_HORIZONS:
        if hz < T:
            out[hz:, :, k] = logc[hz:] - logc[:-hz]
        k += 1

    line = _ema(c, _span(12)) - _ema(c, _span(26))
    signal = _ema(line, _span(9))
    out[:, :, k] = line / c
    out[:, :, k + 1] = signal / c
    out[:, :, k + 2] = (line - signal) / c
    k += 3

    wilder = 1.0 / 14.0
    delta = np.diff(c, axis=0, prepend=c[:1])
    gain = _ema(np.clip(delta, 0.0, None), wilder)
    loss = _ema(np.clip(-delta, 0.0, None), wilder)
    out[:, :, k] = gain / (gain + loss + _EPS)  # = RSI / 100
    k += 1

    tp = (h + low + c) / 3.0
    sma = _rolling(tp, 14).mean().to_numpy()
    if T >= 14:
        windows = np.lib.stride_tricks.sliding_window_view(tp, 14, axis=0)  # (T-13, n, 14)
        mad = np.full_like(tp, np.nan)
        mad[13:] = np.abs(windows - windows.mean(axis=2, keepdims=True)).mean(axis=2)
        out[:, :, k] = np.nan_to_num((tp - sma) / (0.015 * mad + _EPS))
    k += 1

    prev_c = np.vstack([c[:1], c[:-1]])
    prev_h = np.vstack([h[:1], h[:-1]])
    prev_l = np.vstack([low[:1], low[:-1]])
    tr = np.maximum.reduce([h - low, np.abs(h - prev_c), np.abs(low - prev_c)])
    up, down = h - prev_h, prev_l - low
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    atr = _ema(tr, wilder)
    plus_di = _ema(plus_dm, wilder) / (atr + _EPS)
    minus_di = _ema(minus_dm, wilder) / (atr + _EPS)
    dx = np.abs(plus_di - minus_di) / (plus_di + minus_di + _EPS)
    out[:, :, k] = dx
    out[:, :, k + 1] = _ema(dx, wilder)
    out[:, :, k + 2] = (h - low) / (atr + _EPS * c)
    k += 3

    lv = np.log1p(v)
    roll = _rolling(lv, 48)
    z = (lv - roll.mean().to_numpy()) / (roll.std(ddof=0).to_numpy() + 1e-6)
    out[:, :, k] = np.nan_to_num(z)
    out[:WARMUP_BARS] = np.where(np.isfinite(out[:WARMUP_BARS]), out[:WARMUP_BARS], 0.0)
    return out


@dataclass(frozen=True)
class NormStats:
    """Per-asset, per-feature z-score statistics fitted on a training slice.

    ``mean`` and ``std`` have shape ``(n_assets, N_FEATURES)``.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> NormStats:
        """Fit on ``(T, n_assets, N_FEATURES)`` training-slice features."""
        if len(features) < 2:
            raise ValueError("need at least 2 bars to fit normalisation statistics")
        mean = features.mean(axis=0)
        std = features.std(axis=0)
        return cls(mean, np.where(std > 1e-8, std, 1.0))

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``(..., n_assets, N_FEATURES)`` -> z-scores clipped to ±NORM_CLIP, float32."""
        z = (features - self.mean) / self.std
        return np.clip(z, -NORM_CLIP, NORM_CLIP).astype(np.float32)

    def to_json(self) -> dict[str, list[list[float]]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list[list[float]]]) -> NormStats:
        mean = np.asarray(data["mean"], dtype=np.float64)
        std = np.asarray(data["std"], dtype=np.float64)
        if mean.shape != std.shape or mean.ndim != 2:
            raise ValueError(f"normalisation mean {mean.shape} and std {std.shape} differ")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("normalisation statistics contain NaN, inf or non-positive std")
        return cls(mean, std)

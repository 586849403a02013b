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

The ``long`` feature set (:data:`FEATURE_SETS`) appends features that look back weeks, not
hours, so that an agent deciding every 24 bars over 60-day folds can see the trend the 50-day
trend filter reads:
    * log returns ``ln(close_t / close_{t-h})`` for h in :data:`LONG_RETURN_HORIZONS` (168
      and 720 bars: a week and 30 days of hourly bars), time-series momentum: Moskowitz, Ooi
      & Pedersen (2012), "Time series momentum", J. Financial Economics 104(2).
    * SMA gap ``ln(close_t / SMA1200(close)_t)``, the 50-day moving-average trend signal of
      hourly bars: Faber (2007), "A Quantitative Approach to Tactical Asset Allocation",
      J. Wealth Management 9(4) (:class:`trainers.baselines.TrendFilter` trades its sign).
    * realised volatility: the standard deviation (ddof 0) of 1-bar log returns over the
      last 168 bars, the input of volatility-managed portfolios: Moreira & Muir (2017),
      "Volatility-Managed Portfolios", J. Finance 72(4).

Feature sets are nested: each one's names are a prefix of :data:`ALL_FEATURE_NAMES`, so a
model reads the first ``len(feature_names)`` columns of any raw-feature array that has at
least that many (:func:`feature_columns`).

Every window here is a number of bars, whatever the bar interval: the indicators are
defined on bars (RSI(14) is 14 bars of hourly, 15-minute or daily data alike), so the
feature warm-up :data:`WARMUP_BARS` is a bar count too, not a number of days. It is the
longest window a feature needs (MACD's 26 + 9 bars, the 48-bar volume z-score, with
margin; :data:`LONG_WARMUP_BARS` adds the long set's 1,200-bar SMA); converting it from
days would make daily data wait months, or intraday data lose windows, for no change in what
the features mean.
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
LONG_RETURN_HORIZONS = (168, 720)
SMA_GAP_BARS = 1200
REALISED_VOL_BARS = 168
LONG_FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_return_{h}" for h in LONG_RETURN_HORIZONS),
    f"sma_gap_{SMA_GAP_BARS}",
    f"realised_vol_{REALISED_VOL_BARS}",
)
ALL_FEATURE_NAMES: tuple[str, ...] = (*FEATURE_NAMES, *LONG_FEATURE_NAMES)
FEATURE_SETS: dict[str, tuple[str, ...]] = {"base": FEATURE_NAMES, "long": ALL_FEATURE_NAMES}
"""The feature sets a study can observe (``[training] feature_set``); ``base`` is the default."""
DEFAULT_FEATURE_SET = "base"
WARMUP_BARS = 64  # bars (any interval): first bar whose base features all rest on full windows
HISTORY_BARS = 512  # bars a consumer feeds so exponential smoothings match training
LONG_WARMUP_BARS = SMA_GAP_BARS + WARMUP_BARS  # the same for the long set (its longest window)
LONG_HISTORY_BARS = SMA_GAP_BARS + HISTORY_BARS
NORM_CLIP = 5.0
_EPS = 1e-12


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """EMA along axis 0 of ``(T, n)``, seeded with the first value (pandas ``adjust=False``)."""
    return pd.DataFrame(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()


def _span(n: int) -> float:
    return 2.0 / (n + 1.0)


def _rolling(x: np.ndarray, window: int) -> pd.core.window.rolling.Rolling:
    return pd.DataFrame(x).rolling(window, min_periods=window)


def feature_set_names(feature_set: str) -> tuple[str, ...]:
    """The feature names of a set of :data:`FEATURE_SETS`.

    Raises:
        ValueError: an unknown set (the message names the known ones).
    """
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set: {feature_set!r} is not one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[feature_set]


def feature_columns(names: tuple[str, ...] | list[str]) -> int:
    """How many leading columns of :data:`ALL_FEATURE_NAMES` ``names`` are.

    Raises:
        ValueError: ``names`` is empty or not a prefix of :data:`ALL_FEATURE_NAMES` (the
            message names the first feature that differs).
    """
    names = tuple(names)
    for i, name in enumerate(names):
        if i >= len(ALL_FEATURE_NAMES) or ALL_FEATURE_NAMES[i] != name:
            expected = ALL_FEATURE_NAMES[i] if i < len(ALL_FEATURE_NAMES) else "nothing"
            raise ValueError(f"feature {i} is {name!r}, this pipeline computes {expected!r} there")
    if not names:
        raise ValueError("no feature names")
    return len(names)


def _long_window(names: tuple[str, ...] | list[str]) -> int:
    """Bars the long set's longest window adds to the base set's needs (0 without it)."""
    return SMA_GAP_BARS if feature_columns(names) > N_FEATURES else 0


def warmup_bars(names: tuple[str, ...] | list[str]) -> int:
    """First bar whose features ``names`` all rest on full windows (:data:`WARMUP_BARS` or
    :data:`LONG_WARMUP_BARS`)."""
    return WARMUP_BARS + _long_window(names)


def history_bars(names: tuple[str, ...] | list[str]) -> int:
    """Bars of prices a consumer feeds :func:`compute_features` so that the features
    ``names`` equal training's (:data:`HISTORY_BARS` or :data:`LONG_HISTORY_BARS`)."""
    return HISTORY_BARS + _long_window(names)


def compute_features(prices: np.ndarray, names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
    """Features of every asset at every bar.

    Args:
        prices: ``(T, n_assets, 5)`` OHLCV (see :data:`trainers.data.FIELDS`).
        names: the features wanted, a prefix of :data:`ALL_FEATURE_NAMES` (a set of
            :data:`FEATURE_SETS`; default the base set).

    Returns:
        ``(T, n_assets, len(names))`` float64 in ``names`` order, not yet normalised. Values
        that need more history than is available (the first bars) are 0.

    Raises:
        ValueError: ``prices`` not ``(T, n_assets, 5)``; ``names`` not a prefix of
            :data:`ALL_FEATURE_NAMES`.
    """
    if prices.ndim != 3 or prices.shape[2] != 5:
        raise ValueError(f"prices must have shape (T, n_assets, 5), got {prices.shape}")
    columns = feature_columns(names)
    base = _base_features(prices)
    if columns <= N_FEATURES:
        return base[:, :, :columns]
    return np.concatenate([base, _long_features(prices[:, :, 3])], axis=2)[:, :, :columns]


def _long_features(close: np.ndarray) -> np.ndarray:
    """:data:`LONG_FEATURE_NAMES` of ``(T, n_assets)`` closes -> ``(T, n_assets, 4)``."""
    T, n = close.shape
    out = np.zeros((T, n, len(LONG_FEATURE_NAMES)), dtype=np.float64)
    logc = np.log(close)
    for k, hz in enumerate(LONG_RETURN_HORIZONS):
        if hz < T:
            out[hz:, :, k] = logc[hz:] - logc[:-hz]
    k = len(LONG_RETURN_HORIZONS)
    sma = _rolling(close, SMA_GAP_BARS).mean().to_numpy()
    out[:, :, k] = np.nan_to_num(np.log(close / sma))
    step = np.diff(logc, axis=0, prepend=logc[:1])
    vol = _rolling(step, REALISED_VOL_BARS).std(ddof=0).to_numpy()
    out[:, :, k + 1] = np.nan_to_num(vol)
    return out


def _base_features(prices: np.ndarray) -> np.ndarray:
    """:data:`FEATURE_NAMES` of ``(T, n_assets, 5)`` OHLCV -> ``(T, n_assets, N_FEATURES)``."""
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

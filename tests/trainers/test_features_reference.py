"""The technical features (trainers.features) against TA-Lib, the reference implementation
of these indicators (https://ta-lib.org, Python wrapper ``ta-lib``, dev extra), on the real
bars of the embedded dataset.

Definitions, and where the two differ:

* MACD(12, 26, 9), Appel: TA-Lib ``MACD`` seeds each EMA with the simple mean of its first
  ``n`` values; trainers.features seeds with the first value (pandas ``ewm(adjust=False)``).
  Both are EMAs with ``alpha = 2 / (n + 1)``, so the seeds' effect decays as
  ``(1 - alpha)^t``; compared after :data:`HISTORY_BARS` bars (below 1e-15). Ours is
  divided by the close (scale free), so TA-Lib's values are divided by the close too.
* RSI(14), Wilder: both use Wilder smoothing (EMA with ``alpha = 1/14``) of gains and
  losses; TA-Lib seeds it with the mean of the first 14 changes, ours with the first
  (zero) change: compared after the warm-up. Ours is RSI / 100.
* CCI(14), Lambert: ``(TP - SMA14(TP)) / (0.015 * mean absolute deviation)``; no smoothing,
  so it must agree from the first full window (bar 13) on. Ours adds 1e-12 to the
  denominator (no division by zero on flat bars), below the tolerance.
* DX(14), ADX(14), Wilder: TA-Lib smooths +DM, -DM and TR with Wilder's running sums
  (``S_t = S_{t-1} - S_{t-1}/14 + x_t``), ours with the Wilder EMA; the sums are 14 times
  the EMAs, so the DI ratios are the same once the seeds have decayed. ADX = Wilder
  smoothing of DX (TA-Lib seeds with the mean of the first 14 DX). Ours are DX / 100 and
  ADX / 100.
* ATR range: ``(high - low) / ATR14``, ATR = Wilder smoothing of the true range
  (TA-Lib ``ATR``); ours adds ``1e-12 * close`` to the ATR.
* volume z-score: ``(x - SMA48(x)) / (STDDEV48(x) + 1e-6)`` of ``x = ln(1 + volume)``, with
  TA-Lib's ``SMA`` and ``STDDEV`` (population standard deviation); the ``1e-6`` is ours (a
  floor for flat volume) and is added to the reference as well. No smoothing: it must agree
  from the first full window (bar 47) on.
"""

from __future__ import annotations

import numpy as np
import pytest
import talib

from trainers.data import Panel
from trainers.features import FEATURE_NAMES, HISTORY_BARS, compute_features

# Relative tolerance of every comparison; the absolute one is per feature (values near 0).
RTOL = 1e-6
ATOL = {"cci_14": 1e-6}  # CCI runs to about 470; flat windows make tiny denominators
DEFAULT_ATOL = 1e-9


@pytest.fixture(scope="module")
def computed(panel: Panel) -> np.ndarray:
    return compute_features(panel.prices)


def reference(panel: Panel, j: int) -> dict[str, tuple[np.ndarray, int]]:
    """TA-Lib's value of each feature for asset ``j``, in our scaling, with the first bar
    from which the two definitions must agree."""
    o, h, low, c, v = (np.ascontiguousarray(panel.prices[:, j, k], dtype=np.float64) for k in range(5))
    del o
    line, signal, hist = talib.MACD(c, fastperiod=12, slowperiod=26, signalperiod=9)
    lv = np.log1p(v)
    z = (lv - talib.SMA(lv, timeperiod=48)) / (talib.STDDEV(lv, timeperiod=48, nbdev=1) + 1e-6)
    return {
        "macd_line": (line / c, HISTORY_BARS),
        "macd_signal": (signal / c, HISTORY_BARS),
        "macd_hist": (hist / c, HISTORY_BARS),
        "rsi_14": (talib.RSI(c, timeperiod=14) / 100.0, HISTORY_BARS),
        "cci_14": (talib.CCI(h, low, c, timeperiod=14), 13),
        "dx_14": (talib.DX(h, low, c, timeperiod=14) / 100.0, HISTORY_BARS),
        "adx_14": (talib.ADX(h, low, c, timeperiod=14) / 100.0, HISTORY_BARS),
        "atr_range_14": ((h - low) / talib.ATR(h, low, c, timeperiod=14), HISTORY_BARS),
        "volume_z_48": (z, 47),
    }


@pytest.mark.parametrize(
    "name",
    [
        "macd_line",
        "macd_signal",
        "macd_hist",
        "rsi_14",
        "cci_14",
        "dx_14",
        "adx_14",
        "atr_range_14",
        "volume_z_48",
    ],
)
def test_feature_equals_talib_on_the_embedded_bars(name: str, panel: Panel, computed: np.ndarray) -> None:
    assert len(panel) > 10 * HISTORY_BARS  # thousands of real bars after the warm-up
    k = FEATURE_NAMES.index(name)
    for j, symbol in enumerate(panel.symbols):
        ref, start = reference(panel, j)[name]
        assert np.isfinite(ref[start:]).all(), (symbol, name)
        got = computed[start:, j, k]
        assert np.std(got) > 0, (symbol, name)  # a feature that varies: the comparison means something
        np.testing.assert_allclose(
            got, ref[start:], rtol=RTOL, atol=ATOL.get(name, DEFAULT_ATOL), err_msg=f"{symbol} {name}"
        )


def test_log_returns_equal_differences_of_log_closes(panel: Panel, computed: np.ndarray) -> None:
    """``log_return_h`` = ln(close_t / close_{t-h}), from bar ``h`` on (no library needed)."""
    close = panel.prices[:, :, 3]
    for h in (1, 4, 24):
        k = FEATURE_NAMES.index(f"log_return_{h}")
        np.testing.assert_allclose(computed[h:, :, k], np.log(close[h:] / close[:-h]), rtol=1e-12, atol=1e-15)

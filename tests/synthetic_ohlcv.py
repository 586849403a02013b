"""Synthetic OHLCV files for the timeframe tests: a seeded geometric random walk with valid
bars (low <= open, close <= high; positive prices and volume) at any list of bar times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pandas.tseries.holiday import USFederalHolidayCalendar


def write_random_walk(
    path: Path, times: pd.DatetimeIndex, seed: int, start: float = 100.0, vol: float = 0.01
) -> Path:
    """Write ``path`` (``.csv``) with one bar per time in ``times`` (UTC): closes follow a
    random walk with per-bar log-return std ``vol``; each open is the previous close moved
    by a small jump. Returns ``path``."""
    rng = np.random.default_rng(seed)
    n = len(times)
    close = start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    prev = np.r_[start, close[:-1]]
    opn = prev * np.exp(rng.normal(0.0, vol / 4, n))
    high = np.maximum(opn, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(opn, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    frame = pd.DataFrame(
        {
            "timestamp": times.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "open": opn,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.lognormal(10.0, 1.0, n),
        }
    )
    frame.to_csv(path, index=False)
    return path


def weekdays(start: str, end: str, holidays: bool = False) -> pd.DatetimeIndex:
    """Daily bars (00:00 UTC) on Monday to Friday from ``start`` to ``end``; with
    ``holidays`` the US federal holidays are left out too (about 251 bars a year)."""
    days = pd.bdate_range(start, end, tz="UTC")
    if holidays:
        off = USFederalHolidayCalendar().holidays(start, end).tz_localize("UTC")
        days = days[~days.isin(off)]
    return days


def every(start: str, days: float, freq: str) -> pd.DatetimeIndex:
    """Bars of ``freq`` (e.g. ``15min``, ``1h``) around the clock for ``days`` days."""
    first = pd.Timestamp(start, tz="UTC")
    return pd.date_range(first, first + pd.Timedelta(days=days), freq=freq, inclusive="left")

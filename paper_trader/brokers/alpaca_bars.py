"""Closed hourly bars from Alpaca, checked and aligned exactly as :mod:`trainers.data`.

A bar starting at ``t`` covers ``[t, t + 1 h)``. :func:`closed_bar_range` picks the bars that
have closed; :func:`bars_per_symbol` turns alpaca-py's bars into validated arrays;
:func:`align` aligns them with :func:`trainers.data.load_panel` itself.
"""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainers.data import BAR_SECONDS, FIELDS, DataError, load_panel

TimeLike = datetime | np.datetime64 | pd.Timestamp | str


def to_utc(when: TimeLike, name: str) -> pd.Timestamp:
    """Any accepted time -> tz-aware UTC timestamp; ``datetime64`` is taken as UTC.

    Raises:
        ValueError: a time without timezone (``name`` says which argument).
    """
    if isinstance(when, np.datetime64):
        return pd.Timestamp(when).tz_localize("UTC")
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise ValueError(f"{name} {when!r} has no timezone; pass a UTC time, e.g. 2024-01-01T00:00Z")
    return ts.tz_convert("UTC")


def closed_bar_range(
    start: TimeLike, end: TimeLike | None, now: datetime | None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Start times ``(first, last)`` (UTC) of the bars with ``t >= start`` that closed by both
    ``end`` and ``now`` (``t + 1 h <= min(end, now)``); ``last < first`` when there is none.

    Args:
        start: earliest bar start.
        end: cut-off time, None = ``now``.
        now: the current time, None = the clock.

    Raises:
        ValueError: a time without timezone.
    """
    first = to_utc(start, "start").ceil("h")
    cutoff = to_utc(pd.Timestamp.now(tz="UTC") if now is None else now, "now")
    if end is not None:
        cutoff = min(cutoff, to_utc(end, "end"))
    return first, cutoff.floor("h") - pd.Timedelta(seconds=BAR_SECONDS)


def no_bars(n_assets: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty ``(timestamps (0,) datetime64[s], prices (0, n_assets, 5))``."""
    return np.empty(0, dtype="datetime64[s]"), np.empty((0, n_assets, len(FIELDS)))


def bars_per_symbol(
    data: dict[str, list[Any]], names: list[str], pairs: list[str], first: pd.Timestamp, last: pd.Timestamp
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """alpaca-py's bars (``BarSet.data``: Alpaca pair -> bars) as ``{dataset symbol:
    (timestamps (n,) datetime64[s], ohlcv (n, 5))}`` of the bars starting in ``[first, last]``,
    in the order of ``names`` (``pairs`` are their Alpaca pairs).

    Raises:
        DataError: a bad bar (see :func:`bar_arrays`).
    """
    lo, hi = np.datetime64(first.tz_localize(None), "s"), np.datetime64(last.tz_localize(None), "s")
    return {
        name: bar_arrays(pair, data.get(pair, []), lo, hi) for name, pair in zip(names, pairs, strict=True)
    }


def bar_arrays(
    pair: str, bars: list[Any], lo: np.datetime64, hi: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """alpaca-py bars -> ``(timestamps (n,) datetime64[s], ohlcv (n, 5))`` inside ``[lo, hi]``,
    on the hour, validated (finite, positive prices, low <= open, close <= high, volume >= 0).

    Raises:
        DataError: a non-finite or inconsistent value, or a duplicate time (names pair and time).
    """
    ts, rows = [], []
    for bar in bars:
        t = np.datetime64(bar.timestamp.astimezone(UTC).replace(tzinfo=None), "s")
        if t < lo or t > hi or t.astype(np.int64) % BAR_SECONDS:
            continue
        row = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        where = f"Alpaca {pair} bar {t}Z"
        if not all(math.isfinite(v) for v in row):
            raise DataError(f"{where}: non-finite value in open/high/low/close/volume {row}")
        o, h, low, c, v = row
        if min(o, h, low, c) <= 0 or v < 0:
            raise DataError(f"{where}: prices must be > 0 and volume >= 0, got {row}")
        tol = 1e-9 * h
        if h < low or not (low - tol <= o <= h + tol and low - tol <= c <= h + tol):
            raise DataError(f"{where}: open/close outside [low, high] or high < low: {row}")
        ts.append(t)
        rows.append(row)
    order = np.argsort(np.array(ts, dtype="datetime64[s]"), kind="stable")
    t_arr = np.array(ts, dtype="datetime64[s]")[order]
    if len(t_arr) > 1 and (np.diff(t_arr.astype(np.int64)) == 0).any():
        raise DataError(f"Alpaca {pair}: duplicate bar timestamps")
    return t_arr, np.array(rows, dtype=np.float64).reshape(-1, len(FIELDS))[order]


def align(
    per_symbol: dict[str, tuple[np.ndarray, np.ndarray]], max_fill_bars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Align through :func:`trainers.data.load_panel` (the one alignment implementation) by
    writing the bars as a dataset folder. ``float.__repr__`` round-trips every value exactly.

    Returns:
        ``(timestamps (T,) datetime64[s], prices (T, n_assets, 5))``, symbols in the order of
        ``per_symbol``.

    Raises:
        DataError: the bars cannot be aligned (the message names no temporary folder).
    """
    with tempfile.TemporaryDirectory(prefix="alpaca_bars_") as tmp:
        for name, (ts, ohlcv) in per_symbol.items():
            lines = ["timestamp,open,high,low,close,volume"]
            lines += [
                f"{t}Z," + ",".join(repr(float(x)) for x in row) for t, row in zip(ts, ohlcv, strict=True)
            ]
            (Path(tmp) / f"{name}.csv").write_text("\n".join(lines) + "\n")
        try:
            panel = load_panel(tmp, max_fill_bars=max_fill_bars, symbols=list(per_symbol))
        except DataError as exc:
            raise DataError(str(exc).replace(tmp, "alpaca bars")) from None
    return panel.timestamps, panel.prices

"""OHLCV loading, validation and alignment of several symbols on one hourly bar grid.

A dataset is a folder with one file per symbol, ``<SYMBOL>.csv`` or ``<SYMBOL>.csv.gz``
(a trailing ``_1h`` in the file name is dropped from the symbol), with the columns
``timestamp,open,high,low,close,volume`` (further columns are ignored). Timestamps are
ISO 8601 with an explicit UTC offset (``2019-07-01T00:00:00Z``) and mark the start of the
bar. Prices are in the quote currency (USD for the embedded dataset), volume in units of
the asset.

The embedded default dataset (ETH, LTC, XRP hourly bars, 2017-2019, from CoinAPI via
``Chen0092/coinapi-sdk``, MIT) ships in ``trainers/dataset/`` with its attribution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

FIELDS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
BAR_SECONDS = 3600
BARS_PER_YEAR = 24 * 365  # hourly crypto bars trade around the clock: 8,760 bars per year
DEFAULT_MAX_FILL_BARS = 3
DEFAULT_HOLDOUT_CUT = "2019-07-01T00:00:00Z"


class DataError(ValueError):
    """A dataset problem a user can fix; the message names the file, row and problem."""


@dataclass(frozen=True)
class Gap:
    """A run of missing bars of one symbol that was too long to forward-fill."""

    symbol: str
    first_missing: pd.Timestamp
    n_bars: int

    def __str__(self) -> str:
        return f"{self.symbol}: {self.n_bars} missing bars from {self.first_missing.isoformat()}"


@dataclass(frozen=True)
class Panel:
    """Several symbols aligned on one bar grid.

    Attributes:
        symbols: asset symbols in column order, e.g. ``("ETHUSD", "LTCUSD", "XRPUSD")``.
        timestamps: ``(T,)`` ``datetime64[s]`` UTC bar start times, strictly increasing.
        prices: ``(T, n_assets, 5)`` float64, fields in :data:`FIELDS` order
            (open, high, low, close in quote currency; volume in asset units).
        gaps: gaps longer than the fill limit; their bars are dropped from the grid.
        n_filled: number of (bar, symbol) cells that were forward-filled.
    """

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    prices: np.ndarray
    gaps: tuple[Gap, ...] = field(default=())
    n_filled: int = 0

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def field(self, name: str) -> np.ndarray:
        """``(T, n_assets)`` view of one OHLCV field."""
        return self.prices[:, :, FIELDS.index(name)]

    def index_of(self, when: str | pd.Timestamp | np.datetime64) -> int:
        """Index of the first bar at or after ``when`` (``len(self)`` if none)."""
        ts = _as_datetime64(when)
        return int(np.searchsorted(self.timestamps, ts, side="left"))

    def slice(self, start: int, stop: int) -> Panel:
        """Bars ``[start, stop)`` as a new panel (gaps outside the range are dropped)."""
        ts = self.timestamps[start:stop]
        gaps = tuple(g for g in self.gaps if len(ts) and ts[0] <= _as_datetime64(g.first_missing) <= ts[-1])
        return Panel(self.symbols, ts, self.prices[start:stop], gaps, self.n_filled)

    def fingerprint(self, start: int = 0, stop: int | None = None) -> str:
        """sha256 (hex) of exactly the bars ``[start, stop)``: symbols, timestamps and prices."""
        stop = len(self) if stop is None else stop
        h = hashlib.sha256()
        h.update(",".join(self.symbols).encode())
        h.update(np.ascontiguousarray(self.timestamps[start:stop]).astype("<i8").tobytes())
        h.update(np.ascontiguousarray(self.prices[start:stop]).astype("<f8").tobytes())
        return h.hexdigest()


def embedded_dataset_dir() -> Path:
    """Folder of the embedded default dataset (inside the installed ``trainers`` package)."""
    return Path(str(resources.files("trainers") / "dataset"))


def _as_datetime64(when: str | pd.Timestamp | np.datetime64) -> np.datetime64:
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise DataError(f"time {when!r} has no timezone; write it in UTC, e.g. 2019-07-01T00:00Z")
    return np.datetime64(ts.tz_convert("UTC").tz_localize(None).to_datetime64(), "s")


def symbol_from_path(path: Path) -> str:
    """``ETHUSD_1h.csv.gz`` -> ``ETHUSD``."""
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return name.removesuffix("_1h").upper()


def _parse_timestamps(raw: pd.Series, path: Path) -> np.ndarray:
    """ISO 8601 strings with a UTC offset -> ``datetime64[s]``; row numbers are 1-based
    file lines (line 1 is the header)."""
    text = raw.astype(str).str.strip()
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: row {i + 2}: timestamp {text.iloc[i]!r} is not ISO 8601")
    has_zone = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).to_numpy()
    if not has_zone.all():
        i = int(np.argmin(has_zone))
        raise DataError(
            f"{path}: row {i + 2}: timestamp {text.iloc[i]!r} has an unknown timezone; "
            "write UTC times with a 'Z' or '+00:00' suffix"
        )
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[s]")


def load_symbol(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one symbol's CSV/CSV.gz file.

    Returns:
        ``(timestamps (T,) datetime64[s] UTC, ohlcv (T, 5) float64)``.

    Raises:
        DataError: naming the file, the 1-based file line and the problem for: unreadable
            or empty file, missing column, non-numeric or NaN value, non-positive price,
            negative volume, high < low (or open/close outside [low, high]),
            unparseable or timezone-less timestamp, duplicate or decreasing timestamps.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (OSError, UnicodeDecodeError, EOFError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as CSV: {exc}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("timestamp", *FIELDS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header line 1)")
    if frame.empty:
        raise DataError(f"{path}: file is empty (header only, no bars)")

    values = np.empty((len(frame), len(FIELDS)), dtype=np.float64)
    for j, name in enumerate(FIELDS):
        col = pd.to_numeric(frame[name].str.strip(), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}: row {i + 2}: {name} {frame[name].iloc[i]!r} is not a finite number")
        values[:, j] = col

    o, h, low, c, v = values.T
    for name, col in (("open", o), ("high", h), ("low", low), ("close", c)):
        bad = col <= 0
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{path}: row {i + 2}: {name} {col[i]} is not a positive price")
    if (v < 0).any():
        i = int(np.argmax(v < 0))
        raise DataError(f"{path}: row {i + 2}: volume {v[i]} is negative")
    bad = h < low
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: row {i + 2}: high {h[i]} is below low {low[i]}")
    tol = 1e-9 * h
    bad = (o > h + tol) | (o < low - tol) | (c > h + tol) | (c < low - tol)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}: row {i + 2}: open {o[i]} / close {c[i]} outside [low {low[i]}, high {h[i]}]"
        )

    ts = _parse_timestamps(frame["timestamp"], path)
    step = np.diff(ts.astype(np.int64))
    if (step == 0).any():
        i = int(np.argmax(step == 0)) + 1
        raise DataError(f"{path}: row {i + 2}: duplicate timestamp {ts[i]}Z")
    if (step < 0).any():
        i = int(np.argmax(step < 0)) + 1
        raise DataError(
            f"{path}: row {i + 2}: timestamp {ts[i]}Z is earlier than the row before "
            "(timestamps must increase)"
        )
    if (ts.astype(np.int64) % BAR_SECONDS != 0).any():
        i = int(np.argmax(ts.astype(np.int64) % BAR_SECONDS != 0))
        raise DataError(f"{path}: row {i + 2}: timestamp {ts[i]}Z is not on the hour")
    return ts, values


def dataset_symbols(data_dir: str | Path | None = None) -> list[str]:
    """Sorted symbols of a dataset folder (``None``: the embedded dataset), from file names.

    Raises:
        DataError: the folder does not exist or holds no CSV/CSV.gz file.
    """
    return sorted(symbol_from_path(p) for p in _dataset_files(Path(data_dir or embedded_dataset_dir())))


def _dataset_files(data_dir: Path) -> list[Path]:
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder does not exist")
    files = sorted(p for p in data_dir.iterdir() if p.name.endswith(".csv") or p.name.endswith(".csv.gz"))
    if not files:
        raise DataError(f"{data_dir}: no .csv or .csv.gz files (one file per symbol expected)")
    return files


def load_panel(
    data_dir: str | Path | None = None,
    max_fill_bars: int = DEFAULT_MAX_FILL_BARS,
    symbols: list[str] | None = None,
) -> Panel:
    """Load every symbol of a dataset folder and align them on one hourly grid.

    The grid starts at the first bar where every symbol has data and ends at the last bar
    where every symbol has data. A run of up to ``max_fill_bars`` missing bars of a symbol
    is forward-filled (open = high = low = close = previous close, volume = 0); a longer run
    is reported in :attr:`Panel.gaps` and its bars are dropped for all symbols.

    Args:
        data_dir: dataset folder; ``None`` means the embedded dataset.
        max_fill_bars: longest run of missing bars that is forward-filled.
        symbols: load only these symbols (in this order); default all, sorted.

    Raises:
        DataError: a file fails validation (see :func:`load_symbol`), a requested symbol
            is missing, or the symbols do not overlap in time.
    """
    data_dir = embedded_dataset_dir() if data_dir is None else Path(data_dir)
    if max_fill_bars < 0:
        raise DataError(f"max_fill_bars must be >= 0, got {max_fill_bars}")
    files = {symbol_from_path(p): p for p in _dataset_files(data_dir)}
    wanted = sorted(files) if symbols is None else [s.upper() for s in symbols]
    for s in wanted:
        if s not in files:
            raise DataError(f"{data_dir}: no file for symbol {s} (have {', '.join(sorted(files))})")
    loaded = {s: load_symbol(files[s]) for s in wanted}

    start = max(ts[0] for ts, _ in loaded.values())
    stop = min(ts[-1] for ts, _ in loaded.values())
    if start > stop:
        raise DataError(f"{data_dir}: the symbols {', '.join(wanted)} do not overlap in time")
    step = np.timedelta64(BAR_SECONDS, "s")
    grid = np.arange(start, stop + step, step)
    prices = np.empty((len(grid), len(wanted), len(FIELDS)), dtype=np.float64)
    keep = np.ones(len(grid), dtype=bool)
    gaps: list[Gap] = []
    n_filled = 0
    for j, s in enumerate(wanted):
        ts, ohlcv = loaded[s]
        # a symbol missing at the grid start is filled from its last bar before the start
        n_before = int(np.searchsorted(ts, start, side="left"))
        seed_close = ohlcv[n_before - 1, 3] if n_before else np.nan
        missing_before = int((start - ts[n_before - 1]) // step) - 1 if n_before else 0
        inside = (ts >= start) & (ts <= stop)
        ts, ohlcv = ts[inside], ohlcv[inside]
        pos = ((ts - start) // step).astype(np.int64)
        present = np.zeros(len(grid), dtype=bool)
        present[pos] = True
        # index of the last present bar at or before each grid bar (0 before the first one)
        last = np.maximum.accumulate(np.where(present, np.arange(len(grid)), 0))
        prices[:, j, :] = 0.0
        prices[pos, j, :] = ohlcv
        filled = ~present
        prev_close = prices[last, j, 3]
        if not present[0]:
            prev_close[: int(np.argmax(present)) if present.any() else len(grid)] = seed_close
        prices[filled, j, 0:4] = prev_close[filled, None]
        prices[filled, j, 4] = 0.0
        n_filled += int(filled.sum())
        # runs of missing bars
        edges = np.flatnonzero(np.diff(np.r_[0, filled.astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            run = int(b - a) + (missing_before if a == 0 else 0)
            if run > max_fill_bars:
                keep[a:b] = False
                n_filled -= int(b - a)
                first = grid[a] - (missing_before if a == 0 else 0) * step
                gaps.append(Gap(s, pd.Timestamp(first, tz="UTC"), run))
    return Panel(tuple(wanted), grid[keep], prices[keep], tuple(gaps), n_filled)


def split_holdout(panel: Panel, cut: str | pd.Timestamp = DEFAULT_HOLDOUT_CUT) -> tuple[Panel, Panel]:
    """Split at the hold-out cut: ``(study bars < cut, hold-out bars >= cut)``.

    The study never sees the hold-out bars; they serve the deployer's gate and the paper
    trader's replay.

    Raises:
        DataError: the cut leaves either side empty.
    """
    i = panel.index_of(cut)
    if i == 0 or i == len(panel):
        first = pd.Timestamp(panel.timestamps[0], tz="UTC").isoformat()
        last = pd.Timestamp(panel.timestamps[-1], tz="UTC").isoformat()
        raise DataError(f"hold-out cut {cut} is outside the data ({first} .. {last})")
    return panel.slice(0, i), panel.slice(i, len(panel))

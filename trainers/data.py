"""OHLCV loading, validation and alignment of several symbols on one bar calendar, and the
dataset's timeframe (bar interval, bars per year, hold-out cut).

A dataset is a folder with one file per symbol, ``<SYMBOL>.csv`` or ``<SYMBOL>.csv.gz``
(a trailing ``_1h`` in the file name is dropped from the symbol), with the columns
``timestamp,open,high,low,close,volume`` (further columns are ignored). Timestamps are
ISO 8601 with an explicit UTC offset (``2019-07-01T00:00:00Z``) and mark the start of the
bar. Prices are in the quote currency (USD for the embedded dataset), volume in units of
the asset.

Timeframe (:func:`infer_timeframe`):
    * bar interval: the most common step between consecutive bars of a file, 15 minutes to
      1 day and dividing 24 hours (15 min, 30 min, 1 h, 4 h, 1 day, ...); every file of a
      dataset has the same one, and every timestamp sits on its grid (a whole number of
      intervals after 00:00 UTC).
    * 24/7 or session market: 24/7 when the union of the symbols' timestamps fills at least
      :data:`CONTINUOUS_COVERAGE` (90%) of the interval's slots in the median full week
      (Monday 00:00 UTC to Monday; the whole span when it holds no full week). A market that
      closes at weekends (5 of 7 days: 71%) or overnight is a session market.
    * bars per year (the annualisation of Sharpe ratios): a 24/7 market has exactly
      ``365 * 86400 / bar_seconds`` (8,760 for hourly bars, 35,040 for 15-minute bars); a
      session market has its measured number: the mean number of distinct bar times (of all
      symbols) per full week, times 365 / 7, rounded (261 for daily bars on every weekday,
      about 252 with exchange holidays left out); without a full week,
      ``(n - 1) * 365 days / (last - first)`` over its ``n`` bar times. ``--bars-per-year``
      overrides it.
    * bars per calendar day = bars per year / 365 (24 for hourly 24/7 bars, about 0.69 for
      daily equities): day-based windows (walk-forward folds, embargo, training episodes)
      become bars with it (:func:`days_to_bars`).

Alignment (:func:`load_panel`): a 24/7 market is aligned on the regular grid of its interval;
a session market on the union of its symbols' timestamps, so a bar that every symbol lacks
(a weekend, a night, a holiday) is not a gap. Within that calendar, a symbol's missing bars
are gaps: a run of up to ``max_fill_bars`` is forward-filled, a longer run is reported and
its bars are dropped for every symbol.

Hold-out cut (:func:`resolve_holdout_cut`): bars from the cut on are never seen by the
study. Unless one is given, it is :data:`DEFAULT_HOLDOUT_CUT` (2019-07-01) for the embedded
dataset and the first of the last 20% of bars for any other dataset.

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
DAY_SECONDS = 86_400
DAYS_PER_YEAR = 365
BAR_SECONDS = 3600  # the embedded dataset's (and the live Alpaca feed's) bar interval
# hourly bars of a 24/7 market: 8,760 bars per year; the default only where no panel is at
# hand (a loaded panel carries its own, Panel.bars_per_year)
BARS_PER_YEAR = DAYS_PER_YEAR * DAY_SECONDS // BAR_SECONDS
MIN_BAR_SECONDS, MAX_BAR_SECONDS = 15 * 60, DAY_SECONDS
CONTINUOUS_COVERAGE = 0.9  # share of a week's slots a 24/7 market fills (see the docstring)
DEFAULT_MAX_FILL_BARS = 3
DEFAULT_HOLDOUT_CUT = "2019-07-01T00:00:00Z"  # the embedded dataset's hold-out cut
DEFAULT_HOLDOUT_FRACTION = 0.2  # another dataset's default hold-out: its last 20% of bars
_WEEK_SECONDS = 7 * DAY_SECONDS
_MONDAY_SECONDS = 4 * DAY_SECONDS  # 1970-01-05, the first Monday after the epoch (a Thursday)


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


def format_interval(seconds: int) -> str:
    """A bar interval in words: ``900`` -> ``15 min``, ``3600`` -> ``1 h``, ``86400`` -> ``1 day``."""
    for unit, name in ((DAY_SECONDS, "day"), (3600, "h"), (60, "min")):
        if seconds >= unit and seconds % unit == 0:
            n = seconds // unit
            return f"{n} {name}{'s' if name == 'day' and n > 1 else ''}"
    return f"{seconds} s"


def days_to_bars(days: float, bars_per_day: float, minimum: int = 1) -> int:
    """Bars in ``days`` calendar days at ``bars_per_day`` (bars per year / 365), rounded to
    the nearest bar and at least ``minimum``: 180 days of hourly 24/7 bars -> 4,320; of daily
    bars at 252 bars/year -> 124."""
    return max(int(minimum), round(days * bars_per_day))


@dataclass(frozen=True)
class Timeframe:
    """A dataset's bar interval and annualisation (rules in the module docstring).

    Attributes:
        bar_seconds: bar interval in seconds (900 .. 86,400, dividing a day).
        bars_per_year: bars in one year, the annualisation of Sharpe ratios (8,760 for
            hourly bars of a 24/7 market).
        continuous: True for a 24/7 market (aligned on the regular grid), False for a
            session market (aligned on the union of its symbols' timestamps).
    """

    bar_seconds: int = BAR_SECONDS
    bars_per_year: int = BARS_PER_YEAR
    continuous: bool = True

    @property
    def bars_per_day(self) -> float:
        """Bars per calendar day, ``bars_per_year / 365`` (24.0 for hourly 24/7 bars)."""
        return self.bars_per_year / DAYS_PER_YEAR

    def bars(self, days: float, minimum: int = 1) -> int:
        """``days`` calendar days in bars (see :func:`days_to_bars`)."""
        return days_to_bars(days, self.bars_per_day, minimum)

    def describe(self) -> str:
        """E.g. ``1 h bars, 24/7, 8,760 bars/year``."""
        market = "24/7" if self.continuous else "sessions"
        return f"{format_interval(self.bar_seconds)} bars, {market}, {self.bars_per_year:,} bars/year"


HOURLY = Timeframe()


@dataclass(frozen=True)
class Panel:
    """Several symbols aligned on one bar calendar.

    Attributes:
        symbols: asset symbols in column order, e.g. ``("ETHUSD", "LTCUSD", "XRPUSD")``.
        timestamps: ``(T,)`` ``datetime64[s]`` UTC bar start times, strictly increasing.
        prices: ``(T, n_assets, 5)`` float64, fields in :data:`FIELDS` order
            (open, high, low, close in quote currency; volume in asset units).
        gaps: gaps longer than the fill limit; their bars are dropped from the calendar.
        n_filled: number of (bar, symbol) cells that were forward-filled.
        timeframe: bar interval and bars per year of the dataset (hourly 24/7 by default).
        embedded: the panel holds the embedded dataset (its default hold-out cut is
            :data:`DEFAULT_HOLDOUT_CUT`).
    """

    symbols: tuple[str, ...]
    timestamps: np.ndarray
    prices: np.ndarray
    gaps: tuple[Gap, ...] = field(default=())
    n_filled: int = 0
    timeframe: Timeframe = HOURLY
    embedded: bool = False

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @property
    def bar_seconds(self) -> int:
        """Bar interval in seconds."""
        return self.timeframe.bar_seconds

    @property
    def bars_per_year(self) -> int:
        """Bars per year, the annualisation of this data's Sharpe ratios."""
        return self.timeframe.bars_per_year

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
        return Panel(
            self.symbols, ts, self.prices[start:stop], gaps, self.n_filled, self.timeframe, self.embedded
        )

    def span(self, start: int = 0, stop: int | None = None) -> str:
        """Dates of bars ``[start, stop)``, e.g. ``2019-01-01 .. 2019-04-06`` (UTC)."""
        ts = self.timestamps[start:stop]
        if not len(ts):
            return "no bars"
        return " .. ".join(pd.Timestamp(t).strftime("%Y-%m-%d") for t in (ts[0], ts[-1]))

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


def infer_bar_seconds(timestamps: np.ndarray, source: str | Path = "data") -> int | None:
    """The bar interval of one file: the most common step between consecutive timestamps
    (the shorter one on a tie); None for fewer than 2 bars.

    Args:
        timestamps: ``(T,)`` ``datetime64[s]``, strictly increasing.
        source: the file, for the error message.

    Returns:
        The interval in seconds, 900 .. 86,400 and dividing 86,400.

    Raises:
        DataError: the most common step is outside 15 min .. 1 day or does not divide a day.
    """
    steps = np.diff(np.asarray(timestamps).astype("datetime64[s]").astype(np.int64))
    if not len(steps):
        return None
    values, counts = np.unique(steps, return_counts=True)
    step = int(values[int(np.argmax(counts))])
    if not (MIN_BAR_SECONDS <= step <= MAX_BAR_SECONDS and DAY_SECONDS % step == 0):
        raise DataError(
            f"{source}: bars are most often {format_interval(step)} apart; the bar interval must be "
            "15 min to 1 day and divide 24 hours (15 min, 30 min, 1 h, 2 h, 4 h, 1 day, ...)"
        )
    return step


def _check_grid(ts: np.ndarray, bar_seconds: int, path: Path) -> None:
    off = ts.astype(np.int64) % bar_seconds != 0
    if off.any():
        i = int(np.argmax(off))
        every = format_interval(bar_seconds)
        raise DataError(
            f"{path}: row {i + 2}: timestamp {ts[i]}Z is not on the {every} bar grid "
            f"(bars start at 00:00 UTC and every {every} after it)"
        )


def load_symbol(path: str | Path, bar_seconds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one symbol's CSV/CSV.gz file.

    Args:
        path: the file.
        bar_seconds: the dataset's bar interval; None: the file's own
            (:func:`infer_bar_seconds`). Every timestamp must sit on its grid.

    Returns:
        ``(timestamps (T,) datetime64[s] UTC, ohlcv (T, 5) float64)``.

    Raises:
        DataError: naming the file, the 1-based file line and the problem for: unreadable
            or empty file, missing column, non-numeric or NaN value, non-positive price,
            negative volume, high < low (or open/close outside [low, high]),
            unparseable or timezone-less timestamp, duplicate or decreasing timestamps,
            a timestamp off the bar grid; or naming the file for an unsupported interval.
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
    interval = bar_seconds or infer_bar_seconds(ts, path)
    if interval:
        _check_grid(ts, interval, path)
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


def _full_week_counts(union: np.ndarray, bar_seconds: int) -> np.ndarray:
    """Bars in each full week (Monday 00:00 UTC to the next Monday) inside the span of
    ``union`` (``(n,)`` int64 epoch seconds, sorted, distinct); empty when there is none."""
    first, last = int(union[0]), int(union[-1])
    w0 = -(-(first - _MONDAY_SECONDS) // _WEEK_SECONDS)  # first week starting at or after `first`
    w1 = (last + bar_seconds - _MONDAY_SECONDS) // _WEEK_SECONDS  # weeks < w1 end by the last bar
    if w1 <= w0:
        return np.zeros(0, dtype=np.int64)
    week = (union - _MONDAY_SECONDS) // _WEEK_SECONDS
    return np.bincount(week[(week >= w0) & (week < w1)] - w0, minlength=w1 - w0)


def infer_timeframe(
    timestamps: list[np.ndarray], bar_seconds: int, bars_per_year: int | None = None
) -> Timeframe:
    """24/7 or session market, and bars per year, from the symbols' timestamps (rules in
    the module docstring).

    Args:
        timestamps: each symbol's ``(T_i,)`` ``datetime64[s]`` bar starts, on the
            ``bar_seconds`` grid; at least 2 distinct timestamps in all.
        bar_seconds: the bar interval (:func:`infer_bar_seconds`).
        bars_per_year: override of the measured or exact value (``--bars-per-year``).

    Raises:
        DataError: ``bars_per_year`` is not positive, or fewer than 2 distinct timestamps.
    """
    if bars_per_year is not None and bars_per_year < 1:
        raise DataError(f"bars per year must be a positive whole number, got {bars_per_year}")
    union = np.unique(np.concatenate([np.asarray(t).astype("datetime64[s]") for t in timestamps]))
    union = union.astype(np.int64)
    if len(union) < 2:
        raise DataError("a timeframe needs at least 2 distinct bar times")
    weeks = _full_week_counts(union, bar_seconds)
    year = DAYS_PER_YEAR * DAY_SECONDS
    if len(weeks):
        coverage = float(np.median(weeks)) / (_WEEK_SECONDS // bar_seconds)
        measured = float(weeks.mean()) * year / _WEEK_SECONDS
    else:
        coverage = len(union) / ((int(union[-1] - union[0])) // bar_seconds + 1)
        measured = (len(union) - 1) * year / int(union[-1] - union[0])
    continuous = coverage >= CONTINUOUS_COVERAGE
    if bars_per_year is None:
        bars_per_year = year // bar_seconds if continuous else max(1, round(measured))
    return Timeframe(int(bar_seconds), int(bars_per_year), bool(continuous))


def _dataset_interval(loaded: dict[str, tuple[np.ndarray, np.ndarray]], files: dict[str, Path]) -> int:
    """The one bar interval of every file (files of one bar fit any and are checked on its grid)."""
    intervals = {s: infer_bar_seconds(ts, files[s]) for s, (ts, _) in loaded.items()}
    distinct = sorted({v for v in intervals.values() if v is not None})
    if not distinct:
        names = ", ".join(files[s].name for s in loaded)
        raise DataError(f"{names}: cannot infer the bar interval: no file has 2 bars or more")
    if len(distinct) > 1:
        which = ", ".join(f"{files[s].name} {format_interval(v)}" for s, v in intervals.items() if v)
        raise DataError(f"{files[next(iter(loaded))].parent}: files have different bar intervals: {which}")
    for s, (ts, _) in loaded.items():
        _check_grid(ts, distinct[0], files[s])
    return distinct[0]


def load_panel(
    data_dir: str | Path | None = None,
    max_fill_bars: int = DEFAULT_MAX_FILL_BARS,
    symbols: list[str] | None = None,
    bars_per_year: int | None = None,
) -> Panel:
    """Load every symbol of a dataset folder, infer its timeframe and align the symbols on
    one bar calendar (rules in the module docstring).

    The calendar is the regular grid of the bar interval (24/7 market) or the union of the
    symbols' timestamps (session market); it starts at the first bar where every symbol has
    data and ends at the last bar where every symbol has data. A run of up to
    ``max_fill_bars`` calendar bars a symbol lacks is forward-filled (open = high = low =
    close = previous close, volume = 0); a longer run is reported in :attr:`Panel.gaps` and
    its bars are dropped for all symbols.

    Args:
        data_dir: dataset folder; ``None`` means the embedded dataset.
        max_fill_bars: longest run of missing bars that is forward-filled.
        symbols: load only these symbols (in this order); default all, sorted.
        bars_per_year: annualisation to use instead of the inferred one (``--bars-per-year``).

    Raises:
        DataError: a file fails validation (see :func:`load_symbol`), the files have
            different bar intervals, a requested symbol is missing, the symbols do not
            overlap in time, or ``bars_per_year`` is not positive.
    """
    embedded = data_dir is None or Path(data_dir).resolve() == embedded_dataset_dir().resolve()
    data_dir = embedded_dataset_dir() if data_dir is None else Path(data_dir)
    if max_fill_bars < 0:
        raise DataError(f"max_fill_bars must be >= 0, got {max_fill_bars}")
    files = {symbol_from_path(p): p for p in _dataset_files(data_dir)}
    wanted = sorted(files) if symbols is None else [s.upper() for s in symbols]
    for s in wanted:
        if s not in files:
            raise DataError(f"{data_dir}: no file for symbol {s} (have {', '.join(sorted(files))})")
    loaded = {s: load_symbol(files[s]) for s in wanted}
    interval = _dataset_interval(loaded, files)
    timeframe = infer_timeframe([ts for ts, _ in loaded.values()], interval, bars_per_year)

    start = max(ts[0] for ts, _ in loaded.values())
    stop = min(ts[-1] for ts, _ in loaded.values())
    if start > stop:
        raise DataError(f"{data_dir}: the symbols {', '.join(wanted)} do not overlap in time")
    step = np.timedelta64(interval, "s")
    if timeframe.continuous:
        calendar = np.arange(min(ts[0] for ts, _ in loaded.values()), stop + step, step)
    else:
        calendar = np.unique(np.concatenate([ts[ts <= stop] for ts, _ in loaded.values()]))
    s0 = int(np.searchsorted(calendar, start))
    grid = calendar[s0:]
    prices = np.empty((len(grid), len(wanted), len(FIELDS)), dtype=np.float64)
    keep = np.ones(len(grid), dtype=bool)
    gaps: list[Gap] = []
    n_filled = 0
    for j, s in enumerate(wanted):
        ts, ohlcv = loaded[s]
        upto = ts <= stop
        ts, ohlcv = ts[upto], ohlcv[upto]
        slot = np.searchsorted(calendar, ts)  # every bar is a calendar slot
        # a symbol missing at the calendar start is filled from its last bar before the start
        n_before = int(np.searchsorted(ts, start, side="left"))
        seed_close = ohlcv[n_before - 1, 3] if n_before else np.nan
        missing_before = s0 - int(slot[n_before - 1]) - 1 if n_before else 0
        pos = (slot[n_before:] - s0).astype(np.int64)
        ohlcv = ohlcv[n_before:]
        present = np.zeros(len(grid), dtype=bool)
        present[pos] = True
        # index of the last present bar at or before each calendar bar (0 before the first one)
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
            before = missing_before if a == 0 else 0
            run = int(b - a) + before
            if run > max_fill_bars:
                keep[a:b] = False
                n_filled -= int(b - a)
                gaps.append(Gap(s, pd.Timestamp(calendar[s0 + a - before], tz="UTC"), run))
    return Panel(tuple(wanted), grid[keep], prices[keep], tuple(gaps), n_filled, timeframe, embedded)


def resolve_holdout_cut(panel: Panel, cut: str | pd.Timestamp | None = None) -> str:
    """The hold-out cut to use: ``cut`` when given, else the dataset's default:
    :data:`DEFAULT_HOLDOUT_CUT` for the embedded dataset, else the start of the last 20%
    (:data:`DEFAULT_HOLDOUT_FRACTION`, at least 1) of the panel's bars.

    Returns:
        The cut as given, or the default as ISO 8601 UTC (``2021-03-04T00:00:00Z``).

    Raises:
        DataError: no cut is given and the panel has fewer than 2 bars.
    """
    if cut is not None:
        return cut.isoformat() if isinstance(cut, pd.Timestamp) else str(cut)
    if panel.embedded:
        return DEFAULT_HOLDOUT_CUT
    if len(panel) < 2:
        raise DataError(f"the data has {len(panel)} bar(s): too few to split off a hold-out")
    n_holdout = max(1, round(len(panel) * DEFAULT_HOLDOUT_FRACTION))
    return pd.Timestamp(panel.timestamps[len(panel) - n_holdout]).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_holdout(panel: Panel, cut: str | pd.Timestamp | None = None) -> tuple[Panel, Panel]:
    """Split at the hold-out cut: ``(study bars < cut, hold-out bars >= cut)``.

    The study never sees the hold-out bars; they serve the deployer's gate and the paper
    trader's replay.

    Args:
        panel: the whole dataset.
        cut: first hold-out bar (UTC); None: the dataset's default
            (:func:`resolve_holdout_cut`).

    Raises:
        DataError: the cut leaves either side empty, or has no timezone.
    """
    cut = resolve_holdout_cut(panel, cut)
    i = panel.index_of(cut)
    if i == 0 or i == len(panel):
        first = pd.Timestamp(panel.timestamps[0], tz="UTC").isoformat()
        last = pd.Timestamp(panel.timestamps[-1], tz="UTC").isoformat()
        raise DataError(f"hold-out cut {cut} is outside the data ({first} .. {last})")
    return panel.slice(0, i), panel.slice(i, len(panel))

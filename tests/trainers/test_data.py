"""Loading, validation and alignment of OHLCV files (trainers.data) on real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainers.data import (
    DEFAULT_HOLDOUT_CUT,
    DataError,
    Panel,
    load_panel,
    load_symbol,
    split_holdout,
)

HEADER = "timestamp,open,high,low,close,volume"
T0 = pd.Timestamp("2020-01-01T00:00:00Z")


def bar_rows(
    n: int, start: pd.Timestamp = T0, base: float = 100.0, skip: set[int] = frozenset()
) -> list[str]:
    """``n`` hourly bars from ``start``; bar ``k`` has close ``base + k`` (bars in ``skip`` left out)."""
    rows = []
    for k in range(n):
        if k in skip:
            continue
        ts = (start + pd.Timedelta(hours=k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        c = base + k
        rows.append(f"{ts},{c - 0.5},{c + 1.0},{c - 1.0},{c},{10.0 + k}")
    return rows


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    text = "\n".join([header, *rows]) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def replace_field(rows: list[str], row: int, column: int, value: str) -> list[str]:
    """Copy of ``rows`` with field ``column`` of data row ``row`` (0-based) set to ``value``."""
    out = list(rows)
    parts = out[row].split(",")
    parts[column] = value
    out[row] = ",".join(parts)
    return out


def assert_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        load_symbol(path)
    msg = str(info.value)
    assert str(path) in msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# --- validation: each error names file, row (file line; the header is line 1) and problem ---


def test_missing_column(tmp_path: Path) -> None:
    rows = [",".join(r.split(",")[:5]) for r in bar_rows(5)]
    path = write_csv(tmp_path / "AAA.csv", rows, header="timestamp,open,high,low,close")
    assert_error(path, "missing column", "volume", "line 1")


@pytest.mark.parametrize(
    ("column", "value", "name"),
    [(1, "abc", "open"), (4, "12;5", "close"), (5, "", "volume")],
)
def test_non_numeric_value(tmp_path: Path, column: int, value: str, name: str) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 3, column, value))
    assert_error(path, "row 5", name, "not a finite number")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf"])
def test_nan_value(tmp_path: Path, value: str) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 2, 2, value))
    assert_error(path, "row 4", "high", "not a finite number")


@pytest.mark.parametrize(("column", "name"), [(1, "open"), (2, "high"), (3, "low"), (4, "close")])
@pytest.mark.parametrize("value", ["0", "-3.5"])
def test_non_positive_price(tmp_path: Path, column: int, name: str, value: str) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 4, column, value))
    assert_error(path, "row 6", name, "not a positive price")


def test_high_below_low(tmp_path: Path) -> None:
    rows = replace_field(bar_rows(6), 1, 2, "90")  # high 90 < low 100
    path = write_csv(tmp_path / "AAA.csv", rows)
    assert_error(path, "row 3", "high 90.0 is below low 100.0")


def test_close_outside_range(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 0, 4, "150"))
    assert_error(path, "row 2", "outside [low")


def test_duplicate_timestamp(tmp_path: Path) -> None:
    rows = bar_rows(6)
    rows[3] = rows[2].split(",")[0] + "," + ",".join(rows[3].split(",")[1:])
    path = write_csv(tmp_path / "AAA.csv", rows)
    assert_error(path, "row 5", "duplicate timestamp 2020-01-01T02:00:00")


def test_non_monotonic_timestamp(tmp_path: Path) -> None:
    rows = bar_rows(6)
    rows[3], rows[4] = rows[4], rows[3]
    path = write_csv(tmp_path / "AAA.csv", rows)
    assert_error(path, "row 6", "2020-01-01T03:00:00", "earlier than the row before")


def test_empty_file_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "AAA.csv"
    path.write_bytes(b"")
    assert_error(path, "empty")


def test_empty_file_header_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "AAA.csv", [])
    assert_error(path, "empty", "header only")


def test_empty_gzip_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "AAA.csv.gz", [])
    assert_error(path, "empty")


def test_missing_timezone(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 3, 0, "2020-01-01T03:00:00"))
    assert_error(path, "row 5", "2020-01-01T03:00:00", "timezone")


@pytest.mark.parametrize("stamp", ["2020-01-01T03:00:00 EST", "2020-01-01T03:00:00+25:00", "yesterday"])
def test_unknown_timezone_or_unparseable(tmp_path: Path, stamp: str) -> None:
    path = write_csv(tmp_path / "AAA.csv", replace_field(bar_rows(6), 3, 0, stamp))
    assert_error(path, "row 5", repr(stamp))


def test_offset_timestamps_are_converted_to_utc(tmp_path: Path) -> None:
    rows = bar_rows(3)
    rows[1] = rows[1].replace("2020-01-01T01:00:00Z", "2020-01-01T02:00:00+01:00")
    ts, _ = load_symbol(write_csv(tmp_path / "AAA.csv", rows))
    assert ts[1] == np.datetime64("2020-01-01T01:00:00", "s")


def test_error_is_raised_by_load_panel_too(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(6))
    bad = write_csv(tmp_path / "BBB.csv", replace_field(bar_rows(6), 0, 1, "x"))
    with pytest.raises(DataError, match=rf"{bad.name}: row 2: open"):
        load_panel(tmp_path)


# --- loading and alignment ---


def test_csv_and_csv_gz_load_identically(tmp_path: Path) -> None:
    rows = bar_rows(30)
    ts_a, v_a = load_symbol(write_csv(tmp_path / "AAA_1h.csv", rows))
    ts_b, v_b = load_symbol(write_csv(tmp_path / "BBB_1h.csv.gz", rows))
    np.testing.assert_array_equal(ts_a, ts_b)
    np.testing.assert_array_equal(v_a, v_b)
    panel = load_panel(tmp_path)
    assert panel.symbols == ("AAA", "BBB")
    assert panel.prices.shape == (30, 2, 5)
    assert panel.timestamps.dtype == np.dtype("datetime64[s]")
    np.testing.assert_array_equal(panel.prices[:, 0], panel.prices[:, 1])
    np.testing.assert_array_equal(panel.field("close")[:, 0], 100.0 + np.arange(30))


def test_symbols_starting_on_different_days_align_where_all_have_data(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(24 * 5))  # Jan 1 .. Jan 5
    write_csv(tmp_path / "BBB.csv", bar_rows(24 * 3, start=T0 + pd.Timedelta(days=2), base=50.0))
    write_csv(tmp_path / "CCC.csv", bar_rows(24 * 4, start=T0 + pd.Timedelta(days=1), base=7.0))
    panel = load_panel(tmp_path)
    assert panel.timestamps[0] == np.datetime64("2020-01-03T00:00:00", "s")
    assert panel.timestamps[-1] == np.datetime64("2020-01-05T23:00:00", "s")
    assert len(panel) == 72
    assert np.all(np.diff(panel.timestamps.astype(np.int64)) == 3600)
    # first grid bar of AAA is its 49th bar (close 100 + 48); CCC's is its 25th
    assert panel.prices[0, 0, 3] == 148.0
    assert panel.prices[0, 1, 3] == 50.0
    assert panel.prices[0, 2, 3] == 31.0
    assert panel.n_filled == 0 and panel.gaps == ()


def test_symbols_order_and_subset(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(10))
    write_csv(tmp_path / "BBB.csv", bar_rows(10, base=5.0))
    write_csv(tmp_path / "CCC.csv", bar_rows(10, base=9.0))
    panel = load_panel(tmp_path, symbols=["ccc", "AAA"])
    assert panel.symbols == ("CCC", "AAA")
    assert panel.prices[0, 0, 3] == 9.0
    with pytest.raises(DataError, match="no file for symbol ZZZ"):
        load_panel(tmp_path, symbols=["ZZZ"])


def test_short_gap_is_forward_filled_with_previous_close(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(20, skip={5, 6, 7}))  # 3 missing bars
    write_csv(tmp_path / "BBB.csv", bar_rows(20, base=50.0))
    panel = load_panel(tmp_path, max_fill_bars=3)
    assert len(panel) == 20
    assert panel.n_filled == 3
    assert panel.gaps == ()
    prev_close = 104.0  # close of bar 4
    for k in (5, 6, 7):
        np.testing.assert_array_equal(panel.prices[k, 0, :4], [prev_close] * 4)
        assert panel.prices[k, 0, 4] == 0.0
    np.testing.assert_array_equal(panel.prices[8, 0], [107.5, 109.0, 107.0, 108.0, 18.0])
    np.testing.assert_array_equal(panel.prices[:, 1, 3], 50.0 + np.arange(20))


def test_long_gap_is_reported_and_its_bars_dropped(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(20, skip={5, 6, 7, 8}))  # 4 missing bars
    write_csv(tmp_path / "BBB.csv", bar_rows(20, base=50.0))
    panel = load_panel(tmp_path, max_fill_bars=3)
    assert len(panel) == 16
    assert panel.n_filled == 0
    assert len(panel.gaps) == 1
    gap = panel.gaps[0]
    assert (gap.symbol, gap.n_bars) == ("AAA", 4)
    assert gap.first_missing == T0 + pd.Timedelta(hours=5)
    assert "AAA: 4 missing bars from 2020-01-01T05:00:00" in str(gap)
    kept_hours = (panel.timestamps - np.datetime64("2020-01-01T00:00:00", "s")).astype(np.int64) // 3600
    np.testing.assert_array_equal(kept_hours, [h for h in range(20) if h not in {5, 6, 7, 8}])
    # the other symbol's bars at those hours are dropped too
    np.testing.assert_array_equal(panel.prices[:, 1, 3], 50.0 + kept_hours)
    # with a larger fill limit the same gap is filled instead
    filled = load_panel(tmp_path, max_fill_bars=4)
    assert len(filled) == 20 and filled.n_filled == 4 and filled.gaps == ()


def test_gap_across_the_grid_start_fills_from_the_close_before_the_start(tmp_path: Path) -> None:
    # BBB starts at hour 5; AAA has no bars at hours 4..6, so the grid start falls inside its gap
    write_csv(tmp_path / "AAA.csv", bar_rows(20, skip={4, 5, 6}))
    write_csv(tmp_path / "BBB.csv", bar_rows(15, start=T0 + pd.Timedelta(hours=5), base=50.0))
    panel = load_panel(tmp_path, max_fill_bars=3)
    assert panel.timestamps[0] == np.datetime64("2020-01-01T05:00:00", "s")
    assert np.all(panel.prices[:, :, :4] > 0.0)
    for k in (0, 1):  # hours 5 and 6: the close of hour 3
        np.testing.assert_array_equal(panel.prices[k, 0], [103.0] * 4 + [0.0])
    assert panel.prices[2, 0, 3] == 107.0
    assert panel.n_filled == 2 and panel.gaps == ()
    # the whole run (hours 4..6, 3 bars) counts against the fill limit
    short = load_panel(tmp_path, max_fill_bars=2)
    assert short.timestamps[0] == np.datetime64("2020-01-01T07:00:00", "s")
    assert short.n_filled == 0
    assert [(g.symbol, g.n_bars, g.first_missing) for g in short.gaps] == [
        ("AAA", 3, T0 + pd.Timedelta(hours=4))
    ]
    assert np.all(short.prices[:, :, :4] > 0.0)


def test_negative_fill_limit_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="max_fill_bars"):
        load_panel(tmp_path, max_fill_bars=-1)
    with pytest.raises(DataError, match="does not exist"):
        load_panel(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no \.csv"):
        load_panel(tmp_path)


def test_non_overlapping_symbols(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(10))
    write_csv(tmp_path / "BBB.csv", bar_rows(10, start=T0 + pd.Timedelta(days=3)))
    with pytest.raises(DataError, match="do not overlap"):
        load_panel(tmp_path)


# --- fingerprint and hold-out ---


def test_fingerprint_covers_exactly_the_slice(tmp_path: Path) -> None:
    rows = bar_rows(40)
    write_csv(tmp_path / "AAA.csv", rows)
    base = load_panel(tmp_path)
    fp = base.fingerprint(10, 20)
    assert fp == load_panel(tmp_path).fingerprint(10, 20)  # deterministic
    assert len(fp) == 64 and fp != base.fingerprint(10, 21) and fp != base.fingerprint(11, 20)

    write_csv(tmp_path / "AAA.csv", replace_field(rows, 15, 4, "115.25"))  # inside the slice
    assert load_panel(tmp_path).fingerprint(10, 20) != fp

    for outside in (9, 20, 39):
        write_csv(tmp_path / "AAA.csv", replace_field(rows, outside, 4, f"{100 + outside}.25"))
        changed = load_panel(tmp_path)
        assert changed.fingerprint() != base.fingerprint()
        assert changed.fingerprint(10, 20) == fp


def test_fingerprint_of_a_slice_equals_fingerprint_of_the_sliced_panel(panel: Panel) -> None:
    assert panel.slice(100, 300).fingerprint() == panel.fingerprint(100, 300)


def test_split_holdout_keeps_the_cut_out_of_the_study(panel: Panel) -> None:
    study, holdout = split_holdout(panel)
    cut = np.datetime64("2019-07-01T00:00:00", "s")
    assert len(study) + len(holdout) == len(panel)
    assert study.timestamps[-1] < cut
    assert not np.any(study.timestamps >= cut)
    assert holdout.timestamps[0] >= cut
    assert holdout.timestamps[0] == cut  # the embedded data has this bar
    np.testing.assert_array_equal(study.prices, panel.prices[: len(study)])
    np.testing.assert_array_equal(holdout.prices, panel.prices[len(study) :])


def test_split_holdout_between_bars_and_outside(tmp_path: Path) -> None:
    write_csv(tmp_path / "AAA.csv", bar_rows(10, skip={4, 5, 6, 7}))
    panel = load_panel(tmp_path, max_fill_bars=0)  # hours 0-3 and 8-9
    study, holdout = split_holdout(panel, "2020-01-01T05:30:00Z")
    assert len(study) == 4 and len(holdout) == 2
    assert holdout.timestamps[0] == np.datetime64("2020-01-01T08:00:00", "s")
    with pytest.raises(DataError, match="outside the data"):
        split_holdout(panel, "2019-01-01T00:00:00Z")
    with pytest.raises(DataError, match="outside the data"):
        split_holdout(panel, "2021-01-01T00:00:00Z")
    with pytest.raises(DataError, match="no timezone"):
        split_holdout(panel, "2020-01-01T05:00:00")


def test_embedded_dataset_loads(panel: Panel) -> None:
    assert panel.symbols == ("ETHUSD", "LTCUSD", "XRPUSD")
    assert panel.prices.shape == (len(panel), 3, 5)
    assert pd.Timestamp(panel.timestamps[0]).strftime("%Y-%m") == "2017-08"
    assert panel.timestamps[-1] > np.datetime64(DEFAULT_HOLDOUT_CUT.removesuffix("Z"), "s")
    assert np.all(np.diff(panel.timestamps.astype(np.int64)) > 0)
    assert np.all(np.isfinite(panel.prices))
    assert np.all(panel.prices[:, :, :4] > 0)
    assert np.all(panel.field("high") >= panel.field("low"))
    assert len(panel) > 15_000

"""The dataset's timeframe (trainers.data): bar interval, 24/7 or session market, bars per
year, alignment of session markets, the default hold-out cut, and the one-line message of
data too short for a walk-forward mode (trainers.objective.StudyData)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.synthetic_ohlcv import every, weekdays, write_random_walk
from trainers.data import (
    DEFAULT_HOLDOUT_CUT,
    DataError,
    Panel,
    Timeframe,
    days_to_bars,
    format_interval,
    infer_bar_seconds,
    infer_timeframe,
    load_panel,
    load_symbol,
    resolve_holdout_cut,
    split_holdout,
)
from trainers.objective import StudyData, TrainingConfig
from trainers.splits import TooShortError

YEAR_S = 365 * 86_400


def ts(times: pd.DatetimeIndex) -> np.ndarray:
    return times.tz_convert("UTC").tz_localize(None).to_numpy().astype("datetime64[s]")


# --- bar interval ---


@pytest.mark.parametrize(
    ("freq", "seconds"), [("15min", 900), ("30min", 1800), ("1h", 3600), ("4h", 14_400), ("1D", 86_400)]
)
def test_interval_is_the_most_common_step(freq: str, seconds: int) -> None:
    times = every("2021-01-01", 30, freq)
    times = times.delete([3, 4, 10])  # a few missing bars do not change it
    assert infer_bar_seconds(ts(times)) == seconds


def test_daily_weekday_bars_with_weekend_gaps_are_daily() -> None:
    assert infer_bar_seconds(ts(weekdays("2021-01-01", "2021-06-30", holidays=True))) == 86_400


def test_interval_of_one_bar_is_unknown_and_ties_take_the_shorter_step() -> None:
    assert infer_bar_seconds(ts(every("2021-01-01", 1, "1h")[:1])) is None
    tied = np.array(["2021-01-01T00", "2021-01-01T01", "2021-01-01T03"], dtype="datetime64[s]")
    assert infer_bar_seconds(tied) == 3600


@pytest.mark.parametrize(("freq", "shown"), [("1min", "1 min"), ("7D", "7 days"), ("7min", "7 min")])
def test_unsupported_interval_is_one_clear_error(tmp_path: Path, freq: str, shown: str) -> None:
    path = write_random_walk(tmp_path / "AAA.csv", every("2021-01-01", 200, freq)[:100], seed=1)
    with pytest.raises(DataError) as info:
        load_symbol(path)
    msg = str(info.value)
    assert str(path) in msg and f"most often {shown} apart" in msg and "15 min to 1 day" in msg


def test_timestamps_must_sit_on_the_interval_grid(tmp_path: Path) -> None:
    daily = weekdays("2021-01-01", "2021-03-31")
    off = daily.insert(10, daily[9] + pd.Timedelta(hours=5)).sort_values()  # a bar at 05:00 UTC
    path = write_random_walk(tmp_path / "AAA.csv", off, seed=1)
    with pytest.raises(
        DataError, match=r"AAA.csv: row 12: timestamp .*T05:00:00Z is not on the 1 day bar grid"
    ):
        load_symbol(path)
    quarter = every("2021-01-01", 2, "15min")
    path = write_random_walk(tmp_path / "BBB.csv", quarter.insert(5, quarter[4] + pd.Timedelta(minutes=7)), 2)
    with pytest.raises(DataError, match=r"row 7: .*01:07:00Z is not on the 15 min bar grid"):
        load_symbol(path)


def test_files_with_different_intervals_are_refused(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "AAA.csv", every("2021-01-01", 10, "1h"), seed=1)
    write_random_walk(tmp_path / "BBB.csv", every("2021-01-01", 10, "1D"), seed=2)
    with pytest.raises(DataError, match=r"different bar intervals: AAA.csv 1 h, BBB.csv 1 day"):
        load_panel(tmp_path)


def test_a_one_bar_file_is_checked_on_the_dataset_grid(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "AAA.csv", every("2021-01-01", 2, "1h"), seed=1)
    write_random_walk(tmp_path / "BBB.csv", pd.DatetimeIndex([pd.Timestamp("2021-01-01T10:30Z")]), seed=2)
    with pytest.raises(DataError, match=r"BBB.csv: row 2: .* is not on the 1 h bar grid"):
        load_panel(tmp_path)


def test_format_interval_and_days_to_bars() -> None:
    assert [format_interval(s) for s in (900, 3600, 14_400, 86_400, 172_800, 7)] == [
        "15 min",
        "1 h",
        "4 h",
        "1 day",
        "2 days",
        "7 s",
    ]
    assert days_to_bars(180, 24) == 4320 and days_to_bars(1, 24) == 24
    assert days_to_bars(180, 252 / 365) == 124 and days_to_bars(1, 252 / 365) == 1  # at least 1 bar
    assert Timeframe(86_400, 252, False).bars(60) == 41


# --- bars per year: exactly 365 * 86400 / interval for a 24/7 market, measured otherwise ---


def test_hourly_24_7_has_8760_bars_per_year(panel: Panel) -> None:
    assert panel.timeframe == Timeframe(3600, 8760, True)  # the embedded dataset
    assert panel.bars_per_year == 8760 and panel.bar_seconds == 3600 and panel.embedded


def test_15_minute_24_7_has_35040_bars_per_year() -> None:
    tf = infer_timeframe([ts(every("2021-01-01", 60, "15min"))], 900)
    assert tf == Timeframe(900, 35_040, True)
    assert tf.bars_per_day == 96


def test_daily_weekday_only_is_a_session_market_with_measured_bars_per_year() -> None:
    plain = ts(weekdays("2019-01-01", "2021-12-31"))
    tf = infer_timeframe([plain], 86_400)
    assert not tf.continuous
    assert tf.bars_per_year == 261  # 5 bars in every full week: 5 * 365 / 7 = 260.7
    holidays = infer_timeframe([ts(weekdays("2019-01-01", "2021-12-31", holidays=True))], 86_400)
    assert 248 <= holidays.bars_per_year <= 253  # about 252, as an exchange calendar
    assert holidays.bars_per_day == pytest.approx(holidays.bars_per_year / 365)


def test_daily_every_day_is_24_7_and_an_outage_does_not_change_that() -> None:
    assert infer_timeframe([ts(every("2021-01-01", 400, "1D"))], 86_400) == Timeframe(86_400, 365, True)
    hourly = every("2021-01-01", 120, "1h")
    outage = hourly[(hourly < "2021-02-01") | (hourly >= "2021-02-20")]  # 19 days without bars
    assert infer_timeframe([ts(outage)], 3600) == Timeframe(3600, 8760, True)


def test_without_a_full_week_bars_per_year_is_measured_over_the_span() -> None:
    days = ts(weekdays("2021-01-06", "2021-01-12"))  # Wed .. Tue: no full week
    tf = infer_timeframe([days], 86_400)
    span = int(days[-1].astype(np.int64) - days[0].astype(np.int64))
    assert not tf.continuous and tf.bars_per_year == round((len(days) - 1) * YEAR_S / span)


def test_weekday_hourly_bars_are_a_session_market() -> None:
    hourly = every("2021-01-04", 140, "1h")
    weekday = hourly[hourly.day_of_week < 5]
    tf = infer_timeframe([ts(weekday)], 3600)
    assert not tf.continuous and tf.bars_per_year == 6257  # 24 * 5 * 365 / 7 = 6257.1


def test_bars_per_year_override(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "SPY.csv", weekdays("2020-01-01", "2020-12-31"), seed=1)
    panel = load_panel(tmp_path, bars_per_year=252)
    assert panel.timeframe == Timeframe(86_400, 252, False)
    with pytest.raises(DataError, match="bars per year must be a positive whole number, got 0"):
        load_panel(tmp_path, bars_per_year=0)


# --- alignment of a session market: the union of the symbols' timestamps ---


def test_session_market_weekends_are_not_gaps_and_missing_weekdays_are(tmp_path: Path) -> None:
    days = weekdays("2021-01-01", "2021-03-31")
    write_random_walk(tmp_path / "AAA.csv", days, seed=1)
    write_random_walk(tmp_path / "BBB.csv", days.delete([10, 11]), seed=2)  # BBB lacks 2 weekdays
    panel = load_panel(tmp_path)
    assert not panel.timeframe.continuous
    np.testing.assert_array_equal(panel.timestamps, ts(days))  # no weekend bar, no weekday lost
    assert panel.n_filled == 2 and panel.gaps == ()
    close_before = panel.prices[9, 1, 3]
    np.testing.assert_array_equal(panel.prices[10:12, 1, :4], np.full((2, 4), close_before))
    assert (panel.prices[10:12, 1, 4] == 0.0).all()
    # a weekday run longer than the fill limit is a reported gap, its bars dropped for all
    write_random_walk(tmp_path / "BBB.csv", days.delete([20, 21, 22, 23]), seed=2)
    short = load_panel(tmp_path)
    assert len(short) == len(days) - 4
    assert [(g.symbol, g.n_bars, g.first_missing) for g in short.gaps] == [("BBB", 4, days[20])]


def test_a_bar_every_symbol_lacks_is_not_a_gap_in_a_session_market(tmp_path: Path) -> None:
    days = weekdays("2021-01-01", "2021-03-31", holidays=True)  # holidays: no symbol has a bar
    write_random_walk(tmp_path / "AAA.csv", days, seed=1)
    write_random_walk(tmp_path / "BBB.csv", days, seed=2)
    panel = load_panel(tmp_path, max_fill_bars=0)
    np.testing.assert_array_equal(panel.timestamps, ts(days))
    assert panel.gaps == () and panel.n_filled == 0


def test_24_7_market_keeps_the_regular_grid(tmp_path: Path) -> None:
    quarter = every("2021-01-01", 20, "15min")
    write_random_walk(tmp_path / "AAA.csv", quarter.delete([100, 101]), seed=1)  # both lack 2 bars
    write_random_walk(tmp_path / "BBB.csv", quarter.delete([100, 101]), seed=2)
    panel = load_panel(tmp_path)
    assert panel.timeframe == Timeframe(900, 35_040, True)
    np.testing.assert_array_equal(panel.timestamps, ts(quarter))  # filled on the grid
    assert panel.n_filled == 4


# --- default hold-out cut ---


def test_default_cut_of_a_user_dataset_is_its_last_20_percent(tmp_path: Path) -> None:
    days = weekdays("2021-01-01", "2021-12-31")
    write_random_walk(tmp_path / "SPY.csv", days, seed=1)
    panel = load_panel(tmp_path)
    assert not panel.embedded
    n_holdout = round(0.2 * len(panel))
    cut = resolve_holdout_cut(panel)
    assert cut == days[len(days) - n_holdout].strftime("%Y-%m-%dT%H:%M:%SZ")
    study, holdout = split_holdout(panel)  # None = the same default
    assert len(holdout) == n_holdout and len(study) == len(panel) - n_holdout
    assert resolve_holdout_cut(panel, "2021-06-01T00:00:00Z") == "2021-06-01T00:00:00Z"  # given: kept
    assert resolve_holdout_cut(panel, pd.Timestamp("2021-06-01", tz="UTC")) == "2021-06-01T00:00:00+00:00"


def test_default_cut_of_the_embedded_dataset_stays(panel: Panel) -> None:
    assert resolve_holdout_cut(panel) == DEFAULT_HOLDOUT_CUT
    assert load_panel(panel_dir := Path(__file__).parents[2] / "trainers" / "dataset").embedded, panel_dir


def test_default_cut_needs_two_bars(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "AAA.csv", every("2021-01-01", 2, "1h"), seed=1)
    one = load_panel(tmp_path).slice(0, 1)
    with pytest.raises(DataError, match="too few to split off a hold-out"):
        resolve_holdout_cut(one)


def test_study_data_records_the_resolved_cut_and_timeframe(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "SPY.csv", weekdays("2018-01-01", "2021-12-31"), seed=3)
    data = StudyData.load(tmp_path, TrainingConfig())
    whole = load_panel(tmp_path)
    assert data.holdout_cut == resolve_holdout_cut(whole)
    assert data.panel.timeframe == whole.timeframe and data.embargo == 1
    record = TrainingConfig().for_data(data).as_record()
    assert record["holdout_cut"] == data.holdout_cut
    assert (record["bars_per_year"], record["bar_seconds"], record["embargo"]) == (261, 86_400, 1)
    assert record["episode_bars"] == round(30 * 261 / 365)  # 30 days
    assert [f.test_stop - f.test_start for f in data.folds] == [round(60 * 261 / 365)] * 5


# --- too short: one line with the days needed and the days present ---


def test_too_short_for_the_mode_is_one_line_with_days(tmp_path: Path) -> None:
    write_random_walk(tmp_path / "BTC.csv", every("2019-01-01", 150, "1h"), seed=1)
    with pytest.raises(TooShortError) as info:
        StudyData.load(tmp_path, TrainingConfig(mode="quick"))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("quick mode needs 481 days (11,544 bars) of study data after the first 64 bars")
    assert "the data has 117 days (2,816 bars, 2019-01-03 .. 2019-04-30)" in msg
    assert msg.endswith("use --mode full (needs 142 days), more data, or a later --holdout-cut")
    with pytest.raises(
        TooShortError, match=r"^full mode needs 142 days \(3,408 bars\).* the data has 117 days"
    ):
        StudyData.load(tmp_path, TrainingConfig(mode="full"))

"""Walk-forward folds with an embargo (trainers.splits)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.splits import BARS_PER_DAY, DEFAULT_EMBARGO, Fold, TooShortError, walk_forward_folds

DAY = BARS_PER_DAY


def assert_fold_shape(fold: Fold, embargo: int) -> None:
    assert fold.train_start < fold.train_stop <= fold.test_start < fold.test_stop
    assert fold.test_start - fold.train_stop == embargo  # exactly `embargo` bars in between
    train = set(range(fold.train_start, fold.train_stop))
    test = set(range(fold.test_start, fold.test_stop))
    assert not train & test


QUICK_NEED = 180 * DAY + 24 + 5 * 60 * DAY  # 481 days of hourly bars


@pytest.mark.parametrize("embargo", [0, DEFAULT_EMBARGO, 48])
@pytest.mark.parametrize("n_bars", [16_000, 600 * DAY])
def test_quick_mode(n_bars: int, embargo: int) -> None:
    folds = walk_forward_folds(n_bars, "quick", embargo=embargo)
    assert len(folds) == 5
    assert [f.index for f in folds] == list(range(5))
    for f in folds:
        assert_fold_shape(f, embargo)
        assert f.train_stop - f.train_start == 180 * DAY  # its own fixed train window
        assert f.test_stop - f.test_start == 60 * DAY
    assert folds[-1].test_stop == n_bars
    assert folds[0].test_start == n_bars - 300 * DAY  # the last 300 days are the test windows


def test_quick_mode_test_windows_are_disjoint_and_contiguous() -> None:
    folds = walk_forward_folds(20_000, "quick", embargo=24)
    for a, b in itertools.pairwise(folds):
        assert a.test_stop == b.test_start  # contiguous, no overlap
        assert b.train_start - a.train_start == 60 * DAY  # each train window moves with its test
    tested = [t for f in folds for t in range(f.test_start, f.test_stop)]
    assert len(tested) == len(set(tested)) == 5 * 60 * DAY


def test_quick_mode_respects_first_bar() -> None:
    n_bars = 64 + QUICK_NEED + 100
    folds = walk_forward_folds(n_bars, "quick", embargo=24, first_bar=64)
    assert len(folds) == 5
    assert folds[0].train_start == 164 and min(f.train_start for f in folds) >= 64
    assert folds[-1].test_stop == n_bars


def test_quick_mode_fits_exactly() -> None:
    folds = walk_forward_folds(64 + QUICK_NEED, "quick", embargo=24, first_bar=64)
    assert folds[0].train_start == 64 and folds[-1].test_stop == 64 + QUICK_NEED


@pytest.mark.parametrize("embargo", [0, DEFAULT_EMBARGO, 72])
def test_full_mode(embargo: int) -> None:
    n_bars, first = 500 * DAY + 7, 64
    folds = walk_forward_folds(n_bars, "full", embargo=embargo, first_bar=first)
    assert len(folds) == (n_bars - first - 120 * DAY - embargo) // (21 * DAY)
    for k, f in enumerate(folds):
        assert_fold_shape(f, embargo)
        assert f.index == k
        assert f.train_start == first  # expanding window
        assert f.test_stop - f.test_start == 21 * DAY
        assert f.train_stop - f.train_start >= 120 * DAY
        assert f.train_stop - f.train_start < 120 * DAY + 21 * DAY + (k * 21 * DAY)
    lengths = [f.train_stop - f.train_start for f in folds]
    assert all(b - a == 21 * DAY for a, b in itertools.pairwise(lengths))  # expanding by a test
    for a, b in itertools.pairwise(folds):
        assert b.test_start == a.test_stop  # contiguous test windows
    assert folds[-1].test_stop == n_bars


def test_full_mode_first_fold_trains_on_120_days_when_it_fits_exactly() -> None:
    n_bars = 120 * DAY + 24 + 3 * 21 * DAY
    folds = walk_forward_folds(n_bars, "full", embargo=24)
    assert len(folds) == 3
    assert folds[0].train_stop - folds[0].train_start == 120 * DAY
    assert folds[0].test_start == 120 * DAY + 24
    assert folds[-1].test_stop == n_bars


@settings(max_examples=100, deadline=None)
@given(
    n_bars=st.integers(482 * DAY + 700, 1000 * DAY),  # >= 481 days + max embargo + max first_bar
    embargo=st.integers(0, 200),
    first_bar=st.integers(0, 500),
    mode=st.sampled_from(["quick", "full"]),
)
def test_folds_always_disjoint_with_embargo(n_bars: int, embargo: int, first_bar: int, mode: str) -> None:
    folds = walk_forward_folds(n_bars, mode, embargo=embargo, first_bar=first_bar)  # type: ignore[arg-type]
    assert folds
    for f in folds:
        assert_fold_shape(f, embargo)
        assert f.train_start >= first_bar and f.test_stop <= n_bars
    for a, b in itertools.pairwise(folds):
        assert a.test_stop <= b.test_start  # test windows never overlap, in either mode
    assert folds[-1].test_stop == n_bars


def test_fold_as_dict() -> None:
    fold = Fold(2, 0, 10, 12, 20)
    assert fold.as_dict() == {
        "index": 2,
        "train_start": 0,
        "train_stop": 10,
        "test_start": 12,
        "test_stop": 20,
    }


def test_too_few_bars() -> None:
    walk_forward_folds(QUICK_NEED, "quick", embargo=24)  # exactly enough
    with pytest.raises(TooShortError, match=r"quick mode needs 481 days \(11,544 bars\)"):
        walk_forward_folds(QUICK_NEED - 1, "quick", embargo=24)
    need_full = 120 * DAY + 24 + 21 * DAY
    assert len(walk_forward_folds(need_full, "full", embargo=24)) == 1
    with pytest.raises(TooShortError, match=r"full mode needs 142 days \(3,408 bars\)"):
        walk_forward_folds(need_full - 1, "full", embargo=24)
    with pytest.raises(TooShortError, match="after the first 100 bars"):
        walk_forward_folds(need_full + 99, "full", embargo=24, first_bar=100)


def test_too_short_message_is_one_line_with_days_needed_and_present() -> None:
    with pytest.raises(TooShortError) as info:
        walk_forward_folds(64 + 95 * DAY, "quick", first_bar=64, span="2019-01-01 .. 2019-04-06")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == (
        "quick mode needs 481 days (11,544 bars) of study data after the first 64 bars (feature warm-up) "
        "(180-day train + 1-day embargo + 5 x 60-day tests); the data has 95 days (2,280 bars, "
        "2019-01-01 .. 2019-04-06); use --mode full (needs 142 days), more data, or a later --holdout-cut"
    )
    with pytest.raises(TooShortError, match=r"full mode needs 142 days .* the data has 0 days \(0 bars\)"):
        walk_forward_folds(10, "full", first_bar=64)


def test_days_become_bars_at_the_data_bars_per_day() -> None:
    daily = 252 / 365  # daily bars of a weekday market with holidays
    folds = walk_forward_folds(600, "quick", first_bar=64, bars_per_day=daily)
    train, test = round(180 * daily), round(60 * daily)  # 124, 41 bars
    assert [f.test_stop - f.test_start for f in folds] == [test] * 5
    assert all(f.train_stop - f.train_start == train for f in folds)
    assert all(f.test_start - f.train_stop == 1 for f in folds)  # 1 day < 1 bar: at least 1 bar
    quarter_hour = walk_forward_folds(60_000, "full", bars_per_day=96)
    assert quarter_hour[0].train_stop == 120 * 96 + (60_000 - 120 * 96 - 96) % (21 * 96)
    assert quarter_hour[0].test_start - quarter_hour[0].train_stop == 96  # 1-day embargo
    with pytest.raises(TooShortError, match=r"needs 481.4 days \(330 bars\).*1.4-day embargo"):
        walk_forward_folds(329, "quick", bars_per_day=daily)


def test_default_embargo_is_one_day() -> None:
    hourly = walk_forward_folds(20_000, "quick")
    assert all(f.test_start - f.train_stop == DEFAULT_EMBARGO == DAY for f in hourly)


def test_unknown_mode_and_negative_embargo() -> None:
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        walk_forward_folds(20_000, "fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embargo must be >= 0"):
        walk_forward_folds(20_000, "quick", embargo=-1)

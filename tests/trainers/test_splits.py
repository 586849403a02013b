"""Walk-forward folds with an embargo (trainers.splits)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.splits import BARS_PER_DAY, DEFAULT_EMBARGO, Fold, walk_forward_folds

DAY = BARS_PER_DAY


def assert_fold_shape(fold: Fold, embargo: int) -> None:
    assert fold.train_start < fold.train_stop <= fold.test_start < fold.test_stop
    assert fold.test_start - fold.train_stop == embargo  # exactly `embargo` bars in between
    train = set(range(fold.train_start, fold.train_stop))
    test = set(range(fold.test_start, fold.test_stop))
    assert not train & test


@pytest.mark.parametrize("embargo", [0, DEFAULT_EMBARGO, 48])
@pytest.mark.parametrize("n_bars", [16_000, 600 * DAY])
def test_quick_mode(n_bars: int, embargo: int) -> None:
    folds = walk_forward_folds(n_bars, "quick", embargo=embargo)
    assert len(folds) == 5
    assert [f.index for f in folds] == list(range(5))
    for f in folds:
        assert_fold_shape(f, embargo)
        assert f.train_stop - f.train_start == 180 * DAY
        assert f.test_stop - f.test_start == 60 * DAY
        assert f.train_start >= n_bars - 365 * DAY  # inside the last 365 days
        assert f.test_stop <= n_bars
    assert folds[-1].test_stop == n_bars
    room = 365 * DAY - (180 * DAY + embargo + 60 * DAY)
    assert folds[0].train_start == n_bars - 365 * DAY + room % 4  # the first fold starts the year
    starts = [f.test_start for f in folds]
    assert starts == sorted(starts) and len(set(starts)) == 5
    steps = {b - a for a, b in itertools.pairwise(starts)}
    assert len(steps) == 1  # evenly spaced


def test_quick_mode_uses_the_whole_year() -> None:
    n_bars = 20_000
    folds = walk_forward_folds(n_bars, "quick", embargo=24)
    room = 365 * DAY - (180 * DAY + 24 + 60 * DAY)
    assert folds[0].train_start == n_bars - 365 * DAY + room % 4
    assert folds[-1].test_stop == n_bars


def test_quick_mode_respects_first_bar() -> None:
    n_bars = 64 + 180 * DAY + 24 + 60 * DAY + 100  # less than a year after the warm-up
    folds = walk_forward_folds(n_bars, "quick", embargo=24, first_bar=64)
    assert len(folds) == 5
    assert min(f.train_start for f in folds) >= 64
    assert folds[-1].test_stop == n_bars


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
    n_bars=st.integers(275 * DAY, 1000 * DAY),  # >= 240 days + max embargo + max first_bar
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
    need_quick = 180 * DAY + 24 + 60 * DAY
    walk_forward_folds(need_quick, "quick", embargo=24)  # exactly enough
    with pytest.raises(ValueError, match=f"quick mode needs {need_quick} bars"):
        walk_forward_folds(need_quick - 1, "quick", embargo=24)
    need_full = 120 * DAY + 24 + 21 * DAY
    assert len(walk_forward_folds(need_full, "full", embargo=24)) == 1
    with pytest.raises(ValueError, match=f"full mode needs {need_full} bars"):
        walk_forward_folds(need_full - 1, "full", embargo=24)
    with pytest.raises(ValueError, match="after bar 100"):
        walk_forward_folds(need_full + 99, "full", embargo=24, first_bar=100)


def test_unknown_mode_and_negative_embargo() -> None:
    with pytest.raises(ValueError, match="unknown mode 'fast'"):
        walk_forward_folds(20_000, "fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="embargo must be >= 0"):
        walk_forward_folds(20_000, "quick", embargo=-1)

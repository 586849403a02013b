"""Walk-forward folds with an embargo gap between each fold's train and test slices.

Windows are defined in calendar days and converted to bars with the dataset's bars per
calendar day, ``bars_per_year / 365`` (24 for hourly bars of a 24/7 market, 96 for
15-minute bars, about 0.69 for daily bars of a weekday-only market; see
:mod:`trainers.data`), rounded to the nearest bar (:func:`trainers.data.days_to_bars`).

Modes:
    * ``quick``: 5 folds with disjoint, contiguous 60-day test windows; the last one ends at
      the last study bar, so together they are the last 300 days of study data. Each fold
      has its own fixed 180-day train window, right before its embargo. Needs 481 days
      (180 + 1 + 5 x 60) of study data after the feature warm-up. Disjoint test windows
      keep the folds' excess Sharpe ratios independent samples, so the objective's
      ``0.1 * std`` penalty measures their real spread. For fast validation.
    * ``full``: expanding train window starting with 120 days, then 21-day test windows
      one after another to the end of the data; every bar is used. Needs 142 days.

A fold's bars are ``train = [train_start, train_stop)``, embargo
``[train_stop, test_start)`` of ``embargo`` bars (never used, so indicators and reward
horizons that straddle the boundary cannot leak; 1 day by default, at least 1 bar),
``test = [test_start, test_stop)``.

Too little data for a mode raises :class:`TooShortError` with one line saying how many
days the mode needs and how many the data has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from trainers.data import Panel, days_to_bars

Mode = Literal["quick", "full"]
BARS_PER_DAY = 24  # hourly bars of a 24/7 market (the embedded dataset)
DEFAULT_EMBARGO = 24  # bars: the 1-day embargo of hourly 24/7 bars
EMBARGO_DAYS = 1
QUICK_FOLDS, QUICK_TRAIN_DAYS, QUICK_TEST_DAYS = 5, 180, 60
FULL_FIRST_TRAIN_DAYS, FULL_TEST_DAYS = 120, 21


class TooShortError(ValueError):
    """Too few study bars for the walk-forward mode; the message is one line."""


@dataclass(frozen=True)
class Fold:
    """Bar indices (into the study panel) of one walk-forward fold."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int

    def as_dict(self) -> dict[str, int]:
        return {
            "index": self.index,
            "train_start": self.train_start,
            "train_stop": self.train_stop,
            "test_start": self.test_start,
            "test_stop": self.test_stop,
        }


def _days(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 0.05 else f"{x:,.1f}"


@dataclass(frozen=True)
class _Need:
    """What a mode needs, for the too-short message."""

    mode: Mode
    bars: int
    days: float
    parts: str
    hint: str

    def error(self, n_bars: int, first_bar: int, bars_per_day: float, span: str | None) -> TooShortError:
        have = max(0, n_bars - first_bar)
        after = f" after the first {first_bar:,} bars (feature warm-up)" if first_bar else ""
        dates = f", {span}" if span else ""
        return TooShortError(
            f"{self.mode} mode needs {_days(self.days)} days ({self.bars:,} bars) of study data{after} "
            f"({self.parts}); the data has {math.floor(have / bars_per_day):,} days ({have:,} bars{dates}); "
            f"use {self.hint}"
        )


def walk_forward_folds(
    n_bars: int,
    mode: Mode = "quick",
    embargo: int | None = None,
    first_bar: int = 0,
    bars_per_day: float = BARS_PER_DAY,
    span: str | None = None,
) -> list[Fold]:
    """Folds over study bars ``[first_bar, n_bars)``.

    Args:
        n_bars: number of study bars (the hold-out bars are not among them).
        mode: ``quick`` or ``full`` (see the module docstring).
        embargo: bars left out between each train and test slice; None: 1 day (at least
            1 bar; 24 bars of hourly 24/7 data).
        first_bar: first usable bar (e.g. after the feature warm-up).
        bars_per_day: bars per calendar day of the data (``bars_per_year / 365``).
        span: the study bars' dates for the too-short message (e.g. ``2019-01-01 ..
            2019-04-06``).

    Returns:
        Folds in time order; the last one ends at ``n_bars``.

    Raises:
        TooShortError: too few bars for the mode (one line: days needed and days present).
        ValueError: unknown mode, negative embargo, or non-positive ``bars_per_day``.
    """
    if not bars_per_day > 0:
        raise ValueError(f"bars_per_day must be positive, got {bars_per_day}")
    if embargo is None:
        embargo = days_to_bars(EMBARGO_DAYS, bars_per_day)
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0 bars, got {embargo}")
    embargo_days = embargo / bars_per_day
    embargo_part = f"{_days(embargo_days)}-day embargo"
    first_train = days_to_bars(FULL_FIRST_TRAIN_DAYS, bars_per_day)
    full_test = days_to_bars(FULL_TEST_DAYS, bars_per_day)
    full_days = FULL_FIRST_TRAIN_DAYS + embargo_days + FULL_TEST_DAYS
    if mode == "quick":
        train = days_to_bars(QUICK_TRAIN_DAYS, bars_per_day)
        test = days_to_bars(QUICK_TEST_DAYS, bars_per_day)
        need = train + embargo + QUICK_FOLDS * test
        if n_bars - first_bar < need:
            raise _Need(
                mode,
                need,
                QUICK_TRAIN_DAYS + embargo_days + QUICK_FOLDS * QUICK_TEST_DAYS,
                f"{QUICK_TRAIN_DAYS}-day train + {embargo_part} + "
                f"{QUICK_FOLDS} x {QUICK_TEST_DAYS}-day tests",
                f"--mode full (needs {_days(full_days)} days), more data, or a later --holdout-cut",
            ).error(n_bars, first_bar, bars_per_day, span)
        first_test = n_bars - QUICK_FOLDS * test
        folds = []
        for k in range(QUICK_FOLDS):
            test_start = first_test + k * test
            folds.append(
                Fold(k, test_start - embargo - train, test_start - embargo, test_start, test_start + test)
            )
        return folds
    if mode == "full":
        n_folds = (n_bars - first_bar - first_train - embargo) // full_test
        if n_folds < 1:
            raise _Need(
                mode,
                first_train + embargo + full_test,
                full_days,
                f"{FULL_FIRST_TRAIN_DAYS}-day first train + {embargo_part} + {FULL_TEST_DAYS}-day test",
                "more data or a later --holdout-cut",
            ).error(n_bars, first_bar, bars_per_day, span)
        # align the last test window with the end of the data
        offset = n_bars - (first_bar + first_train + embargo + n_folds * full_test)
        folds = []
        for k in range(n_folds):
            train_stop = first_bar + offset + first_train + k * full_test
            test_start = train_stop + embargo
            folds.append(Fold(k, first_bar, train_stop, test_start, test_start + full_test))
        return folds
    raise ValueError(f"unknown mode {mode!r}: use 'quick' or 'full'")


def panel_folds(
    panel: Panel, mode: Mode = "quick", embargo: int | None = None, first_bar: int = 0
) -> list[Fold]:
    """:func:`walk_forward_folds` over a study panel, at its bars per day; a too-short
    message names the dates of its usable bars.

    Raises:
        TooShortError, ValueError: as :func:`walk_forward_folds`.
    """
    span = panel.span(first_bar if first_bar < len(panel) else 0)
    return walk_forward_folds(len(panel), mode, embargo, first_bar, panel.timeframe.bars_per_day, span)

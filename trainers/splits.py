"""Walk-forward folds with an embargo gap between each fold's train and test slices.

Modes:
    * ``quick``: 5 folds inside the most recent 12 months of study bars; a fixed 180-day
      train window, 60-day test windows; the last test window ends at the last study bar
      and the windows step evenly back (so consecutive test windows overlap). For fast
      validation.
    * ``full``: expanding train window starting with 120 days, then 21-day test windows
      one after another to the end of the data; every bar is used.

A fold's bars are ``train = [train_start, train_stop)``, embargo
``[train_stop, test_start)`` of ``embargo`` bars (never used, so indicators and reward
horizons that straddle the boundary cannot leak), ``test = [test_start, test_stop)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["quick", "full"]
BARS_PER_DAY = 24
DEFAULT_EMBARGO = 24


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


def walk_forward_folds(
    n_bars: int, mode: Mode = "quick", embargo: int = DEFAULT_EMBARGO, first_bar: int = 0
) -> list[Fold]:
    """Folds over study bars ``[first_bar, n_bars)``.

    Args:
        n_bars: number of study bars (the hold-out bars are not among them).
        mode: ``quick`` or ``full`` (see the module docstring).
        embargo: bars left out between each train and test slice.
        first_bar: first usable bar (e.g. after the feature warm-up).

    Returns:
        Folds in time order; the last one ends at ``n_bars``.

    Raises:
        ValueError: unknown mode, negative embargo, or too few bars for one fold.
    """
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0 bars, got {embargo}")
    d = BARS_PER_DAY
    if mode == "quick":
        n_folds, train, test, span = 5, 180 * d, 60 * d, 365 * d
        lo = max(first_bar, n_bars - span)
        room = (n_bars - lo) - (train + embargo + test)
        if room < 0:
            raise ValueError(
                f"quick mode needs {train + embargo + test} bars after bar {first_bar}, have {n_bars - lo}"
            )
        step = room // (n_folds - 1)
        folds = []
        for k in range(n_folds):
            test_stop = n_bars - (n_folds - 1 - k) * step
            test_start = test_stop - test
            folds.append(Fold(k, test_start - embargo - train, test_start - embargo, test_start, test_stop))
        return folds
    if mode == "full":
        first_train, test = 120 * d, 21 * d
        n_folds = (n_bars - first_bar - first_train - embargo) // test
        if n_folds < 1:
            raise ValueError(
                f"full mode needs {first_train + embargo + test} bars after bar {first_bar}, "
                f"have {n_bars - first_bar}"
            )
        # align the last test window with the end of the data
        offset = n_bars - (first_bar + first_train + embargo + n_folds * test)
        folds = []
        for k in range(n_folds):
            train_stop = first_bar + offset + first_train + k * test
            test_start = train_stop + embargo
            folds.append(Fold(k, first_bar, train_stop, test_start, test_start + test))
        return folds
    raise ValueError(f"unknown mode {mode!r}: use 'quick' or 'full'")

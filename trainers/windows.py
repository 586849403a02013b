"""The hold-out bars and their two windows.

The bars from a study's hold-out cut on are never seen by the study. They are split, in
time order, into

* the **validation** window ``[cut, split)``: the deployer's gate (and anything else that
  selects a model) may look at these bars;
* the **test** window ``[split, end)``: nothing ever selects on it; ``cappuccino evaluate
  --window test`` reports it, once, as the estimate of how a selected model does on bars no
  decision has seen.

By default the split is in the middle (``validation_fraction = 0.5``) of the bars from the
cut to the end of the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Window = Literal["validation", "test", "all"]
WINDOWS: tuple[Window, ...] = ("validation", "test", "all")
DEFAULT_VALIDATION_FRACTION = 0.5
MIN_WINDOW_BARS = 2


@dataclass(frozen=True)
class HoldoutWindows:
    """Bar indices of the hold-out windows of one panel.

    Attributes:
        cut: first hold-out bar (first validation bar).
        split: first test bar.
        end: one past the last bar of the data.
    """

    cut: int
    split: int
    end: int

    def bounds(self, window: Window) -> tuple[int, int]:
        """``(start, stop)`` bar indices of ``validation``, ``test`` or ``all`` (both).

        Raises:
            ValueError: an unknown window name.
        """
        if window == "validation":
            return self.cut, self.split
        if window == "test":
            return self.split, self.end
        if window == "all":
            return self.cut, self.end
        raise ValueError(f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")


def holdout_windows(
    n_bars: int, cut: int, validation_fraction: float = DEFAULT_VALIDATION_FRACTION
) -> HoldoutWindows:
    """Split the hold-out bars ``[cut, n_bars)`` into validation and test windows.

    Args:
        n_bars: bars in the panel.
        cut: index of the first hold-out bar.
        validation_fraction: share of the hold-out bars in the validation window, in (0, 1).

    Raises:
        ValueError: a fraction outside (0, 1), or a window of fewer than 2 bars (the message
            gives the bar counts).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    n_holdout = n_bars - cut
    split = cut + round(n_holdout * validation_fraction)
    if split - cut < MIN_WINDOW_BARS or n_bars - split < MIN_WINDOW_BARS:
        raise ValueError(
            f"{n_holdout} hold-out bars split {validation_fraction:g} / {1 - validation_fraction:g} leave "
            f"{split - cut} validation and {n_bars - split} test bars; each window needs at least "
            f"{MIN_WINDOW_BARS} (move the hold-out cut earlier)"
        )
    return HoldoutWindows(cut, split, n_bars)

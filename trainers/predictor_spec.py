"""What a predictor channel is (:mod:`trainers.predictor`), kept apart from the network so
that reading a bundle's spec does not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEQUENCE_BARS = 24  # bars of history the GRU reads per prediction
HIDDEN = 16
STATE_PREFIX = "predictor."  # the predictor's keys in a bundle's actor.pth
CHANNEL_NAME = "predictor_up"


@dataclass(frozen=True)
class PredictorSpec:
    """What a predictor channel is: the horizon it predicts (bars), the bars it reads and
    the GRU's hidden units.

    Raises:
        ValueError: a value below 1.
    """

    horizon: int
    sequence_bars: int = SEQUENCE_BARS
    hidden: int = HIDDEN

    def __post_init__(self) -> None:
        if min(self.horizon, self.sequence_bars, self.hidden) < 1:
            raise ValueError(f"predictor horizon, sequence_bars and hidden must be >= 1: {self}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "gru",
            "horizon": self.horizon,
            "sequence_bars": self.sequence_bars,
            "hidden": self.hidden,
            "channel": CHANNEL_NAME,
            "meaning": "2 * P(close[t + horizon] > close[t]) - 1; see trainers.predictor",
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PredictorSpec:
        """Raises ValueError (or KeyError/TypeError) on a malformed spec."""
        if data.get("kind", "gru") != "gru":
            raise ValueError(f"unknown predictor kind {data.get('kind')!r}")
        return cls(int(data["horizon"]), int(data["sequence_bars"]), int(data["hidden"]))

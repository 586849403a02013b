"""The long feature set (trainers.features): hand computations, causality, the history a
consumer feeds, and the nesting that lets a model read the leading columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.trainers.test_features import perturb_after, synthetic_prices
from trainers.data import Panel
from trainers.features import (
    ALL_FEATURE_NAMES,
    FEATURE_NAMES,
    FEATURE_SETS,
    HISTORY_BARS,
    LONG_FEATURE_NAMES,
    LONG_HISTORY_BARS,
    LONG_WARMUP_BARS,
    WARMUP_BARS,
    compute_features,
    feature_columns,
    feature_set_names,
    history_bars,
    warmup_bars,
)

N_BARS = 1500


@pytest.fixture(scope="module")
def prices() -> np.ndarray:
    return synthetic_prices(N_BARS, 2, seed=11)


@pytest.fixture(scope="module")
def long_features(prices: np.ndarray) -> np.ndarray:
    return compute_features(prices, ALL_FEATURE_NAMES)


def test_sets_are_nested_prefixes_of_the_pipeline() -> None:
    assert FEATURE_SETS["base"] == FEATURE_NAMES == ALL_FEATURE_NAMES[: len(FEATURE_NAMES)]
    assert FEATURE_SETS["long"] == ALL_FEATURE_NAMES == (*FEATURE_NAMES, *LONG_FEATURE_NAMES)
    assert LONG_FEATURE_NAMES == ("log_return_168", "log_return_720", "sma_gap_1200", "realised_vol_168")
    assert feature_columns(FEATURE_NAMES) == 12 and feature_columns(ALL_FEATURE_NAMES) == 16
    assert (warmup_bars(FEATURE_NAMES), history_bars(FEATURE_NAMES)) == (WARMUP_BARS, HISTORY_BARS)
    assert (warmup_bars(ALL_FEATURE_NAMES), history_bars(ALL_FEATURE_NAMES)) == (1264, 1712)
    assert (LONG_WARMUP_BARS, LONG_HISTORY_BARS) == (1264, 1712)


def test_long_features_equal_a_hand_computation(prices: np.ndarray, long_features: np.ndarray) -> None:
    """Each long feature at a few bars against a direct computation from its definition."""
    close = prices[:, :, 3]
    col = {name: ALL_FEATURE_NAMES.index(name) for name in LONG_FEATURE_NAMES}
    for t in (1199, 1264, 1400, N_BARS - 1):
        for a in range(2):
            got = long_features[t, a]
            assert got[col["log_return_168"]] == pytest.approx(
                np.log(close[t, a] / close[t - 168, a]), abs=1e-12
            )
            assert got[col["log_return_720"]] == pytest.approx(
                np.log(close[t, a] / close[t - 720, a]), abs=1e-12
            )
            sma = sum(close[t - k, a] for k in range(1200)) / 1200.0
            assert got[col["sma_gap_1200"]] == pytest.approx(np.log(close[t, a] / sma), abs=1e-9)
            steps = [np.log(close[t - k, a] / close[t - k - 1, a]) for k in range(168)]
            mean = sum(steps) / 168.0
            vol = np.sqrt(sum((x - mean) ** 2 for x in steps) / 168.0)
            assert got[col["realised_vol_168"]] == pytest.approx(vol, rel=1e-6)


def test_the_base_columns_do_not_change(prices: np.ndarray, long_features: np.ndarray) -> None:
    np.testing.assert_array_equal(long_features[:, :, :12], compute_features(prices))
    np.testing.assert_array_equal(
        compute_features(prices, FEATURE_NAMES[:5]), compute_features(prices)[:, :, :5]
    )


def test_too_early_bars_are_zero_not_nan(long_features: np.ndarray) -> None:
    assert np.isfinite(long_features).all()
    sma_gap = long_features[:, :, ALL_FEATURE_NAMES.index("sma_gap_1200")]
    assert (sma_gap[:1199] == 0.0).all() and (sma_gap[1199:] != 0.0).all()
    assert (long_features[:720, :, ALL_FEATURE_NAMES.index("log_return_720")] == 0.0).all()


@pytest.mark.parametrize("t", [700, 1199, 1300])
def test_long_features_are_causal(prices: np.ndarray, long_features: np.ndarray, t: int) -> None:
    """Changing every bar after t changes nothing at or before t."""
    changed = compute_features(perturb_after(prices, t, seed=t), ALL_FEATURE_NAMES)
    np.testing.assert_array_equal(changed[: t + 1], long_features[: t + 1])
    assert not np.array_equal(changed[t + 1 :], long_features[t + 1 :])


def test_long_history_bars_reproduce_training_values(panel: Panel) -> None:
    """The paper trader computes the long set over its last LONG_HISTORY_BARS bars only."""
    prices = panel.prices[:6000]
    whole = compute_features(prices, ALL_FEATURE_NAMES)
    tail = compute_features(prices[-LONG_HISTORY_BARS:], ALL_FEATURE_NAMES)
    np.testing.assert_allclose(tail[-1], whole[-1], rtol=1e-9, atol=1e-9)
    short = compute_features(prices[-HISTORY_BARS:], ALL_FEATURE_NAMES)  # too little for the SMA
    assert short[-1, 0, ALL_FEATURE_NAMES.index("sma_gap_1200")] == 0.0 != whole[-1, 0, 14]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "no feature names"),
        (
            ("log_return_1", "macd_line"),
            "feature 1 is 'macd_line', this pipeline computes 'log_return_4' there",
        ),
        ((*ALL_FEATURE_NAMES, "x"), "feature 16 is 'x', this pipeline computes 'nothing' there"),
    ],
)
def test_names_that_are_no_prefix_are_refused(
    prices: np.ndarray, names: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compute_features(prices, names)


def test_an_unknown_set_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="feature_set: 'weekly' is not one of base, long"):
        feature_set_names("weekly")


def test_an_unknown_set_on_the_command_line_names_the_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from trainers.worker import app

    argv = ["--study", "s", "--root", str(tmp_path), "--feature-set", "weekly"]
    result = CliRunner().invoke(app, argv, terminal_width=200, env={"COLUMNS": "200"})
    shown = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2, result.output
    assert "--feature-set" in shown and "'weekly' is not one of base, long" in shown, shown
    assert not any(tmp_path.iterdir())  # nothing started, nothing written

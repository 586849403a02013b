"""VIN codes and grades (trainers.naming)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.naming import (
    DEFAULT_GRADE_THRESHOLDS,
    GRADES,
    Vin,
    VinError,
    format_vin,
    grade_at_least,
    grade_for,
    parse_vin,
    vin_for,
)
from trainers.search_space import BATCH_SIZE_CHOICES, LOOKBACK_CHOICES, WIDTH_CHOICES

DOC_EXAMPLE = "PPO-A-N1024B4K-L2E6G98-LB5TD20-20260214"


def test_doc_example_decodes_and_round_trips() -> None:
    vin = parse_vin(DOC_EXAMPLE)
    assert vin.algorithm == "PPO"
    assert vin.grade == "A"
    assert vin.net_width == 1024
    assert vin.batch_size == 4096
    assert vin.learning_rate == pytest.approx(2e-6)
    assert vin.gamma == pytest.approx(0.98)
    assert vin.lookback == 5
    assert vin.trailing_stop == pytest.approx(0.20)
    assert vin.created == date(2026, 2, 14)
    assert format_vin(vin) == DOC_EXAMPLE
    assert str(vin) == DOC_EXAMPLE


@pytest.mark.parametrize(
    "text",
    [
        "PPO-S-N64B256-L35E5G995-LB30TD2-20240101",  # lr 3.5e-4, gamma 0.995, batch below 1K
        "PPO-F-N512B1536-L1E3G9-LB10TD30-19991231",  # batch not a multiple of 1024, gamma 0.9
        "A2C-D-N128B2K-L12E6G9999-LB20TD5-20250704",
    ],
)
def test_other_vins_round_trip(text: str) -> None:
    assert format_vin(parse_vin(text)) == text


def test_vin_fields_decode() -> None:
    vin = parse_vin("PPO-S-N64B256-L35E5G995-LB30TD2-20240101")
    assert vin.batch_size == 256 and vin.net_width == 64
    assert vin.learning_rate == pytest.approx(3.5e-4)
    assert vin.gamma == pytest.approx(0.995)
    assert vin.trailing_stop == pytest.approx(0.02)
    assert parse_vin("PPO-F-N512B1536-L1E3G9-LB10TD30-19991231").batch_size == 1536


search_space_vins = st.builds(
    Vin,
    algorithm=st.sampled_from(["PPO", "SAC", "A2C"]),
    grade=st.sampled_from(GRADES),
    net_width=st.one_of(st.sampled_from(WIDTH_CHOICES), st.integers(1, 100_000)),
    batch_size=st.one_of(st.sampled_from(BATCH_SIZE_CHOICES), st.integers(1, 1 << 20)),
    learning_rate=st.floats(1e-7, 0.949),
    gamma=st.floats(0.0001, 0.99994),
    lookback=st.one_of(st.sampled_from(LOOKBACK_CHOICES), st.integers(1, 5000)),
    trailing_stop=st.integers(0, 99).map(lambda k: k / 100),
    created=st.dates(date(2000, 1, 1), date(2099, 12, 31)),
)


@settings(max_examples=300, deadline=None)
@given(vin=search_space_vins)
def test_format_parse_round_trip(vin: Vin) -> None:
    text = format_vin(vin)
    back = parse_vin(text)
    assert format_vin(back) == text  # format(parse(v)) == v
    assert parse_vin(format_vin(back)) == back
    # the coded fields are the originals up to the documented precision
    assert (back.algorithm, back.grade, back.net_width, back.batch_size) == (
        vin.algorithm,
        vin.grade,
        vin.net_width,
        vin.batch_size,
    )
    assert (back.lookback, back.created) == (vin.lookback, vin.created)
    assert back.trailing_stop == pytest.approx(vin.trailing_stop)
    assert back.learning_rate == pytest.approx(vin.learning_rate, rel=0.06)  # 1-2 significant digits
    assert back.gamma == pytest.approx(vin.gamma, abs=5.1e-5)  # 4 decimals


@settings(max_examples=100, deadline=None)
@given(
    lr=st.floats(1e-5, 1e-3),
    gamma=st.floats(0.9, 0.999),
    width=st.sampled_from(WIDTH_CHOICES),
    batch=st.sampled_from(BATCH_SIZE_CHOICES),
    lookback=st.sampled_from(LOOKBACK_CHOICES),
    trail=st.integers(2, 30),
    value=st.one_of(st.none(), st.floats(-2.0, 2.0)),
)
def test_vin_for_search_space_params(
    lr: float, gamma: float, width: int, batch: int, lookback: int, trail: int, value: float | None
) -> None:
    params = {
        "learning_rate": lr,
        "gamma": gamma,
        "net_width": width,
        "batch_size": batch,
        "lookback": lookback,
        "trailing_stop": trail / 100,
        "n_epochs": 4,  # other parameters are ignored
    }
    text = vin_for(params, value, created=datetime(2026, 2, 14, 23, 59, tzinfo=UTC))
    vin = parse_vin(text)
    assert format_vin(vin) == text
    assert vin.grade == grade_for(value)
    assert vin.created == date(2026, 2, 14)
    assert (vin.net_width, vin.batch_size, vin.lookback) == (width, batch, lookback)
    assert vin.trailing_stop == pytest.approx(trail / 100)


def test_vin_for_by_hand() -> None:
    params = {
        "learning_rate": 2e-6,
        "gamma": 0.98,
        "net_width": 1024,
        "batch_size": 4096,
        "lookback": 5,
        "trailing_stop": 0.2,
    }
    assert vin_for(params, 0.25, created=date(2026, 2, 14)) == DOC_EXAMPLE
    assert vin_for(params, 0.31, created=date(2026, 2, 14)).startswith("PPO-S-")
    assert vin_for(params, None, created=date(2026, 2, 14), algorithm="A2C").startswith("A2C-F-")
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert vin_for(params, 0.0).endswith(today)


@pytest.mark.parametrize(
    ("value", "grade"),
    [
        (0.30, "S"),
        (0.2999999, "A"),
        (0.20, "A"),
        (0.1999999, "B"),
        (0.15, "B"),
        (0.1499999, "C"),
        (0.10, "C"),
        (0.0999999, "D"),
        (0.05, "D"),
        (0.0499999, "F"),
        (0.0, "F"),
        (-1.0, "F"),
        (5.0, "S"),
        (math.inf, "S"),
        (-math.inf, "F"),
        (math.nan, "F"),
        (None, "F"),
    ],
)
def test_grade_thresholds(value: float | None, grade: str) -> None:
    assert grade_for(value) == grade


def test_default_thresholds() -> None:
    assert DEFAULT_GRADE_THRESHOLDS == {"S": 0.30, "A": 0.20, "B": 0.15, "C": 0.10, "D": 0.05}
    assert GRADES == ("S", "A", "B", "C", "D", "F")


def test_custom_thresholds() -> None:
    custom = {"S": 1.0, "A": 0.5, "B": 0.0, "C": -0.5, "D": -1.0}
    assert grade_for(1.0, custom) == "S"
    assert grade_for(0.7, custom) == "A"
    assert grade_for(0.0, custom) == "B"
    assert grade_for(-0.6, custom) == "D"
    assert grade_for(-1.01, custom) == "F"
    assert grade_for(math.nan, custom) == "F"
    partial = {"S": 2.0, "A": 1.0}  # grades without a threshold are never given
    assert grade_for(0.9, partial) == "F"
    assert grade_for(1.5, partial) == "A"
    assert grade_for(0.25) == "A"  # the defaults are unchanged by custom thresholds


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is not a VIN"),
        ("hello", "'hello' is not a VIN (expected e.g. PPO-A-"),
        ("PPO-X-N1024B4K-L2E6G98-LB5TD20-20260214", "is not a VIN"),  # unknown grade
        ("PPO-A-N1024B4K-L2E6G98-LB5TD200-20260214", "is not a VIN"),  # trailing stop >= 1
        ("PPO-A-N1024B4M-L2E6G98-LB5TD20-20260214", "is not a VIN"),
        ("PPO-A-N1024B4K-L2E6G98-LB5TD20-2026021", "is not a VIN"),
        ("ppo-a-n1024b4k-l2e6g98-lb5td20-20260214", "is not a VIN"),
        ("PPO-A-N1024B4K-L2E6G98-LB5TD20-20261340", "20261340 is not a date"),
    ],
)
def test_vin_errors(text: str, fragment: str) -> None:
    with pytest.raises(VinError) as info:
        parse_vin(text)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_vin_format_errors() -> None:
    base = parse_vin(DOC_EXAMPLE)
    fields = base.__dict__
    with pytest.raises(VinError, match="learning rate"):
        format_vin(Vin(**{**fields, "learning_rate": 0.0}))
    with pytest.raises(VinError, match="learning rate"):
        format_vin(Vin(**{**fields, "learning_rate": 1.5}))
    with pytest.raises(VinError, match="gamma"):
        format_vin(Vin(**{**fields, "gamma": 1.0}))
    with pytest.raises(VinError, match="gamma"):
        format_vin(Vin(**{**fields, "gamma": 0.99999}))  # would round to 1
    with pytest.raises(VinError, match="gamma"):
        format_vin(Vin(**{**fields, "gamma": 0.00001}))  # would round to 0
    with pytest.raises(VinError, match="learning rate"):
        format_vin(Vin(**{**fields, "learning_rate": 0.999}))  # would round to 1
    with pytest.raises(VinError, match="cannot name a trial without gamma, lookback"):
        vin_for({"learning_rate": 1e-4, "net_width": 64, "batch_size": 256, "trailing_stop": 0.1}, 0.1)


def test_grade_at_least() -> None:
    assert grade_at_least("S", "A")
    assert grade_at_least("A", "A")
    assert not grade_at_least("B", "A")
    assert grade_at_least("D", "F")
    assert not grade_at_least("F", "D")
    for i, g in enumerate(GRADES):
        for j, m in enumerate(GRADES):
            assert grade_at_least(g, m) == (i <= j)

"""The trial value (trainers.objective.objective_value) on cases computed by hand:
``mean(excess) - 0.1 * std(excess)`` of the per-fold excess Sharpe ratios, with the
population standard deviation (divide by n, not n - 1)."""

from __future__ import annotations

import math

import pytest

from trainers.objective import objective_value


def test_four_folds_by_hand() -> None:
    # mean = 12 / 4 = 3; squared deviations 4, 1, 0, 9 sum to 14; population variance 14 / 4
    excess = [1.0, 2.0, 3.0, 6.0]
    expected = 3.0 - 0.1 * math.sqrt(3.5)  # = 2.8129171306613028
    assert objective_value(excess) == pytest.approx(expected, rel=1e-15)
    assert objective_value(excess) == pytest.approx(2.8129171306613028, rel=1e-15)
    # the sample standard deviation (n - 1) would give 3 - 0.1 * sqrt(14 / 3) = 2.7839...
    assert objective_value(excess) != pytest.approx(3.0 - 0.1 * math.sqrt(14.0 / 3.0), rel=1e-6)


def test_symmetric_folds_are_penalised_by_their_spread() -> None:
    # mean 0, population std 1: the value is -0.1
    assert objective_value([-1.0, 1.0]) == pytest.approx(-0.1, abs=1e-15)
    # mean -0.5, deviations +-1.5, population std 1.5: -0.5 - 0.15
    assert objective_value([-2.0, 1.0]) == pytest.approx(-0.65, abs=1e-15)


def test_equal_folds_have_no_penalty() -> None:
    assert objective_value([0.25]) == 0.25
    assert objective_value([0.4, 0.4, 0.4]) == pytest.approx(0.4, abs=1e-15)


def test_order_of_folds_does_not_matter() -> None:
    assert objective_value([0.3, -0.2, 1.1]) == pytest.approx(objective_value([1.1, 0.3, -0.2]), rel=1e-15)
    # mean 0.4; deviations -0.1, -0.6, 0.7 -> squares 0.01, 0.36, 0.49 sum 0.86; variance 0.86 / 3
    assert objective_value([0.3, -0.2, 1.1]) == pytest.approx(0.4 - 0.1 * math.sqrt(0.86 / 3.0), rel=1e-12)

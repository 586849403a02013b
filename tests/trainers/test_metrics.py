"""trainers.metrics against hand-computed cases, the worked example of the deflated Sharpe
ratio paper, normal-theory and Monte Carlo references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from trainers.metrics import (
    PBOResult,
    annualised_return,
    calmar_ratio,
    deflated_sharpe_ratio,
    expected_maximum_sharpe_ratio,
    exposure,
    max_drawdown,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_bootstrap_ci,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
)


def curve(returns: list[float]) -> np.ndarray:
    """Equity curve starting at 1.0 with the given per-bar simple returns."""
    return np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns))])


def test_simple_returns_and_input_checks() -> None:
    assert simple_returns(np.array([1.0, 1.1, 0.99])) == pytest.approx([0.1, -0.1])
    for bad in (np.array([1.0, -1.0]), np.array([1.0, np.nan]), np.ones((2, 2)), np.array([])):
        with pytest.raises(ValueError):
            simple_returns(bad)
    with pytest.raises(ValueError, match="bars_per_year"):
        sharpe_ratio(np.ones(3), bars_per_year=0)


def test_sharpe_by_hand() -> None:
    # r = (0.1, -0.1, 0.1): mean 1/30, sample std sqrt(0.04 / 3) -> mean / std = sqrt(3) / 6
    equity = curve([0.1, -0.1, 0.1])
    assert sharpe_ratio(equity, 1) == pytest.approx(math.sqrt(3) / 6, rel=1e-12)
    assert sharpe_ratio(equity, 8760) == pytest.approx(math.sqrt(3) / 6 * math.sqrt(8760), rel=1e-12)
    assert sharpe_ratio(np.ones(5), 1) == 0.0


def test_max_drawdown_by_hand() -> None:
    assert max_drawdown(np.array([1.0, 2.0, 1.0, 3.0, 1.5])) == pytest.approx(0.5)
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0


def test_annualised_return_by_hand() -> None:
    equity = np.array([1.0, 1.1, 1.21])
    assert annualised_return(equity, bars_per_year=2) == pytest.approx(0.21)  # two bars = one year
    assert annualised_return(equity, bars_per_year=1) == pytest.approx(0.1)  # each bar a year
    assert annualised_return(equity, bars_per_year=4) == pytest.approx(1.21**2 - 1.0)
    assert annualised_return(np.array([2.0, 1.0]), bars_per_year=1) == pytest.approx(-0.5)
    assert annualised_return(np.array([1.0]), bars_per_year=1) == 0.0


def test_sortino_by_hand() -> None:
    # r = (0.1, -0.1, 0.1, -0.05): mean 0.0125; downside deviation over all four returns
    # sqrt((0.1^2 + 0.05^2) / 4) = sqrt(0.003125); ratio 0.0125 / sqrt(0.003125) = sqrt(0.05)
    equity = curve([0.1, -0.1, 0.1, -0.05])
    assert sortino_ratio(equity, 1) == pytest.approx(math.sqrt(0.05), rel=1e-12)
    assert sortino_ratio(equity, 100) == pytest.approx(math.sqrt(0.05) * 10, rel=1e-12)
    assert sortino_ratio(curve([0.01, 0.0, 0.02]), 1) == math.inf  # no downside
    assert sortino_ratio(np.ones(4), 1) == 0.0
    assert sortino_ratio(curve([-0.01, -0.02]), 1) < 0.0


def test_calmar_by_hand() -> None:
    # four bars = one year: return +10%, worst drawdown 1.2 -> 0.9 = 25% -> 0.1 / 0.25
    equity = np.array([1.0, 1.2, 0.9, 1.0, 1.1])
    assert calmar_ratio(equity, bars_per_year=4) == pytest.approx(0.4)
    assert calmar_ratio(np.ones(4), 4) == 0.0
    assert calmar_ratio(np.array([1.0, 1.1, 1.2]), 2) == math.inf
    assert calmar_ratio(np.array([1.0, 0.5, 0.8]), 2) == pytest.approx(-0.2 / 0.5)


def test_exposure_by_hand() -> None:
    weights = np.array([[0.5, 0.2], [0.0, 0.0], [0.95, 0.0]])
    assert exposure(weights) == pytest.approx((0.7 + 0.0 + 0.95) / 3)
    with pytest.raises(ValueError):
        exposure(np.array([0.5, 0.2]))
    with pytest.raises(ValueError):
        exposure(np.array([[np.nan, 0.1]]))


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(5)
    long = rng.normal(0.0005, 0.01, 8000)
    small = sharpe_bootstrap_ci(long[:500], bars_per_year=8760, seed=1)
    large = sharpe_bootstrap_ci(long, bars_per_year=8760, seed=1)
    for ci in (small, large):
        assert ci.low < ci.sharpe < ci.high
        assert ci.level == 0.95 and ci.n_boot == 1000 and ci.block_length >= 1.0
    assert small.sharpe == pytest.approx(sharpe_ratio(curve(long[:500].tolist()), 8760), rel=1e-9)
    # the width shrinks like 1 / sqrt(n): 16 times the data, about a quarter of the width
    assert (large.high - large.low) < 0.5 * (small.high - small.low)
    assert sharpe_bootstrap_ci(long[:500], 8760, seed=1) == small  # reproducible with a seed


def test_bootstrap_iid_interval_matches_normal_theory() -> None:
    # With block length 1 the stationary bootstrap is the iid bootstrap; for iid normal
    # returns the per-bar Sharpe estimate has standard error sqrt((1 + SR^2 / 2) / n)
    # (Lo 2002, "The Statistics of Sharpe Ratios").
    r = np.random.default_rng(8).normal(0.02, 1.0, 4000)
    ci = sharpe_bootstrap_ci(r, bars_per_year=1, n_boot=4000, seed=2, block_length=1.0)
    se = math.sqrt((1.0 + ci.sharpe**2 / 2.0) / len(r))
    assert ci.high - ci.low == pytest.approx(2 * norm.ppf(0.975) * se, rel=0.1)
    assert ci.block_length == 1.0


def test_bootstrap_block_length_follows_the_serial_dependence() -> None:
    rng = np.random.default_rng(3)
    e = rng.normal(0.0, 0.01, 3000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for t in range(1, len(e)):
        ar[t] = 0.8 * ar[t - 1] + e[t]
    assert sharpe_bootstrap_ci(ar, 8760).block_length > 5.0  # Politis-White estimate on AR(1)
    assert sharpe_bootstrap_ci(e, 8760).block_length < 3.0


def test_bootstrap_degenerate_and_invalid_inputs() -> None:
    ci = sharpe_bootstrap_ci(np.zeros(100), 8760)
    assert (ci.sharpe, ci.low, ci.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=">= 10 returns"):
        sharpe_bootstrap_ci(np.ones(5) * 0.01, 8760)
    with pytest.raises(ValueError, match="level"):
        sharpe_bootstrap_ci(np.linspace(-0.01, 0.01, 50), 8760, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        sharpe_bootstrap_ci(np.linspace(-0.01, 0.01, 50), 8760, n_boot=10)
    with pytest.raises(ValueError, match="block_length"):
        sharpe_bootstrap_ci(np.linspace(-0.01, 0.01, 50), 8760, block_length=0.5)


def test_pbo_by_hand() -> None:
    # S = 2: J = {row 0} selects trial 0, which ranks 1st of 3 (worst) in row 1 ->
    # w = 1/4, logit ln(1/3); J = {row 1} selects trial 2, worst in row 0: the same.
    result = probability_of_backtest_overfitting(np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]))
    assert isinstance(result, PBOResult)
    assert result.pbo == 1.0
    assert result.logits == pytest.approx([math.log(1 / 3)] * 2)
    assert (result.n_combinations, result.n_trials, result.n_splits, result.n_rows_used) == (2, 3, 2, 2)
    # trial 0 is best in both rows: rank 3 of 3 -> w = 3/4, logit ln 3
    result = probability_of_backtest_overfitting(np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0]]))
    assert result.pbo == 0.0
    assert result.logits == pytest.approx([math.log(3)] * 2)
    # all trials equal: average rank (N + 1) / 2 -> logit 0, counted as overfit
    assert probability_of_backtest_overfitting(np.ones((4, 3))).pbo == 1.0


def test_pbo_a_dominant_trial_is_not_overfit() -> None:
    rng = np.random.default_rng(11)
    perf = rng.normal(0.0, 1.0, (16, 30))
    perf[:, 7] += 5.0
    result = probability_of_backtest_overfitting(perf, n_splits=8)
    assert result.n_combinations == math.comb(8, 4)
    assert result.pbo == 0.0
    assert (result.logits > 0).all()


def test_pbo_of_pure_noise_is_about_one_half() -> None:
    rng = np.random.default_rng(12)
    pbos = [probability_of_backtest_overfitting(rng.normal(0.0, 1.0, (16, 20))).pbo for _ in range(30)]
    assert np.mean(pbos) == pytest.approx(0.5, abs=0.08)


def test_pbo_with_five_folds_uses_the_four_most_recent() -> None:
    rng = np.random.default_rng(13)
    perf = rng.normal(0.0, 1.0, (5, 6))
    result = probability_of_backtest_overfitting(perf)
    assert (result.n_splits, result.n_rows_used, result.n_combinations) == (4, 4, 6)
    changed = perf.copy()
    changed[0] = rng.normal(0.0, 100.0, 6)  # the oldest fold is not used
    again = probability_of_backtest_overfitting(changed)
    assert again.pbo == result.pbo
    assert np.array_equal(again.logits, result.logits)
    changed[-1] = rng.normal(0.0, 100.0, 6)
    assert not np.array_equal(probability_of_backtest_overfitting(changed).logits, result.logits)


@pytest.mark.parametrize(
    ("matrix", "n_splits", "message"),
    [
        (np.ones((4, 1)), None, "2 trials"),
        (np.ones((1, 4)), None, "2 periods"),
        (np.ones((6, 4)), 3, "even"),
        (np.ones((6, 4)), 8, "even"),
        (np.ones(4), None, "2-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), None, "finite"),
    ],
)
def test_pbo_rejects(matrix: np.ndarray, n_splits: int | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        probability_of_backtest_overfitting(matrix, n_splits)


def test_deflated_sharpe_ratio_worked_example_of_the_paper() -> None:
    # Bailey & López de Prado 2014, numerical example: annualised SR 2.5 over 5 years of
    # daily returns, 100 trials with annualised V[SR] = 1/2, skewness -3, kurtosis 10:
    # SR0 = 0.1132 per day and DSR = 0.9004.
    sr, var = 2.5 / math.sqrt(250), 0.5 / 250
    assert expected_maximum_sharpe_ratio(100, var) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe_ratio(sr, 100, var, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=5e-5)


def test_probabilistic_sharpe_ratio_by_hand() -> None:
    # normal returns (skew 0, kurtosis 3): z = (0.1 - 0) sqrt(100) / sqrt(1 + 0.5 * 0.01)
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(
        norm.cdf(1.0 / math.sqrt(1.005)), rel=1e-12
    )
    # z = (0.05 - 0.1) sqrt(499) / sqrt(1 + 0.5 * 0.05 + 1.25 * 0.0025)
    expected = norm.cdf(-0.05 * math.sqrt(499) / math.sqrt(1.0 + 0.025 + 0.003125))
    assert probabilistic_sharpe_ratio(0.05, 0.1, 500, -0.5, 6.0) == pytest.approx(expected, rel=1e-12)
    # one trial: nothing was selected, the DSR is the PSR against 0
    assert deflated_sharpe_ratio(0.1, 1, 0.5, 101, 0.0, 3.0) == probabilistic_sharpe_ratio(
        0.1, 0.0, 101, 0.0, 3.0
    )


def test_expected_maximum_sharpe_ratio_approximates_monte_carlo() -> None:
    # E[max of N standard normals] by simulation against the false strategy theorem.
    rng = np.random.default_rng(4)
    for n in (10, 100):
        simulated = rng.standard_normal((20000, n)).max(axis=1).mean()
        assert expected_maximum_sharpe_ratio(n, 1.0) == pytest.approx(simulated, rel=0.03)
    assert expected_maximum_sharpe_ratio(100, 4.0) == pytest.approx(
        2 * expected_maximum_sharpe_ratio(100, 1.0)
    )


def test_sharpe_statistics_reject_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="n_obs"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="<= 0"):
        probabilistic_sharpe_ratio(1.0, 0.0, 100, 3.0, 3.0)  # 1 - 3 + 0.5 < 0
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(0.1, 0, 0.01, 100, 0.0, 3.0)
    with pytest.raises(ValueError, match="variance"):
        expected_maximum_sharpe_ratio(10, -1.0)

"""Performance and overfitting statistics of equity curves, per-bar returns and studies.

Conventions (all fractions, not percent):
    * ``equity``: ``(n + 1,)`` portfolio value at each bar's close, positive and finite;
      the per-bar simple returns are ``r_t = equity[t] / equity[t - 1] - 1``, ``(n,)``.
    * ``bars_per_year``: bars in one year; hourly crypto bars trade around the clock,
      :data:`trainers.data.BARS_PER_YEAR` = 8,760.
    * Risk-free rate and target return are 0 throughout.
    * Sharpe ratios are *annualised* (``* sqrt(bars_per_year)``, Lo 2002) unless a name
      says ``per_bar``: the probabilistic and deflated Sharpe ratios (Bailey & López de
      Prado 2012, 2014) take per-bar Sharpe ratios, since their standard error is in
      units of one observation.

The Sharpe ratio and the maximum drawdown are the definitions of
:mod:`trainers.backtest` (one implementation; these wrappers add input checks). Every
other metric is written here on numpy/scipy and tested against hand-computed cases; the
stationary bootstrap and its block length come from the ``arch`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import norm

from trainers import backtest
from trainers.data import BARS_PER_YEAR

EULER_MASCHERONI = 0.5772156649015329
MIN_BOOTSTRAP_RETURNS = 10  # arch's optimal_block_length needs about this many observations


def _check_equity(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=np.float64)
    if e.ndim != 1 or len(e) < 1:
        raise ValueError(f"equity must be a non-empty 1-D array, got shape {e.shape}")
    if not (np.isfinite(e).all() and (e > 0.0).all()):
        raise ValueError("equity must be finite and positive at every bar")
    return e


def _check_bars_per_year(bars_per_year: float) -> None:
    if not bars_per_year > 0:
        raise ValueError(f"bars_per_year must be positive, got {bars_per_year}")


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """Per-bar simple returns ``(n,)`` of an equity curve ``(n + 1,)``.

    Raises:
        ValueError: equity is not 1-D, empty, or has a non-finite or non-positive value.
    """
    e = _check_equity(equity)
    return e[1:] / e[:-1] - 1.0


def sharpe_ratio(equity: np.ndarray, bars_per_year: float = BARS_PER_YEAR) -> float:
    """Annualised Sharpe ratio of an equity curve ``(n + 1,)``.

    ``mean(r) / std(r, ddof=1) * sqrt(bars_per_year)`` of the per-bar simple returns with
    a zero risk-free rate (Sharpe 1966, "Mutual Fund Performance"; annualisation by
    ``sqrt(q)`` as in Lo 2002, "The Statistics of Sharpe Ratios"). 0 for fewer than two
    returns or a zero standard deviation. Same definition as
    :func:`trainers.backtest.sharpe_ratio`, which computes it.

    Raises:
        ValueError: invalid equity (see :func:`simple_returns`) or ``bars_per_year <= 0``.
    """
    _check_bars_per_year(bars_per_year)
    return backtest.sharpe_ratio(_check_equity(equity), bars_per_year)


def max_drawdown(equity: np.ndarray) -> float:
    """Maximum drawdown ``max_t (1 - equity[t] / max_{s<=t} equity[s])`` in [0, 1) of an
    equity curve ``(n + 1,)`` (Magdon-Ismail & Atiya 2004, "Maximum drawdown"). Computed by
    :func:`trainers.backtest.max_drawdown`.

    Raises:
        ValueError: invalid equity (see :func:`simple_returns`).
    """
    return backtest.max_drawdown(_check_equity(equity))


def annualised_return(equity: np.ndarray, bars_per_year: float = BARS_PER_YEAR) -> float:
    """Compound annual growth rate ``(equity[-1] / equity[0]) ** (bars_per_year / n) - 1``
    of an equity curve ``(n + 1,)`` (geometric annualisation, e.g. Bacon 2008, "Practical
    Portfolio Performance Measurement and Attribution"). 0 for ``n = 0``.

    Raises:
        ValueError: invalid equity (see :func:`simple_returns`) or ``bars_per_year <= 0``.
    """
    _check_bars_per_year(bars_per_year)
    e = _check_equity(equity)
    n = len(e) - 1
    if n == 0:
        return 0.0
    return float(math.exp(math.log(e[-1] / e[0]) * bars_per_year / n) - 1.0)


def sortino_ratio(equity: np.ndarray, bars_per_year: float = BARS_PER_YEAR) -> float:
    """Annualised Sortino ratio of an equity curve ``(n + 1,)`` with target return 0.

    ``mean(r) / DD * sqrt(bars_per_year)`` where the downside deviation is
    ``DD = sqrt(mean(min(r_t, 0) ** 2))`` over all ``n`` per-bar simple returns
    (Sortino & Price 1994, "Performance Measurement in a Downside Risk Framework",
    Journal of Investing 3(3); the lower partial moment of order 2 about the target).

    Returns:
        The ratio; 0 for no returns or when ``mean(r) == 0`` and ``DD == 0``; ``+inf``
        when no return is negative and ``mean(r) > 0``.

    Raises:
        ValueError: invalid equity (see :func:`simple_returns`) or ``bars_per_year <= 0``.
    """
    _check_bars_per_year(bars_per_year)
    r = simple_returns(equity)
    if len(r) == 0:
        return 0.0
    mean = float(r.mean())
    dd = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    if dd == 0.0:
        return math.inf if mean > 0.0 else 0.0
    return mean / dd * math.sqrt(bars_per_year)


def calmar_ratio(equity: np.ndarray, bars_per_year: float = BARS_PER_YEAR) -> float:
    """Calmar ratio ``annualised_return / max_drawdown`` of an equity curve ``(n + 1,)``
    (Young 1991, "Calmar Ratio: A Smoother Tool", Futures 20(1)). Young uses the last 36
    months; here the whole curve, so values of windows of different length are not
    comparable.

    Returns:
        The ratio; 0 when both are 0; ``+inf`` (or ``-inf``) with no drawdown and a
        positive (negative) annualised return.

    Raises:
        ValueError: invalid equity (see :func:`simple_returns`) or ``bars_per_year <= 0``.
    """
    ret = annualised_return(equity, bars_per_year)
    mdd = max_drawdown(equity)
    if mdd == 0.0:
        return 0.0 if ret == 0.0 else math.copysign(math.inf, ret)
    return ret / mdd


def exposure(weights: np.ndarray) -> float:
    """Mean invested fraction ``mean_t sum_i weights[t, i]`` of a weight history
    ``(n, n_assets)`` (cash is ``1 - sum_i weights[t, i]``).

    Pass the weights held during the bars being measured, e.g. ``weights[1:]`` of a
    :class:`trainers.backtest.BacktestResult` or :class:`trainers.baselines.BaselineResult`
    (row 0 is the all-cash start before the first fill).

    Raises:
        ValueError: weights is not a non-empty 2-D array of finite values.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] == 0:
        raise ValueError(f"weights must be a non-empty (n, n_assets) array, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    return float(w.sum(axis=1).mean())


@dataclass(frozen=True)
class SharpeInterval:
    """Annualised Sharpe ratio with a stationary-bootstrap percentile interval.

    Attributes:
        sharpe: point estimate on the original returns (annualised).
        low, high: interval bounds (annualised).
        level: nominal coverage, e.g. 0.95.
        block_length: mean block length of the stationary bootstrap, in bars.
        n_boot: number of resamples.
    """

    sharpe: float
    low: float
    high: float
    level: float
    block_length: float
    n_boot: int


def _sharpe_of_rows(r: np.ndarray, bars_per_year: float) -> np.ndarray:
    """Annualised Sharpe ratio of each row of ``r`` ``(k, n)``; 0 where the std is ~0
    (the rule of :func:`trainers.backtest.sharpe_ratio`)."""
    sd = r.std(axis=-1, ddof=1)
    safe = np.where(sd < 1e-12, 1.0, sd)
    return np.where(sd < 1e-12, 0.0, r.mean(axis=-1) / safe * math.sqrt(bars_per_year))


def sharpe_bootstrap_ci(
    returns: np.ndarray,
    bars_per_year: float = BARS_PER_YEAR,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int | None = 0,
    block_length: float | None = None,
) -> SharpeInterval:
    """Percentile interval of the annualised Sharpe ratio by the stationary bootstrap.

    The stationary bootstrap (Politis & Romano 1994, "The Stationary Bootstrap", JASA 89)
    resamples blocks of geometric length with mean ``block_length`` so that the serial
    dependence of the returns is kept; ``arch.bootstrap.StationaryBootstrap`` draws the
    indices. The default block length is ``arch.bootstrap.optimal_block_length``'s
    stationary estimate (Politis & White 2004, corrected by Patton, Politis & White 2009),
    at least 1 bar. The interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the resampled Sharpe ratios (Efron & Tibshirani 1993, ch. 13).

    Args:
        returns: ``(n,)`` per-bar simple returns, ``n >= 10``.
        bars_per_year: annualisation factor (8,760 for hourly bars).
        level: coverage in (0, 1).
        n_boot: number of resamples, ``>= 100``.
        seed: seed of the resampling (a fixed seed makes the interval reproducible).
        block_length: mean block length in bars (``>= 1``); None estimates it.

    Returns:
        :class:`SharpeInterval`; a series with zero standard deviation (e.g. cash) gets
        the degenerate interval ``[0, 0]`` with block length 1.

    Raises:
        ValueError: not a 1-D finite array of at least 10 returns, ``level`` outside
            (0, 1), ``n_boot < 100``, ``bars_per_year <= 0`` or ``block_length < 1``.
    """
    from arch.bootstrap import StationaryBootstrap, optimal_block_length  # ~1 s import: load on use

    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or len(r) < MIN_BOOTSTRAP_RETURNS:
        raise ValueError(f"need a 1-D array of >= {MIN_BOOTSTRAP_RETURNS} returns, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("returns must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    _check_bars_per_year(bars_per_year)
    if block_length is not None and not block_length >= 1.0:
        raise ValueError(f"block_length must be >= 1 bar, got {block_length}")
    point = float(_sharpe_of_rows(r, bars_per_year))
    if r.std(ddof=1) < 1e-12:
        return SharpeInterval(point, point, point, level, 1.0, n_boot)
    if block_length is None:
        estimate = float(optimal_block_length(r)["stationary"].iloc[0])
        block_length = max(1.0, estimate) if math.isfinite(estimate) else 1.0
    bs = StationaryBootstrap(block_length, r, seed=seed)
    stats = bs.apply(lambda x: _sharpe_of_rows(x, bars_per_year), n_boot).ravel()
    low, high = np.quantile(stats, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return SharpeInterval(point, float(low), float(high), level, float(block_length), n_boot)


@dataclass(frozen=True)
class PBOResult:
    """Probability of backtest overfitting by CSCV.

    Attributes:
        pbo: fraction of combinations whose logit is ``<= 0``, in [0, 1].
        n_combinations: ``C(n_splits, n_splits / 2)``.
        logits: ``(n_combinations,)`` logit of the out-of-sample relative rank of the
            in-sample best trial, one per combination.
        n_trials: number of trials (columns).
        n_splits: number of row groups ``S``.
        n_rows_used: rows used (the oldest ``n_rows % S`` rows are dropped).
    """

    pbo: float
    n_combinations: int
    logits: np.ndarray
    n_trials: int
    n_splits: int
    n_rows_used: int


def probability_of_backtest_overfitting(perf_matrix: np.ndarray, n_splits: int | None = None) -> PBOResult:
    """Probability of backtest overfitting (PBO) by combinatorially symmetric
    cross-validation (Bailey, Borwein, López de Prado & Zhu 2017, "The Probability of
    Backtest Overfitting", Journal of Computational Finance 20(4), section 2).

    Here the rows of ``perf_matrix`` are already per-period performances (walk-forward
    folds, e.g. each trial's per-fold excess Sharpe), so the performance of a trial on a
    set of rows is the mean of its rows in the set (the paper recomputes a Sharpe ratio
    on the concatenated returns instead).

    Steps: keep the last ``S * floor(T / S)`` rows (dropping the ``T mod S`` oldest, as
    the rows must split into ``S`` equal groups), split them in time order into ``S``
    groups; for every one of the ``C(S, S/2)`` choices of ``S/2`` groups as the in-sample
    set ``J`` (the rest is the out-of-sample set ``J̄``): take the trial ``n*`` with the
    best mean in ``J`` (the first on ties), its rank ``ω̄`` among all trials' means in
    ``J̄`` (1 = worst; ties get their average rank), the relative rank
    ``w = ω̄ / (N + 1)`` and the logit ``λ = ln(w / (1 - w))``. PBO is the fraction of
    combinations with ``λ <= 0``, i.e. the selected trial was no better than the median
    out of sample.

    Few rows (e.g. 5 folds in quick mode): the default ``S`` is the largest even number
    ``<= min(T, 16)`` (16 is the paper's suggestion), so 5 rows give ``S = 4`` groups of
    one row each, the oldest fold unused, and 6 combinations.

    Args:
        perf_matrix: ``(T, N)`` performance of ``N`` trials over ``T`` periods (higher is
            better), finite.
        n_splits: ``S``, even, ``2 <= S <= T``; None chooses as above.

    Returns:
        :class:`PBOResult`.

    Raises:
        ValueError: not a 2-D finite array; fewer than 2 trials (nothing is selected);
            fewer than 2 rows (no split into in- and out-of-sample); ``n_splits`` odd,
            below 2 or above the number of rows.
    """
    m = np.asarray(perf_matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"perf_matrix must be 2-D (periods x trials), got shape {m.shape}")
    n_rows, n_trials = m.shape
    if n_trials < 2:
        raise ValueError(f"PBO needs >= 2 trials to select from, got {n_trials}")
    if n_rows < 2:
        raise ValueError(f"PBO needs >= 2 periods (rows) to split in- and out-of-sample, got {n_rows}")
    if not np.isfinite(m).all():
        raise ValueError("perf_matrix must be finite")
    if n_splits is None:
        n_splits = min(n_rows, 16) // 2 * 2
    if n_splits < 2 or n_splits % 2 or n_splits > n_rows:
        raise ValueError(f"n_splits must be even and in [2, {n_rows}] (the number of rows), got {n_splits}")
    size = n_rows // n_splits
    used = m[n_rows - size * n_splits :]
    group_means = used.reshape(n_splits, size, n_trials).mean(axis=1)  # (S, N)
    half = n_splits // 2
    in_sample = np.zeros((math.comb(n_splits, half), n_splits), dtype=bool)
    for c, chosen in enumerate(combinations(range(n_splits), half)):
        in_sample[c, list(chosen)] = True
    r_is = in_sample @ group_means / half  # (C, N)
    r_oos = ~in_sample @ group_means / half
    best = np.argmax(r_is, axis=1)
    chosen_oos = r_oos[np.arange(len(best)), best][:, None]
    rank = (r_oos < chosen_oos).sum(axis=1) + ((r_oos == chosen_oos).sum(axis=1) + 1) / 2.0
    w = rank / (n_trials + 1.0)
    logits = np.log(w / (1.0 - w))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        n_combinations=len(logits),
        logits=logits,
        n_trials=n_trials,
        n_splits=n_splits,
        n_rows_used=size * n_splits,
    )


def probabilistic_sharpe_ratio(
    sr_per_bar: float, sr_benchmark_per_bar: float, n_obs: int, skew: float, kurtosis: float
) -> float:
    """Probabilistic Sharpe ratio: the probability that the true Sharpe ratio exceeds a
    benchmark, given an estimate from ``n_obs`` returns with the given higher moments
    (Bailey & López de Prado 2012, "The Sharpe Ratio Efficient Frontier", Journal of Risk
    15(2); the variance of the estimate is from Mertens 2002):

        PSR = Φ( (SR - SR*) sqrt(n_obs - 1) / sqrt(1 - γ3 SR + (γ4 - 1) / 4 SR²) )

    Args:
        sr_per_bar: observed Sharpe ratio per bar (not annualised: an annualised ratio
            divided by ``sqrt(bars_per_year)``).
        sr_benchmark_per_bar: benchmark Sharpe ratio ``SR*`` per bar.
        n_obs: number of returns the Sharpe ratio was estimated from, ``>= 2``.
        skew: skewness ``γ3`` of the returns.
        kurtosis: kurtosis ``γ4`` of the returns (Pearson's, 3 for a normal
            distribution; not the excess kurtosis).

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: ``n_obs < 2``, a non-finite input, or
            ``1 - γ3 SR + (γ4 - 1) / 4 SR² <= 0`` (moments inconsistent with the ratio).
    """
    values = (sr_per_bar, sr_benchmark_per_bar, skew, kurtosis)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"inputs must be finite, got {values}")
    if n_obs < 2:
        raise ValueError(f"n_obs must be >= 2, got {n_obs}")
    var = 1.0 - skew * sr_per_bar + (kurtosis - 1.0) / 4.0 * sr_per_bar**2
    if var <= 0.0:
        raise ValueError(f"1 - skew*SR + (kurtosis-1)/4*SR^2 = {var} <= 0: check the units and moments")
    z = (sr_per_bar - sr_benchmark_per_bar) * math.sqrt(n_obs - 1) / math.sqrt(var)
    return float(norm.cdf(z))


def expected_maximum_sharpe_ratio(n_trials: int, sr_variance_per_bar: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe ratio estimates whose true
    value is 0 (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio", Journal of
    Portfolio Management 40(5), from the false strategy theorem):

        SR0 = sqrt(V[SR]) ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)))

    with ``γ`` the Euler-Mascheroni constant. 0 for ``N = 1`` (nothing was selected).

    Args:
        n_trials: ``N >= 1``, number of (independent) trials the best was selected from.
        sr_variance_per_bar: ``V[SR]``, variance across trials of their per-bar Sharpe
            ratios (an annualised variance divided by ``bars_per_year``), ``>= 0``.

    Returns:
        ``SR0`` per bar.

    Raises:
        ValueError: ``n_trials < 1`` or a negative or non-finite variance.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not (math.isfinite(sr_variance_per_bar) and sr_variance_per_bar >= 0.0):
        raise ValueError(f"sr_variance_per_bar must be finite and >= 0, got {sr_variance_per_bar}")
    if n_trials == 1:
        return 0.0
    g = EULER_MASCHERONI
    z = (1.0 - g) * norm.ppf(1.0 - 1.0 / n_trials) + g * norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return float(math.sqrt(sr_variance_per_bar) * z)


def deflated_sharpe_ratio(
    sr_per_bar: float,
    n_trials: int,
    sr_variance_per_bar: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
) -> float:
    """Deflated Sharpe ratio: the probabilistic Sharpe ratio of the selected trial
    against the Sharpe ratio expected of the best of ``n_trials`` skill-less trials
    (Bailey & López de Prado 2014, "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5)):
    ``DSR = PSR(SR0)`` with ``SR0`` from :func:`expected_maximum_sharpe_ratio`.

    Worked example of the paper (section "A numerical example"): annualised SR 2.5 on
    daily returns over 5 years (``n_obs = 1250``, so ``SR = 2.5 / sqrt(250)`` per bar),
    ``N = 100`` trials with annualised ``V[SR] = 1/2`` (``1/2 / 250`` per bar),
    skewness -3, kurtosis 10: ``SR0 ≈ 0.1132`` per bar and ``DSR ≈ 0.9004``.

    Args:
        sr_per_bar: Sharpe ratio of the selected trial per bar (annualised / sqrt(q)).
        n_trials: number of trials it was selected from, ``>= 1``.
        sr_variance_per_bar: variance across the trials of their per-bar Sharpe ratios
            (annualised variance / q).
        n_obs: number of returns of the selected trial, ``>= 2``.
        skew: skewness of the selected trial's returns.
        kurtosis: Pearson kurtosis of its returns (3 for a normal distribution).

    Returns:
        A probability in [0, 1]; above 0.95 rejects "no skill" at the 5% level.

    Raises:
        ValueError: see :func:`expected_maximum_sharpe_ratio` and
            :func:`probabilistic_sharpe_ratio`.
    """
    sr0 = expected_maximum_sharpe_ratio(n_trials, sr_variance_per_bar)
    return probabilistic_sharpe_ratio(sr_per_bar, sr0, n_obs, skew, kurtosis)

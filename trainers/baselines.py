"""Baseline strategies run through the agent's own portfolio accounting.

Each baseline is a schedule of target weights decided at the close of bars
``t = start .. stop - 2`` and filled at ``open[t + 1]`` by
:func:`trainers.accounting.rebalance_step` with the given :class:`~trainers.accounting.Costs`
(fee, slippage, ``min_trade`` band), exactly as :func:`trainers.backtest.backtest` runs the
agent, starting all in cash with value 1.0 at ``close[start]``. New targets are clamped
into the agent's limits by :func:`trainers.accounting.enforce_limits` (total at most
``1 - costs.min_cash``, each at most ``costs.max_weight``); the trailing stop
(``costs.trailing_stop``) is an agent rule and is not applied to baselines, as in
:func:`trainers.backtest.buy_and_hold`.

Baselines:
    * ``buy_and_hold_equal``: ``(1 - min_cash) / n_assets`` of each asset, then held.
    * ``cash``: never invests (equity 1.0 throughout).
    * ``moving_average_trend``: an asset is held while its close is above its simple
      moving average.
    * ``olmar``: On-Line Moving Average Reversion (Li & Hoi 2012).
    * ``bcrp``: best constant rebalanced portfolio in hindsight (Cover 1991); clairvoyant.

Prices are ``(T, n_assets, 5)`` OHLCV arrays (:attr:`trainers.data.Panel.prices`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from trainers.accounting import Costs, drifted_weights, enforce_limits, rebalance_step
from trainers.splits import BARS_PER_DAY

DEFAULT_TREND_WINDOW_BARS = 50 * BARS_PER_DAY  # 50 days of hourly bars
DEFAULT_OLMAR_WINDOW = 5  # Li & Hoi 2012's default w, in bars
DEFAULT_OLMAR_EPSILON = 10.0  # Li & Hoi 2012's default reversion threshold ε

Decide = Callable[[int, np.ndarray], np.ndarray]
"""``(t, weights (1, n_assets) at close[t]) -> target weights (n_assets,)`` filled at
``open[t + 1]``; it may use bars ``<= t`` only."""


@dataclass(frozen=True)
class BaselineResult:
    """One baseline over bars ``[start, stop)``; ``n_steps = stop - start - 1``.

    Attributes:
        name: ``buy_and_hold_equal``, ``cash``, ``moving_average_trend``, ``olmar`` or
            ``bcrp``.
        equity: ``(n_steps + 1,)`` value at each close, 1.0 at ``close[start]``.
        weights: ``(n_steps + 1, n_assets)`` weights at each close (row 0: all cash).
        targets: ``(n_steps, n_assets)`` target weights decided at ``close[t]`` for
            ``t = start .. stop - 2`` (before the ``min_trade`` band).
        turnover: sum over bars of ``sum |target - w|`` (traded notional over value).
        clairvoyant: True when the weights were chosen with bars after the decision
            (BCRP): not a strategy anyone could have traded.
    """

    name: str
    equity: np.ndarray
    weights: np.ndarray
    targets: np.ndarray
    turnover: float
    clairvoyant: bool = False


def _check_window(prices: np.ndarray, start: int, stop: int) -> None:
    if prices.ndim != 3 or prices.shape[2] != 5:
        raise ValueError(f"prices must be (T, n_assets, 5) OHLCV, got shape {prices.shape}")
    if not 0 <= start <= stop - 2 or stop > len(prices):
        raise ValueError(f"cannot run [{start}, {stop}) on {len(prices)} bars: need 0 <= start <= stop - 2")


def run_schedule(
    name: str,
    prices: np.ndarray,
    start: int,
    stop: int,
    costs: Costs,
    decide: Decide,
    clairvoyant: bool = False,
) -> BaselineResult:
    """Run a target-weight schedule over bars ``[start, stop)`` from all cash.

    ``decide(t, weights)`` is called at each decision bar ``t = start .. stop - 2`` with
    the weights at ``close[t]`` and returns the targets filled at ``open[t + 1]`` by
    :func:`trainers.accounting.rebalance_step`. The targets are used as returned: clamp
    new positions with :func:`trainers.accounting.enforce_limits` in ``decide``.

    Raises:
        ValueError: prices not ``(T, n_assets, 5)``, or not ``0 <= start <= stop - 2 <= T - 2``.
    """
    _check_window(prices, start, stop)
    n_assets = prices.shape[1]
    close, opn = prices[:, :, 3], prices[:, :, 0]
    n_steps = stop - start - 1
    value, weights = np.ones(1), np.zeros((1, n_assets))
    equity = np.ones(n_steps + 1)
    held = np.zeros((n_steps + 1, n_assets))
    targets = np.zeros((n_steps, n_assets))
    turnover = 0.0
    for k, t in enumerate(range(start, stop - 1)):
        targets[k] = decide(t, weights.copy())
        value, weights, _, to = rebalance_step(
            value, weights, targets[k][None, :], close[t], opn[t + 1], close[t + 1], costs
        )
        turnover += float(to[0])
        equity[k + 1], held[k + 1] = value[0], weights[0]
    return BaselineResult(name, equity, held, targets, turnover, clairvoyant)


def _constant(target: np.ndarray) -> Decide:
    return lambda t, weights: target


def buy_and_hold_equal(prices: np.ndarray, start: int, stop: int, costs: Costs) -> BaselineResult:
    """Equal-weight buy-and-hold with the agent's cash reserve: buy
    ``(1 - costs.min_cash) / n_assets`` of each asset (at most ``max_weight``) at
    ``open[start + 1]``, then hold (the weights drift; no further trade, even when the
    invested fraction drifts above ``1 - min_cash``).

    With ``min_cash = 0`` this is :func:`trainers.backtest.buy_and_hold` (the backtest's
    fully invested benchmark).

    Raises:
        ValueError: see :func:`run_schedule`.
    """
    n_assets = prices.shape[1]
    close, opn = prices[:, :, 3], prices[:, :, 0]
    entry = enforce_limits(np.full((1, n_assets), 1.0 / n_assets), costs)[0]

    def decide(t: int, weights: np.ndarray) -> np.ndarray:
        return entry if t == start else drifted_weights(weights, close[t], opn[t + 1])[0]

    return run_schedule("buy_and_hold_equal", prices, start, stop, costs, decide)


def cash(prices: np.ndarray, start: int, stop: int, costs: Costs) -> BaselineResult:
    """Stay in cash: equity 1.0 at every bar, no trade.

    Raises:
        ValueError: see :func:`run_schedule`.
    """
    return run_schedule("cash", prices, start, stop, costs, _constant(np.zeros(prices.shape[1])))


def above_moving_average(close: np.ndarray, window_bars: int) -> np.ndarray:
    """Trend signal ``(T, n_assets)`` bool: ``close[t] > mean(close[t - window_bars + 1 .. t])``
    (a simple moving average of the last ``window_bars`` closes including bar ``t``, so
    causal); False for ``t < window_bars - 1`` (no full window yet).

    Args:
        close: ``(T, n_assets)`` closes.
        window_bars: moving-average window in bars, ``>= 1``.

    Raises:
        ValueError: ``window_bars < 1``.
    """
    if window_bars < 1:
        raise ValueError(f"window_bars must be >= 1, got {window_bars}")
    csum = np.vstack([np.zeros((1, close.shape[1])), np.cumsum(close, axis=0)])
    signal = np.zeros(close.shape, dtype=bool)
    if len(close) >= window_bars:
        sma = (csum[window_bars:] - csum[:-window_bars]) / window_bars  # sma[j] ends at bar j + w - 1
        signal[window_bars - 1 :] = close[window_bars - 1 :] > sma
    return signal


def moving_average_trend(
    prices: np.ndarray,
    start: int,
    stop: int,
    costs: Costs,
    window_bars: int = DEFAULT_TREND_WINDOW_BARS,
) -> BaselineResult:
    """Moving-average trend filter (a time-series momentum rule; e.g. Faber 2007, "A
    Quantitative Approach to Tactical Asset Allocation", with 10 months there): at the
    close of bar ``t`` each asset whose close is above its simple moving average of the
    last ``window_bars`` closes (bars ``t - window_bars + 1 .. t``, see
    :func:`above_moving_average`) gets the target ``(1 - min_cash) / n_assets`` (its
    equal share of the invested fraction), every other asset 0 (cash). Targets are reset
    to the equal share each bar; drift smaller than ``costs.min_trade`` is not traded.

    The default window is 50 days (``50 * 24`` hourly bars). Bars before ``start`` are
    used for the average when the price array has them; with fewer than ``window_bars``
    closes up to ``t`` the asset stays in cash.

    Raises:
        ValueError: ``window_bars < 1``; see also :func:`run_schedule`.
    """
    _check_window(prices, start, stop)
    n_assets = prices.shape[1]
    signal = above_moving_average(prices[:stop, :, 3], window_bars)
    share = enforce_limits(np.full((1, n_assets), 1.0 / n_assets), costs)[0]
    return run_schedule(
        "moving_average_trend", prices, start, stop, costs, lambda t, weights: np.where(signal[t], share, 0.0)
    )


def simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` ``(n,)`` onto the probability simplex
    ``{b >= 0, sum(b) = 1}`` (Duchi, Shalev-Shwartz, Singer & Chandra 2008, "Efficient
    Projections onto the l1-Ball for Learning in High Dimensions", fig. 1)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    rho = np.nonzero(u - css / np.arange(1, len(u) + 1) > 0)[0][-1]
    return np.maximum(v - css[rho] / (rho + 1.0), 0.0)


def olmar_weights(
    close: np.ndarray,
    start: int,
    stop: int,
    window: int = DEFAULT_OLMAR_WINDOW,
    epsilon: float = DEFAULT_OLMAR_EPSILON,
    initial_portfolio: np.ndarray | None = None,
) -> np.ndarray:
    """OLMAR portfolios (fully invested, no cash) decided at ``close[t]``,
    ``t = start .. stop - 2``: ``(stop - start - 1, n_assets)``.

    On-Line Moving Average Reversion, OLMAR-1 with the simple moving average (Li & Hoi
    2012, "On-Line Portfolio Selection with Moving Average Reversion", ICML, algorithms 1
    and 2). Starting from ``initial_portfolio`` (uniform by default) before ``start``, at
    each ``t``:

        x̃ = mean(close[t - w + 1 .. t]) / close[t]        (predicted price relative)
        λ = max(0, (ε - b·x̃) / ||x̃ - mean(x̃)||²)          (0 when the norm is 0)
        b ← simplex_projection(b + λ (x̃ - mean(x̃)))

    using closes ``<= t`` only; ``b`` is left unchanged while ``t < w - 1``.

    Written from the paper: the reference implementation, the ``universal-portfolios``
    package (``universal.algos.OLMAR``), requires ``pandas < 3``, pulls in ``yfinance``,
    ``pandas-datareader``, ``plotly``, ``seaborn``, ``cvxopt`` and ``scikit-learn``, and
    0.4.17 fails to import without the undeclared ``six``; it is not a dependency. The test
    suite checks these weights against values that package computed on the same closes
    (its weight row ``t + 1`` is this function's row for ``t``). One difference: for
    ``t < w`` that package predicts the relative ``close[t] / close[0]``, which is not in
    the paper; here ``b`` stays as it is until a full window exists.

    Args:
        close: ``(T, n_assets)`` closes, positive.
        start, stop: decision bars ``[start, stop - 1)``.
        window: moving-average window ``w`` in bars, ``>= 2``.
        epsilon: reversion threshold ``ε`` (``> 1`` in the paper; 10 by default).
        initial_portfolio: ``(n_assets,)`` portfolio on the simplex held before ``start``.

    Raises:
        ValueError: ``window < 2``, ``epsilon <= 0``, ``stop > T``, or an
            ``initial_portfolio`` of the wrong shape or off the simplex.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 bars, got {window}")
    if not epsilon > 0.0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if stop > len(close):
        raise ValueError(f"stop {stop} is past the {len(close)} bars")
    n_assets = close.shape[1]
    if initial_portfolio is None:
        b = np.full(n_assets, 1.0 / n_assets)
    else:
        b = np.asarray(initial_portfolio, dtype=np.float64)
        if b.shape != (n_assets,) or (b < 0.0).any() or abs(b.sum() - 1.0) > 1e-9:
            raise ValueError(f"initial_portfolio must be ({n_assets},) on the simplex, got {b}")
    out = np.empty((max(stop - start - 1, 0), n_assets))
    for k, t in enumerate(range(start, stop - 1)):
        if t >= window - 1:
            x_pred = close[t - window + 1 : t + 1].mean(axis=0) / close[t]
            dev = x_pred - x_pred.mean()
            norm2 = float(dev @ dev)
            lam = max(0.0, (epsilon - float(b @ x_pred)) / norm2) if norm2 > 0.0 else 0.0
            b = simplex_projection(b + lam * dev)
        out[k] = b
    return out


def olmar(
    prices: np.ndarray,
    start: int,
    stop: int,
    costs: Costs,
    window: int = DEFAULT_OLMAR_WINDOW,
    epsilon: float = DEFAULT_OLMAR_EPSILON,
) -> BaselineResult:
    """OLMAR (Li & Hoi 2012, see :func:`olmar_weights`) on the closes, its fully
    invested portfolio scaled into the limits by :func:`trainers.accounting.enforce_limits`
    (times ``1 - min_cash``, each at most ``max_weight``) and filled at the next open.

    The window is in bars: the paper's ``w = 5`` was for daily bars; on hourly bars it
    reverts over 5 hours and trades often, so fees weigh heavily.

    Raises:
        ValueError: see :func:`olmar_weights` and :func:`run_schedule`.
    """
    _check_window(prices, start, stop)
    targets = enforce_limits(olmar_weights(prices[:, :, 3], start, stop, window, epsilon), costs)
    return run_schedule("olmar", prices, start, stop, costs, lambda t, weights: targets[t - start])


def bcrp_weights(prices: np.ndarray, start: int, stop: int, costs: Costs) -> np.ndarray:
    """Weights ``(n_assets,)`` of the best constant rebalanced portfolio in hindsight over
    bars ``[start, stop)``. CLAIRVOYANT: it uses every bar of the window.

    A constant rebalanced portfolio ``b`` (cash ``1 - sum(b)``) trades back to ``b`` at
    each ``open[t + 1]``; without costs its wealth over the window is
    ``prod_k (1 + b·(x_k - 1))`` with the price relatives ``x_k = open[t + 2] / open[t + 1]``
    (``close[stop - 1] / open[stop - 1]`` for the last step). The BCRP maximises the log
    of that wealth (Cover 1991, "Universal Portfolios", Mathematical Finance 1(1)) over
    the agent's limits ``b >= 0``, ``b_i <= max_weight``, ``sum(b) <= 1 - min_cash``, a
    concave problem solved by SLSQP (scipy.optimize). Costs are left out of the
    objective (so the choice is the classical BCRP); they are paid when it is run.

    Raises:
        ValueError: see :func:`run_schedule`.
    """
    _check_window(prices, start, stop)
    n_assets = prices.shape[1]
    opn, close = prices[:, :, 0], prices[:, :, 3]
    ends = np.vstack([opn[start + 2 : stop], close[stop - 1 : stop]])  # (n_steps, n_assets)
    excess = ends / opn[start + 1 : stop] - 1.0  # x_k - 1
    cap = 1.0 - costs.min_cash
    x0 = enforce_limits(np.full((1, n_assets), 1.0 / n_assets), costs)[0]

    def neg_log_wealth(b: np.ndarray) -> tuple[float, np.ndarray]:
        growth = np.maximum(1.0 + excess @ b, 1e-300)
        return -float(np.log(growth).mean()), -(excess / growth[:, None]).mean(axis=0)

    res = minimize(
        neg_log_wealth,
        x0,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, costs.max_weight)] * n_assets,
        constraints=[{"type": "ineq", "fun": lambda b: cap - b.sum(), "jac": lambda b: -np.ones(n_assets)}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    return enforce_limits(res.x[None, :], costs)[0]


def best_constant_rebalanced_portfolio(
    prices: np.ndarray, start: int, stop: int, costs: Costs
) -> BaselineResult:
    """Best constant rebalanced portfolio in hindsight (BCRP; Cover 1991), CLAIRVOYANT:
    its weights (:func:`bcrp_weights`) are chosen with every bar of ``[start, stop)``, so it
    is an upper reference, not a tradable strategy; the result has ``clairvoyant=True``.
    It buys the weights at ``open[start + 1]`` and trades back to them at each open
    (drift below ``costs.min_trade`` is not traded), paying the costs.

    Raises:
        ValueError: see :func:`run_schedule`.
    """
    b = bcrp_weights(prices, start, stop, costs)
    return run_schedule("bcrp", prices, start, stop, costs, _constant(b), clairvoyant=True)

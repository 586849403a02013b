"""Risk rules of the paper trader: a thin layer over :mod:`trainers.accounting`, which holds
the one implementation of the rules (the same code trains, backtests and trades).

For a decision at the close of bar ``t`` (all weights are fractions of equity ``V`` at that
close; cash is ``1 - sum(w)``):

1. ``target = action_to_weights(action, scheme)``: long only, each ``<= max_weight``, total
   ``<= 1 - min_cash``. At a bar that is not one of the model's decision bars (a model
   that decides every ``k`` bars, :func:`trainers.backtest.decision_bars`) there is no
   action and the target is the current weights: nothing is traded but stopped positions
   (steps 3 and 5 do not apply), exactly as the backtest holds;
2. ``apply_trailing_stop``: a held asset whose close is ``<= hwm * (1 - trailing_stop)``
   (high-water mark of the close since entry) gets target 0;
3. ``enforce_limits`` (a no-op after 1, kept as the final guard);
4. the no-trade band: ``executed_target`` with ``min_trade = max(costs.min_trade,
   min_notional / V)`` keeps the current weight of every asset whose change is below it (no
   order); with a broker that applies ``costs.min_trade`` at the fill (the simulated one,
   exactly as the backtest) only the minimum order notional applies here;
5. two exceptions keep 4 from breaking a rule: a stopped position is always sold in full,
   and if the kept weights would break the maximum weight or the cash reserve, every kept
   sell is placed after all, selling at least ``min_notional`` (or the whole position).

Orders are then placed for every asset whose planned weight differs from its weight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from trainers.accounting import (
    Costs,
    action_to_weights,
    apply_trailing_stop,
    enforce_limits,
    executed_target,
)

LIMIT_EPS = 1e-12


@dataclass(frozen=True)
class PlannedOrder:
    """One order of a decision: asset column ``j``, ``side`` (buy | sell), estimated
    quantity at the decision close (asset units, > 0), the weight it trades to, and why."""

    j: int
    side: str
    qty: float
    target_weight: float
    reason: str


@dataclass(frozen=True)
class RiskDecision:
    """Outcome of :func:`decide`; vectors are ``(n_assets,)``.

    Attributes:
        target: weights after steps 1-3 (what the model is allowed to hold).
        planned: weights after the orders (steps 4-5) at the decision close.
        stopped: assets exited by the trailing stop.
        orders: the orders to place.
    """

    target: np.ndarray
    planned: np.ndarray
    stopped: np.ndarray
    orders: list[PlannedOrder]


def min_trade_for(min_notional: float, equity: float) -> float:
    """The accounting's ``min_trade`` band for a minimum order notional: ``min_notional /
    equity`` (a fraction of equity), capped just below 1 (``Costs`` requires ``< 1``)."""
    if min_notional <= 0.0:
        return 0.0
    if equity <= 0.0:
        return 1.0 - 1e-9
    return min(min_notional / equity, 1.0 - 1e-9)


def decide(
    action: np.ndarray | None,
    qty: np.ndarray,
    hwm: np.ndarray,
    close: np.ndarray,
    cash: float,
    costs: Costs,
    min_notional: float,
    band_at_decision: bool = True,
    action_scheme: str = "scores",
) -> RiskDecision:
    """Turn a model's action into risk-checked orders (see the module docstring).

    Args:
        action: ``(action_dim,)`` in [-1, 1] (NaN counts as 0) under ``action_scheme``
            (:func:`trainers.accounting.action_to_weights`); None: not a decision bar, hold.
        qty: ``(n_assets,)`` held quantities (asset units, >= 0).
        hwm: ``(n_assets,)`` high-water marks of the close since entry (0 when flat).
        close: ``(n_assets,)`` closes of the decision bar (quote currency, > 0).
        cash: cash (quote currency).
        costs: the traded execution model (risk limits and the no-trade band).
        min_notional: smallest order notional (quote currency).
        band_at_decision: apply ``costs.min_trade`` here, against the weights at the
            decision close (a live broker); False when the broker applies it at the fill
            against the weights drifted to the open, as the backtest does (the simulated
            broker). The minimum order notional applies here either way.

    Returns:
        :class:`RiskDecision`. With equity ``V <= 0`` nothing is bought.
    """
    qty = np.asarray(qty, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    equity = cash + float(qty @ close)
    n = len(qty)
    if equity <= 0.0:  # nothing left to risk: exit everything
        orders = [PlannedOrder(int(j), "sell", float(qty[j]), 0.0, "limit") for j in np.flatnonzero(qty > 0)]
        zeros = np.zeros(n)
        return RiskDecision(zeros, zeros, np.zeros(n, dtype=bool), orders)
    weights = (qty * close / equity)[None, :]
    m = min_trade_for(min_notional, equity)
    if band_at_decision:
        m = max(m, costs.min_trade)
    band = dataclasses.replace(costs, min_trade=m)
    hold = action is None
    if hold:
        target = weights.copy()
    else:
        act = np.asarray(action, dtype=np.float64).reshape(1, -1)
        target = action_to_weights(act, band, action_scheme)
    target, stopped = apply_trailing_stop(target, weights, hwm[None, :], close, band.trailing_stop)
    if not hold:
        target = enforce_limits(target, band)
    planned = executed_target(target, weights, close, close, band).copy()
    # below the minimum notional (also where it exceeds the equity, beyond the band's cap)
    kept = (planned != target) | (np.abs(target - weights) * equity < min_notional)
    planned = np.where(kept, weights, planned)
    stop_mask = stopped[0]
    planned[0, stop_mask] = 0.0
    kept[0, stop_mask] = False
    cap = 1.0 - band.min_cash
    breaks = not hold and (planned.sum() > cap + LIMIT_EPS or (planned > band.max_weight + LIMIT_EPS).any())
    forced = np.zeros(n, dtype=bool)
    if breaks:
        forced = kept[0] & (weights[0] > target[0])
        at_least = min_notional / equity  # sell the minimum notional, or the whole position
        planned[0, forced] = np.maximum(0.0, np.minimum(target[0, forced], weights[0, forced] - at_least))
        kept[0, forced] = False
    orders: list[PlannedOrder] = []
    for j in range(n):
        if kept[0, j] or planned[0, j] == weights[0, j]:
            continue
        p, w = float(planned[0, j]), float(weights[0, j])
        order_qty = float(qty[j]) if p == 0.0 else abs(p - w) * equity / close[j]
        if order_qty <= 0.0:  # a change too small to express in units (e.g. a dust account)
            kept[0, j] = True
            continue
        reason = "trailing_stop" if stop_mask[j] else ("limit" if forced[j] else "rebalance")
        orders.append(PlannedOrder(j, "buy" if p > w else "sell", order_qty, p, reason))
    final = np.where(kept[0], weights[0], planned[0])
    return RiskDecision(target[0], final, stop_mask.copy(), orders)

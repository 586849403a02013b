"""Portfolio accounting and risk rules: the one implementation shared by the training
environment, the backtest, the deployer's gate and the simulated broker.

A portfolio is described by its value ``V`` (quote currency, e.g. USD) and its weights
``w`` (fraction of ``V`` held in each asset; cash is ``1 - sum(w)``). Long only,
``w >= 0`` and ``sum(w) <= 1``. Every function is vectorised over a leading axis of
``n`` portfolios (``n = 1`` for a single account); shapes are given as
``(n, n_assets)``.

Timing of one bar step (decision made at the close of bar ``t`` with bars ``<= t``):

1. weights drift from ``close[t]`` to ``open[t+1]``;
2. the portfolio rebalances to the target weights at ``open[t+1]`` (an asset whose
   weight would change by less than ``min_trade`` is not traded), paying
   ``(fee + slippage) * turnover * V`` where ``turnover = sum |target - w|``
   (one-way traded notional over value, each side charged) in cash: traded assets end at
   their target weight of the value after costs, an asset that is not traded keeps its
   units (as at a broker);
3. weights drift from ``open[t+1]`` to ``close[t+1]``, where the value is marked.

The fee is charged on the pre-trade value, a first-order approximation of the exact
cost-adjusted rebalance (Jiang, Xu & Liang 2017, "A Deep Reinforcement Learning
Framework for the Financial Portfolio Management Problem", eq. 14) whose error is
``O(fee^2)``.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

DEFAULT_FEE = 0.0025  # per side, fraction of traded notional
DEFAULT_MIN_CASH = 0.05  # minimum cash reserve, fraction of value
DEFAULT_TRAILING_STOP = 0.10  # fraction below the high-water mark since entry
DEFAULT_MIN_TRADE = 0.01  # smallest trade per asset, fraction of value (a no-trade band)
TRADER_SLIPPAGE = 0.0005  # slippage per side the paper trader assumes by default


Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A fraction in [0, 1): fee, slippage, cash reserve, trailing stop, minimum trade."""
Weight = Annotated[float, Field(gt=0.0, le=1.0)]
"""A fraction in (0, 1]: the maximum weight of one asset."""


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Costs:
    """Trading frictions and risk limits (all fractions, not percent): the one execution
    model. The configuration models reuse its bound types (:data:`Rate`, :data:`Weight`).

    Attributes:
        fee: commission per side on traded notional (default 0.25%).
        slippage: adverse fill price deviation per side (default 0 in training).
        min_cash: minimum cash reserve; target weights sum to at most ``1 - min_cash``.
        max_weight: maximum weight of any single asset.
        trailing_stop: exit an asset when its close falls this far below its high-water
            mark since entry; ``0`` disables the stop.
        min_trade: smallest trade per asset as a fraction of value; a smaller change of
            weight is not traded (the asset keeps its drifted weight). The paper trader's
            minimum order notional maps onto it as ``min_notional / value``.

    Raises:
        pydantic.ValidationError (a ValueError): a value outside its bounds, naming it.
    """

    fee: Rate = DEFAULT_FEE
    slippage: Rate = 0.0
    min_cash: Rate = DEFAULT_MIN_CASH
    max_weight: Weight = 1.0
    trailing_stop: Rate = DEFAULT_TRAILING_STOP
    min_trade: Rate = DEFAULT_MIN_TRADE

    def as_dict(self) -> dict[str, float]:
        """The six fields by name (what study attributes and ``model.json`` record)."""
        return {name: float(getattr(self, name)) for name in COST_FIELDS}

    @classmethod
    def from_dict(cls, data: object, where: str) -> Costs:
        """Costs from a recorded dict (study attribute, ``model.json``, manifest).

        Raises:
            ValueError: not a dict, an unknown or missing field, or a value out of bounds;
                the message starts with ``where`` and names the field.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: costs must be an object with {', '.join(COST_FIELDS)}")
        unknown = sorted(set(data) - set(COST_FIELDS))
        missing = [k for k in COST_FIELDS if k not in data]
        problems = [f"unknown {', '.join(unknown)}"] if unknown else []
        problems += [f"missing {', '.join(missing)}"] if missing else []
        if problems:
            raise ValueError(f"{where}: costs: {'; '.join(problems)}")
        try:
            values = {k: float(data[k]) for k in COST_FIELDS}
        except (TypeError, ValueError):
            bad = next(k for k in COST_FIELDS if not isinstance(data[k], (int, float)))
            raise ValueError(f"{where}: costs.{bad}: {data[bad]!r} is not a number") from None
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{where}: costs.{first['loc'][0]}: {first['msg']}") from None

    def differences(self, other: Costs) -> dict[str, tuple[float, float]]:
        """Fields whose values differ: ``{name: (self, other)}``."""
        return {
            k: (getattr(self, k), getattr(other, k))
            for k in COST_FIELDS
            if getattr(self, k) != getattr(other, k)
        }


COST_FIELDS: tuple[str, ...] = ("fee", "slippage", "min_cash", "max_weight", "trailing_stop", "min_trade")


class CostOverrides(BaseModel):
    """Optional values of the six :class:`Costs` fields with the same bounds (None = not
    given): the paper trader's overrides of its model's costs, and the cost options of the
    commands that choose a study's costs."""

    fee: Rate | None = None
    slippage: Rate | None = None
    min_cash: Rate | None = None
    max_weight: Weight | None = None
    trailing_stop: Rate | None = None
    min_trade: Rate | None = None

    def overrides(self) -> dict[str, float]:
        """The fields that are set, by name."""
        return {k: float(v) for k in COST_FIELDS if (v := getattr(self, k)) is not None}

    def apply(self, base: Costs) -> Costs:
        """``base`` with the set fields replaced."""
        return Costs(**{**base.as_dict(), **self.overrides()})


def costs_from_options(base: Costs, where: str, **options: float | None) -> Costs:
    """``base`` with the cost options that were given (not None) replaced, validated.

    Raises:
        ValueError: an unknown option or a value out of bounds; the message starts with
            ``where`` and names the field.
    """
    given = {k: v for k, v in options.items() if v is not None}
    return Costs.from_dict({**base.as_dict(), **given}, where)


ACTION_SCHEMES: tuple[str, ...] = ("scores", "softmax")
"""How an agent's action maps to target weights: ``scores`` (one score per asset,
:func:`score_weights`) or ``softmax`` (one logit per asset plus one for cash,
:func:`softmax_weights`)."""
SOFTMAX_LOGIT_SCALE = 3.0
"""Actions in [-1, 1] are scaled to logits in [-3, 3]: enough to put 99% of the value in one
asset or in cash (with 3 assets, ``1 / (1 + 3 e^-6) = 0.993``)."""


def action_dim(scheme: str, n_assets: int) -> int:
    """Length of an action vector: ``n_assets`` for ``scores``, ``n_assets + 1`` (cash last)
    for ``softmax``.

    Raises:
        ValueError: unknown scheme.
    """
    if scheme not in ACTION_SCHEMES:
        raise ValueError(f"unknown action scheme {scheme!r}; known: {', '.join(ACTION_SCHEMES)}")
    return n_assets + (scheme == "softmax")


def action_to_weights(action: np.ndarray, costs: Costs, scheme: str = "scores") -> np.ndarray:
    """Target weights ``(n, n_assets)`` of actions ``(n, action_dim(scheme, n_assets))`` in
    [-1, 1] under ``scheme`` (:data:`ACTION_SCHEMES`).

    Raises:
        ValueError: unknown scheme.
    """
    if scheme == "softmax":
        return softmax_weights(action, costs)
    if scheme != "scores":
        raise ValueError(f"unknown action scheme {scheme!r}; known: {', '.join(ACTION_SCHEMES)}")
    return score_weights(action, costs)


def softmax_weights(action: np.ndarray, costs: Costs) -> np.ndarray:
    """Map logits for each asset and cash to long-only target weights: the portfolio-vector
    action of Jiang, Xu & Liang (2017, "A Deep Reinforcement Learning Framework for the
    Financial Portfolio Management Problem", section 3.2; also FinRL's portfolio
    environments): ``p = softmax(3 * a)`` over the ``n_assets + 1`` entries, the asset
    entries ``p[:n_assets]`` are the weights, then :func:`enforce_limits` applies the cash
    reserve and the maximum weight. A zero action (an untrained agent's mean) is the
    equal-weight portfolio over assets and cash, ``1 / (n_assets + 1)`` each.

    Args:
        action: ``(n, n_assets + 1)`` in [-1, 1] (cash last); values outside are clipped,
            NaN -> 0.

    Returns:
        ``(n, n_assets)`` float64 target weights.
    """
    a = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), -1.0, 1.0) * SOFTMAX_LOGIT_SCALE
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return enforce_limits(p[..., :-1], costs)


def score_weights(action: np.ndarray, costs: Costs) -> np.ndarray:
    """Map per-asset scores in [-1, 1] to long-only target weights.

    A score ``<= 0`` means no position. Positive scores ``s`` become
    ``w = s * (1 - min_cash) / max(1, sum(s))``, then each weight is capped at
    ``max_weight``; hence ``0 <= w <= max_weight`` and ``sum(w) <= 1 - min_cash``.

    Args:
        action: ``(n, n_assets)`` scores; values outside [-1, 1] are clipped, NaN -> 0.

    Returns:
        ``(n, n_assets)`` float64 target weights.
    """
    s = np.clip(np.nan_to_num(np.asarray(action, dtype=np.float64)), 0.0, 1.0)
    total = s.sum(axis=-1, keepdims=True)
    w = s * ((1.0 - costs.min_cash) / np.maximum(total, 1.0))
    return np.minimum(w, costs.max_weight)


def enforce_limits(target: np.ndarray, costs: Costs) -> np.ndarray:
    """Clamp arbitrary target weights ``(n, n_assets)`` into the risk limits: long only,
    each ``<= max_weight``, total ``<= 1 - min_cash`` (scaled down proportionally)."""
    w = np.minimum(np.clip(np.nan_to_num(target), 0.0, None), costs.max_weight)
    total = w.sum(axis=-1, keepdims=True)
    cap = 1.0 - costs.min_cash
    return w * np.where(total > cap, cap / np.maximum(total, 1e-300), 1.0)


def apply_trailing_stop(
    target: np.ndarray, weights: np.ndarray, hwm: np.ndarray, close: np.ndarray, stop: float
) -> tuple[np.ndarray, np.ndarray]:
    """Force the target of every stopped position to 0.

    A position is stopped when it is held (``weights > 0``) and
    ``close <= hwm * (1 - stop)``.

    Args:
        target, weights, hwm: ``(n, n_assets)``; hwm is the high-water mark of the close
            since entry (0 when flat).
        close: ``(n, n_assets)`` or ``(n_assets,)`` close of the decision bar.
        stop: trailing-stop fraction; 0 disables.

    Returns:
        ``(target with stopped assets at 0, stopped mask (n, n_assets) bool)``.
    """
    if stop <= 0.0:
        return target, np.zeros(target.shape, dtype=bool)
    stopped = (weights > 0.0) & (close <= hwm * (1.0 - stop))
    return np.where(stopped, 0.0, target), stopped


def update_hwm(hwm: np.ndarray, weights: np.ndarray, close: np.ndarray) -> np.ndarray:
    """High-water mark of the close since entry, after a bar: ``max(hwm, close)`` while
    held (a new entry starts from the close), 0 when flat. Shapes ``(n, n_assets)``."""
    return np.where(weights > 0.0, np.maximum(hwm, close), 0.0)


def rebalance_step(
    value: np.ndarray,
    weights: np.ndarray,
    target: np.ndarray,
    close_t: np.ndarray,
    open_next: np.ndarray,
    close_next: np.ndarray,
    costs: Costs,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Advance portfolios by one bar (see the module docstring for the timing).

    Args:
        value: ``(n,)`` portfolio value at ``close[t]``.
        weights: ``(n, n_assets)`` weights at ``close[t]``.
        target: ``(n, n_assets)`` target weights, already within the limits; changes
            smaller than ``costs.min_trade`` are not traded.
        close_t, open_next, close_next: ``(n, n_assets)`` or ``(n_assets,)`` prices.

    Returns:
        ``(value at close[t+1] (n,), weights at close[t+1] (n, n_assets),
        cost paid (n,) in quote currency, turnover (n,) as a fraction of value)``.
        Callers that need the executed target (after the ``min_trade`` band) use
        :func:`executed_target`.
    """
    held = weights * (open_next / close_t)
    growth1 = 1.0 - weights.sum(axis=-1) + held.sum(axis=-1)
    value_open = value * growth1
    w_open = held / growth1[:, None]
    if costs.min_trade > 0.0:
        target = np.where(np.abs(target - w_open) < costs.min_trade, w_open, target)
    turnover = np.abs(target - w_open).sum(axis=-1)
    cost = value_open * (costs.fee + costs.slippage) * turnover
    value_traded = value_open - cost
    # the cost is paid in cash: an asset that is not traded keeps its units, so its weight of
    # the value after costs grows by value_open / value_traded
    keep = value_open / np.where(value_traded > 0.0, value_traded, 1.0)
    after = np.where(target == w_open, w_open * keep[:, None], target)
    g2 = close_next / open_next
    held2 = after * g2
    growth2 = 1.0 - after.sum(axis=-1) + held2.sum(axis=-1)
    new_value = value_traded * growth2
    new_weights = held2 / growth2[:, None]
    return new_value, new_weights, cost, turnover


def executed_target(
    target: np.ndarray, weights: np.ndarray, close_t: np.ndarray, open_next: np.ndarray, costs: Costs
) -> np.ndarray:
    """The weights actually traded to at ``open[t+1]``: ``target`` except where the change
    from the drifted weights is below ``costs.min_trade``. Shapes ``(n, n_assets)``."""
    w_open = drifted_weights(weights, close_t, open_next)
    if costs.min_trade <= 0.0:
        return target
    return np.where(np.abs(target - w_open) < costs.min_trade, w_open, target)


def drifted_weights(weights: np.ndarray, close_t: np.ndarray, open_next: np.ndarray) -> np.ndarray:
    """Weights ``(n, n_assets)`` after drifting from ``close[t]`` to ``open[t+1]`` with no
    trade (the target that means "hold")."""
    held = weights * (open_next / close_t)
    return held / (1.0 - weights.sum(axis=-1) + held.sum(axis=-1))[:, None]

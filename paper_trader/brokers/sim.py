"""The simulated broker: :class:`SimBroker` replays a dataset from the hold-out cut on (bars
the study never saw) and fills orders at the next bar's open with the one portfolio
accounting, :func:`trainers.accounting.rebalance_step`.

Timing (as in :mod:`trainers.accounting`): the decision at the close of bar ``t`` places
orders; they fill at the open of bar ``t + 1``, which the loop processes next.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from paper_trader.brokers._base import Bar, BrokerError, FillReport, RemoteAccount, StopToken
from paper_trader.ledger import Order
from trainers.accounting import Costs, drifted_weights, executed_target, rebalance_step
from trainers.data import DataError, Panel, load_panel, resolve_holdout_cut


class SimBroker:
    """Replays a dataset bar by bar from the hold-out cut on.

    Bars before the cut are feature history only. Orders fill at the next bar's open with
    fee, slippage and the no-trade band applied as in
    :func:`trainers.accounting.rebalance_step`: each ordered asset is traded to its target
    weight of the equity at the open, net of the bar's costs, unless its change from the
    weight drifted to the open is inside the band (``min_trade``), when its order fills
    nothing; assets without an order keep their quantity.

    Args:
        data: dataset folder (None = the embedded dataset).
        holdout_cut: first bar replayed (UTC ISO 8601); None: the dataset's default hold-out
            cut (2019-07-01 for the embedded dataset, else the start of its last 20% of bars;
            :func:`trainers.data.resolve_holdout_cut`), the rule the study split with.
        speed: bars per second; 0 = as fast as possible.
        fee, slippage: per side, fractions of traded notional, until :meth:`set_costs` gives
            the traded model's execution model.
        panel: an already loaded panel (instead of ``data``).

    Raises:
        DataError: bad data, or a cut outside it.
    """

    name = "sim"
    band_at_fill = True

    def __init__(
        self,
        data: str | Path | None = None,
        holdout_cut: str | None = None,
        speed: float = 0.0,
        fee: float = 0.0025,
        slippage: float = 0.0,
        panel: Panel | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError(f"speed must be >= 0 bars per second, got {speed}")
        self.panel = panel if panel is not None else load_panel(data)
        self.symbols = self.panel.symbols
        holdout_cut = resolve_holdout_cut(self.panel, holdout_cut)
        self.start = self.panel.index_of(holdout_cut)
        if self.start >= len(self.panel):
            raise DataError(f"hold-out cut {holdout_cut} is after the last bar of the data")
        self.speed = float(speed)
        self.costs = Costs(fee=fee, slippage=slippage, min_cash=0.0, trailing_stop=0.0, min_trade=0.0)
        self._ts = self.panel.timestamps.astype("datetime64[s]").astype(np.int64)
        self.replay_start_ts: int | None = int(self._ts[self.start])
        self._due = 0.0
        self._finished = False

    def set_costs(self, costs: Costs) -> None:
        """Fill with the traded model's fee, slippage and no-trade band (the risk limits are
        the trader's, applied when it decides)."""
        self.costs = Costs(
            fee=costs.fee, slippage=costs.slippage, min_cash=0.0, trailing_stop=0.0, min_trade=costs.min_trade
        )

    def index_of_ts(self, ts: int) -> int:
        """Panel index of the bar starting at ``ts``.

        Raises:
            BrokerError: no such bar (the ledger was made with other data).
        """
        i = int(np.searchsorted(self._ts, ts))
        if i >= len(self._ts) or self._ts[i] != ts:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
            raise BrokerError(
                f"bar {when} is not in the replayed data (was the ledger made with other data?)"
            )
        return i

    def bar_at(self, i: int) -> Bar:
        """The bar at panel index ``i``."""
        p = self.panel.prices[i]
        return Bar(int(self._ts[i]), p[:, 0].copy(), p[:, 3].copy())

    @property
    def finished(self) -> bool:
        """True once the last bar of the data was delivered."""
        return self._finished

    def next_bar(self, after_ts: int | None, stop: StopToken, timeout_s: float = 1.0) -> Bar | None:
        """The next replayed bar, at most ``speed`` bars per second (see :class:`Broker`)."""
        i = self.start if after_ts is None else max(self.start, self.index_of_ts(after_ts) + 1)
        if i >= len(self._ts):
            self._finished = True
            return None
        if stop.is_set():
            return None
        if self.speed > 0:
            now = time.monotonic()
            if self._due > now:
                wait = min(self._due - now, max(0.0, timeout_s))
                if stop.wait(wait) or time.monotonic() < self._due:
                    return None
            self._due = max(time.monotonic(), self._due) + 1.0 / self.speed
        return self.bar_at(i)

    def history(self, bar: Bar, n_bars: int) -> np.ndarray:
        """OHLCV ``(<= n_bars, n_assets, 5)`` of the bars up to ``bar`` (earlier bars of the
        data, before the cut too)."""
        i = self.index_of_ts(bar.ts)
        return self.panel.prices[max(0, i - n_bars + 1) : i + 1]

    def submit(self, orders: list[Order]) -> None:
        """Nothing to send: the replay fills pending orders from the ledger at the next bar."""

    def remote_account(self, since_ts: int) -> RemoteAccount | None:
        """None: the replay has no account besides the ledger."""
        return None

    def execute(self, orders: list[Order], cash: float, qty: np.ndarray, bar: Bar) -> list[FillReport]:
        """Fill one decision's orders at ``bar``'s open (see the class docstring).

        With ``V`` the equity at the decision bar's close, ``w`` the weights there and
        ``c`` the cost from :func:`~trainers.accounting.rebalance_step` (target = the orders'
        target weights, drifted weights elsewhere), an ordered asset ends with
        ``target * (V_open - c) / open`` units, where ``V_open = cash + qty . open``; its share
        of ``c`` is in proportion to its ``|target - w_open|`` and is split into fee and
        slippage by their rates (slippage raises a buy's price and lowers a sell's).
        """
        if not orders:
            return []
        decided = {o.bar_ts for o in orders}
        if len(decided) != 1:
            raise BrokerError(f"pending orders of several decision bars {sorted(decided)}")
        t = self.index_of_ts(orders[0].bar_ts)
        close_t = self.panel.prices[t, :, 3]
        value = cash + float(qty @ close_t)
        col = {s: j for j, s in enumerate(self.symbols)}
        if value <= 0.0:
            return [FillReport(o.client_order_id, 0.0, 0.0, 0.0, "account has no equity") for o in orders]
        weights = (qty * close_t / value)[None, :]
        w_open = drifted_weights(weights, close_t, bar.open)
        target = w_open.copy()
        for o in orders:
            target[0, col[o.symbol]] = o.target_weight
        executed = executed_target(target, weights, close_t, bar.open, self.costs)
        _, _, cost_arr, turnover_arr = rebalance_step(
            np.array([value]), weights, target, close_t, bar.open, bar.close, self.costs
        )
        cost, turnover = float(cost_arr[0]), float(turnover_arr[0])
        value_open = cash + float(qty @ bar.open)
        rate = self.costs.fee + self.costs.slippage
        fills = []
        for o in orders:
            j = col[o.symbol]
            if executed[0, j] != target[0, j]:
                fills.append(FillReport(o.client_order_id, 0.0, 0.0, 0.0, "inside the no-trade band"))
                continue
            new_qty = o.target_weight * (value_open - cost) / bar.open[j]
            d = new_qty - qty[j]
            if d == 0.0:
                fills.append(FillReport(o.client_order_id, 0.0, 0.0, 0.0, "already at target"))
                continue
            share = cost * abs(target[0, j] - w_open[0, j]) / turnover if turnover > 0 else 0.0
            fee = share * self.costs.fee / rate if rate > 0 else 0.0
            slip = share - fee
            fills.append(FillReport(o.client_order_id, d, float(bar.open[j] + slip / d), fee))
        return fills

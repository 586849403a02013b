"""The trading loop: one decision per closed bar (docs/ARCHITECTURE.md section 6).

For each closed bar ``t``, in ONE ledger transaction (so a crash leaves the ledger at a bar
boundary and a restart resumes at the last processed bar + 1):

1. the orders decided at the previous bar are filled at bar ``t``'s open (broker);
2. the account is marked to market at ``close[t]``; high-water marks are updated
   (:func:`trainers.accounting.update_hwm`);
3. decision: raw features of the model's feature set over the last ``policy.price_history_bars``
   bars ``<= t`` (:func:`trainers.features.history_bars`: 512, or 1,712 for the ``long``
   set; :func:`trainers.features.compute_features`) and the current weights go to
   ``policy.act`` (at the model's decision bars only; between them ``action`` is None and
   only the risk rules act); :func:`paper_trader.risk.decide` turns it into orders;
4. the orders are recorded in the outbox (``pending_submit``, deterministic client order
   ids);
5. the equity row, the decision (with the model's generation and study) and the last
   processed bar are written; the transaction commits.

Then, outside the bar's transaction, the outbox is sent (:mod:`paper_trader.outbox`): one
order at a time, each outcome (``pending`` = sent, or ``cancelled`` with the reason)
committed on its own. Nothing is ever sent from inside the bar's transaction, so what a crash
leaves, and how the restart resolves it, is:

* **before the bar's commit**: the transaction rolls back: no fill, decision or order of the
  bar is in the ledger and nothing was sent. The restart resumes at the last processed bar
  + 1 (the replay: the same bar again, with the same client order ids; Alpaca: the newest
  closed bar).
* **after the commit, before an order is sent**: the ledger is at the bar boundary with the
  bar's orders ``pending_submit``. The restart's reconciliation finds none of them at the
  broker (``unsent``); the outbox sends them while they are fresh (Alpaca: until the bar
  after the decision bar has closed; the replay: always) and cancels stale ones, saying so.
* **after an order is sent, before its outcome is committed**: the broker holds the order,
  the ledger calls it ``pending_submit``. The restart's reconciliation finds it by client
  order id and records it as sent with the broker's id (``recovered``); it is never placed
  again (sending looks the id up first).
* **after the outcome is committed**: nothing to resolve; the next bar settles the order.

At start, before trading, the ledger is reconciled with the broker's account
(:mod:`paper_trader.reconcile`); differences go to the log and to ``reconciliation`` in
``status.json``. A failed send (broker unreachable, or throttled past the client's retries)
leaves the rest of the outbox in place; the loop sends it again before it asks for the next
bar, and does not process a bar while orders wait to be sent.

Between bars (never inside a decision) the model source is polled: the hot-reload
watcher's generation check and pending swap. After each bar the heartbeat and status files
are written. SIGTERM/SIGINT finish the current bar and end the run (exit 0); SIGHUP forces
a reload of the model.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import structlog

from ensemble.deploy_gate import resolve_cut
from ensemble.policy import EnsemblePolicy
from paper_trader.brokers import Bar, Broker, BrokerError
from paper_trader.config import TraderConfig
from paper_trader.ledger import AccountState, BarTx, Ledger, Order
from paper_trader.model_source import ModelSource
from paper_trader.outbox import send_outbox
from paper_trader.reconcile import reconcile
from paper_trader.risk import RiskDecision, decide
from paper_trader.status import iso_ts, write_status, write_trader_heartbeat
from paper_trader.stopping import StopSignal
from trainers.accounting import Costs, update_hwm
from trainers.features import compute_features
from trainers.runtime.memory import release_free_memory
from trainers.runtime.pidlock import PidLock, holding

WAIT_POLL_S = 0.05  # look for a first model this often (a stat of the manifest)
STATUS_INTERVAL_S = 0.5  # status.json at most this often while trading fast (and at every stop)


class TraderError(RuntimeError):
    """The trader cannot run; the message names what is wrong and where."""


@dataclass(frozen=True)
class BarResult:
    """What one processed bar did (for logs and tests)."""

    bar_ts: int
    equity: float
    cash: float
    generation: int
    n_fills: int
    n_orders: int


def process_lock(path: Path) -> AbstractContextManager[PidLock]:
    """Hold the trader's :class:`~trainers.runtime.pidlock.PidLock` (one trader per root).

    Raises:
        TraderError: another process holds it (its pid is named).
    """
    return holding(
        path, lambda held: TraderError(f"{path}: another paper trader ({held.holder}) runs on this root")
    )


@dataclass(frozen=True)
class Mark:
    """The account after a bar's fills, marked at its close; vectors ``(n_assets,)``.

    Attributes:
        cash, qty: after the fills (quote currency; asset units).
        equity: ``cash + qty . close``.
        weights: ``qty * close / equity`` (0 when equity <= 0).
        hwm: high-water marks after :func:`trainers.accounting.update_hwm`.
        fees: fees paid by the bar's fills; turnover: their traded notional over the equity
            at the open before them; n_fills: fills recorded.
    """

    cash: float
    qty: np.ndarray
    equity: float
    weights: np.ndarray
    hwm: np.ndarray
    fees: float
    turnover: float
    n_fills: int


def settle(tx: BarTx, broker: Broker, bar: Bar) -> Mark:
    """Steps 1-2 of a bar inside its transaction: fill the pending orders at ``bar``'s open
    (a report with quantity 0 cancels its order; an order without a report stays pending),
    mark to market at the close and store the new high-water marks. An order of an earlier
    bar still unsent (the loop sends the outbox before every bar, so only a caller that
    skipped it leaves one) is cancelled: its fill bar is this one."""
    for order in tx.unsent_orders():
        tx.cancel(order, "never sent before the bar it was to fill at")
    before = tx.state()
    n_fills, fees, traded = 0, 0.0, 0.0
    pending = tx.pending_orders()
    if pending:
        reports = {r.client_order_id: r for r in broker.execute(pending, before.cash, before.qty, bar)}
        for order in pending:
            rep = reports.get(order.client_order_id)
            if rep is None:
                continue  # a live broker has not filled it yet
            if rep.qty == 0.0:
                tx.cancel(order, rep.reason or "nothing filled")
                continue
            tx.apply_fill(order, rep.qty, rep.price, rep.fee)
            n_fills += 1
            fees += rep.fee
            traded += abs(rep.qty * rep.price)
    value_open = before.cash + float(before.qty @ bar.open)
    st = tx.state()
    equity = st.cash + float(st.qty @ bar.close)
    weights = st.qty * bar.close / equity if equity > 0 else np.zeros_like(st.qty)
    hwm = update_hwm(st.hwm[None, :], weights[None, :], bar.close)[0]
    tx.set_hwm(hwm)
    turnover = traded / value_open if value_open > 0 else 0.0
    return Mark(st.cash, st.qty, equity, weights, hwm, fees, turnover, n_fills)


def record_orders(
    tx: BarTx, symbols: tuple[str, ...], decision: RiskDecision, generation: int, study: str
) -> list[Order]:
    """Step 4: insert the decision's orders into the outbox (``pending_submit``,
    deterministic client order ids)."""
    return [
        tx.add_order(symbols[o.j], o.side, o.qty, o.target_weight, o.reason, generation, study)
        for o in decision.orders
    ]


class Trader:
    """Runs the loop (see the module docstring).

    Args:
        config: settings (risk limits, min notional, paths, max bars).
        broker: where bars come from and orders go.
        source: where the policy comes from (ensemble or deployment slot).
        ledger: the persistent state (default: ``config.ledger_path``).
    """

    def __init__(
        self, config: TraderConfig, broker: Broker, source: ModelSource, ledger: Ledger | None = None
    ) -> None:
        self.config = config
        self.broker = broker
        self.source = source
        self.ledger = ledger or Ledger(config.ledger_path)
        self.costs: Costs | None = None  # the traded model's execution model, with overrides
        self.stop = StopSignal()
        self.policy: EnsemblePolicy | None = None
        self.state_name = "starting"
        self._last_status = 0.0
        self._warned_history = False
        self._last_bar: Bar | None = None
        self.reconciliation: dict[str, Any] | None = None  # the start-up report (status.json)
        self._reconcile_due = True
        self._outbox_due = True
        self.log = structlog.get_logger("paper_trader").bind(
            component="paper_trader", pid=os.getpid(), broker=broker.name
        )

    # -- process level ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: stop after the current bar. SIGHUP: force a model reload.
        Main thread only."""

        def on_stop(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()

        def on_hup(signum: int, _frame: FrameType | None) -> None:
            self.source.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self) -> int:
        """Trade until the replay ends, ``max_bars`` bars are in the ledger, or a stop
        request; returns the exit code (0).

        Raises:
            TraderError: another trader holds the root, or the data cannot feed the model.
            LedgerError: the ledger belongs to another broker or symbols.
        """
        with process_lock(self.config.lock_path):
            state = self.ledger.open_account(self.broker.name, self.broker.symbols, self.config.initial_cash)
            self.log = self.log.bind(run_id=state.run_id)
            if state.initial_cash != self.config.initial_cash:
                self.log.warning(
                    "initial_cash_ignored", ledger=state.initial_cash, given=self.config.initial_cash
                )
            self.log.info("trader_started", last_bar=iso_ts(state.last_bar_ts), bars=state.bars_processed)
            self.reconcile()
            self.send_outbox()
            self.source.start()
            try:
                self._wait_for_model()
                self._trade()
            finally:
                self.source.stop()
                self.state_name = "stopped"
                self._write_files(self.ledger.state(), force=True)
                self.log.info("trader_stopped", bars=self.ledger.state().bars_processed)
        return 0

    def _wait_for_model(self) -> None:
        last_beat = 0.0
        while not self.stop.is_set():
            self._poll_model()
            if self.policy is not None:
                return
            if self.state_name != "waiting_for_model":
                self.state_name = "waiting_for_model"
                self.log.info("waiting_for_model", source=self.source.name)
            if time.monotonic() - last_beat >= self.config.poll_s:
                last_beat = time.monotonic()
                self._write_files(self.ledger.state(), force=True)
            self.stop.wait(min(self.config.poll_s, WAIT_POLL_S))

    def _poll_model(self) -> None:
        new = self.source.poll()
        if new is None:
            return
        refused = self._trained_on_replayed_bars(new)
        if refused is not None:
            if self.policy is None:
                raise TraderError(refused)
            self.log.error(
                "model_refused", generation=new.generation, reason=refused, keeping=self.policy.generation
            )
            return
        old = self.policy
        self.policy = new
        costs = self.config.apply(new.costs)
        if costs != self.costs:
            self.costs = costs
            self.broker.set_costs(costs)
            self.log.info("costs", costs=costs.as_dict(), model_costs=new.costs.as_dict())
            overrides = self.config.overrides()
            if overrides:
                self.log.warning(
                    "cost_overrides", overrides=overrides, note="not the costs the model was trained with"
                )
        self.log.info(
            "model_swapped",
            source=self.source.name,
            generation=new.generation,
            previous_generation=None if old is None else old.generation,
            study=new.study,
            members=len(new.bundles),
        )
        del old
        release_free_memory()  # the replaced ensemble's weights and buffers

    def _trained_on_replayed_bars(self, policy: EnsemblePolicy) -> str | None:
        """Why ``policy`` must not trade this replay (a member trained on bars the replay
        trades), or None. A live feed trades bars after every training cut."""
        start = self.broker.replay_start_ts
        if start is None:
            return None
        for i, bundle in enumerate(policy.bundles):
            cut = resolve_cut(None, bundle)[1]
            if start < int(cut.timestamp()):
                return (
                    f"member {i} ({bundle.meta.get('vin') or bundle.path}) was trained on bars up to its "
                    f"hold-out cut {cut.isoformat()}; the replay starts earlier, at {iso_ts(start)}: "
                    "replay from --holdout-cut at or after the models' cut"
                )
        return None

    def _trade(self) -> None:
        self.state_name = "trading"
        max_bars = self.config.max_bars
        while not self.stop.is_set():
            if self._reconcile_due:
                self.reconcile()
            if self._outbox_due and not self.send_outbox():  # no bar while orders wait to be sent
                self._write_files(self.ledger.state())
                self.stop.wait(self.config.poll_s)
                continue
            state = self.ledger.state()
            if max_bars is not None and state.bars_processed >= max_bars:
                self.log.info("max_bars_reached", bars=state.bars_processed)
                return
            try:
                bar = self.broker.next_bar(state.last_bar_ts, self.stop, self.config.poll_s)
            except BrokerError as exc:
                self.log.error("broker_error", where="next_bar", error=str(exc))
                self._write_files(state)
                self.stop.wait(self.config.poll_s)
                continue
            if bar is None:
                if self.broker.finished:
                    self.log.info("replay_finished", bars=state.bars_processed)
                    return
                self._write_files(state)  # waiting for the next bar: still alive
                continue
            self._poll_model()  # between bars: never inside a decision
            try:
                self.process_bar(bar)
            except BrokerError as exc:  # the bar's transaction was rolled back: retry it
                self.log.error("broker_error", where="bar", bar=bar.iso, error=str(exc))
                self.stop.wait(self.config.poll_s)
                continue
            self._write_files(self.ledger.state())

    # -- one bar ------------------------------------------------------------------------------

    def process_bar(self, bar: Bar) -> BarResult:
        """Process one closed bar in one ledger transaction, then send its orders (see the
        module docstring). A failed send is logged and left to the loop (the bar stays
        processed, its unsent orders stay in the outbox).

        Raises:
            TraderError: no policy yet, or too little history for the policy's lookback.
            LedgerError: the bar was processed already.
            BrokerError: the broker failed before the bar committed (nothing was written).
        """
        policy = self.policy
        if policy is None:
            raise TraderError("no model to trade with yet")
        wanted = policy.price_history_bars
        history = self.broker.history(bar, wanted)
        if len(history) < policy.max_lookback:
            raise TraderError(
                f"bar {bar.iso}: {len(history)} bars of history, the model needs {policy.max_lookback}"
            )
        if len(history) < wanted and not self._warned_history:
            self._warned_history = True
            self.log.warning("short_history", bars=len(history), wanted=wanted)
        with self.ledger.bar(bar.ts) as tx:
            mark = settle(tx, self.broker, bar)
            action: np.ndarray | None = None  # between a model's decision bars it holds
            if policy.decides_at(bar.ts):
                raw = compute_features(history, policy.feature_names)
                action = np.asarray(policy.act(raw, mark.weights), dtype=np.float64)
            min_notional = self.config.min_notional
            assert self.costs is not None  # set with the policy
            band_here = not self.broker.band_at_fill
            dec = decide(
                action,
                mark.qty,
                mark.hwm,
                bar.close,
                mark.cash,
                self.costs,
                min_notional,
                band_here,
                policy.action_scheme,
            )
            orders = record_orders(tx, self.broker.symbols, dec, policy.generation, policy.study)
            tx.add_decision(
                self.source.name,
                policy.generation,
                policy.study,
                action,
                dec.target,
                dec.planned,
                dec.stopped,
                len(orders),
            )
            tx.close_bar(mark.equity, mark.fees, mark.turnover, policy.generation)
        self._last_bar = bar
        self.send_outbox()
        return BarResult(bar.ts, mark.equity, mark.cash, policy.generation, mark.n_fills, len(orders))

    # -- the account at the broker --------------------------------------------------------------

    def send_outbox(self) -> bool:
        """Send the ledger's unsent orders (:func:`paper_trader.outbox.send_outbox`); True
        when the outbox is empty afterwards. A broker failure is logged and leaves the rest
        for the next call."""
        try:
            send_outbox(self.ledger, self.broker, self.log)
        except BrokerError as exc:
            self._outbox_due = True
            self.log.error("broker_error", where="submit", error=str(exc), unsent=len(self.ledger.outbox()))
            return False
        self._outbox_due = False
        return True

    def reconcile(self) -> dict[str, Any] | None:
        """Compare the ledger with the broker's account (:func:`paper_trader.reconcile.reconcile`):
        records outbox orders the broker already holds as sent, logs every difference and keeps
        the report for ``status.json`` (``reconciliation``). A broker failure is reported the
        same way (``error``) and the reconciliation is tried again before the next bar."""
        try:
            report = reconcile(self.ledger, self.broker, self.config.min_notional)
        except BrokerError as exc:
            report = {"at": iso_ts(int(time.time())), "ok": None, "error": str(exc), "differences": []}
            self.log.error("reconciliation_failed", error=str(exc))
        else:
            self._reconcile_due = False
            if report is None:
                return None  # a replay: the ledger is the account
            for diff in report["differences"]:
                self.log.error("reconciliation_difference", **diff)
            event = self.log.info if report["ok"] else self.log.error
            event(
                "reconciled",
                ok=report["ok"],
                differences=len(report["differences"]),
                recovered=report["recovered"],
                unsent=report["unsent"],
            )
        self.reconciliation = report
        return report

    # -- files for other processes ------------------------------------------------------------

    def _write_files(self, state: AccountState, force: bool = False) -> None:
        generation = None if self.policy is None else self.policy.generation
        hb = write_trader_heartbeat(
            self.config.heartbeat_path, self.state_name, state.last_bar_ts, state.bars_processed, generation
        )
        now = time.monotonic()
        if force or now - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = now
            write_status(self.config.status_path, hb, self.status_details(state))

    def _ensemble_in_use(self, src: dict[str, Any]) -> dict[str, Any] | None:
        """``{"generation", "digest", "member_dirs"}`` of the ensemble traded now (None when
        the source is not the ensemble or there is no policy yet). The sync job reads
        ``member_dirs`` and never removes those folders (:mod:`ensemble.sync`)."""
        policy = self.policy
        if policy is None or self.source.name != "ensemble":
            return None
        dirs = [Path(b.path).name for b in policy.bundles]
        same = src.get("generation") == policy.generation and src.get("member_dirs") == dirs
        return {
            "generation": policy.generation,
            "digest": src.get("digest") if same else None,
            "member_dirs": dirs,
        }

    def status_details(self, state: AccountState) -> dict[str, Any]:
        """The status fields beyond the heartbeat (see :mod:`paper_trader.status`)."""
        prices = None if self._last_bar is None else self._last_bar.close
        if prices is not None:
            equity = state.cash + float(state.qty @ prices)
        else:
            last = self.ledger.last_equity()
            equity = state.cash if last is None else last.equity
        positions: dict[str, Any] = {}
        for j, sym in enumerate(state.symbols):
            value = None if prices is None else float(state.qty[j] * prices[j])
            positions[sym] = {
                "qty": float(state.qty[j]),
                "price": None if prices is None else float(prices[j]),
                "value": value,
                "weight": None if value is None or equity <= 0 else value / equity,
                "hwm": float(state.hwm[j]),
            }
        src = self.source.status
        rejected, reason = src.get("rejected_generation"), src.get("rejection_reason")
        current = None if self.policy is None else self.policy.generation
        reloaded, rejected_at = src.get("last_reload_at"), src.get("rejected_at")
        if (rejected is not None and current is not None and rejected <= current) or (
            reloaded is not None and rejected_at is not None and reloaded > rejected_at
        ):
            rejected, reason = None, None  # superseded by the ensemble in use (raw: "reload")
        return {
            "broker": self.broker.name,
            "source": self.source.name,
            "study": None if self.policy is None else self.policy.study,
            "equity": equity,
            "cash": state.cash,
            "initial_cash": state.initial_cash,
            "peak_equity": state.peak_equity,
            "drawdown": 0.0 if state.peak_equity <= 0 else max(0.0, 1.0 - equity / state.peak_equity),
            "positions": positions,
            "last_reload": src.get("last_reload_at"),
            "rejected_generation": rejected,
            "rejection_reason": reason,
            "ensemble": self._ensemble_in_use(src),
            "reload": src,
            "costs": None if self.costs is None else self.costs.as_dict(),
            "cost_overrides": self.config.overrides(),
            "reconciliation": self.reconciliation,
        }

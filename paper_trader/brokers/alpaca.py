"""The Alpaca paper broker: :class:`~paper_trader.brokers.Broker` over
:class:`~paper_trader.brokers.alpaca_client.AlpacaClient` (alpaca-py's ``TradingClient(paper=True)`` and
crypto historical data client; keys from the environment only).

* Bars: closed hourly bars from Alpaca's crypto bars endpoint, aligned like the dataset.
  The trader decides on the newest closed bar; after a restart it skips bars it missed
  (orders decided on stale bars would trade at today's prices), logging how many.
* Orders: market orders, one per client order id (the ledger's deterministic id): every
  submission looks the id up first and never places an order twice. A sell never asks for
  more than Alpaca holds (Alpaca takes crypto fees in the asset, so its position can be a
  hair below the ledger's); a full exit sells Alpaca's whole position. An order Alpaca
  refuses (HTTP 4xx other than 429, e.g. 403 insufficient balance) is cancelled in the
  ledger with Alpaca's reason; 429 and 5xx answers are retried by the client
  (:mod:`~paper_trader.brokers.alpaca_http`, honouring ``Retry-After``) and, once its
  retries are spent, like no answer at all, are a :class:`~paper_trader.brokers.BrokerError`:
  the order stays in the ledger's outbox (``pending_submit``) and is sent again later. An
  order not yet at Alpaca whose fill bar (the bar after its decision bar) has closed, by
  the clock and in Alpaca's published bars, is stale and is cancelled instead of sent: it
  would trade at prices the decision never saw (as when a restart finds that the trader
  missed bars).
* Fills: the order's filled quantity and average price as Alpaca reports them; the fee is
  estimated as ``fee * |qty| * price`` (the order snapshot carries no fee). An order still
  working stays pending and is looked at again next bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog

from paper_trader.brokers._base import Bar, BrokerError, FillReport, RemoteAccount, RemoteOrder, StopToken
from paper_trader.brokers.alpaca_client import AlpacaClient
from paper_trader.brokers.alpaca_errors import AlpacaAPIError, AlpacaError
from paper_trader.brokers.alpaca_orders import QTY_DECIMALS
from paper_trader.brokers.alpaca_settings import AlpacaSettings
from paper_trader.config import TraderConfig
from paper_trader.ledger import CANCELLED, Order
from trainers.accounting import DEFAULT_FEE, Costs
from trainers.data import BAR_SECONDS, embedded_dataset_dir, symbol_from_path
from trainers.features import LONG_HISTORY_BARS

FETCH_MARGIN_BARS = 48  # extra hours fetched so gaps dropped by the alignment still leave full history
REFRESH_RETRY_S = 5.0  # a bar due but not yet published by Alpaca is asked for again after this


def dataset_symbols(data: Path | None) -> tuple[str, ...]:
    """Symbols of a dataset folder (default: the embedded one), sorted: what the models trade."""
    folder = embedded_dataset_dir() if data is None else Path(data)
    names = {symbol_from_path(p) for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz"))}
    if not names:
        raise BrokerError(f"{folder}: no .csv or .csv.gz files to take the traded symbols from")
    return tuple(sorted(names))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AlpacaBroker:
    """See the module docstring.

    Args:
        client: a connected :class:`AlpacaClient` (paper unless ``--live`` and the config allow).
        symbols: traded dataset symbols, column order of every vector.
        fee: fee rate used to estimate each fill's fee (fraction of notional) until
            :meth:`set_costs` gives the traded model's.
        clock: the current UTC time (default the system clock).
    """

    name = "alpaca"
    band_at_fill = False
    replay_start_ts = None  # a live feed

    def __init__(
        self,
        client: AlpacaClient,
        symbols: tuple[str, ...],
        fee: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.symbols = tuple(symbols)
        self.fee = float(fee)
        self.clock = clock or _utc_now
        self._ts = np.empty(0, dtype=np.int64)
        self._px = np.empty((0, len(self.symbols), 5))
        self._retry_at = 0.0
        self._refreshed_at = -float("inf")  # time.monotonic() of the last bars request
        self._log = structlog.get_logger("paper_trader.alpaca_broker").bind(component="paper_trader")

    @classmethod
    def from_settings(
        cls, config: TraderConfig, url: str | None = None, data_url: str | None = None
    ) -> AlpacaBroker:
        """Connect as the settings say (``--live`` needs the configuration's ``allow_live``).

        Raises:
            paper_trader.brokers.alpaca_errors.AlpacaError: missing keys or a refused live endpoint.
        """
        settings = AlpacaSettings(
            paper=not config.live, allow_live=config.allow_live, url_override=url, data_url_override=data_url
        )
        client = AlpacaClient(settings, live=config.live)
        return cls(client, dataset_symbols(config.data), DEFAULT_FEE)

    def set_costs(self, costs: Costs) -> None:
        """Estimate fill fees with the traded model's fee rate."""
        self.fee = float(costs.fee)

    @property
    def finished(self) -> bool:
        """Never: a live feed does not end."""
        return False  # a live feed never ends

    # -- bars ---------------------------------------------------------------------------------

    def _refresh(self) -> None:
        now = self.clock()
        back = LONG_HISTORY_BARS + FETCH_MARGIN_BARS  # the longest history any feature set needs
        start = np.datetime64(int(now.timestamp()) - back * BAR_SECONDS, "s")
        try:
            ts, px = self.client.closed_bars(self.symbols, start, now=now)
        except (AlpacaError, ValueError) as exc:
            raise BrokerError(f"Alpaca bars: {exc}") from None
        self._refreshed_at = time.monotonic()
        if len(ts):
            self._ts, self._px = ts.astype("datetime64[s]").astype(np.int64), px

    def next_bar(self, after_ts: int | None, stop: StopToken, timeout_s: float) -> Bar | None:
        """The newest closed bar after ``after_ts`` (see :class:`~paper_trader.brokers.Broker`)."""
        if stop.is_set():
            return None
        newest = int(self._ts[-1]) if len(self._ts) else None
        # the bar after the newest known one closes at newest + 2 h: no need to ask before that
        due = newest is None or self.clock().timestamp() >= newest + 2 * BAR_SECONDS
        if due and time.monotonic() >= self._retry_at:
            self._refresh()
            grew = len(self._ts) and (newest is None or int(self._ts[-1]) > newest)
            self._retry_at = 0.0 if grew else time.monotonic() + REFRESH_RETRY_S
            newest = int(self._ts[-1]) if len(self._ts) else None
        if newest is not None and (after_ts is None or newest > after_ts):
            skipped = 0 if after_ts is None else int(((self._ts > after_ts) & (self._ts < newest)).sum())
            if skipped:
                self._log.warning("bars_skipped", skipped=skipped, reason="missed while not running")
            i = len(self._ts) - 1
            return Bar(newest, self._px[i, :, 0].copy(), self._px[i, :, 3].copy())
        stop.wait(timeout_s)
        return None

    def history(self, bar: Bar, n_bars: int) -> np.ndarray:
        """OHLCV ``(<= n_bars, n_assets, 5)`` of the fetched bars up to ``bar``."""
        i = int(np.searchsorted(self._ts, bar.ts))
        if i >= len(self._ts) or self._ts[i] != bar.ts:
            raise BrokerError(f"bar {bar.iso} is not among the fetched Alpaca bars")
        return self._px[max(0, i - n_bars + 1) : i + 1]

    # -- orders -------------------------------------------------------------------------------

    def execute(self, orders: list[Order], cash: float, qty: np.ndarray, bar: Bar) -> list[FillReport]:
        """What Alpaca reports for each pending order (none for one still working)."""
        reports = []
        for o in orders:
            try:
                snap = self.client.get_order(o.client_order_id)
            except AlpacaError as exc:
                raise BrokerError(f"Alpaca order lookup: {exc}") from None
            if snap is None:
                reports.append(FillReport(o.client_order_id, 0.0, 0.0, 0.0, "no such order at Alpaca"))
            elif snap.filled_qty > 0 and snap.filled_avg_price is not None and snap.is_terminal:
                signed = snap.filled_qty if snap.side == "buy" else -snap.filled_qty
                fee = self.fee * snap.filled_qty * snap.filled_avg_price
                reports.append(FillReport(o.client_order_id, signed, snap.filled_avg_price, fee))
            elif snap.is_terminal:
                reports.append(FillReport(o.client_order_id, 0.0, 0.0, 0.0, f"alpaca: {snap.status}"))
        return reports

    def submit(self, orders: list[Order]) -> None:
        """Place each order once (see the module docstring); fills in ``broker_order_id``."""
        held: dict[str, float] | None = None
        for o in orders:
            try:
                existing = self.client.get_order(o.client_order_id)
                if existing is not None:  # placed by an earlier try
                    o.broker_order_id, o.qty = existing.order_id, existing.qty
                    continue
                if self._fill_bar_closed(o.bar_ts):
                    o.status = CANCELLED
                    o.status_reason = "stale: not sent before the bar after its decision bar closed"
                    self._log.warning("order_stale", client_order_id=o.client_order_id)
                    continue
                qty = o.qty
                if o.side == "sell":
                    held = self.client.positions() if held is None else held
                    have = max(0.0, held.get(o.symbol, 0.0))
                    qty = have if o.target_weight == 0.0 else min(qty, have)
                qty = float(np.floor(qty * 10**QTY_DECIMALS) / 10**QTY_DECIMALS)
                if qty <= 0.0:
                    o.status, o.status_reason = CANCELLED, "nothing to sell at Alpaca"
                    continue
                snap = self.client.submit_market_order(
                    o.symbol, o.side, qty, o.client_order_id, wait_fill_s=0
                )
            except AlpacaAPIError as exc:
                code = exc.status_code
                if code is not None and 400 <= code < 500 and code != 429:
                    o.status, o.status_reason = CANCELLED, f"refused by Alpaca: {exc}"
                    self._log.error("order_refused", client_order_id=o.client_order_id, error=str(exc))
                    continue
                raise BrokerError(f"Alpaca order {o.client_order_id}: {exc}") from None
            except AlpacaError as exc:
                raise BrokerError(f"Alpaca order {o.client_order_id}: {exc}") from None
            o.broker_order_id, o.qty = snap.order_id, qty

    def _fill_bar_closed(self, decision_ts: int) -> bool:
        """Whether Alpaca has published the bar after ``decision_ts`` (the fill bar) as closed.
        Bars are fetched again (at most every :data:`REFRESH_RETRY_S`) once the clock says the
        fill bar has closed; before that it cannot have been published."""
        if self.clock().timestamp() < decision_ts + 2 * BAR_SECONDS:
            return False
        if time.monotonic() - self._refreshed_at >= REFRESH_RETRY_S or not len(self._ts):
            self._refresh()
        return bool(len(self._ts)) and int(self._ts[-1]) >= decision_ts + BAR_SECONDS

    def remote_account(self, since_ts: int) -> RemoteAccount:
        """Alpaca's orders submitted after ``since_ts`` and its positions (see
        :class:`~paper_trader.brokers.Broker`)."""
        try:
            snaps = self.client.orders_since(datetime.fromtimestamp(since_ts, UTC))
            positions = self.client.positions_priced()
        except AlpacaError as exc:
            raise BrokerError(f"Alpaca reconciliation: {exc}") from None
        orders = {
            s.client_order_id: RemoteOrder(
                s.client_order_id, s.order_id, s.symbol, s.side, s.qty, s.filled_qty, s.status
            )
            for s in snaps
        }
        return RemoteAccount(orders, positions)

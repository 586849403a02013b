"""Alpaca paper-trading client over alpaca-py: account, positions, idempotent market orders and
closed hourly crypto bars aligned like :mod:`trainers.data`.

Settings, keys (from the environment only) and the two-key live switch are in
:mod:`~paper_trader.brokers.alpaca_settings`; errors in
:mod:`~paper_trader.brokers.alpaca_errors`; the symbol mapping (``ETHUSD`` <-> ``ETH/USD``) in
:mod:`~paper_trader.brokers.alpaca_symbols`.

Orders are idempotent by client order id: :meth:`AlpacaClient.submit_market_order` first
looks the id up (``GET /v2/orders:by_client_order_id``) and returns an existing order instead
of placing it again; when the server rejects the POST (Alpaca answers 422 ``client_order_id
must be unique``) or the answer is lost on the way back (connection error, timeout), it looks
the id up again and returns the order the server holds. A retried order is never placed twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import requests
import structlog
from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, PositionSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest

from paper_trader.brokers.alpaca_bars import TimeLike, align, bars_per_symbol, closed_bar_range, no_bars
from paper_trader.brokers.alpaca_errors import AlpacaAPIError, api_error, no_answer_error
from paper_trader.brokers.alpaca_http import configure_session, retry_policy
from paper_trader.brokers.alpaca_orders import OrderSnapshot, check_same, market_order_args
from paper_trader.brokers.alpaca_settings import AlpacaSettings
from paper_trader.brokers.alpaca_symbols import to_alpaca_symbol, to_dataset_symbol
from trainers.data import DEFAULT_MAX_FILL_BARS

log = structlog.get_logger("paper_trader.alpaca").bind(component="paper_trader")
ORDERS_PAGE = 500  # Alpaca's largest page of GET /v2/orders


@dataclass(frozen=True)
class AccountSnapshot:
    """Account balances.

    Attributes:
        cash: cash balance in ``currency``.
        equity: cash plus the market value of all positions, in ``currency``.
        currency: ISO 4217 code, e.g. ``USD``.
    """

    cash: float
    equity: float
    currency: str


class AlpacaClient:
    """Account, positions, idempotent market orders and closed hourly bars from Alpaca.

    Args:
        settings: connection settings (keys from the environment).
        live: the ``--live`` command-line flag; with ``settings.allow_live`` it permits a
            non-paper endpoint.

    Raises:
        AlpacaConfigError: the keys are missing from the environment (the message names the
            variables), or ``live`` is given while ``settings.paper`` is true.
        LiveTradingRefused: the endpoint is not paper and ``live`` and ``settings.allow_live``
            are not both true.
    """

    def __init__(self, settings: AlpacaSettings, live: bool = False) -> None:
        key, secret = settings.require_keys()
        live_endpoint = settings.live_endpoint(live)
        self.live = live_endpoint
        self.settings = settings
        self._trading = TradingClient(
            key, secret, paper=not live_endpoint, url_override=settings.url_override
        )
        self._data = CryptoHistoricalDataClient(key, secret, url_override=settings.data_url_override)
        st = settings
        retry = retry_policy(st.retries, st.retry_backoff_s, st.retry_backoff_max_s, st.retry_after_max_s)
        for client in (self._trading, self._data):
            configure_session(client, settings.request_timeout_s, retry)
        self._log = log.bind(endpoint=self.trading_url, live=live_endpoint)
        if live_endpoint:
            self._log.warning("alpaca live endpoint enabled")

    @property
    def trading_url(self) -> str:
        """Base URL of the trading API in use."""
        return str(getattr(self._trading._base_url, "value", self._trading._base_url))

    @property
    def data_url(self) -> str:
        """Base URL of the market-data API in use."""
        return str(getattr(self._data._base_url, "value", self._data._base_url))

    def __repr__(self) -> str:
        return f"AlpacaClient(trading={self.trading_url!r}, data={self.data_url!r}, live={self.live})"

    # ------------------------------------------------------------------ plumbing

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Run one alpaca-py call; map its failures to :class:`AlpacaAPIError`."""
        try:
            return fn(*args)
        except APIError as exc:
            raise api_error(what, exc) from None
        except requests.RequestException as exc:
            raise no_answer_error(what, exc) from None

    # ------------------------------------------------------------------ account

    def account(self) -> AccountSnapshot:
        """Cash and equity of the account (``GET /v2/account``).

        Raises:
            AlpacaAPIError: Alpaca answered with an error or not at all, or left out cash or
                equity.
        """
        acct = self._call("account request", self._trading.get_account)
        values = {}
        for name in ("cash", "equity"):
            raw = getattr(acct, name)
            try:
                values[name] = float(raw)
            except (TypeError, ValueError):
                raise AlpacaAPIError(f"Alpaca account has no usable {name} (got {raw!r})") from None
        return AccountSnapshot(values["cash"], values["equity"], acct.currency or "USD")

    def positions(self) -> dict[str, float]:
        """Open positions as ``{dataset symbol: quantity}`` in asset units (short < 0).

        Raises:
            AlpacaAPIError: Alpaca answered with an error or not at all.
        """
        return {sym: qty for sym, (qty, _) in self.positions_priced().items()}

    def positions_priced(self) -> dict[str, tuple[float, float | None]]:
        """Open positions as ``{dataset symbol: (quantity, current price or None)}``: asset
        units (short < 0), USD per unit as Alpaca last priced it.

        Raises:
            AlpacaAPIError: Alpaca answered with an error or not at all.
        """
        out: dict[str, tuple[float, float | None]] = {}
        for pos in self._call("positions request", self._trading.get_all_positions):
            qty = float(pos.qty)
            if pos.side == PositionSide.SHORT and qty > 0:
                qty = -qty
            if qty != 0.0:
                sym = to_dataset_symbol(pos.symbol)
                price = None if pos.current_price in (None, "") else float(pos.current_price)
                out[sym] = (out.get(sym, (0.0, None))[0] + qty, price)
        return out

    # ------------------------------------------------------------------ orders

    def get_order(self, client_order_id: str) -> OrderSnapshot | None:
        """The order with this client order id, or ``None`` if Alpaca has none
        (``GET /v2/orders:by_client_order_id``).

        Raises:
            AlpacaAPIError: any answer but the order or 404.
        """
        what = f"order lookup of {client_order_id!r}"
        try:
            order = self._call(what, self._trading.get_order_by_client_id, client_order_id)
        except AlpacaAPIError as exc:
            if exc.status_code == 404:
                return None
            raise
        return OrderSnapshot.from_order(order)

    def get_order_by_id(self, order_id: str) -> OrderSnapshot:
        """The order with Alpaca's id ``order_id`` (``GET /v2/orders/{id}``).

        Raises:
            AlpacaAPIError: Alpaca answered with an error (404 for an unknown id) or not at all.
        """
        return OrderSnapshot.from_order(
            self._call(f"order {order_id}", self._trading.get_order_by_id, order_id)
        )

    def orders_since(self, after: datetime) -> list[OrderSnapshot]:
        """Every order submitted after ``after`` (open and closed), oldest first
        (``GET /v2/orders?status=all&direction=asc``, all pages of 500: each page continues
        after the last submission time seen, and an order already seen is skipped).

        Args:
            after: UTC datetime (aware).

        Raises:
            AlpacaAPIError: Alpaca answered with an error or not at all.
        """
        seen: dict[str, OrderSnapshot] = {}
        cursor = after
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus.ALL, limit=ORDERS_PAGE, after=cursor, direction=Sort.ASC
            )
            answer = self._call("orders request", self._trading.get_orders, request)
            page = [OrderSnapshot.from_order(o) for o in answer]
            new = [o for o in page if o.order_id not in seen]
            for o in new:
                seen[o.order_id] = o
            if len(page) < ORDERS_PAGE or not new:
                return list(seen.values())
            # orders submitted in the same microsecond as the page's last one come again: skipped
            cursor = page[-1].submitted_at - timedelta(microseconds=1)

    def submit_market_order(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: float,
        client_order_id: str,
        *,
        wait_fill_s: float = 10.0,
        poll_s: float = 0.25,
    ) -> OrderSnapshot:
        """Place a good-till-cancelled market order once per client order id.

        Looks ``client_order_id`` up first and returns the existing order if there is one.
        Otherwise POSTs the order; if Alpaca rejects it (e.g. 422 ``client_order_id must be
        unique`` after a race) or no answer arrives, looks the id up again and returns the
        order found. While the order is not terminal, polls it (``GET /v2/orders/{id}``) for
        up to ``wait_fill_s`` seconds.

        Args:
            symbol: dataset symbol (``ETHUSD``) or Alpaca pair (``ETH/USD``).
            side: ``"buy"`` or ``"sell"``.
            qty: quantity in asset units, > 0; rounded to 9 decimals (Alpaca's precision).
            client_order_id: idempotency key, 1..128 characters.
            wait_fill_s: seconds to wait for a terminal status (0: return at once).
            poll_s: seconds between polls while waiting.

        Returns:
            The order as last seen (possibly still working if ``wait_fill_s`` ran out).

        Raises:
            ValueError: bad side, quantity or client order id.
            OrderConflict: the client order id belongs to an order for another symbol, side or
                quantity.
            AlpacaAPIError: Alpaca rejected the order (e.g. 403 insufficient balance) and holds
                no order with this id, or could not be reached and holds none.
        """
        pair, qty = market_order_args(symbol, side, qty, client_order_id)
        olog = self._log.bind(
            client_order_id=client_order_id, symbol=to_dataset_symbol(pair), side=side, qty=qty
        )

        existing = self.get_order(client_order_id)
        if existing is not None:
            check_same(existing, pair, side, qty)
            olog.info("alpaca order already placed", order_id=existing.order_id, status=existing.status)
            return self._wait(existing, wait_fill_s, poll_s)

        request = MarketOrderRequest(
            symbol=pair,
            qty=qty,
            side=OrderSide(side),
            time_in_force=TimeInForce.GTC,
            client_order_id=client_order_id,
        )
        try:
            snap = OrderSnapshot.from_order(self._trading.submit_order(request))
        except APIError as exc:
            found = self.get_order(client_order_id)
            if found is None:
                raise api_error(f"order {client_order_id!r} ({side} {qty} {pair})", exc) from None
            check_same(found, pair, side, qty)
            olog.info(
                "alpaca order rejected as a duplicate; using the placed one", http_status=exc.status_code
            )
            snap = found
        except requests.RequestException as exc:
            found = self.get_order(client_order_id)
            if found is None:
                raise AlpacaAPIError(
                    f"Alpaca order {client_order_id!r} ({side} {qty} {pair}): no answer "
                    f"({type(exc).__name__}) and no such order on the server; "
                    "retry with the same client order id"
                ) from None
            check_same(found, pair, side, qty)
            olog.info("alpaca order answer lost; found the placed order", error=type(exc).__name__)
            snap = found
        else:
            olog.info("alpaca order placed", order_id=snap.order_id, status=snap.status)
        return self._wait(snap, wait_fill_s, poll_s)

    def _wait(self, snap: OrderSnapshot, wait_fill_s: float, poll_s: float) -> OrderSnapshot:
        deadline = time.monotonic() + wait_fill_s
        while not snap.is_terminal and time.monotonic() < deadline:
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            snap = self.get_order_by_id(snap.order_id)
        return snap

    # ------------------------------------------------------------------ market data

    def closed_bars(
        self,
        symbols: list[str] | tuple[str, ...],
        start: TimeLike,
        end: TimeLike | None = None,
        *,
        now: datetime | None = None,
        max_fill_bars: int = DEFAULT_MAX_FILL_BARS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Closed hourly bars of several symbols, aligned exactly as :func:`trainers.data.load_panel`.

        A bar starting at ``t`` covers ``[t, t + 1 h)``; it is returned when ``t >= start`` and
        it closed by both ``end`` and ``now``: ``t + 1 h <= min(end, now)``. The bars come
        from the crypto bars endpoint (all pages) and are aligned by ``load_panel`` itself:
        the grid runs from the first to the last bar where every symbol has data, runs of up
        to ``max_fill_bars`` missing bars (no trades in that hour) are forward-filled (open =
        high = low = close = previous close, volume 0), longer runs are dropped.

        Args:
            symbols: dataset symbols in column order, e.g. ``("ETHUSD", "LTCUSD")``.
            start: earliest bar start (UTC; ``datetime64`` is taken as UTC).
            end: cut-off time (UTC), default ``now``.
            now: the current time (UTC), default the clock.
            max_fill_bars: longest run of missing bars that is forward-filled.

        Returns:
            ``(timestamps (T,) datetime64[s] UTC bar starts, prices (T, n_assets, 5) float64)``
            with fields open, high, low, close (USD) and volume (asset units); ``T`` is 0 when
            some symbol has no closed bar in the range.

        Raises:
            ValueError: a time without timezone, or a symbol that is not a crypto pair.
            DataError: a bar with a non-finite or inconsistent value (names symbol and time).
            AlpacaAPIError: the data endpoint answered with an error or not at all.
        """
        names = [to_dataset_symbol(s) for s in symbols]
        pairs = [to_alpaca_symbol(s) for s in names]
        first, last = closed_bar_range(start, end, now)
        if last < first:
            return no_bars(len(names))
        request = CryptoBarsRequest(
            symbol_or_symbols=pairs,
            timeframe=TimeFrame.Hour,
            start=first.to_pydatetime(),
            end=last.to_pydatetime(),
        )
        barset = self._call("crypto bars request", self._data.get_crypto_bars, request)
        per_symbol = bars_per_symbol(barset.data, names, pairs, first, last)
        bare = [n for n, (ts, _) in per_symbol.items() if len(ts) == 0]
        if bare:
            self._log.warning("alpaca has no closed bars", symbols=bare, start=str(first), end=str(last))
            return no_bars(len(names))
        panel = align(per_symbol, max_fill_bars)
        self._log.debug("alpaca bars", n_bars=len(panel[0]), start=str(first), end=str(last))
        return panel

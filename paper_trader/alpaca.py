"""Alpaca paper-trading client over alpaca-py: account, positions, idempotent market orders and
closed hourly crypto bars aligned like :mod:`trainers.data`.

Keys come from the environment only (``ALPACA_API_KEY_ID`` / ``ALPACA_API_SECRET_KEY``, or
Alpaca's own ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``); they are held as
:class:`pydantic.SecretStr` and never reach a repr, a log line or an error message.

The live endpoint is refused unless BOTH the caller passes ``live=True`` (the ``--live``
flag) and the configuration sets ``allow_live``; by default everything goes to Alpaca's paper
endpoint (``TradingClient(paper=True)``).

Symbols: the dataset names a crypto pair ``ETHUSD``; Alpaca's orders and market data name it
``ETH/USD`` and its positions endpoint reports ``ETHUSD``. :func:`to_alpaca_symbol` and
:func:`to_dataset_symbol` convert between the two.

Orders are idempotent by client order id: :meth:`AlpacaClient.submit_market_order` first
looks the id up (``GET /v2/orders:by_client_order_id``) and returns an existing order instead
of placing it again; when the server rejects the POST (Alpaca answers 422 ``client_order_id
must be unique``) or the answer is lost on the way back (connection error, timeout), it looks
the id up again and returns the order the server holds. A retried order is never placed twice.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import requests
import structlog
from alpaca.common.enums import BaseURL
from alpaca.common.exceptions import APIError
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.requests import CryptoBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, PositionSide, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import MarketOrderRequest
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from requests.adapters import HTTPAdapter

from trainers.data import BAR_SECONDS, DEFAULT_MAX_FILL_BARS, FIELDS, DataError, load_panel

log = structlog.get_logger("paper_trader.alpaca").bind(component="paper_trader")

KEY_ID_VARS = ("ALPACA_API_KEY_ID", "APCA_API_KEY_ID")
SECRET_KEY_VARS = ("ALPACA_API_SECRET_KEY", "APCA_API_SECRET_KEY")
LIVE_TRADING_HOST = urlsplit(BaseURL.TRADING_LIVE.value).hostname
QUOTE_CURRENCIES = ("USDT", "USDC", "USD", "BTC")  # longest first: "ETHUSDT" -> ETH/USDT
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"})
MAX_CLIENT_ORDER_ID = 128  # Alpaca's limit on client_order_id length
QTY_DECIMALS = 9  # Alpaca accepts quantities with up to 9 decimals


class AlpacaError(RuntimeError):
    """Base of this module's errors; messages never contain the API keys."""


class AlpacaConfigError(AlpacaError):
    """Missing keys or contradictory Alpaca settings; the message says what to set."""


class LiveTradingRefused(AlpacaConfigError):
    """A non-paper endpoint without both ``--live`` and ``allow_live`` in the configuration."""


class AlpacaAPIError(AlpacaError):
    """Alpaca answered with an error, or could not be reached.

    Attributes:
        status_code: HTTP status, or ``None`` when no answer came (connection error, timeout).
        code: Alpaca's error code from the body, when it sent one.
    """

    def __init__(self, message: str, status_code: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class OrderConflict(AlpacaError):
    """The client order id is already used by an order with another symbol, side or quantity."""


# ----------------------------------------------------------------------------- settings


class _KeysFromEnvironment(EnvSettingsSource):
    """Environment source that yields the two key fields only; the rest is configuration."""

    def __call__(self) -> dict[str, Any]:
        names = {*KEY_ID_VARS, *SECRET_KEY_VARS, "api_key_id", "api_secret_key"}
        return {k: v for k, v in super().__call__().items() if k in names}


class AlpacaSettings(BaseSettings):
    """Alpaca connection settings.

    The key id and secret are read from the environment only (``ALPACA_API_KEY_ID`` /
    ``ALPACA_API_SECRET_KEY``, else ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY``); passing
    them as arguments is an error. Every other field comes from the caller (the configuration
    file), never from the environment.

    Attributes:
        api_key_id: API key id (secret), ``None`` when the environment has none.
        api_secret_key: API secret key (secret), ``None`` when the environment has none.
        paper: trade on Alpaca's paper endpoint (default). ``False`` selects the live
            endpoint, which :class:`AlpacaClient` refuses unless ``live=True`` and
            ``allow_live`` are both given.
        allow_live: configuration half of the two-key live switch.
        url_override: trading API base URL instead of Alpaca's (a proxy, or a test server).
        data_url_override: market-data API base URL instead of Alpaca's.
        request_timeout_s: seconds before an unanswered HTTP request is given up (> 0).
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    api_key_id: SecretStr | None = Field(default=None, validation_alias=AliasChoices(*KEY_ID_VARS))
    api_secret_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices(*SECRET_KEY_VARS))
    paper: bool = True
    allow_live: bool = False
    url_override: str | None = None
    data_url_override: str | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)

    def __init__(self, **values: Any) -> None:
        given = sorted({*KEY_ID_VARS, *SECRET_KEY_VARS, "api_key_id", "api_secret_key"} & set(values))
        if given:
            raise AlpacaConfigError(
                f"Alpaca keys come from the environment only; do not pass {', '.join(given)} "
                f"(set {KEY_ID_VARS[0]} and {SECRET_KEY_VARS[0]} in the environment)"
            )
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments first, then the key variables of the environment; no dotenv, no files."""
        return (init_settings, _KeysFromEnvironment(settings_cls))

    def is_live_endpoint(self) -> bool:
        """True when orders would go to a live (real-money) endpoint: ``paper`` is false, or
        the trading URL override points at Alpaca's live host."""
        if not self.paper:
            return True
        return bool(self.url_override) and urlsplit(self.url_override).hostname == LIVE_TRADING_HOST


# ----------------------------------------------------------------------------- value types


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


@dataclass(frozen=True)
class OrderSnapshot:
    """One order as Alpaca last reported it.

    Attributes:
        client_order_id: the caller's idempotency key.
        order_id: Alpaca's order id (UUID string).
        symbol: dataset symbol, e.g. ``ETHUSD``.
        side: ``"buy"`` or ``"sell"``.
        qty: ordered quantity in asset units.
        filled_qty: filled quantity in asset units.
        filled_avg_price: average fill price in USD per unit, ``None`` before any fill.
        status: Alpaca's order status, e.g. ``accepted``, ``filled``, ``rejected``.
        submitted_at: UTC time the order was submitted.
        filled_at: UTC time of the (last) fill, ``None`` if not filled.
    """

    client_order_id: str
    order_id: str
    symbol: str
    side: str
    qty: float
    filled_qty: float
    filled_avg_price: float | None
    status: str
    submitted_at: datetime
    filled_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        """The order will not change any more (filled, canceled, expired, rejected, ...)."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_filled(self) -> bool:
        return self.status == "filled"

    @classmethod
    def from_order(cls, order: Order) -> OrderSnapshot:
        """Convert alpaca-py's :class:`~alpaca.trading.models.Order`."""
        side = order.side.value if order.side is not None else ""
        return cls(
            client_order_id=order.client_order_id,
            order_id=str(order.id),
            symbol=to_dataset_symbol(order.symbol or ""),
            side=side,
            qty=float(order.qty or 0.0),
            filled_qty=float(order.filled_qty or 0.0),
            filled_avg_price=None if order.filled_avg_price in (None, "") else float(order.filled_avg_price),
            status=order.status.value,
            submitted_at=order.submitted_at,
            filled_at=order.filled_at,
        )


# ----------------------------------------------------------------------------- symbols


def to_alpaca_symbol(symbol: str) -> str:
    """Dataset symbol -> Alpaca crypto pair: ``ETHUSD`` -> ``ETH/USD`` (``ETH/USD`` unchanged).

    Raises:
        ValueError: the symbol ends in no known quote currency (USD, USDT, USDC, BTC).
    """
    s = symbol.strip().upper()
    if "/" in s:
        return s
    for quote in QUOTE_CURRENCIES:
        if s.endswith(quote) and len(s) > len(quote):
            return f"{s[: -len(quote)]}/{quote}"
    raise ValueError(f"symbol {symbol!r} is not a crypto pair ending in one of {', '.join(QUOTE_CURRENCIES)}")


def to_dataset_symbol(symbol: str) -> str:
    """Alpaca symbol -> dataset symbol: ``ETH/USD`` or ``ETHUSD`` -> ``ETHUSD``."""
    return symbol.strip().upper().replace("/", "")


# ----------------------------------------------------------------------------- client


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request a timeout (alpaca-py's session sends requests without one)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, **kwargs)


def _with_timeout(client: Any, timeout_s: float) -> None:
    session: requests.Session = client._session  # alpaca-py offers no public timeout option
    adapter = _TimeoutAdapter(timeout_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def _api_error(what: str, exc: APIError) -> AlpacaAPIError:
    """alpaca-py's APIError (its text is the response body, JSON when Alpaca sent JSON)."""
    message, code = str(exc), None
    try:
        body = json.loads(message)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message", message))
        code = body.get("code") if isinstance(body.get("code"), int) else None
    status = exc.status_code
    return AlpacaAPIError(f"Alpaca {what} failed (HTTP {status}): {message}", status, code)


def _utc(when: datetime | np.datetime64 | pd.Timestamp | str, name: str) -> pd.Timestamp:
    """Any accepted time -> tz-aware UTC timestamp; ``datetime64`` is taken as UTC."""
    if isinstance(when, np.datetime64):
        return pd.Timestamp(when).tz_localize("UTC")
    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise ValueError(f"{name} {when!r} has no timezone; pass a UTC time, e.g. 2024-01-01T00:00Z")
    return ts.tz_convert("UTC")


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
        key = settings.api_key_id.get_secret_value() if settings.api_key_id else ""
        secret = settings.api_secret_key.get_secret_value() if settings.api_secret_key else ""
        if not key or not secret:
            missing = [n for n, v in ((KEY_ID_VARS[0], key), (SECRET_KEY_VARS[0], secret)) if not v]
            raise AlpacaConfigError(
                f"Alpaca API keys missing: set {' and '.join(missing)} in the environment "
                f"(or {KEY_ID_VARS[1]} / {SECRET_KEY_VARS[1]}); keys are never read from files or arguments"
            )
        live_endpoint = settings.is_live_endpoint()
        if live_endpoint and not (live and settings.allow_live):
            raise LiveTradingRefused(
                "refusing Alpaca's live (real-money) endpoint: it needs both the --live flag "
                f"and allow_live = true in the configuration (--live: {live}, "
                f"allow_live: {settings.allow_live}); use paper = true to paper-trade"
            )
        if live and not live_endpoint:
            raise AlpacaConfigError(
                "--live was given but the Alpaca settings select the paper endpoint (paper = true); "
                "set paper = false and allow_live = true in the configuration to trade live, "
                "or drop --live"
            )
        self.live = live_endpoint
        self.settings = settings
        self._trading = TradingClient(
            key, secret, paper=not live_endpoint, url_override=settings.url_override
        )
        self._data = CryptoHistoricalDataClient(key, secret, url_override=settings.data_url_override)
        for client in (self._trading, self._data):
            _with_timeout(client, settings.request_timeout_s)
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
            raise _api_error(what, exc) from None
        except requests.RequestException as exc:
            raise AlpacaAPIError(f"Alpaca {what} failed: no answer ({type(exc).__name__}: {exc})") from None

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
        out: dict[str, float] = {}
        for pos in self._call("positions request", self._trading.get_all_positions):
            qty = float(pos.qty)
            if pos.side == PositionSide.SHORT and qty > 0:
                qty = -qty
            if qty != 0.0:
                out[to_dataset_symbol(pos.symbol)] = out.get(to_dataset_symbol(pos.symbol), 0.0) + qty
        return out

    # ------------------------------------------------------------------ orders

    def get_order(self, client_order_id: str) -> OrderSnapshot | None:
        """The order with this client order id, or ``None`` if Alpaca has none
        (``GET /v2/orders:by_client_order_id``).

        Raises:
            AlpacaAPIError: any answer but the order or 404.
        """
        try:
            order = self._trading.get_order_by_client_id(client_order_id)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise _api_error(f"order lookup of {client_order_id!r}", exc) from None
        except requests.RequestException as exc:
            raise AlpacaAPIError(
                f"Alpaca order lookup of {client_order_id!r} failed: no answer ({type(exc).__name__}: {exc})"
            ) from None
        return OrderSnapshot.from_order(order)

    def get_order_by_id(self, order_id: str) -> OrderSnapshot:
        """The order with Alpaca's id ``order_id`` (``GET /v2/orders/{id}``).

        Raises:
            AlpacaAPIError: Alpaca answered with an error (404 for an unknown id) or not at all.
        """
        return OrderSnapshot.from_order(
            self._call(f"order {order_id}", self._trading.get_order_by_id, order_id)
        )

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
        if side not in ("buy", "sell"):
            raise ValueError(f"order side must be 'buy' or 'sell', got {side!r}")
        try:
            qty = float(qty)
        except (TypeError, ValueError):
            raise ValueError(f"order quantity must be a number, got {qty!r}") from None
        if not math.isfinite(qty) or round(qty, QTY_DECIMALS) <= 0:
            raise ValueError(f"order quantity must be a finite number > 0 (9 decimals), got {qty!r}")
        if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID:
            raise ValueError(
                f"client order id must have 1..{MAX_CLIENT_ORDER_ID} characters, got {client_order_id!r}"
            )
        pair, qty = to_alpaca_symbol(symbol), round(qty, QTY_DECIMALS)
        olog = self._log.bind(
            client_order_id=client_order_id, symbol=to_dataset_symbol(pair), side=side, qty=qty
        )

        existing = self.get_order(client_order_id)
        if existing is not None:
            _check_same(existing, pair, side, qty)
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
                raise _api_error(f"order {client_order_id!r} ({side} {qty} {pair})", exc) from None
            _check_same(found, pair, side, qty)
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
            _check_same(found, pair, side, qty)
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
        start: datetime | np.datetime64 | pd.Timestamp | str,
        end: datetime | np.datetime64 | pd.Timestamp | str | None = None,
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
        first = _utc(start, "start").ceil("h")
        cutoff = _utc(pd.Timestamp.now(tz="UTC") if now is None else now, "now")
        if end is not None:
            cutoff = min(cutoff, _utc(end, "end"))
        last = cutoff.floor("h") - pd.Timedelta(seconds=BAR_SECONDS)  # start of the last closed bar
        empty = np.empty(0, dtype="datetime64[s]"), np.empty((0, len(names), len(FIELDS)))
        if last < first:
            return empty
        request = CryptoBarsRequest(
            symbol_or_symbols=pairs,
            timeframe=TimeFrame.Hour,
            start=first.to_pydatetime(),
            end=last.to_pydatetime(),
        )
        barset = self._call("crypto bars request", self._data.get_crypto_bars, request)
        per_symbol = {}
        lo, hi = np.datetime64(first.tz_localize(None), "s"), np.datetime64(last.tz_localize(None), "s")
        for name, pair in zip(names, pairs, strict=True):
            per_symbol[name] = _bar_arrays(pair, barset.data.get(pair, []), lo, hi)
        bare = [n for n, (ts, _) in per_symbol.items() if len(ts) == 0]
        if bare:
            self._log.warning("alpaca has no closed bars", symbols=bare, start=str(first), end=str(last))
            return empty
        panel = _align(per_symbol, max_fill_bars)
        self._log.debug("alpaca bars", n_bars=len(panel[0]), start=str(first), end=str(last))
        return panel


def _check_same(order: OrderSnapshot, pair: str, side: str, qty: float) -> None:
    same = (
        order.symbol == to_dataset_symbol(pair)
        and order.side == side
        and abs(order.qty - qty) <= 10.0**-QTY_DECIMALS * max(1.0, abs(qty))
    )
    if not same:
        raise OrderConflict(
            f"client order id {order.client_order_id!r} already names order {order.order_id} "
            f"({order.side} {order.qty} {order.symbol}), not {side} {qty} {to_dataset_symbol(pair)}"
        )


def _bar_arrays(
    pair: str, bars: list[Any], lo: np.datetime64, hi: np.datetime64
) -> tuple[np.ndarray, np.ndarray]:
    """alpaca-py bars -> ``(timestamps (n,) datetime64[s], ohlcv (n, 5))`` inside ``[lo, hi]``,
    on the hour, validated (finite, positive prices, low <= open, close <= high, volume >= 0)."""
    ts, rows = [], []
    for bar in bars:
        t = np.datetime64(bar.timestamp.astimezone(UTC).replace(tzinfo=None), "s")
        if t < lo or t > hi or t.astype(np.int64) % BAR_SECONDS:
            continue
        row = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        where = f"Alpaca {pair} bar {t}Z"
        if not all(math.isfinite(v) for v in row):
            raise DataError(f"{where}: non-finite value in open/high/low/close/volume {row}")
        o, h, low, c, v = row
        if min(o, h, low, c) <= 0 or v < 0:
            raise DataError(f"{where}: prices must be > 0 and volume >= 0, got {row}")
        tol = 1e-9 * h
        if h < low or not (low - tol <= o <= h + tol and low - tol <= c <= h + tol):
            raise DataError(f"{where}: open/close outside [low, high] or high < low: {row}")
        ts.append(t)
        rows.append(row)
    order = np.argsort(np.array(ts, dtype="datetime64[s]"), kind="stable")
    t_arr = np.array(ts, dtype="datetime64[s]")[order]
    if len(t_arr) > 1 and (np.diff(t_arr.astype(np.int64)) == 0).any():
        raise DataError(f"Alpaca {pair}: duplicate bar timestamps")
    return t_arr, np.array(rows, dtype=np.float64).reshape(-1, len(FIELDS))[order]


def _align(
    per_symbol: dict[str, tuple[np.ndarray, np.ndarray]], max_fill_bars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Align through :func:`trainers.data.load_panel` (the one alignment implementation) by
    writing the bars as a dataset folder. ``float.__repr__`` round-trips every value exactly."""
    with tempfile.TemporaryDirectory(prefix="alpaca_bars_") as tmp:
        for name, (ts, ohlcv) in per_symbol.items():
            lines = ["timestamp,open,high,low,close,volume"]
            lines += [
                f"{t}Z," + ",".join(repr(float(x)) for x in row) for t, row in zip(ts, ohlcv, strict=True)
            ]
            (Path(tmp) / f"{name}.csv").write_text("\n".join(lines) + "\n")
        try:
            panel = load_panel(tmp, max_fill_bars=max_fill_bars, symbols=list(per_symbol))
        except DataError as exc:
            raise DataError(str(exc).replace(tmp, "alpaca bars")) from None
    return panel.timestamps, panel.prices

"""A local stand-in for Alpaca's servers: the documented endpoints the paper trader uses.

It speaks the request and response JSON of Alpaca's Trading API v2 and Market Data API
v1beta3 (crypto) for exactly these endpoints, so the real alpaca-py clients can be pointed at
it with ``url_override``:

* ``GET /v2/account`` - a ``TradeAccount`` (numbers as strings, as Alpaca sends them);
* ``GET /v2/positions`` - a list of ``Position`` (crypto symbols without the slash, e.g.
  ``ETHUSD``, as Alpaca's positions endpoint reports them);
* ``POST /v2/orders`` - market orders only; they fill at the configured price (at once, or on
  the next read of the order when ``fill_on_read`` is set). A second order with a client order
  id already used is rejected with 422 ``client_order_id must be unique``, as Alpaca does;
  a buy beyond the cash or a sell beyond the position is rejected with 403
  ``insufficient balance``;
* ``GET /v2/orders:by_client_order_id?client_order_id=...`` and ``GET /v2/orders/{id}`` -
  an ``Order``, or 404 ``order not found``;
* ``GET /v2/orders`` (``status`` open | closed | all, ``limit`` <= 500, ``after``, ``until``
  (submission time, exclusive), ``direction`` asc | desc) - a list of ``Order``;
* ``GET /v1beta3/crypto/us/bars`` (``symbols``, ``timeframe``, ``start``, ``end``, ``limit``,
  ``page_token``, ``sort``) - ``{"bars": {symbol: [bar, ...]}, "next_page_token": ...}``
  with bars ``{"t", "o", "h", "l", "c", "v", "n", "vw"}``; results are ordered by symbol then
  time, ``limit`` counts bars over all symbols, and a page token continues the same query.

Every request must carry the ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers of the
configured key pair (401 otherwise). Every request is recorded (method, path, query, JSON
body, whether it was authorised, status) so tests can assert, e.g., that an order was POSTed
exactly once. The recorded requests never hold the key headers.

Failure injection for tests: :meth:`FakeAlpaca.drop_next_order_response` (the order is placed,
then the connection closes without a response, as a network failure after the server
acted), :meth:`FakeAlpaca.hide_from_lookup` (the client-order-id lookup answers 404 a given
number of times, as in the window between another submitter's POST and its visibility),
:meth:`FakeAlpaca.stall_next` (the next request to a path answers only after a delay) and
:meth:`FakeAlpaca.fail_next` (the next requests to a path answer an HTTP error, e.g. 429 with
``Retry-After`` or 503, without acting). :meth:`FakeAlpaca.place_order` places an order as
another client would (an order the trader's ledger does not know).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CRYPTO_PAIR = re.compile(r"^[A-Z]+/[A-Z]+$")
HOURLY_TIMEFRAMES = {"1Hour", "1H"}
MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1_000
TERMINAL = {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"}
_ASSET_NS = uuid.UUID("6f1c2a1e-3b9d-4c55-9a0e-7d1b2c3d4e5f")


def rfc3339(when: datetime) -> str:
    """UTC datetime -> ``2024-01-01T10:00:00.123456Z`` (Alpaca's timestamp format)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pair_of(symbol: str) -> str:
    """``ETHUSD`` or ``ETH/USD`` -> ``ETH/USD`` (Alpaca accepts the legacy form on orders)."""
    if "/" in symbol:
        return symbol
    for quote in ("USDT", "USDC", "USD", "BTC"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)]}/{quote}"
    return symbol


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _num(value: float) -> str:
    return repr(float(value))


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered (never holds the key headers)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorized: bool
    status: int
    at: float = 0.0  # time.monotonic() when the request arrived


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str  # pair, e.g. ETH/USD
    side: str
    qty: float
    time_in_force: str
    created_at: datetime
    status: str = "accepted"
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    filled_at: datetime | None = None
    updated_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at or self.created_at),
            "submitted_at": rfc3339(self.created_at),
            "filled_at": rfc3339(self.filled_at) if self.filled_at else None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(_ASSET_NS, self.symbol)),
            "symbol": self.symbol,
            "asset_class": "crypto",
            "notional": None,
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": None if self.filled_avg_price is None else _num(self.filled_avg_price),
            "order_class": "",
            "order_type": "market",
            "type": "market",
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": None,
            "stop_price": None,
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


@dataclass
class _Holding:
    qty: float = 0.0
    cost: float = 0.0  # cost basis in USD


@dataclass
class _State:
    cash: float
    prices: dict[str, float]  # pair -> fill / mark price
    holdings: dict[str, _Holding] = field(default_factory=dict)  # pair -> holding
    orders: list[_Order] = field(default_factory=list)
    bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # pair -> bars sorted by t
    hidden_lookups: dict[str, int] = field(default_factory=dict)
    drop_next_order_response: bool = False
    fill_on_read: bool = False
    stalls: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], list[tuple[int, str | None]]] = field(default_factory=dict)


class FakeAlpaca:
    """Alpaca's trading and crypto market-data endpoints on ``127.0.0.1`` (random port).

    Args:
        key_id: the API key id every request must send (``APCA-API-KEY-ID``).
        secret_key: the matching secret (``APCA-API-SECRET-KEY``).
        cash: starting cash in USD.
        prices: fill and mark price per symbol (``ETHUSD`` or ``ETH/USD``), USD per unit.
        fill_on_read: market orders answer ``accepted`` and fill when the order is next read
            (by id or client order id) instead of at once.
        bars_page_size: most bars per page of the bars endpoint, whatever ``limit`` asks for
            (Alpaca's own cap is 10,000); a smaller value makes tests paginate.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        key_id: str,
        secret_key: str,
        cash: float = 100_000.0,
        prices: dict[str, float] | None = None,
        fill_on_read: bool = False,
        bars_page_size: int = MAX_LIMIT,
    ) -> None:
        self._key_id = key_id
        self._secret_key = secret_key
        self._lock = threading.Lock()
        self._state = _State(
            cash=float(cash),
            prices={pair_of(s): float(p) for s, p in (prices or {}).items()},
            fill_on_read=fill_on_read,
        )
        self._bars_page_size = bars_page_size
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.account_id = str(uuid.uuid4())

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeAlpaca:
        """Bind a random port on 127.0.0.1 and serve in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-alpaca", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``url_override`` (trading) and ``data_url_override`` (market data)."""
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---------------------------------------------------------------- configuration

    def set_price(self, symbol: str, price: float) -> None:
        """Fill and mark price of ``symbol`` (``ETHUSD`` or ``ETH/USD``), USD per unit."""
        with self._lock:
            self._state.prices[pair_of(symbol)] = float(price)

    def set_position(self, symbol: str, qty: float, avg_entry_price: float) -> None:
        """Hold ``qty`` units of ``symbol`` bought at ``avg_entry_price`` (cash unchanged)."""
        with self._lock:
            self._state.holdings[pair_of(symbol)] = _Holding(float(qty), float(qty) * avg_entry_price)

    def set_bars(
        self, symbol: str, bars: Iterable[tuple[datetime, float, float, float, float, float]]
    ) -> None:
        """Hourly bars of ``symbol`` as ``(start time UTC, open, high, low, close, volume)``."""
        rows = []
        for t, o, h, low, c, v in sorted(bars, key=lambda b: b[0]):
            rows.append(
                {
                    "t": t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "o": o,
                    "h": h,
                    "l": low,
                    "c": c,
                    "v": v,
                    "n": 1 if v > 0 else 0,
                    "vw": (o + h + low + c) / 4.0,
                }
            )
        with self._lock:
            self._state.bars[pair_of(symbol)] = rows

    def drop_next_order_response(self) -> None:
        """The next POST /v2/orders places the order, then closes the connection unanswered."""
        with self._lock:
            self._state.drop_next_order_response = True

    def hide_from_lookup(self, client_order_id: str, times: int = 1) -> None:
        """The next ``times`` client-order-id lookups of ``client_order_id`` answer 404."""
        with self._lock:
            self._state.hidden_lookups[client_order_id] = times

    def stall_next(self, path: str, seconds: float) -> None:
        """The next request to ``path`` (e.g. ``/v2/account``) waits ``seconds`` before answering."""
        with self._lock:
            self._state.stalls[path] = seconds

    def fail_next(
        self, method: str, path: str, status: int, times: int = 1, retry_after: str | None = None
    ) -> None:
        """The next ``times`` ``method`` requests to ``path`` answer ``status`` (with a
        ``Retry-After: <retry_after>`` header when given) and do nothing else; queued after
        any failures already pending for that path."""
        with self._lock:
            queue = self._state.failures.setdefault((method.upper(), path), [])
            queue.extend([(status, retry_after)] * times)

    def place_order(self, symbol: str, side: str, qty: float, client_order_id: str) -> dict[str, Any]:
        """Place a market order as another client would; returns its JSON."""
        status, answer = self._submit(
            {
                "symbol": symbol,
                "side": side,
                "qty": qty,
                "type": "market",
                "time_in_force": "gtc",
                "client_order_id": client_order_id,
            }
        )
        assert status == 200, answer
        return answer

    # ---------------------------------------------------------------- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request answered so far, in order."""
        with self._lock:
            return list(self._requests)

    def order_posts(self, client_order_id: str | None = None) -> list[RecordedRequest]:
        """The POST /v2/orders requests (for one client order id if given)."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.path == "/v2/orders"
            and (client_order_id is None or (r.body or {}).get("client_order_id") == client_order_id)
        ]

    def orders(self) -> list[dict[str, Any]]:
        """All orders placed, as Alpaca's order JSON."""
        with self._lock:
            return [o.to_json() for o in self._state.orders]

    @property
    def cash(self) -> float:
        with self._lock:
            return self._state.cash

    def holdings(self) -> dict[str, float]:
        """Units held per pair (non-zero only)."""
        with self._lock:
            return {s: h.qty for s, h in self._state.holdings.items() if h.qty != 0}

    # ---------------------------------------------------------------- request handling

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _authorized(self, headers: Any) -> bool:
        return headers.get("APCA-API-KEY-ID") == self._key_id and (
            headers.get("APCA-API-SECRET-KEY") == self._secret_key
        )

    def _take_stall(self, path: str) -> float:
        with self._lock:
            return self._state.stalls.pop(path, 0.0)

    def _take_failure(self, method: str, path: str) -> tuple[int, str | None] | None:
        with self._lock:
            queue = self._state.failures.get((method, path))
            return queue.pop(0) if queue else None

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        """Route one authorised request -> ``(status, JSON body)``; ``(-1, None)`` drops it."""
        if method == "GET" and path == "/v2/account":
            return 200, self._account()
        if method == "GET" and path == "/v2/positions":
            return 200, self._positions()
        if method == "POST" and path == "/v2/orders":
            return self._submit(body)
        if method == "GET" and path == "/v2/orders":
            return self._list_orders(query)
        if method == "GET" and path == "/v2/orders:by_client_order_id":
            cid = (query.get("client_order_id") or [""])[0]
            return self._lookup(lambda o: o.client_order_id == cid, hidden_key=cid)
        if method == "GET" and path.startswith("/v2/orders/"):
            order_id = path.removeprefix("/v2/orders/")
            return self._lookup(lambda o: o.id == order_id)
        if method == "GET" and path == "/v1beta3/crypto/us/bars":
            return self._bars(query)
        return 404, {"code": 40410000, "message": "endpoint not found"}

    def _account(self) -> dict[str, Any]:
        with self._lock:
            st = self._state
            long_value = sum(h.qty * st.prices.get(s, 0.0) for s, h in st.holdings.items())
            equity = st.cash + long_value
            cash = st.cash
        return {
            "id": self.account_id,
            "account_number": "PA3TESTFAKE1",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": _num(cash),
            "regt_buying_power": _num(cash),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": _num(cash),
            "cash": _num(cash),
            "accrued_fees": "0",
            "pending_transfer_out": None,
            "pending_transfer_in": "0",
            "portfolio_value": _num(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:04:05.123456Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": _num(equity),
            "last_equity": _num(equity),
            "long_market_value": _num(long_value),
            "short_market_value": "0",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def _positions(self) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            for pair, h in sorted(self._state.holdings.items()):
                if h.qty == 0:
                    continue
                price = self._state.prices.get(pair, 0.0)
                avg = h.cost / h.qty
                value = h.qty * price
                out.append(
                    {
                        "asset_id": str(uuid.uuid5(_ASSET_NS, pair)),
                        "symbol": pair.replace("/", ""),
                        "exchange": "CRYPTO",
                        "asset_class": "crypto",
                        "asset_marginable": False,
                        "avg_entry_price": _num(avg),
                        "qty": _num(h.qty),
                        "side": "long",
                        "market_value": _num(value),
                        "cost_basis": _num(h.cost),
                        "unrealized_pl": _num(value - h.cost),
                        "unrealized_plpc": _num((value - h.cost) / h.cost if h.cost else 0.0),
                        "unrealized_intraday_pl": "0",
                        "unrealized_intraday_plpc": "0",
                        "current_price": _num(price),
                        "lastday_price": _num(price),
                        "change_today": "0",
                        "qty_available": _num(h.qty),
                    }
                )
        return out

    def _submit(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 422, {"code": 40010001, "message": "request body must be a JSON object"}
        pair = pair_of(str(body.get("symbol", "")))
        side = body.get("side")
        cid = str(body.get("client_order_id") or uuid.uuid4())
        tif = body.get("time_in_force")
        try:
            qty = float(body.get("qty"))
        except (TypeError, ValueError):
            return 422, {"code": 40010001, "message": "qty must be a number"}
        if body.get("type") != "market":
            return 422, {"code": 40010001, "message": "this server supports market orders only"}
        if side not in ("buy", "sell"):
            return 422, {"code": 40010001, "message": f"invalid side {side!r}"}
        if tif not in ("gtc", "ioc"):
            return 422, {"code": 40010001, "message": "invalid crypto time_in_force"}
        if not qty > 0:
            return 422, {"code": 40010001, "message": "qty must be > 0"}
        if len(cid) > 128:
            return 422, {"code": 40010001, "message": "client_order_id must be no more than 128 characters"}
        with self._lock:
            st = self._state
            if pair not in st.prices:
                return 422, {"code": 40010001, "message": f"asset not found for {body.get('symbol')}"}
            if any(o.client_order_id == cid for o in st.orders):
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            price = st.prices[pair]
            held = st.holdings.get(pair, _Holding()).qty
            if side == "buy" and qty * price > st.cash + 1e-9:
                return 403, {
                    "code": 40310000,
                    "message": f"insufficient balance for USD (requested: {qty * price}, "
                    f"available: {st.cash})",
                }
            if side == "sell" and qty > held + 1e-12:
                base = pair.split("/")[0]
                return 403, {
                    "code": 40310000,
                    "message": f"insufficient balance for {base} (requested: {qty}, available: {held})",
                }
            now = datetime.now(UTC)
            order = _Order(str(uuid.uuid4()), cid, pair, side, qty, tif, created_at=now)
            st.orders.append(order)
            if not st.fill_on_read:
                self._fill(order)
            drop = st.drop_next_order_response
            st.drop_next_order_response = False
            answer = order.to_json()
        if drop:
            return -1, None
        return 200, answer

    def _fill(self, order: _Order) -> None:
        """Fill ``order`` in full at the current price (lock held)."""
        st = self._state
        price = st.prices[order.symbol]
        h = st.holdings.setdefault(order.symbol, _Holding())
        if order.side == "buy":
            st.cash -= order.qty * price
            h.cost += order.qty * price
            h.qty += order.qty
        else:
            h.cost -= h.cost * order.qty / h.qty if h.qty else 0.0
            h.qty -= order.qty
            st.cash += order.qty * price
        order.status = "filled"
        order.filled_qty = order.qty
        order.filled_avg_price = price
        order.filled_at = order.updated_at = datetime.now(UTC)

    def _lookup(self, match: Any, hidden_key: str | None = None) -> tuple[int, Any]:
        with self._lock:
            st = self._state
            if hidden_key is not None and st.hidden_lookups.get(hidden_key, 0) > 0:
                st.hidden_lookups[hidden_key] -= 1
                return 404, {"code": 40410000, "message": "order not found"}
            for order in st.orders:
                if match(order):
                    if order.status not in TERMINAL:  # fill_on_read: it fills once it is read
                        self._fill(order)
                    return 200, order.to_json()
        return 404, {"code": 40410000, "message": "order not found"}

    def _list_orders(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        status = (query.get("status") or ["open"])[0]
        direction = (query.get("direction") or ["desc"])[0]
        try:
            limit = int((query.get("limit") or ["50"])[0])
            after = _parse_time(query["after"][0]) if "after" in query else None
            until = _parse_time(query["until"][0]) if "until" in query else None
        except (ValueError, KeyError) as exc:
            return 422, {"code": 40010001, "message": f"invalid parameter: {exc}"}
        if status not in ("open", "closed", "all") or direction not in ("asc", "desc"):
            return 422, {"code": 40010001, "message": "invalid status or direction"}
        if not 1 <= limit <= 500:
            return 422, {"code": 40010001, "message": "limit must be between 1 and 500"}
        with self._lock:
            chosen = [
                o
                for o in self._state.orders
                if (status == "all" or (o.status in TERMINAL) == (status == "closed"))
                and (after is None or o.created_at > after)
                and (until is None or o.created_at < until)
            ]
            chosen.sort(key=lambda o: o.created_at, reverse=direction == "desc")
            return 200, [o.to_json() for o in chosen[:limit]]

    def _bars(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        raw_symbols = (query.get("symbols") or [""])[0]
        if not raw_symbols:
            return 400, {"message": "symbols is required"}
        symbols = raw_symbols.split(",")
        for s in symbols:
            if not CRYPTO_PAIR.match(s):
                return 400, {"message": f"invalid symbol: {s} does not match ^[A-Z]+/[A-Z]+$"}
        timeframe = (query.get("timeframe") or [""])[0]
        if timeframe not in HOURLY_TIMEFRAMES:
            return 400, {"message": f"this server serves hourly bars only, got timeframe {timeframe!r}"}
        if (query.get("sort") or ["asc"])[0] != "asc":
            return 400, {"message": "this server sorts ascending only"}
        try:
            start = _parse_time(query["start"][0]) if "start" in query else None
            end = _parse_time(query["end"][0]) if "end" in query else None
            limit = int((query.get("limit") or [DEFAULT_LIMIT])[0])
        except (ValueError, KeyError) as exc:
            return 400, {"message": f"invalid parameter: {exc}"}
        if not 1 <= limit <= MAX_LIMIT:
            return 400, {"message": f"invalid limit: must be between 1 and {MAX_LIMIT}"}
        query_id = hashlib.sha256(f"{sorted(symbols)}|{start}|{end}|{timeframe}".encode()).hexdigest()[:16]
        offset = 0
        token = (query.get("page_token") or [""])[0]
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                if decoded["q"] != query_id:
                    raise ValueError("token of another query")
                offset = int(decoded["o"])
            except (ValueError, KeyError, TypeError):
                return 400, {"message": "invalid page token"}
        rows: list[tuple[str, dict[str, Any]]] = []
        with self._lock:
            for s in sorted(set(symbols)):
                for bar in self._state.bars.get(s, []):
                    t = _parse_time(bar["t"])
                    if (start is None or t >= start) and (end is None or t <= end):
                        rows.append((s, dict(bar)))
        limit = min(limit, self._bars_page_size)
        page = rows[offset : offset + limit]
        out: dict[str, list[dict[str, Any]]] = {}
        for s, bar in page:
            out.setdefault(s, []).append(bar)
        next_token = None
        if offset + limit < len(rows):
            payload = json.dumps({"q": query_id, "o": offset + limit}).encode()
            next_token = base64.urlsafe_b64encode(payload).decode()
        return 200, {"bars": out, "next_page_token": next_token}


def _make_handler(fake: FakeAlpaca) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr access logs
            return

        def _serve(self, method: str) -> None:
            arrived = time.monotonic()
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            stall = fake._take_stall(parts.path)
            if stall:
                time.sleep(stall)
            authorized = fake._authorized(self.headers)
            failure = fake._take_failure(method, parts.path) if authorized else None
            headers: dict[str, str] = {}
            if not authorized:
                status, answer = 401, {"code": 40110000, "message": "request is not authorized"}
            elif failure is not None:  # injected: answer the error, act on nothing
                status = failure[0]
                answer = {"code": status * 100000, "message": f"injected HTTP {status}"}
                if failure[1] is not None:
                    headers["Retry-After"] = failure[1]
            else:
                status, answer = fake.handle(method, parts.path, query, body)
            fake._record(RecordedRequest(method, parts.path, query, body, authorized, status, arrived))
            if status < 0:  # placed, but the answer is lost on the way back
                self.close_connection = True
                return
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

    return Handler

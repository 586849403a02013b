"""The paper trader's persistent state: ``<root>/paper_trader/ledger.db`` (SQLite via the
SQLAlchemy ORM; docs/ARCHITECTURE.md section 2, the paper trader is its only writer).

Tables:

* ``account`` (one row): run id, broker, symbols, initial cash, cash, last processed bar,
  bars processed, peak equity.
* ``positions``: per symbol quantity (asset units), high-water mark of the close since entry
  (0 when flat), entry bar and price.
* ``orders``: one row per order, unique deterministic ``client_order_id`` =
  ``cpc-<run id>-<decision bar (UTC epoch s)>-<symbol>``, so a retried bar or a resent order
  can never place an order twice; decision bar, side, estimated quantity, target weight,
  reason, status, and the generation + study of the model behind it. Status:
  ``pending_submit`` (recorded with its bar, not sent yet: the outbox) -> ``pending`` (sent;
  ``broker_order_id`` set) or ``cancelled`` (refused, or stale before it was sent; the
  reason in ``status_reason``) -> ``filled`` or ``cancelled`` at a later bar.
* ``fills``: one per filled order: fill bar, signed quantity, price (slippage included), fee.
* ``equity``: per processed bar: equity, cash, peak, drawdown, fees and turnover of the bar's
  fills, generation.
* ``decisions``: per processed bar: model source, generation, study, action, target and
  planned weights, stopped assets.

Bars are identified by their start time in UTC epoch seconds. Every bar is processed in one
transaction (:meth:`Ledger.bar`), so after a crash the ledger is at a bar boundary and a
restart resumes at the last processed bar + 1. Orders are sent only after their bar has
committed, and each outcome is committed on its own (:meth:`Ledger.record_submission`): the
outbox. What a crash at each point leaves is in :mod:`paper_trader.loop`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

SCHEMA_VERSION = 1
PENDING_SUBMIT = "pending_submit"  # recorded with its bar, not yet sent (the outbox)
PENDING, FILLED, CANCELLED = "pending", "filled", "cancelled"  # sent and awaiting its fill; final


class LedgerError(RuntimeError):
    """A ledger that cannot be used by this process; the message names the file."""


class Base(DeclarativeBase):
    pass


class Account(Base):
    """The one account row (``id = 1``)."""

    __tablename__ = "account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str] = mapped_column(String(16))
    broker: Mapped[str] = mapped_column(String(16))
    symbols: Mapped[str] = mapped_column(Text)  # JSON list, column order of every vector
    initial_cash: Mapped[float] = mapped_column(Float)
    cash: Mapped[float] = mapped_column(Float)
    first_bar_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_bar_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bars_processed: Mapped[int] = mapped_column(Integer, default=0)
    peak_equity: Mapped[float] = mapped_column(Float)
    created_at: Mapped[str] = mapped_column(String(40))  # wall clock, informational


class Position(Base):
    """One row per symbol; flat positions keep their row with ``qty = 0``."""

    __tablename__ = "positions"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    qty: Mapped[float] = mapped_column(Float, default=0.0)
    hwm: Mapped[float] = mapped_column(Float, default=0.0)
    entry_bar_ts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    entry_price: Mapped[float | None] = mapped_column(Float, nullable=True)


class Order(Base):
    """An order decided at the close of ``bar_ts`` (see the module docstring)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(String(128), unique=True)
    bar_ts: Mapped[int] = mapped_column(BigInteger, index=True)  # decision bar
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))  # buy | sell
    qty: Mapped[float] = mapped_column(Float)  # estimate at the decision bar's close
    target_weight: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(16))  # rebalance | trailing_stop | limit
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    generation: Mapped[int] = mapped_column(Integer)
    study: Mapped[str] = mapped_column(String(256))

    __table_args__ = (UniqueConstraint("bar_ts", "symbol", name="one_order_per_bar_and_symbol"),)


class Fill(Base):
    """The fill of one order at the open of ``bar_ts``."""

    __tablename__ = "fills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_order_id: Mapped[str] = mapped_column(ForeignKey("orders.client_order_id"), unique=True)
    bar_ts: Mapped[int] = mapped_column(BigInteger, index=True)  # bar whose open filled it
    symbol: Mapped[str] = mapped_column(String(32))
    qty: Mapped[float] = mapped_column(Float)  # signed: > 0 bought, < 0 sold
    price: Mapped[float] = mapped_column(Float)  # per unit, slippage included
    fee: Mapped[float] = mapped_column(Float)


class EquityRow(Base):
    """The account at the close of one processed bar (quote currency; drawdown a fraction)."""

    __tablename__ = "equity"

    bar_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    equity: Mapped[float] = mapped_column(Float)
    cash: Mapped[float] = mapped_column(Float)
    peak: Mapped[float] = mapped_column(Float)
    drawdown: Mapped[float] = mapped_column(Float)
    fees: Mapped[float] = mapped_column(Float)
    turnover: Mapped[float] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer)


class Decision(Base):
    """One decision per processed bar and the model behind it."""

    __tablename__ = "decisions"

    bar_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))  # "ensemble" or "deployment:<slot>"
    generation: Mapped[int] = mapped_column(Integer)
    study: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(Text)  # JSON lists, symbol order
    target: Mapped[str] = mapped_column(Text)
    planned: Mapped[str] = mapped_column(Text)
    stopped: Mapped[str] = mapped_column(Text)
    n_orders: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class AccountState:
    """A snapshot of the account: ``qty``, ``hwm`` are ``(n_assets,)`` in symbol order."""

    run_id: str
    symbols: tuple[str, ...]
    cash: float
    qty: np.ndarray
    hwm: np.ndarray
    last_bar_ts: int | None
    bars_processed: int
    peak_equity: float
    initial_cash: float


def client_order_id(run_id: str, bar_ts: int, symbol: str) -> str:
    """Deterministic client order id of the order for ``symbol`` decided at bar ``bar_ts``."""
    return f"cpc-{run_id}-{bar_ts}-{symbol}"


def _json(values: np.ndarray | list[Any]) -> str:
    return json.dumps([float(v) if not isinstance(v, bool | np.bool_) else bool(v) for v in values])


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", future=True)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


class Ledger:
    """Open (creating if needed) the ledger at ``path``.

    Args:
        path: the SQLite file, normally ``<root>/paper_trader/ledger.db``.

    Raises:
        LedgerError: the file exists but is not a ledger of this schema.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = _sqlite_engine(self.path)
        try:
            Base.metadata.create_all(self.engine)
        except Exception as exc:  # sqlite3.DatabaseError for a file that is not a database
            raise LedgerError(f"{self.path}: not a usable ledger database ({exc})") from None

    def close(self) -> None:
        """Close the database connections."""
        self.engine.dispose()

    # -- set-up -------------------------------------------------------------------------------

    def open_account(self, broker: str, symbols: tuple[str, ...], initial_cash: float) -> AccountState:
        """The account, created on first use with ``initial_cash`` and flat positions.

        Raises:
            LedgerError: the ledger belongs to another broker or other symbols (use another
                root, or remove the ledger to start afresh).
        """
        with Session(self.engine) as s, s.begin():
            acct = s.get(Account, 1)
            if acct is None:
                acct = Account(
                    id=1,
                    schema_version=SCHEMA_VERSION,
                    run_id=secrets.token_hex(4),
                    broker=broker,
                    symbols=json.dumps(list(symbols)),
                    initial_cash=float(initial_cash),
                    cash=float(initial_cash),
                    first_bar_ts=None,
                    last_bar_ts=None,
                    bars_processed=0,
                    peak_equity=float(initial_cash),
                    created_at=datetime.now(UTC).isoformat(),
                )
                s.add(acct)
                for sym in symbols:
                    s.add(Position(symbol=sym, qty=0.0, hwm=0.0))
            else:
                have = tuple(json.loads(acct.symbols))
                if acct.schema_version != SCHEMA_VERSION:
                    raise LedgerError(
                        f"{self.path}: schema version {acct.schema_version}, need {SCHEMA_VERSION}"
                    )
                if acct.broker != broker or have != tuple(symbols):
                    raise LedgerError(
                        f"{self.path}: this ledger trades {list(have)} with broker {acct.broker!r}, not "
                        f"{list(symbols)} with {broker!r}; use another --root or remove the ledger"
                    )
        return self.state()

    def state(self, session: Session | None = None) -> AccountState:
        """Current :class:`AccountState` (read in ``session`` if given)."""
        if session is None:
            with Session(self.engine) as s:
                return self._state(s)
        return self._state(session)

    @staticmethod
    def _state(s: Session) -> AccountState:
        acct = s.get(Account, 1)
        if acct is None:
            raise LedgerError("the ledger has no account yet (open_account first)")
        symbols = tuple(json.loads(acct.symbols))
        pos = {p.symbol: p for p in s.scalars(select(Position))}
        return AccountState(
            run_id=acct.run_id,
            symbols=symbols,
            cash=acct.cash,
            qty=np.array([pos[x].qty for x in symbols], dtype=np.float64),
            hwm=np.array([pos[x].hwm for x in symbols], dtype=np.float64),
            last_bar_ts=acct.last_bar_ts,
            bars_processed=acct.bars_processed,
            peak_equity=acct.peak_equity,
            initial_cash=acct.initial_cash,
        )

    # -- one bar ------------------------------------------------------------------------------

    @contextmanager
    def bar(self, bar_ts: int) -> Iterator[BarTx]:
        """One transaction for the whole processing of bar ``bar_ts``; commits on success,
        rolls back on any exception.

        Raises:
            LedgerError: the bar is not after the last processed bar (already processed).
        """
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            tx = BarTx(s, bar_ts)
            last = tx.account.last_bar_ts
            if last is not None and bar_ts <= last:
                raise LedgerError(f"{self.path}: bar {bar_ts} is not after the last processed bar {last}")
            yield tx

    # -- reading ------------------------------------------------------------------------------

    def orders(self) -> list[Order]:
        """All orders, by decision bar then symbol."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(Order).order_by(Order.bar_ts, Order.symbol)))

    def outbox(self) -> list[Order]:
        """Orders recorded but not sent yet (``pending_submit``), oldest decision first."""
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(Order).where(Order.status == PENDING_SUBMIT).order_by(Order.bar_ts, Order.symbol)
            return list(s.scalars(q))

    def orders_since(self, bar_ts: int) -> list[Order]:
        """Orders decided at bar ``bar_ts`` or later, plus every order not final yet
        (``pending_submit``, ``pending``) whatever its age; by decision bar then symbol."""
        with Session(self.engine, expire_on_commit=False) as s:
            q = (
                select(Order)
                .where((Order.bar_ts >= bar_ts) | Order.status.in_((PENDING_SUBMIT, PENDING)))
                .order_by(Order.bar_ts, Order.symbol)
            )
            return list(s.scalars(q))

    def fill_of(self, client_order_id: str) -> Fill | None:
        """The fill of one order (None if it has none)."""
        with Session(self.engine, expire_on_commit=False) as s:
            return s.scalars(select(Fill).where(Fill.client_order_id == client_order_id)).first()

    def record_submission(self, order: Order) -> str:
        """Commit the outcome of sending ``order`` (a detached copy of an outbox row that the
        broker's ``submit`` has updated) in its own transaction: ``cancelled`` with its reason
        if the broker set that, else ``pending`` (sent) with ``broker_order_id`` and the
        quantity sent. Returns the stored status.

        Raises:
            LedgerError: no such order, or it is no longer ``pending_submit`` (another
                outcome was recorded already).
        """
        with Session(self.engine) as s, s.begin():
            row = s.scalars(select(Order).where(Order.client_order_id == order.client_order_id)).first()
            if row is None or row.status != PENDING_SUBMIT:
                have = None if row is None else row.status
                raise LedgerError(
                    f"{self.path}: order {order.client_order_id} is {have or 'missing'}, not {PENDING_SUBMIT}"
                )
            if order.status == CANCELLED:
                row.status, row.status_reason = CANCELLED, order.status_reason
            else:
                row.status, row.broker_order_id, row.qty = PENDING, order.broker_order_id, float(order.qty)
            return row.status

    def fills(self) -> list[Fill]:
        """All fills, by fill bar then symbol."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(Fill).order_by(Fill.bar_ts, Fill.symbol)))

    def equity_rows(self) -> list[EquityRow]:
        """One row per processed bar, oldest first."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(EquityRow).order_by(EquityRow.bar_ts)))

    def last_equity(self) -> EquityRow | None:
        """The equity row of the last processed bar (None before the first bar)."""
        with Session(self.engine, expire_on_commit=False) as s:
            return s.scalars(select(EquityRow).order_by(EquityRow.bar_ts.desc()).limit(1)).first()

    def decisions(self) -> list[Decision]:
        """One row per processed bar, oldest first."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(Decision).order_by(Decision.bar_ts)))

    def positions(self) -> list[Position]:
        """One row per symbol."""
        with Session(self.engine, expire_on_commit=False) as s:
            return list(s.scalars(select(Position).order_by(Position.symbol)))


class BarTx:
    """The open transaction of one bar (see :meth:`Ledger.bar`)."""

    def __init__(self, session: Session, bar_ts: int) -> None:
        self.session = session
        self.bar_ts = bar_ts
        acct = session.get(Account, 1)
        if acct is None:
            raise LedgerError("the ledger has no account yet (open_account first)")
        self.account = acct
        self.symbols: tuple[str, ...] = tuple(json.loads(acct.symbols))
        self._pos = {p.symbol: p for p in session.scalars(select(Position))}

    def state(self) -> AccountState:
        """The account as this transaction sees it (fills applied so far included)."""
        return Ledger._state(self.session)

    def pending_orders(self) -> list[Order]:
        """Orders sent and not yet filled or cancelled, oldest decision first."""
        q = select(Order).where(Order.status == PENDING).order_by(Order.bar_ts, Order.symbol)
        return list(self.session.scalars(q))

    def unsent_orders(self) -> list[Order]:
        """Orders of earlier bars still in the outbox (``pending_submit``)."""
        q = select(Order).where(Order.status == PENDING_SUBMIT).order_by(Order.bar_ts, Order.symbol)
        return list(self.session.scalars(q))

    def apply_fill(self, order: Order, qty: float, price: float, fee: float) -> None:
        """Record a fill of ``order`` at this bar and move cash and position.

        ``qty`` is signed (> 0 bought); cash changes by ``-(qty * price) - fee``. A fill that
        sells the whole position leaves exactly 0. A new position starts its entry and
        high-water mark here.
        """
        pos = self._pos[order.symbol]
        before = pos.qty
        after = 0.0 if qty < 0 and -qty >= before else before + qty
        qty = after - before if after == 0.0 else qty
        self.session.add(
            Fill(
                client_order_id=order.client_order_id,
                bar_ts=self.bar_ts,
                symbol=order.symbol,
                qty=float(qty),
                price=float(price),
                fee=float(fee),
            )
        )
        self.account.cash = float(self.account.cash - qty * price - fee)
        pos.qty = float(after)
        if after > 0.0 and before <= 0.0:
            pos.entry_bar_ts, pos.entry_price, pos.hwm = self.bar_ts, float(price), 0.0
        elif after <= 0.0:
            pos.entry_bar_ts, pos.entry_price, pos.hwm = None, None, 0.0
        order.status = FILLED

    def cancel(self, order: Order, reason: str) -> None:
        """Mark ``order`` cancelled (nothing traded) with ``reason``."""
        order.status, order.status_reason = CANCELLED, reason

    def set_hwm(self, hwm: np.ndarray) -> None:
        """Store the high-water marks ``(n_assets,)`` (symbol order)."""
        for sym, h in zip(self.symbols, hwm, strict=True):
            self._pos[sym].hwm = float(h)

    def add_order(
        self,
        symbol: str,
        side: str,
        qty: float,
        target_weight: float,
        reason: str,
        generation: int,
        study: str,
    ) -> Order:
        """Insert an order decided at this bar into the outbox (``pending_submit``; id from
        :func:`client_order_id`); it is sent after the bar commits."""
        order = Order(
            client_order_id=client_order_id(self.account.run_id, self.bar_ts, symbol),
            bar_ts=self.bar_ts,
            symbol=symbol,
            side=side,
            qty=float(qty),
            target_weight=float(target_weight),
            reason=reason,
            status=PENDING_SUBMIT,
            generation=int(generation),
            study=study,
        )
        self.session.add(order)
        return order

    def add_decision(
        self,
        source: str,
        generation: int,
        study: str,
        action: np.ndarray | None,
        target: np.ndarray,
        planned: np.ndarray,
        stopped: np.ndarray,
        n_orders: int,
    ) -> None:
        """Record the bar's decision; vectors ``(n_assets,)`` in symbol order (``action`` is the
        model's, ``(action_dim,)``; JSON ``null`` at a bar that is not a decision bar)."""
        self.session.add(
            Decision(
                bar_ts=self.bar_ts,
                source=source,
                generation=int(generation),
                study=study,
                action="null" if action is None else _json(action),
                target=_json(target),
                planned=_json(planned),
                stopped=_json(stopped),
                n_orders=n_orders,
            )
        )

    def close_bar(self, equity: float, fees: float, turnover: float, generation: int) -> EquityRow:
        """Write the bar's equity row and mark the bar processed; returns the row."""
        acct = self.account
        peak = max(acct.peak_equity, equity)
        row = EquityRow(
            bar_ts=self.bar_ts,
            equity=float(equity),
            cash=float(acct.cash),
            peak=float(peak),
            drawdown=float(1.0 - equity / peak) if peak > 0 else 0.0,
            fees=float(fees),
            turnover=float(turnover),
            generation=int(generation),
        )
        self.session.add(row)
        acct.peak_equity = float(peak)
        if acct.first_bar_ts is None:
            acct.first_bar_ts = self.bar_ts
        acct.last_bar_ts = self.bar_ts
        acct.bars_processed += 1
        return row

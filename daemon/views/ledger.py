"""Read-only views of the paper trader's ledger (``<root>/paper_trader/ledger.db``) for the
dashboard and the reports.

The paper trader is the ledger's only writer (docs/ARCHITECTURE.md section 2). These readers open the
SQLite file with ``mode=ro`` (never create it, never write it; WAL mode lets them read while
the trader commits bars) and use the table definitions of :mod:`paper_trader.ledger`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from paper_trader.ledger import Account, EquityRow, Position

LEDGER_RELPATH = Path("paper_trader") / "ledger.db"


class LedgerReadError(RuntimeError):
    """The ledger is missing or cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class EquityCurve:
    """The account at the close of every processed bar, oldest first.

    Attributes:
        bar_ts: ``(T,)`` int64, bar start times in UTC epoch seconds.
        equity: ``(T,)`` float64, equity in the quote currency.
        peak: ``(T,)`` float64, running peak equity (quote currency).
        drawdown: ``(T,)`` float64, ``1 - equity / peak`` (a fraction in [0, 1]).
        generation: ``(T,)`` int64, ensemble generation that decided the bar.
        initial_cash: cash the account started with (quote currency).
        symbols: traded symbols.
        broker: ``sim`` (a replay of the hold-out bars) or ``alpaca``.
    """

    bar_ts: np.ndarray
    equity: np.ndarray
    peak: np.ndarray
    drawdown: np.ndarray
    generation: np.ndarray
    initial_cash: float
    symbols: tuple[str, ...]
    broker: str = "sim"


def ledger_path(root: Path) -> Path:
    """``<root>/paper_trader/ledger.db``."""
    return root / LEDGER_RELPATH


def _engine(path: Path) -> Engine:
    if not path.is_file():
        raise LedgerReadError(f"no ledger at {path} (the paper trader has not run on this root yet)")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    return sa.create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=30), poolclass=sa.NullPool
    )


def _read(path: Path, fn: Any) -> Any:
    engine = _engine(path)
    try:
        with engine.connect() as conn:
            return fn(conn)
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise LedgerReadError(f"{path}: not a readable paper-trader ledger ({detail})") from None
    finally:
        engine.dispose()


def equity_curve(path: Path) -> EquityCurve:
    """Every equity row of the ledger at ``path`` (one query).

    Raises:
        LedgerReadError: no such file, not a ledger, or no account yet.
    """

    def query(conn: sa.Connection) -> EquityCurve:
        acct = conn.execute(
            sa.select(Account.initial_cash, Account.symbols, Account.broker).where(Account.id == 1)
        ).first()
        if acct is None:
            raise LedgerReadError(f"{path}: the ledger has no account yet (no bar processed)")
        rows = conn.execute(
            sa.select(
                EquityRow.bar_ts, EquityRow.equity, EquityRow.peak, EquityRow.drawdown, EquityRow.generation
            ).order_by(EquityRow.bar_ts)
        ).all()
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return EquityCurve(
            bar_ts=np.asarray(cols[0], dtype=np.int64),
            equity=np.asarray(cols[1], dtype=np.float64),
            peak=np.asarray(cols[2], dtype=np.float64),
            drawdown=np.asarray(cols[3], dtype=np.float64),
            generation=np.asarray(cols[4], dtype=np.int64),
            initial_cash=float(acct[0]),
            symbols=tuple(json.loads(acct[1])),
            broker=str(acct[2]),
        )

    return _read(path, query)


def ledger_summary(path: Path) -> dict[str, Any]:
    """The account in a few aggregate queries (never every row).

    Returns:
        ``{"path", "symbols", "initial_cash", "cash", "bars", "first_bar_ts", "last_bar_ts"
        (UTC epoch s or None), "equity", "peak", "drawdown" (last bar, fraction),
        "max_drawdown" (largest over all bars, fraction), "total_return" (``equity /
        initial_cash - 1``), "fees" (sum, quote currency), "generation" (last bar's),
        "positions": {symbol: qty}}``; equity figures are None before the first bar.

    Raises:
        LedgerReadError: no such file, not a ledger, or no account yet.
    """

    def query(conn: sa.Connection) -> dict[str, Any]:
        acct = conn.execute(sa.select(Account).where(Account.id == 1)).mappings().first()
        if acct is None:
            raise LedgerReadError(f"{path}: the ledger has no account yet (no bar processed)")
        last = conn.execute(
            sa.select(EquityRow.equity, EquityRow.peak, EquityRow.drawdown, EquityRow.generation)
            .order_by(EquityRow.bar_ts.desc())
            .limit(1)
        ).first()
        max_dd, fees = conn.execute(
            sa.select(sa.func.max(EquityRow.drawdown), sa.func.sum(EquityRow.fees))
        ).one()
        positions = {s: float(q) for s, q in conn.execute(sa.select(Position.symbol, Position.qty))}
        initial = float(acct["initial_cash"])
        return {
            "path": str(path),
            "symbols": json.loads(acct["symbols"]),
            "initial_cash": initial,
            "cash": float(acct["cash"]),
            "bars": int(acct["bars_processed"]),
            "first_bar_ts": acct["first_bar_ts"],
            "last_bar_ts": acct["last_bar_ts"],
            "equity": None if last is None else float(last[0]),
            "peak": None if last is None else float(last[1]),
            "drawdown": None if last is None else float(last[2]),
            "max_drawdown": None if max_dd is None else float(max_dd),
            "total_return": None if last is None or initial <= 0 else float(last[0]) / initial - 1.0,
            "fees": float(fees or 0.0),
            "generation": None if last is None else int(last[3]),
            "positions": positions,
        }

    return _read(path, query)

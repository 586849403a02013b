"""Views of an :class:`ensemble.evaluate.Evaluation`: the terminal table and the PNG
tearsheet (equity curves of the model and the baselines, drawdowns, rolling Sharpe ratio),
drawn with matplotlib's Agg backend and written atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from daemon.views.report import save_png
from ensemble.evaluate import Evaluation, Line

ROLLING_DAYS = 30


def _num(v: float, digits: int = 2) -> str:
    if v is None or np.isnan(v):
        return "-"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v * 100:+.1f}%"


def render_table(ev: Evaluation, console: Console | None = None) -> None:
    """Print the evaluation: header (model, window, bars, costs), one row per line, and the
    study's PBO and deflated Sharpe ratio."""
    console = console or Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    c = ev.costs
    console.print(
        f"[bold]{ev.model}[/] (study {ev.study}) on the [bold]{ev.window}[/] window: "
        f"{ev.first_bar} .. {ev.last_bar}, {ev.n_bars:,} bars, {ev.bars_per_year:,} bars/year"
    )
    console.print(
        f"execution model: fee {c.fee:g}, slippage {c.slippage:g}, cash reserve {c.min_cash:g}, "
        f"max weight {c.max_weight:g}, trailing stop {c.trailing_stop:g}, no-trade band {c.min_trade:g}"
    )
    table = Table(show_lines=False)
    for name, justify in (
        ("line", "left"),
        ("return", "right"),
        ("Sharpe [95% CI]", "right"),
        ("Sortino", "right"),
        ("max DD", "right"),
        ("Calmar", "right"),
        ("turnover", "right"),
        ("exposure", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for line in ev.lines:
        f = line.figures
        label = line.name + (" *" if line.clairvoyant else "")
        style = "bold" if line.kind == "model" else ("dim" if line.kind == "member" else None)
        table.add_row(
            label,
            _pct(f["total_return"]),
            f"{_num(f['sharpe'])} [{_num(f['sharpe_low'])}, {_num(f['sharpe_high'])}]",
            _num(f["sortino"]),
            _pct(-f["max_drawdown"]),
            _num(f["calmar"]),
            _num(f["turnover"], 1),
            f"{f['exposure'] * 100:.0f}%",
            style=style,
        )
    console.print(table)
    if any(line.clairvoyant for line in ev.lines):
        console.print("* clairvoyant reference: weights chosen with this window's own bars, not tradable")
    sf = ev.study_figures
    if sf:
        pbo, dsr = sf.get("pbo"), sf.get("dsr")
        parts = [f"study {ev.study}: {sf.get('n_trials', 0)} COMPLETE trials"]
        if pbo:
            parts.append(
                f"PBO {pbo['pbo']:.2f} (CSCV, {pbo['n_folds']} folds, {pbo['n_combinations']} combinations)"
            )
        if dsr:
            parts.append(
                f"deflated Sharpe ratio {dsr['dsr']:.2f} "
                f"(probability of skill given {dsr['n_trials']} trials; "
                f"per-bar SR {dsr['sharpe_per_bar']:.4f} vs expected max "
                f"{dsr['expected_max_sharpe_per_bar']:.4f})"
            )
        if sf.get("why"):
            parts.append(f"({sf['why']})")
        console.print("; ".join(parts))
    for note in ev.notes:
        console.print(f"note: {note}")


def _drawdown(equity: np.ndarray) -> np.ndarray:
    return equity / np.maximum.accumulate(equity) - 1.0


def _rolling_sharpe(equity: np.ndarray, window: int, bars_per_year: int) -> np.ndarray:
    r = pd.Series(np.diff(equity) / equity[:-1])
    roll = r.rolling(window, min_periods=max(2, window // 2))
    return (roll.mean() / roll.std() * np.sqrt(bars_per_year)).to_numpy()


def write_tearsheet(ev: Evaluation, path: Path) -> Path:
    """Write the PNG tearsheet: equity curves, drawdowns and a rolling Sharpe ratio
    (``ROLLING_DAYS`` days) of the model and every baseline (not the members)."""
    times = pd.to_datetime(ev.timestamps)
    shown: list[Line] = [line for line in ev.lines if line.kind != "member"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True, height_ratios=(3, 1.5, 1.5))
    window = max(2, round(ROLLING_DAYS * ev.bars_per_year / 365))
    for line in shown:
        model = line.kind == "model"
        kw = {"linewidth": 2.2 if model else 1.0, "linestyle": ":" if line.clairvoyant else "-"}
        label = line.name + (" (clairvoyant)" if line.clairvoyant else "")
        axes[0].plot(times, line.equity, label=label, **kw)
        axes[1].plot(times, _drawdown(line.equity) * 100, **kw)
        axes[2].plot(times[1:], _rolling_sharpe(line.equity, window, ev.bars_per_year), **kw)
    axes[0].set_ylabel("equity (start = 1)")
    axes[0].set_title(
        f"{ev.model} vs baselines, {ev.window} window ({ev.first_bar[:10]} .. {ev.last_bar[:10]})"
    )
    axes[0].legend(fontsize=8, loc="best")
    axes[1].set_ylabel("drawdown (%)")
    axes[2].set_ylabel(f"Sharpe, rolling {ROLLING_DAYS} d")
    axes[2].axhline(0.0, color="grey", linewidth=0.6)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)

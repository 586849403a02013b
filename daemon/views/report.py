"""PNG reports: the paper trader's equity curve with its drawdown (from the ledger) and the
study's best value over trials (from the Optuna storage), drawn with matplotlib's Agg
backend (no display needed) and written atomically.

* ``equity.png``: equity per processed bar (quote currency) with its running peak, the
  initial cash and the bars where the ensemble generation changed; below it the drawdown
  ``1 - equity / peak`` in percent. X axis: bar time, UTC.
* ``best_value.png``: every COMPLETE trial's objective value by trial number, the best value
  so far as a step line, the grade thresholds (:data:`trainers.naming.DEFAULT_GRADE_THRESHOLDS`)
  and, once the study's first worker recorded them, the values of its two constant-policy
  baselines (always invested, always in cash; :mod:`trainers.fold_baselines`) as labelled
  horizontal lines: a grade means little while the best value is below them; and the
  value of the design's zero action (where an untrained agent starts), dash-dotted.
  The objective value is ``mean - 0.1 * std`` of the walk-forward folds' excess Sharpe
  ratios (annualised with 8760 bars a year; :func:`trainers.objective.objective_value`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
import sqlalchemy as sa
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from daemon.views.ledger import EquityCurve, LedgerReadError, equity_curve, ledger_path
from trainers.atomic_io import atomic_write_bytes
from trainers.naming import BASELINE_LABELS, DEFAULT_GRADE_THRESHOLDS, ZERO_ACTION_LABEL, baseline_note
from trainers.storage import redact_url
from trainers.study_db import StudyDBError, StudyRow, open_engine
from trainers.study_db.baselines import StudyBaselines, study_baselines

EQUITY_PNG = "equity.png"
BEST_VALUE_PNG = "best_value.png"
DPI = 110
BASELINE_COLOURS = {"invested": "tab:red", "cash": "tab:purple"}
ZERO_ACTION_COLOUR = "tab:olive"


class ReportError(RuntimeError):
    """A plot cannot be drawn; the message names the missing or unreadable input."""


@dataclass(frozen=True)
class StudyValues:
    """The COMPLETE trials of a study with a finite value, in trial-number order.

    Attributes:
        study: study name.
        maximize: direction of the objective.
        numbers: ``(N,)`` int64 trial numbers.
        values: ``(N,)`` float64 objective values.
        vins: ``(N,)`` VIN of each trial ("" when unknown).
        counts: trials of the study by state (all states).
        baselines: the study's recorded constant-policy baselines, None when not recorded.
    """

    study: str
    maximize: bool
    numbers: np.ndarray
    values: np.ndarray
    vins: list[str]
    counts: dict[str, int]
    baselines: StudyBaselines | None = None

    def best_so_far(self) -> np.ndarray:
        """``(N,)`` best value among trials up to and including each one (running max/min)."""
        acc = np.maximum.accumulate if self.maximize else np.minimum.accumulate
        return acc(self.values) if self.values.size else self.values


@dataclass
class ReportResult:
    """What :func:`write_report` did: files written, and one line per plot it could not draw."""

    written: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def study_values(storage_url: str, study: str) -> StudyValues:
    """Trial numbers and values of the study's COMPLETE trials (two columns of one query; the
    trials' other data are not read), with their VINs, the trial counts by state and the
    study's recorded baselines.

    Raises:
        ReportError: unusable storage URL, no SQLite file, unknown study, unreadable storage.
    """
    try:
        engine = open_engine(storage_url)
    except StudyDBError as exc:
        raise ReportError(str(exc)) from None
    try:
        with engine.connect() as con:
            sid = con.execute(
                sa.text("SELECT study_id FROM studies WHERE study_name = :n"), {"n": study}
            ).scalar()
            if sid is None:
                raise ReportError(f"storage {redact_url(storage_url)}: no study named {study!r}")
            direction = con.execute(
                sa.text(
                    "SELECT direction FROM study_directions WHERE study_id = :s ORDER BY objective LIMIT 1"
                ),
                {"s": sid},
            ).scalar()
            maximize = str(getattr(direction, "name", direction)).upper() != "MINIMIZE"
            baselines = study_baselines(con, StudyRow(int(sid), study, maximize))
            counts = {
                str(getattr(s, "name", s)): int(n)
                for s, n in con.execute(
                    sa.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :s GROUP BY state"),
                    {"s": sid},
                )
            }
            rows = con.execute(
                sa.text(
                    "SELECT t.number, v.value, a.value_json FROM trials t "
                    "JOIN trial_values v ON v.trial_id = t.trial_id AND v.objective = 0 "
                    "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'vin' "
                    "WHERE t.study_id = :s AND t.state = 'COMPLETE' AND v.value_type = 'FINITE' "
                    "ORDER BY t.number"
                ),
                {"s": sid},
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ReportError(
            f"storage {redact_url(storage_url)}: cannot read study {study!r} ({first})"
        ) from None
    finally:
        engine.dispose()
    return StudyValues(
        study=study,
        maximize=maximize,
        numbers=np.asarray([r[0] for r in rows], dtype=np.int64),
        values=np.asarray([r[1] for r in rows], dtype=np.float64),
        vins=[_vin(r[2]) for r in rows],
        counts=counts,
        baselines=baselines,
    )


def _vin(raw: str | None) -> str:
    try:
        vin = json.loads(raw) if raw else ""
    except ValueError:
        return ""
    return vin if isinstance(vin, str) else ""


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as a PNG and write it atomically to ``path`` (0644); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _quote_currency(symbols: tuple[str, ...]) -> str:
    """``USD`` when every symbol is quoted in it (``ETHUSD``), else ``quote currency``."""
    for quote in ("USDT", "USDC", "USD", "EUR", "BTC"):
        if symbols and all(s.upper().endswith(quote) and len(s) > len(quote) for s in symbols):
            return quote
    return "quote currency"


def plot_equity(curve: EquityCurve, path: Path) -> Path:
    """Draw the equity curve and its drawdown to ``path`` (PNG).

    Raises:
        ReportError: the ledger has no processed bar yet.
    """
    if curve.bar_ts.size == 0:
        raise ReportError("the ledger has no processed bar yet: nothing to plot")
    times = curve.bar_ts.astype("datetime64[s]")
    currency = _quote_currency(curve.symbols)
    ret = curve.equity[-1] / curve.initial_cash - 1 if curve.initial_cash > 0 else float("nan")
    fig, (ax, ax_dd) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, layout="constrained"
    )
    ax.plot(times, curve.equity, color="tab:blue", lw=1.4, label="equity")
    ax.plot(times, curve.peak, color="tab:gray", lw=0.9, ls="--", label="running peak")
    ax.axhline(
        curve.initial_cash, color="black", lw=0.8, ls=":", label=f"initial cash {curve.initial_cash:,.0f}"
    )
    changes = np.flatnonzero(np.diff(curve.generation)) + 1
    for k, i in enumerate(changes):
        label = "new ensemble generation" if k == 0 else None
        ax.axvline(times[i], color="tab:orange", lw=0.9, alpha=0.8, label=label)
        ax.annotate(
            f" gen {curve.generation[i]}",
            (times[i], 1.0),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=7,
            color="tab:orange",
        )
    ax.set_ylabel(f"equity ({currency})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    start, stop = (np.datetime_as_string(times[i], unit="m").replace("T", " ") for i in (0, -1))
    replay = " (sim replay of the hold-out bars: validation and test windows)"
    window = replay if curve.broker == "sim" else ""
    ax.set_title(
        f"Paper trader equity, {', '.join(curve.symbols)}: {start} to {stop} UTC{window}\n"
        f"{curve.bar_ts.size} bars, return {ret:+.2%}, max drawdown {curve.drawdown.max():.2%}, "
        f"generations {curve.generation.min()}-{curve.generation.max()}",
        fontsize=11,
    )
    ax_dd.fill_between(times, -100 * curve.drawdown, 0, color="tab:red", alpha=0.4, step="post", lw=0)
    ax_dd.plot(times, -100 * curve.drawdown, color="tab:red", lw=0.8, drawstyle="steps-post")
    ax_dd.set_ylabel("drawdown (%)")
    ax_dd.set_xlabel("bar time (UTC)")
    ax_dd.grid(alpha=0.3)
    locator = mdates.AutoDateLocator()
    ax_dd.xaxis.set_major_locator(locator)
    ax_dd.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return save_png(fig, path)


def plot_best_value(values: StudyValues, path: Path) -> Path:
    """Draw :func:`best_value_figure` to ``path`` (PNG).

    Raises:
        ReportError: the study has no COMPLETE trial with a finite value.
    """
    return save_png(best_value_figure(values), path)


def _level_line(ax: Axes, level: float, name: str, colour: str, style: str, kind: str) -> None:
    """A labelled horizontal line at ``level`` (legend ``"<kind>: <name> <level>"``)."""
    label = f"{name} {level:+.4f}"
    ax.axhline(level, color=colour, lw=1.1, ls=style, label=f"{kind}: {label}")
    ax.annotate(
        label,
        (0.0, level),
        xycoords=("axes fraction", "data"),
        ha="left",
        va="bottom",
        fontsize=7,
        color=colour,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )


def best_value_figure(values: StudyValues) -> Figure:
    """Every COMPLETE trial's value, the best value so far, the grade thresholds and the
    recorded baselines (dashed lines labelled ``always invested -0.2830``).

    Raises:
        ReportError: the study has no COMPLETE trial with a finite value.
    """
    if values.values.size == 0:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(values.counts.items())) or "no trials"
        raise ReportError(f"study {values.study!r} has no COMPLETE trial yet ({counts}): nothing to plot")
    best = values.best_so_far()
    i_best = int(np.argmax(values.values) if values.maximize else np.argmin(values.values))
    fig, ax = plt.subplots(figsize=(11, 5.5), layout="constrained")
    ax.scatter(values.numbers, values.values, s=14, color="tab:blue", alpha=0.45, label="COMPLETE trial")
    ax.step(values.numbers, best, where="post", color="tab:green", lw=1.8, label="best so far")
    ax.scatter(
        [values.numbers[i_best]],
        [values.values[i_best]],
        s=60,
        color="tab:green",
        zorder=3,
        edgecolor="black",
    )
    ax.annotate(
        f" #{values.numbers[i_best]} {values.vins[i_best]}",
        (values.numbers[i_best], values.values[i_best]),
        fontsize=8,
        va="bottom",
    )
    baselines = values.baselines.values() if values.baselines is not None else {}
    for name, level in baselines.items():
        _level_line(ax, level, BASELINE_LABELS[name], BASELINE_COLOURS[name], "--", "baseline")
    start = values.baselines.zero_action if values.baselines is not None else None
    if start is not None:  # a reference, not a baseline of the verdict
        _level_line(ax, start, ZERO_ACTION_LABEL, ZERO_ACTION_COLOUR, "-.", "reference")
    low, high = ax.get_ylim()
    for grade, threshold in DEFAULT_GRADE_THRESHOLDS.items():
        if low <= threshold <= high:
            ax.axhline(threshold, color="gray", lw=0.7, ls=":")
            ax.annotate(
                f"grade {grade} >= {threshold:g}",
                (1.0, threshold),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
                color="dimgray",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
    ax.set_xlabel("trial number")
    ax.set_ylabel("objective value\n(mean - 0.1 std of fold excess Sharpe, annualised)")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(values.counts.items()))
    ax.set_title(
        f"Study {values.study}: best value over trials ({'maximise' if values.maximize else 'minimise'})\n"
        f"best {values.values[i_best]:.4f} at trial #{values.numbers[i_best]} "
        f"({baseline_note(float(values.values[i_best]), baselines)}); trials: {counts}",
        fontsize=11,
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def write_report(root: Path, storage_url: str, study: str | None, out: Path) -> ReportResult:
    """Write ``equity.png`` and ``best_value.png`` into ``out`` (created if needed). A plot
    whose input is missing is left out with one line in :attr:`ReportResult.problems`; the
    other is still written.

    Raises:
        OSError: ``out`` cannot be created or written.
    """
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult()
    try:
        result.written.append(plot_equity(equity_curve(ledger_path(root)), out / EQUITY_PNG))
    except (LedgerReadError, ReportError) as exc:
        result.problems.append(f"equity curve: {exc}")
    if not study:
        result.problems.append(
            "best value over trials: no study (write <root>/.current_study or pass --study)"
        )
        return result
    try:
        result.written.append(plot_best_value(study_values(storage_url, study), out / BEST_VALUE_PNG))
    except ReportError as exc:
        result.problems.append(f"best value over trials: {exc}")
    return result

"""Rich rendering of a :func:`daemon.views.collector.Collector.collect` snapshot.

:func:`render_frame` stacks the panels (``--once``, and the plain-text frame written when
stdout is not a terminal: ASCII boxes, no colour codes). :func:`render_layout` arranges the
same panels in a :class:`rich.layout.Layout` for the live view.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from trainers.naming import grade_with_baselines
from trainers.study_db import ENDED_STATES
from trainers.study_db.baselines import baseline_values, vs_baselines_line

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


# ------------------------------------------------------------------ formatting helpers
def num(x: Any, digits: int = 4) -> str:
    """A number with ``digits`` decimals; ``-`` for None/NaN."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}f}"


def money(x: Any) -> str:
    """Quote-currency amount with thousands separators and cents; ``-`` for None."""
    return "-" if not isinstance(x, int | float) or not math.isfinite(x) else f"{x:,.2f}"


def pct(x: Any, digits: int = 1) -> str:
    """A fraction as percent (``0.123`` -> ``12.3%``); ``-`` for None."""
    return "-" if not isinstance(x, int | float) or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def duration(seconds: Any) -> str:
    """``3725`` -> ``1h 02m``; ``42`` -> ``42s``; ``-`` for None."""
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def when(iso: Any, now: datetime) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS UTC (5m 03s ago | in 4m 10s)``; ``-`` for None."""
    if not isinstance(iso, str):
        return "-"
    try:
        dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = (dt - now).total_seconds()
    rel = f"in {duration(delta)}" if delta > 0 else f"{duration(-delta)} ago"
    return f"{dt.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({rel})"


def bar_time(ts: Any) -> str:
    """UTC epoch seconds of a bar -> ``YYYY-MM-DD HH:MM UTC``."""
    if not isinstance(ts, int):
        return "-"
    return f"{datetime.fromtimestamp(ts, UTC):%Y-%m-%d %H:%M} UTC"


def _err(msg: str) -> Text:
    return Text(f"error: {msg}", style="red")


def _kv(pairs: list[tuple[str, str | Text]]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for k, v in pairs:
        grid.add_row(k, v)
    return grid


# ------------------------------------------------------------------ panels
def header(snap: dict[str, Any], now: datetime, crop: bool = False) -> Text:
    """Title line and the supervisor's state (``crop``: each line cut to the width, for the
    fixed-height header of the live layout)."""
    sup = snap["supervisor"]
    t = Text(no_wrap=crop, overflow="ellipsis" if crop else "fold")
    t.append("cappuccino dashboard", style="bold")
    t.append(f"  {now:%Y-%m-%d %H:%M:%S} UTC  root {snap['root']}  storage {snap['storage']}\n")
    if sup["running"]:
        st = sup.get("status") or {}
        t.append(f"supervisor running: pid {sup['pid']}", style="green")
        if st:
            t.append(f", uptime {duration(st.get('uptime_s'))}, study {st.get('study')}")
            t.append(f", status.json {duration(sup.get('status_age_s'))} old")
        if sup.get("error"):
            t.append(f"\n{sup['error']}", style="yellow")
    else:
        t.append(
            "supervisor is not running: study, ensemble and paper trader read directly "
            "(no supervised workers or jobs)",
            style="yellow",
        )
    return t


def baselines_text(st: dict[str, Any]) -> Text:
    """``best X · always invested Y · always in cash Z · untrained start W (same
    n folds and costs)``, red while the best value does not beat both constants (the
    untrained start is a reference, not part of that verdict); a yellow line while the
    baselines are not recorded."""
    best = st.get("best") or {}
    line = vs_baselines_line(f"best {num(best.get('value'))}" if best else "", st.get("baselines"))
    if line is None:
        return Text("not recorded yet (the study's first worker computes them)", style="yellow")
    return Text(line, style="red" if best.get("beats_baselines") is False else "")


def sequential_rows(seq: dict[str, Any] | None) -> list[tuple[str, str | Text]]:
    """The ``sequential`` and ``gate`` rows of a sequential training run
    (:mod:`daemon.sequential_state`): its stage, the study the workers train and the gate's
    last verdict with its evidence; none without a run."""
    if not seq:
        return []
    if "error" in seq:
        return [("sequential", _err(seq["error"]))]
    number = seq.get("stage_number")
    stage = f"stage {number} ({seq.get('stage')})" if number else str(seq.get("stage"))
    line = f"{seq.get('name')}: {stage}, workers train {seq.get('training_study')}"
    if seq.get("stage") == "full_warmup":
        line += f" (current study switches after top_k COMPLETE; {len(seq.get('enqueued') or [])} enqueued)"
    rows: list[tuple[str, str | Text]] = [("sequential", line)]
    gate = seq.get("gate")
    if not gate:
        rows.append(("gate", f"not evaluated yet ({seq.get('quick_trials')} quick trials)"))
    else:
        verdict = "passed" if gate.get("passed") else "refused"
        text = f"{verdict} ({gate.get('rule')}): {gate.get('reason')}; at {gate.get('evaluated_at')}"
        rows.append(("gate", Text(text, style="green" if gate.get("passed") else "red")))
    return rows


def study_panel(snap: dict[str, Any], plain: bool) -> Panel:
    """Study progress: trials by state, trials/hour, best value (its grade with whether it
    beats both constant baselines), the baselines, rates, stagnation; the stage and gate of
    a sequential run (:func:`sequential_rows`)."""
    st = snap["study_stats"]
    title = f"study {snap.get('study') or '-'}"
    if "error" in st:
        return Panel(_err(st["error"]), title=title, box=_box(plain))
    if not st.get("exists"):
        return Panel(
            Text(f"study {st.get('study')!r} does not exist in the storage yet", style="yellow"),
            title=title,
            box=_box(plain),
        )
    trials = st.get("trials") or {}
    total = sum(trials.values())
    finished = sum(trials.get(s, 0) for s in ENDED_STATES)  # FAIL included: no longer running
    states = "  ".join(f"{s} {trials.get(s, 0)}" for s in STATES)
    extra = [f"{k} {v}" for k, v in trials.items() if k not in STATES]
    target = snap.get("n_trials")
    progress = f"{finished} finished of {total}" + (
        f", target {target} ({pct(finished / target, 0)})" if target else ""
    )
    best = st.get("best") or {}
    grade = grade_with_baselines(best.get("grade"), best.get("value"), baseline_values(st.get("baselines")))
    best_text = (
        f"{num(best.get('value'))} trial #{best.get('number')} grade {grade} {best.get('vin') or ''}"
        if best
        else "no COMPLETE trial yet"
    )
    rates = st.get("rates") or {}
    stag = st.get("stagnation") or {}
    improvements = st.get("best_over_time") or []
    rows: list[tuple[str, str | Text]] = [
        ("trials", "  ".join([states, *extra])),
        ("progress", progress),
        (
            "ended/hour",
            f"{st.get('ended_per_hour', 0):g} (last hour), "
            f"{st.get('ended_per_hour_24h', 0):g} (24 h average; COMPLETE, PRUNED and FAIL)",
        ),
        ("best value", best_text),
        ("vs baselines", baselines_text(st)),
        (
            "rates",
            f"fail {pct(rates.get('fail_rate'))}, pruned {pct(rates.get('prune_rate'))} "
            f"of the last {rates.get('window', 0)} finished",
        ),
        (
            "stagnation",
            Text(
                f"{stag.get('trials_since_best', 0)} COMPLETE trials since the best (limit "
                f"{stag.get('limit')}), best improved {len(improvements)} time(s)",
                style="red" if stag.get("stagnant") else "",
            ),
        ),
        *sequential_rows(snap.get("sequential")),
    ]
    return Panel(_kv(rows), title=title, box=_box(plain))


def top_panel(snap: dict[str, Any], plain: bool) -> Panel:
    """Top trials: rank, trial, value, grade, whether it beats both baselines, VIN, mean fold
    Sharpe, worst drawdown, slot."""
    top = snap["top"]
    if top.get("error"):
        return Panel(_err(top["error"]), title="top trials", box=_box(plain))
    ens = snap.get("ensemble") or {}
    slots = {m["trial_id"]: m["slot"] for m in ens.get("members", [])} if "error" not in ens else {}
    table = Table(box=_box(plain, table=True), expand=True, pad_edge=False, show_edge=False)
    for col, just in (
        ("#", "right"),
        ("trial", "right"),
        ("value", "right"),
        ("grade", "center"),
        ("beats baselines", "center"),
        ("VIN", "left"),
        ("fold Sharpe", "right"),
        ("max DD", "right"),
        ("ensemble", "center"),
    ):
        table.add_column(col, justify=just, no_wrap=col == "VIN")  # type: ignore[arg-type]
    for r in top["trials"]:
        slot = slots.get(r["trial_id"])
        table.add_row(
            str(r["rank"]),
            str(r["number"]),
            num(r["value"]),
            str(r.get("grade") or "-"),
            "-" if r.get("beats_baselines") is None else ("yes" if r["beats_baselines"] else "no"),
            str(r.get("vin") or "-"),
            num(r.get("sharpe"), 2),
            pct(r.get("max_drawdown")),
            "-" if slot is None else f"slot {slot}",
        )
    if not top["trials"]:
        return Panel(Text("no COMPLETE trial yet"), title="top trials", box=_box(plain))
    return Panel(
        table, title=f"top {len(top['trials'])} trials (Sharpe: fold mean, annualised)", box=_box(plain)
    )


def workers_panel(snap: dict[str, Any], plain: bool) -> Panel:
    """Supervised children: pid, state, CPU, RSS, uptime, restarts, last exit reason."""
    sup = snap["supervisor"]
    children = (sup.get("status") or {}).get("children") or []
    if not sup["running"]:
        return Panel(Text("supervisor down: no supervised workers"), title="workers", box=_box(plain))
    if not children:
        return Panel(Text("no children"), title="workers", box=_box(plain))
    table = Table(box=_box(plain, table=True), expand=True, pad_edge=False, show_edge=False)
    for col in ("name", "pid", "state", "CPU %", "RSS MB", "uptime", "restarts", "last reason"):
        table.add_column(col, justify="left" if col in ("name", "state", "last reason") else "right")
    for c in children:
        state = str(c.get("state"))
        table.add_row(
            str(c.get("name")),
            str(c.get("pid") or "-"),
            Text(state, style={"running": "green", "failed": "red"}.get(state, "yellow")),
            num(c.get("cpu_percent"), 0),
            num(c.get("rss_mb"), 0),
            duration(c.get("uptime_s")),
            f"{c.get('restarts', 0)} ({c.get('restarts_last_hour', 0)}/h)",
            str(c.get("last_reason") or "-"),
        )
    return Panel(table, title="workers", box=_box(plain))


def jobs_panel(snap: dict[str, Any], now: datetime, plain: bool) -> Panel:
    """Scheduled jobs: last run, outcome, duration, next run, runs and failures."""
    sup = snap["supervisor"]
    jobs = (sup.get("status") or {}).get("jobs") or {}
    if not sup["running"]:
        return Panel(Text("supervisor down: no scheduled jobs"), title="jobs", box=_box(plain))
    if not jobs:
        return Panel(Text("no jobs scheduled"), title="jobs", box=_box(plain))
    table = Table(box=_box(plain, table=True), expand=True, pad_edge=False, show_edge=False)
    for col in ("job", "last run", "outcome", "took", "next run", "runs/failed"):
        table.add_column(col)
    for name, j in jobs.items():
        outcome = str(j.get("last_outcome") or ("running" if j.get("running") else "-"))
        style = "green" if outcome == "ok" else ("red" if outcome not in ("-", "running") else "")
        table.add_row(
            name,
            when(j.get("last_start"), now),
            Text(outcome, style=style),
            "-" if j.get("last_duration_s") is None else f"{j['last_duration_s']:.1f}s",
            when(j.get("next_run"), now),
            f"{j.get('runs', 0)}/{j.get('failures', 0)}",
        )
    return Panel(table, title="jobs", box=_box(plain))


def trader_panel(snap: dict[str, Any], now: datetime, plain: bool) -> Panel:
    """The paper trader: process state, equity, drawdown, positions, generations, reloads."""
    pt = snap["paper_trader"]
    st = pt.get("status") or {}
    led = pt.get("ledger") or {}
    hb = pt.get("heartbeat") or {}
    ens = snap.get("ensemble")
    rows: list[tuple[str, str | Text]] = []
    state = hb.get("state") or st.get("state") or "never ran"
    alive = pt.get("alive")
    rows.append(
        (
            "process",
            Text(
                f"{'running' if alive else 'not running'} (pid {hb.get('pid') or st.get('pid') or '-'}, "
                f"last state {state}, heartbeat {duration(pt.get('heartbeat_age_s'))} old)",
                style="green" if alive else "yellow",
            ),
        )
    )
    if st:
        other = st.get("study") and snap.get("study") and st.get("study") != snap.get("study")
        line = f"{st.get('broker')} trading {st.get('source')} of study {st.get('study')}"
        if other:
            line += " (not the study shown)"
        rows.append(("broker", Text(line, "yellow" if other else "")))
    equity = st.get("equity", led.get("equity"))
    initial = st.get("initial_cash", led.get("initial_cash"))
    ret = equity / initial - 1 if isinstance(equity, int | float) and initial else None
    rows.append(
        ("equity", f"{money(equity)} (cash {money(st.get('cash', led.get('cash')))}, return {pct(ret, 2)})")
    )
    rows.append(
        (
            "drawdown",
            f"{pct(st.get('drawdown', led.get('drawdown')), 2)} now, {pct(led.get('max_drawdown'), 2)} max "
            f"(peak {money(st.get('peak_equity', led.get('peak')))})",
        )
    )
    bars = led.get("bars", st.get("bars_processed"))
    rows.append(
        ("bars", f"{bars if bars is not None else '-'} processed, last {bar_time(led.get('last_bar_ts'))}")
    )
    positions = {s: p for s, p in (st.get("positions") or {}).items() if isinstance(p, dict)}
    if positions:
        held = [
            f"{sym} {num(p.get('qty'), 6)} = {money(p.get('value'))} ({pct(p.get('weight'))})"
            for sym, p in positions.items()
            if p.get("qty")
        ]
        rows.append(("positions", ", ".join(held) or "all flat"))
    elif led.get("positions"):
        held = [f"{s} {num(q, 6)}" for s, q in led["positions"].items() if q]
        rows.append(("positions", ", ".join(held) or "all flat"))
    gen_line = f"{st.get('generation', led.get('generation'))} in use"
    if ens and "error" not in ens:
        gen_line += f", manifest generation {ens.get('generation')} ({len(ens.get('members', []))} members)"
    rows.append(("ensemble", gen_line))
    rows.append(("last reload", when(st.get("last_reload"), now)))
    if st.get("rejected_generation") is not None:
        rows.append(
            (
                "rejected",
                Text(
                    f"generation {st['rejected_generation']}: {st.get('rejection_reason')}",
                    style="red",
                ),
            )
        )
    if st:
        rows.append(("status", f"{duration(pt.get('status_age_s'))} old"))
    body: list[RenderableType] = [_kv(rows)]
    if ens and "error" in ens:
        body.append(_err(ens["error"]))
    for key in ("status_error", "ledger_error"):
        if pt.get(key):
            body.append(_err(pt[key]))
    return Panel(Group(*body), title="paper trader", box=_box(plain))


# a header underline only, in ASCII (tables inside the plain-text frame's panels)
PLAIN_TABLE = box.Box("    \n    \n -- \n    \n    \n    \n    \n    \n", ascii=True)


def _box(plain: bool, table: bool = False) -> box.Box:
    if plain:
        return PLAIN_TABLE if table else box.ASCII
    return box.SIMPLE_HEAD if table else box.ROUNDED


# ------------------------------------------------------------------ frames
def render_frame(snap: dict[str, Any], plain: bool = False) -> Group:
    """All panels, one under the other (the ``--once`` frame)."""
    now = datetime.fromisoformat(snap["time"])
    return Group(
        header(snap, now),
        study_panel(snap, plain),
        top_panel(snap, plain),
        trader_panel(snap, now, plain),
        workers_panel(snap, plain),
        jobs_panel(snap, now, plain),
    )


def render_layout(snap: dict[str, Any]) -> Layout:
    """The live view: header; study | paper trader; top trials; workers | jobs."""
    now = datetime.fromisoformat(snap["time"])
    n_top = len(snap["top"].get("trials") or [])
    sup = (snap["supervisor"].get("status") or {}) if snap["supervisor"]["running"] else {}
    n_lower = max(len(sup.get("children") or []), len(sup.get("jobs") or {}))
    errors = sum(1 for k in ("status_error", "ledger_error") if snap["paper_trader"].get(k))
    errors += 1 if "error" in (snap.get("ensemble") or {}) else 0
    layout = Layout()
    layout.split_column(
        Layout(header(snap, now, crop=True), name="header", size=3 if snap["supervisor"].get("error") else 2),
        Layout(name="upper", size=15 + 2 * errors + len(sequential_rows(snap.get("sequential")))),
        Layout(top_panel(snap, False), name="top", size=max(3, n_top + 4)),
        Layout(name="lower", minimum_size=max(3, n_lower + 5)),
    )
    layout["upper"].split_row(
        Layout(study_panel(snap, False), name="study"),
        Layout(trader_panel(snap, now, False), name="trader"),
    )
    layout["lower"].split_row(
        Layout(workers_panel(snap, False), name="workers", ratio=1),
        Layout(jobs_panel(snap, now, False), name="jobs", ratio=1),
    )
    return layout

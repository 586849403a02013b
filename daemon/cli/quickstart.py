"""``cappuccino quickstart`` (behind ``bin/quickstart``): the supervisor in the foreground on
the embedded dataset with ``daemon/quickstart.toml`` (2 workers, a small trial budget,
ensemble sync every minute, the paper trader replaying the hold-out bars quickly), a live
progress view, and a summary when Ctrl-C or ``--duration`` stops it."""

from __future__ import annotations

import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from daemon.config import ConfigError, load_config
from daemon.preflight import run_checks
from daemon.study_stats import study_stats
from daemon.views.status import ensemble_summary
from trainers.atomic_io import read_json_object
from trainers.naming import baseline_note
from trainers.runtime.current_study import read_current_study, write_current_study

console = Console()


def quickstart_config() -> Path:
    """Path of the packaged quickstart configuration."""
    return Path(str(resources.files("daemon") / "quickstart.toml"))


def snapshot(root: Path, storage: str, study: str) -> dict[str, Any]:
    """Study, ensemble and trader figures for the progress view and the summary."""
    try:
        stats = study_stats(storage, study)
    except Exception as exc:  # storage not created yet
        stats = {"trials": {}, "best": None, "error": str(exc)}
    return {
        "study": stats,
        "ensemble": ensemble_summary(root) or {},
        "trader": (read_json_object(root / "paper_trader" / "status.json") or {}),
    }


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec) if isinstance(x, (int, float)) else str(x)


def render(snap: dict[str, Any], elapsed: float, children: list[dict[str, Any]]) -> Table:
    """One frame of the progress view."""
    st, ens, pt = snap["study"], snap["ensemble"], snap["trader"]
    trials = st.get("trials") or {}
    best = st.get("best") or {}
    table = Table(title=f"cappuccino quickstart - {elapsed / 60:.1f} min", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row(
        "trials",
        f"{trials.get('COMPLETE', 0)} complete, {trials.get('PRUNED', 0)} pruned, "
        f"{trials.get('FAIL', 0)} failed, {trials.get('RUNNING', 0)} running",
    )
    verdict = baseline_note(best.get("value"), st.get("baselines")) if best else ""
    table.add_row("best", f"{_fmt(best.get('value'))} {best.get('vin') or ''} ({verdict})" if best else "-")
    table.add_row(
        "ensemble",
        f"generation {_fmt(ens.get('generation'), 'd')}, {len(ens.get('members') or [])} members"
        if ens
        else "not formed yet (first sync after trials complete)",
    )
    if pt:
        table.add_row(
            "paper trader",
            f"{pt.get('state')} bar {pt.get('last_bar')} equity {_fmt(pt.get('equity'), ',.2f')} "
            f"drawdown {_fmt(pt.get('drawdown'), '.2%')} generation {_fmt(pt.get('generation'), 'd')}",
        )
    else:
        table.add_row("paper trader", "starting")
    table.add_row(
        "children",
        ", ".join(f"{c['name']} {c['state']} (restarts {c['restarts']})" for c in children) or "-",
    )
    return table


def summary_lines(snap: dict[str, Any]) -> list[str]:
    """The closing summary: trials completed, best VIN and value, ensemble generation,
    paper equity and drawdown."""
    st, ens, pt = snap["study"], snap["ensemble"], snap["trader"]
    trials = st.get("trials") or {}
    best = st.get("best") or {}
    return [
        f"trials completed: {trials.get('COMPLETE', 0)} "
        f"(pruned {trials.get('PRUNED', 0)}, failed {trials.get('FAIL', 0)})",
        f"best trial: {best.get('vin') or '-'} value {_fmt(best.get('value'))} "
        f"({baseline_note(best.get('value'), st.get('baselines'))})",
        f"ensemble generation: {_fmt(ens.get('generation'), 'd') if ens else 'none'} "
        f"({len(ens.get('members') or [])} members)",
        f"paper equity: {_fmt(pt.get('equity'), ',.2f')} (start {_fmt(pt.get('initial_cash'), ',.2f')}), "
        f"drawdown {_fmt(pt.get('drawdown'), '.2%')}, bars traded {pt.get('bars_processed', 0)}, "
        f"generation in use {_fmt(pt.get('generation'), 'd')}",
    ]


def quickstart(
    root: Path = typer.Option(Path("train_results"), envvar="CAPPUCCINO_ROOT", help="Runtime root."),
    duration: float = typer.Option(None, help="Stop after this many seconds (default: Ctrl-C)."),
    study: str = typer.Option("quickstart", help="Study name."),
    workers: int = typer.Option(2, min=1, help="Training worker processes."),
) -> None:
    """Run the whole loop on the embedded dataset in the foreground, with progress."""
    from daemon.supervisor import Supervisor, SupervisorError

    overrides: dict[str, Any] = {"root": root, "workers": {"count": workers}}
    try:
        cfg = load_config(quickstart_config(), overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    failed = [c for c in run_checks(cfg) if c.ok is False]
    for c in failed:
        typer.echo(f"preflight failed: {c.name}: {c.detail}", err=True)
    if failed:
        raise typer.Exit(3)
    if read_current_study(root) != study:
        write_current_study(root, study)
    storage = cfg.study.storage or f"sqlite:///{root / 'optuna.db'}"
    console.print(
        f"[bold]cappuccino quickstart[/]: study [bold]{study}[/], {workers} workers, root {root}; "
        f"logs in {root / 'logs'}; Ctrl-C stops cleanly"
    )
    t0 = time.monotonic()
    state: dict[str, Any] = {"last": 0.0}
    live = Live(console=console, refresh_per_second=2, transient=False) if sys.stdout.isatty() else None

    def on_tick(sup: Supervisor) -> None:
        now = time.monotonic()
        period = 1.0 if live is not None else 30.0
        if now - state["last"] < period:
            return
        state["last"] = now
        children = [c.snapshot() for c in sup.children.values()]
        frame = render(snapshot(root, storage, study), now - t0, children)
        if live is not None:
            live.update(frame)
        else:
            console.print(frame)

    sup = Supervisor(quickstart_config(), overrides, duration_s=duration, on_tick=on_tick, console_logs=False)
    try:
        if live is not None:
            with live:
                code = sup.run()
        else:
            code = sup.run()
    except SupervisorError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    console.print("[bold]summary[/]")
    for line in summary_lines(snapshot(root, storage, study)):
        console.print(f"  {line}")
    raise typer.Exit(code)

"""CLI commands of the operational surface: ``supervise``, ``doctor``, ``status``, ``logs``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from daemon.cli._options import CONFIG_OPTION, ROOT_OPTION, runtime_config, runtime_storage
from daemon.preflight import run_checks
from daemon.views.dashboard import sequential_rows
from daemon.views.status import status_document
from trainers.naming import baseline_note
from trainers.runtime.layout import Layout

console = Console()


def supervise(
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    duration: float = typer.Option(None, help="Stop after this many seconds (default: run until SIGTERM)."),
    skip_preflight: bool = typer.Option(False, help="Do not run the preflight checks."),
    role: str = typer.Option(
        "all",
        help="What this host runs: all (one machine), workers (training workers only) or services "
        "(jobs, paper trader, API; no workers). Every host shares the PostgreSQL study and the "
        "artifact store.",
    ),
) -> None:
    """Run the supervisor in the foreground (systemd runs exactly this)."""
    from daemon.supervisor import ROLES

    if role not in ROLES:
        typer.echo(f"error: --role {role!r}: expected one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    cfg = runtime_config(config, root, must_exist=False)  # the supervisor creates the root
    if not skip_preflight:
        failed = [c for c in run_checks(cfg) if c.ok is False]
        for c in failed:
            typer.echo(f"preflight failed: {c.name}: {c.detail}", err=True)
        if failed:
            raise typer.Exit(3)
    # the long-running process is a fresh, lean interpreter with the same pid (systemd's
    # MainPID, the lock holder): torch and the other modules of this command line stay out
    argv = [sys.executable, "-m", "daemon.supervisor"]
    if config is not None:
        argv += ["--config", str(config)]
    if root is not None:
        argv += ["--root", str(root)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    argv += ["--role", role]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def doctor(
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
) -> None:
    """Run the preflight checks alone and print the results."""
    cfg = runtime_config(config, root, must_exist=False)  # "root writable" is one of the checks
    table = Table(title="cappuccino doctor")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    worst = 0
    for c in run_checks(cfg):
        mark = {True: "[green]ok[/]", False: "[red]FAIL[/]", None: "[cyan]info[/]"}[c.ok]
        table.add_row(c.name, mark, c.detail)
        worst = max(worst, 1 if c.ok is False else 0)
    console.print(table)
    raise typer.Exit(worst)


def status(
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status document."),
) -> None:
    """Show the system's status (also with the supervisor down)."""
    cfg = runtime_config(config, root, must_exist=False)  # a missing root: "not running", nothing yet
    doc = status_document(cfg.root, runtime_storage(cfg, None), cfg.study.name)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    render_status(doc)


def render_status(doc: dict[str, Any]) -> None:
    """Human rendering of a status document."""
    sup = doc.get("supervisor") or {}
    if doc.get("supervisor_running"):
        console.print(f"[green]supervisor running[/] pid {sup.get('pid')} uptime {sup.get('uptime_s')} s")
    else:
        console.print("[yellow]supervisor is not running[/] (study and ledger read directly)")
    console.print(f"current study: [bold]{doc.get('current_study')}[/]")
    if doc.get("mismatches"):
        console.print(f"[red]study mismatch[/]: {doc['studies']}")
    for label, text in sequential_rows(doc.get("sequential")):  # a sequential run's stage and gate
        console.print(f"{label}: ", text, sep="")
    storage = doc.get("storage") or {}
    if storage.get("state") == "unavailable":
        lasted = f" for {storage['outage_s']:.0f} s" if storage.get("outage_s") is not None else ""
        console.print(f"[red]storage unavailable[/]{lasted}: {storage.get('error') or ''} (workers wait)")
    disk = doc.get("disk") or {}
    if disk.get("state") == "full":
        console.print(
            f"[red]disk full[/] since {disk.get('since')} ({disk.get('trigger')}): workers paused, "
            f"trader stopped until {disk.get('resume_at_mb')} MB are free"
        )
    st = doc.get("study") or {}
    best = st.get("best") or {}
    if st.get("error"):
        console.print(f"study: [red]{st['error']}[/]")
    else:
        console.print(
            f"trials: {st.get('trials')}  trials/hour: {st.get('trials_per_hour')}  "
            f"best: {best.get('value')} {best.get('vin') or ''}"
            + (f" ({baseline_note(best.get('value'), st.get('baselines'))})" if best else "")
        )
    if sup.get("children"):
        t = Table(title="children")
        for col in ("name", "pid", "state", "uptime_s", "cpu_percent", "rss_mb", "restarts"):
            t.add_column(col)
        for c in sup["children"]:
            t.add_row(
                *(
                    str(c.get(k, ""))
                    for k in ("name", "pid", "state", "uptime_s", "cpu_percent", "rss_mb", "restarts")
                )
            )
        console.print(t)
    if sup.get("jobs"):
        t = Table(title="jobs")
        for col in ("job", "last_start", "outcome", "duration_s", "next_run"):
            t.add_column(col)
        for name, j in sup["jobs"].items():
            t.add_row(
                name,
                str(j.get("last_start")),
                str(j.get("last_outcome")),
                str(j.get("last_duration_s")),
                str(j.get("next_run")),
            )
        console.print(t)
    ens = doc.get("ensemble")
    if ens:
        n = len(ens.get("members", []))
        console.print(
            f"ensemble: generation {ens.get('generation')} of study {ens.get('study')}, {n} members"
        )
    else:
        console.print("ensemble: none yet")
    pt = doc.get("paper_trader")
    if pt:
        keys = ("equity", "drawdown", "last_bar", "generation", "study")
        console.print(f"paper trader: {json.dumps({k: pt.get(k) for k in keys}, default=str)}")
    else:
        console.print("paper trader: no status yet")


def logs(
    component: str = typer.Argument("supervisor", help="supervisor, worker-0, paper_trader, ..."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    lines: int = typer.Option(20, "--lines", "-n", help="Lines to show first."),
    config: Path = CONFIG_OPTION,
    root: Path = ROOT_OPTION,
) -> None:
    """Show a component's log (JSON lines under <root>/logs/)."""
    cfg = runtime_config(config, root)
    path = Layout(cfg.root).log(component)
    if not path.is_file():
        known = sorted(p.stem for p in (cfg.root / "logs").glob("*.log"))
        typer.echo(f"error: no log {path}; components with logs: {', '.join(known) or 'none'}", err=True)
        raise typer.Exit(2)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh.readlines()[-lines:]:
            typer.echo(line.rstrip("\n"))
        while follow:
            line = fh.readline()
            if line:
                typer.echo(line.rstrip("\n"))
                continue
            time.sleep(0.5)
            try:
                if os.stat(path).st_ino != os.fstat(fh.fileno()).st_ino:  # rotated
                    fh.close()
                    fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
            except FileNotFoundError:
                pass

"""The figures ``bench/soak.py`` reports: RSS samples and their slope per component, trials
lost, ledger gaps and duplicate bars, restarts per child, alerts raised."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import sqlalchemy

from trainers.data import load_panel
from trainers.storage import make_storage


@dataclass
class RssSamples:
    """RSS samples per component: ``(t, incarnation, rss_mb)`` with ``t`` in seconds since
    the epoch and the incarnation a process's ``(pid, create_time)``."""

    warmup_s: float
    samples: dict[str, list[tuple[float, tuple[int, float], float]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def sample(self, name: str, pid: int, create_time: float | None, tree: bool = True) -> None:
        """Add the RSS (MB) of ``pid`` (with ``tree``, plus its descendants), unless the
        process is gone, is another one than ``create_time`` says, or is younger than
        ``warmup_s``."""
        try:
            proc = psutil.Process(pid)
            ctime = proc.create_time()
            if create_time is not None and abs(ctime - create_time) > 0.01:
                return
            now = time.time()
            if now - ctime < self.warmup_s:
                return
            rss = proc.memory_info().rss
            for sub in proc.children(recursive=True) if tree else []:
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += sub.memory_info().rss
        except psutil.NoSuchProcess:
            return
        self.samples[name].append((now, (pid, ctime), rss / 2**20))

    def write_csv(self, path: Path) -> None:
        """Every sample as ``component,pid,create_time,time,rss_mb`` (for plots and for
        telling a leak from a plateau)."""
        lines = ["component,pid,create_time,time,rss_mb"]
        for name, rows in sorted(self.samples.items()):
            lines += [f"{name},{inc[0]},{inc[1]:.3f},{t:.1f},{rss:.2f}" for t, inc, rss in rows]
        path.write_text("\n".join(lines) + "\n")

    def slopes(self) -> dict[str, tuple[float | None, int, float]]:
        """Per component: (slope MB/hour or None, samples, span in minutes).

        The slope is the least-squares slope of RSS over time with one intercept per process
        incarnation (a restarted child starts again from its own baseline; the "within"
        estimator of a fixed-effects regression): ``sum(dt*dr) / sum(dt**2)`` with ``dt``,
        ``dr`` the deviations from each incarnation's mean. None with fewer than 3 samples
        of one incarnation."""
        out: dict[str, tuple[float | None, int, float]] = {}
        for name, rows in sorted(self.samples.items()):
            groups: dict[tuple[int, float], list[tuple[float, float]]] = defaultdict(list)
            for t, inc, rss in rows:
                groups[inc].append((t, rss))
            num = den = 0.0
            for pts in groups.values():
                if len(pts) < 2:
                    continue
                arr = np.asarray(pts, dtype=float)
                dt = arr[:, 0] - arr[:, 0].mean()
                num += float((dt * (arr[:, 1] - arr[:, 1].mean())).sum())
                den += float((dt * dt).sum())
            enough = max((len(p) for p in groups.values()), default=0) >= 3 and den > 0
            span = (max(r[0] for r in rows) - min(r[0] for r in rows)) / 60 if rows else 0.0
            out[name] = (num / den * 3600 if enough else None, len(rows), span)
        return out


@dataclass
class TrialFigures:
    """Trial states at the end, and the trials lost (numbers)."""

    states: dict[str, int]
    running_lost: dict[int, float | None]  # number -> heartbeat age (s), None: no heartbeat
    fail_not_retried: list[int]
    fail_reasons: dict[int, str]

    @property
    def lost(self) -> int:
        return len(self.running_lost) + len(self.fail_not_retried)


def trial_figures(storage_url: str, study: str, grace_period_s: float) -> TrialFigures | None:
    """Trials lost: RUNNING with no heartbeat (or one older than ``grace_period_s``), and
    FAIL trials that no later trial retried (Optuna's ``retry_history`` system attribute of
    the retries lists every trial retried). None when the study does not exist."""
    storage = make_storage(storage_url, heartbeat_interval=None)
    try:
        try:
            sid = storage.get_study_id_from_name(study)
        except KeyError:
            return None
        trials = storage.get_all_trials(sid, deepcopy=False)
        with storage.engine.connect() as conn:
            beats = dict(
                conn.execute(sqlalchemy.text("SELECT trial_id, heartbeat FROM trial_heartbeats")).all()
            )
            now = conn.execute(sqlalchemy.text("SELECT CURRENT_TIMESTAMP")).scalar()
    finally:
        storage.engine.dispose()
    if isinstance(now, str):  # SQLite answers text
        now = datetime.fromisoformat(now)
    retried: set[int] = set()
    for t in trials:
        retried.update(int(n) for n in t.system_attrs.get("retry_history", []) or [])
    running_lost: dict[int, float | None] = {}
    for t in trials:
        if t.state.name != "RUNNING":
            continue
        beat = beats.get(t._trial_id)
        if isinstance(beat, str):
            beat = datetime.fromisoformat(beat)
        age = None if beat is None else (now.replace(tzinfo=None) - beat.replace(tzinfo=None)).total_seconds()
        if age is None or age > grace_period_s:
            running_lost[t.number] = age
    fails = [t for t in trials if t.state.name == "FAIL" and t.number not in retried]
    reasons = {
        t.number: str(t.user_attrs.get("fail_reason") or t.system_attrs.get("fail_reason") or "")
        for t in fails
    }
    return TrialFigures(
        states=dict(Counter(t.state.name for t in trials)),
        running_lost=running_lost,
        fail_not_retried=[t.number for t in fails],
        fail_reasons=reasons,
    )


@dataclass
class LedgerFigures:
    """Equity rows, bars the trader says it processed, bars of the replayed data missing
    between the first and the last row, duplicate rows, irregular steps."""

    rows: int
    bars_processed: int
    missing: int
    duplicates: int
    irregular_steps: int
    integrity: str


def ledger_figures(root: Path) -> LedgerFigures | None:
    """Read ``paper_trader/ledger.db`` (read-only); None when there is none. Expected bars:
    the embedded dataset's timestamps (the sim broker's replay) from the first to the last
    equity row; an irregular step is a step between consecutive rows other than the bar
    interval."""
    path = root / "paper_trader" / "ledger.db"
    if not path.is_file():
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    try:
        integrity = str(con.execute("PRAGMA integrity_check").fetchone()[0])
        row = con.execute("SELECT bars_processed FROM account").fetchone()
        ts = [int(r[0]) for r in con.execute("SELECT bar_ts FROM equity ORDER BY bar_ts")]
    finally:
        con.close()
    bars = int(row[0]) if row else 0
    missing = irregular = 0
    if ts:
        panel = load_panel()
        grid = panel.timestamps.astype("datetime64[s]").astype(np.int64)
        expected = set(int(x) for x in grid[(grid >= ts[0]) & (grid <= ts[-1])])
        missing = len(expected - set(ts))
        irregular = int((np.diff(np.asarray(ts)) != panel.bar_seconds).sum())
    return LedgerFigures(
        rows=len(ts),
        bars_processed=bars,
        missing=missing,
        duplicates=len(ts) - len(set(ts)) + max(0, bars - len(ts)),
        irregular_steps=irregular,
        integrity=integrity,
    )


def alerts_raised(root: Path) -> Counter[str]:
    """Alerts raised (not repeats) by kind, from the supervisor's JSON log (and rotations)."""
    counts: Counter[str] = Counter()
    for path in sorted((root / "logs").glob("supervisor.log*")):
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and rec.get("event") == "alert" and not rec.get("repeat"):
                    counts[str(rec.get("alert"))] += 1
    return counts


def child_restarts(status_by_supervisor: dict[int, dict[str, Any]]) -> dict[str, int]:
    """Restarts per child summed over supervisor incarnations (each one's last
    ``run/status.json``: a supervisor counts the restarts it made itself)."""
    total: Counter[str] = Counter()
    for doc in status_by_supervisor.values():
        for c in (doc.get("supervisor") or {}).get("children", []):
            total[str(c.get("name"))] += int(c.get("restarts") or 0)
    return dict(total)

"""Disk-full drill: the runtime root on a 16 MB tmpfs, the real supervisor with 2 real
workers and the paper trader; the test fills the filesystem with a file until a write fails
with ENOSPC, then deletes it. The supervisor survives, pauses the workers (SIGSTOP), stops
the trader at a bar boundary with its ledger intact, alerts through the webhook, and once
the space is back resumes everything by itself, logs the alert and counts no restart.

Mounting a tmpfs needs root (CAP_SYS_ADMIN); where that is refused the test is skipped."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import TrainedStudy
from tests.daemon._supervisor_proc import SupervisorProc, Supervisors, log_events, write_config
from tests.daemon.webhook_server import webhook_server
from tests.paper_trader.ensemble_root import ensemble_root, heartbeat
from tests.tmpfs import fill_until_full, mounted_tmpfs

SIZE_MB = 16  # the drill's 12 MB plus room for the one-member ensemble the trader trades
WORKERS = ("worker-0", "worker-1")


def small_root(trained: TrainedStudy, staging: Path, dest: Path) -> Path:
    """A runtime root at ``dest`` with only what the drill needs: the study storage,
    ``.current_study`` and a synced one-member ensemble (about 1.5 MB; the trained trials'
    own folders and artifacts stay in ``staging``)."""
    ensemble_root(trained.root, staging, trained.study_name, top_n=1)
    dest.mkdir()
    for name in ("optuna.db", ".current_study"):
        shutil.copy2(staging / name, dest / name)
    shutil.copytree(staging / "ensemble", dest / "ensemble", symlinks=True)
    return dest


def ledger(root: Path) -> tuple[int, list[tuple]]:
    """(bars_processed, equity rows) of the trader's ledger; fails unless SQLite's integrity
    check passes."""
    con = sqlite3.connect(f"file:{root / 'paper_trader' / 'ledger.db'}?mode=ro", uri=True, timeout=60)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        bars = con.execute("SELECT bars_processed FROM account").fetchone()[0]
        equity = con.execute("SELECT bar_ts, equity, cash FROM equity ORDER BY bar_ts").fetchall()
    finally:
        con.close()
    return int(bars), equity


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def _bars(root: Path) -> int:
    hb = heartbeat(root) or {}
    return int(hb.get("bars_processed") or 0)


def _paused_status(sup: SupervisorProc, paused: bool) -> dict | None:
    doc = sup.status() or {}
    disk = (doc.get("supervisor") or {}).get("disk") or {}
    state = "full" if paused else "ok"
    # episodes >= 1: a status written after the disk filled (the one before says "ok" too)
    return (
        doc if disk.get("paused") is paused and disk.get("state") == state and disk.get("episodes") else None
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_disk_full_pauses_and_resumes_everything(
    trained_study: TrainedStudy, tmp_path: Path, sups: Supervisors
) -> None:
    with mounted_tmpfs(tmp_path / "mnt", SIZE_MB) as mnt, webhook_server() as hook:
        root = small_root(trained_study, tmp_path / "staging", mnt / "root")
        cfg = write_config(
            tmp_path / "c.toml",
            root,
            workers={"count": len(WORKERS)},
            paper_trader={"enabled": True, "speed": 5.0, "heartbeat_timeout_s": 120},
            preflight={"min_free_disk_mb": 3, "pause_free_disk_mb": 1},
            alerts={"webhook_url": hook.url(), "backoff_s": 0.2},
        )
        sup = sups.start(cfg, root)
        for name in (*WORKERS, "paper_trader"):
            sup.wait_for(f"{name} running", lambda n=name: sup.running_child(n))
        sup.wait_for("5 bars traded", lambda: _bars(root) >= 5)
        sup.wait_for(
            "the workers training",
            lambda: all((hb := _worker_beat(root, n)) and hb.get("trial") is not None for n in WORKERS),
        )
        before = {n: sup.child(n) for n in (*WORKERS, "paper_trader")}

        filled = fill_until_full(mnt / "filler")  # the disk is full now: a real ENOSPC
        full_at = time.monotonic()

        sup.wait_for(
            "the disk_full alert at the webhook",
            lambda: [b for b in hook.bodies() if b.get("alert") == "disk_full"],
        )
        for name in WORKERS:
            sup.wait_for(f"{name} stopped (SIGSTOP)", lambda n=name: _stopped(before[n]["pid"]))
        sup.wait_for(
            "the trader gone",
            lambda: (
                not psutil.pid_exists(before["paper_trader"]["pid"])
                or psutil.Process(before["paper_trader"]["pid"]).status() == psutil.STATUS_ZOMBIE
            ),
        )
        paused_s = time.monotonic() - full_at
        bars_at_stop, equity_at_stop = ledger(root)
        assert bars_at_stop == len(equity_at_stop) >= 5  # at a bar boundary: every bar whole
        # some watchdog runs while full: nothing is restarted, the supervisor lives on
        time.sleep(5)
        assert sup.proc.poll() is None, sup.describe()
        assert all(_stopped(before[n]["pid"]) for n in WORKERS)
        assert ledger(root) == (bars_at_stop, equity_at_stop)

        (mnt / "filler").unlink()  # room again: everything resumes by itself
        resumed_at = time.time()
        doc = sup.wait_for("the status: disk ok, not paused", lambda: _paused_status(sup, False))
        resumed_s = time.time() - resumed_at
        for name in WORKERS:
            child = next(c for c in doc["supervisor"]["children"] if c["name"] == name)
            assert child["pid"] == before[name]["pid"] and child["state"] == "running"
            assert not _stopped(child["pid"])
            sup.wait_for(f"{name} beating again", lambda n=name: _worker_beat(root, n)["time"] > resumed_at)
        trader = sup.wait_for(
            "the trader started again",
            lambda: sup.running_child("paper_trader", not_pid=before["paper_trader"]["pid"]),
        )
        sup.wait_for("the trader trading on", lambda: _bars(root) >= bars_at_stop + 3)
        bars_after, equity_after = ledger(root)
        assert equity_after[: len(equity_at_stop)] == equity_at_stop  # resumed, nothing rewritten
        assert bars_after == len(equity_after)

        children = {c["name"]: c for c in sup.status()["supervisor"]["children"]}
        assert [children[n]["restarts"] for n in (*WORKERS, "paper_trader")] == [0, 0, 0]
        assert trader["restarts_last_hour"] == 0
        assert not log_events(root, event="child_unhealthy")
        assert not log_events(root, event="alert_child_failed")
        late = [
            e for e in log_events(root, event="alert") if e.get("alert") == "disk_full" and e.get("delayed")
        ]
        assert late and late[0]["severity"] == "critical"
        assert [e for e in log_events(root, event="alert_resolved") if e["alert"] == "disk_full"]
        print(  # the drill's figures (pytest -s)
            f"filled {filled / 2**20:.1f} MB; workers stopped and trader gone {paused_s:.1f} s after the "
            f"ENOSPC; trader stopped at bar {bars_at_stop}; resumed {resumed_s:.1f} s after the space came "
            f"back; disk {doc['supervisor']['disk']}"
        )
        assert sup.terminate() == 0, sup.describe()
        con = sqlite3.connect(root / "optuna.db", timeout=60)
        try:
            running = con.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchall()
        finally:
            con.close()
        assert running == []  # the workers failed and re-queued their trials when stopped


def _worker_beat(root: Path, name: str) -> dict:
    import json

    try:
        return json.loads((root / "run" / "heartbeats" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}

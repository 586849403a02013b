"""The paper trader as a supervised child: SIGKILLed mid-replay, it is restarted by the
watchdog and resumes from its ledger, which keeps every committed bar (no reset, no
duplicate, no lost row); the status shows the trader's study and equity."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import TrainedStudy
from tests.daemon._supervisor_proc import Supervisors, log_events, proc_gone, write_config
from tests.paper_trader.ensemble_root import ensemble_root, heartbeat


def _ledger(root: Path) -> tuple[tuple, list[tuple]]:
    """(account row, equity rows) read straight from the SQLite ledger."""
    con = sqlite3.connect(f"file:{root / 'paper_trader' / 'ledger.db'}?mode=ro", uri=True, timeout=60)
    try:
        account = con.execute(
            "SELECT run_id, first_bar_ts, bars_processed, initial_cash FROM account"
        ).fetchone()
        equity = con.execute("SELECT bar_ts, equity, cash, generation FROM equity ORDER BY bar_ts").fetchall()
    finally:
        con.close()
    return account, equity


def _bars(root: Path) -> int:
    hb = heartbeat(root)
    return int(hb["bars_processed"]) if hb and hb.get("bars_processed") else 0


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sigkilled_paper_trader_is_restarted_and_its_ledger_intact(
    trained_study: TrainedStudy, tmp_path: Path, sups: Supervisors
) -> None:
    root = ensemble_root(trained_study.root, tmp_path / "root", trained_study.study_name)
    cfg = write_config(
        tmp_path / "c.toml",
        root,
        workers={"count": 0},
        paper_trader={"enabled": True, "speed": 20.0, "heartbeat_timeout_s": 120},
    )
    sup = sups.start(cfg, root)
    first = sup.wait_for("the paper trader running", lambda: sup.running_child("paper_trader"))
    sup.wait_for("10 bars traded", lambda: _bars(root) >= 10)
    account_before, equity_before = _ledger(root)
    assert account_before[2] == len(equity_before) >= 10

    os.kill(first["pid"], signal.SIGKILL)
    second = sup.wait_for(
        "the paper trader restarted", lambda: sup.running_child("paper_trader", not_pid=first["pid"])
    )
    assert second["restarts"] == 1
    assert proc_gone(first["pid"], first["create_time"])
    killed_at = _ledger(root)[0][2]
    sup.wait_for("the restarted trader trading on", lambda: _bars(root) >= killed_at + 10)
    account_after, equity_after = _ledger(root)

    assert account_after[0] == account_before[0]  # same ledger (run id), not a new account
    assert account_after[1] == account_before[1]  # same first bar: resumed, not replayed
    assert account_after[3] == account_before[3]
    assert equity_after[: len(equity_before)] == equity_before  # committed bars kept as they were
    bar_ts = [row[0] for row in equity_after]
    assert bar_ts == sorted(set(bar_ts))  # no bar twice
    assert account_after[2] == len(equity_after)  # every processed bar has its equity row
    unhealthy = log_events(root, event="child_unhealthy")
    assert [(e["child"], e["reason"]) for e in unhealthy] == [
        ("paper_trader", f"exited with code {-signal.SIGKILL}")
    ]

    def trader_status() -> dict | None:
        doc = sup.status() or {}
        pt = doc.get("paper_trader") or {}
        return doc if pt.get("pid") == second["pid"] and pt.get("study") else None

    doc = sup.wait_for("the restarted trader's study in the status", trader_status)
    assert doc["paper_trader"]["study"] == trained_study.study_name == doc["current_study"]
    assert doc["paper_trader"]["equity"] > 0
    assert doc["mismatches"] == []
    assert sup.terminate() == 0, sup.describe()

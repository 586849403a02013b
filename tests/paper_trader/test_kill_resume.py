"""Crash safety: ``python -m paper_trader`` SIGKILLed mid-replay (twice) and restarted ends
with exactly the ledger of an uninterrupted run over the same bars: no lost and no
duplicated order, fill or equity row."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from paper_trader.ledger import Ledger
from tests.conftest import TrainedStudy
from tests.paper_trader.ensemble_root import bars_done, ensemble_root, finish, start_trader, wait_until

N_BARS = 150
KILL_AFTER = 15  # bars a killed run processes (at least) before its SIGKILL
PACED = "25"  # bars per second of the runs that get killed, so a kill lands mid-replay
# overrides of the models' own costs, so the tiny-budget ensemble trades on most bars
COMMON = ["--max-bars", str(N_BARS), "--min-notional", "10", "--trailing-stop", "0.03", "--max-weight", "0.5"]
COMMON += ["--min-trade", "0"]


def snapshot(root: Path) -> dict[str, Any]:
    """Everything the ledger holds, minus row ids and the per-ledger run id."""
    ledger = Ledger(root / "paper_trader" / "ledger.db")
    run_id = ledger.state().run_id

    def rows(objs: list[Any], skip: tuple[str, ...] = ("id",)) -> list[dict[str, Any]]:
        out = []
        for o in objs:
            d = {c.key: getattr(o, c.key) for c in o.__table__.columns if c.key not in skip}
            if "client_order_id" in d:
                d["client_order_id"] = d["client_order_id"].replace(run_id, "RUN")
            out.append(d)
        return out

    state = ledger.state()
    snap = {
        "orders": rows(ledger.orders()),
        "fills": rows(ledger.fills()),
        "equity": rows(ledger.equity_rows()),
        "decisions": rows(ledger.decisions()),
        "positions": rows(ledger.positions()),
        "cash": state.cash,
        "last_bar": state.last_bar_ts,
        "bars": state.bars_processed,
        "peak": state.peak_equity,
    }
    ledger.close()
    return snap


@pytest.mark.slow
def test_sigkill_and_restart_give_the_ledger_of_an_uninterrupted_run(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    base = ensemble_root(trained_study.root, tmp_path / "base", trained_study.study_name)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for dest in (straight, killed):
        dest.mkdir()
        shutil.copy2(base / ".current_study", dest / ".current_study")
        shutil.copytree(base / "ensemble", dest / "ensemble")

    assert finish(start_trader(straight, *COMMON, "--speed", "0")) == 0

    kills = []
    for _ in range(2):
        before = bars_done(killed)
        proc = start_trader(killed, *COMMON, "--speed", PACED)
        wait_until(lambda b=before: bars_done(killed) >= b + KILL_AFTER, "bars before the kill")
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        kills.append(snapshot(killed)["bars"])
    assert kills[0] < kills[1] < N_BARS, f"both kills must land mid-replay, got {kills} of {N_BARS}"
    assert finish(start_trader(killed, *COMMON, "--speed", "0")) == 0

    want, got = snapshot(straight), snapshot(killed)
    assert got["bars"] == want["bars"] == N_BARS
    assert len(want["orders"]) > 20 and len(want["fills"]) > 20, (
        "the run must trade for this test to mean much"
    )
    ids = [o["client_order_id"] for o in got["orders"]]
    assert len(ids) == len(set(ids)), "no duplicated order"
    for key in ("orders", "fills", "equity", "decisions", "positions", "cash", "last_bar", "peak"):
        assert got[key] == want[key], f"{key} differ after kill and resume"

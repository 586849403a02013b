"""The trading loop (paper_trader.loop) on a real ensemble: in this process for the ledger
and file contents, and as a real ``python -m paper_trader`` process for waiting, hot reload,
signals and the process lock."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import typer

from daemon.cli import app as cappuccino_app
from ensemble.deploy_slot import install_slot, stage_slot
from ensemble.manifest import MANIFEST_FILE, read_manifest
from ensemble.sync import sync_ensemble
from paper_trader.brokers import SimBroker
from paper_trader.cli import app as trader_app
from paper_trader.config import TraderConfig
from paper_trader.ledger import CANCELLED, FILLED, PENDING, Ledger
from paper_trader.loop import Trader, TraderError
from paper_trader.model_source import DeploymentSource, EnsembleSource
from paper_trader.status import iso_ts
from tests.conftest import TrainedStudy
from tests.paper_trader.ensemble_root import (
    PIPELINE,
    REPO,
    bars_done,
    ensemble_root,
    finish,
    heartbeat,
    read_json,
    start_trader,
    wait_until,
)
from trainers.bundle import atomic_write_bytes, load_bundle
from trainers.data import DEFAULT_HOLDOUT_CUT, Panel
from trainers.storage import default_storage_url


@pytest.fixture(scope="module")
def synced_root(trained_study: TrainedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("loop") / "root"
    return ensemble_root(trained_study.root, dest, trained_study.study_name, top_n=3)


def fresh_root(src: Path, root: Path, ensemble: bool = True) -> Path:
    root.mkdir()
    shutil.copy2(src / ".current_study", root / ".current_study")
    if ensemble:
        shutil.copytree(src / "ensemble", root / "ensemble")
    return root


def status(root: Path) -> dict:
    return read_json(root / "paper_trader" / "status.json") or {}


@pytest.mark.slow
def test_every_bar_records_its_fills_decision_model_and_files(
    synced_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = fresh_root(synced_root, tmp_path / "root")
    manifest = read_manifest(root / "ensemble" / MANIFEST_FILE)
    config = TraderConfig.build(root=root, speed=0.0, max_bars=40, min_notional=25.0, trailing_stop=0.03)
    broker = SimBroker(panel=panel)
    trader = Trader(config, broker, EnsembleSource(root, PIPELINE, debounce_s=0.0))
    assert trader.run() == 0

    ledger = Ledger(config.ledger_path)
    rows, decisions, orders, fills = ledger.equity_rows(), ledger.decisions(), ledger.orders(), ledger.fills()
    start = panel.index_of(DEFAULT_HOLDOUT_CUT)
    ts = [int(t) for t in panel.timestamps[start : start + 40].astype("int64")]
    assert [r.bar_ts for r in rows] == ts == [d.bar_ts for d in decisions]
    assert {(d.source, d.generation, d.study) for d in decisions} == {
        ("ensemble", manifest.generation, manifest.study)
    }
    assert {(o.generation, o.study) for o in orders} == {(manifest.generation, manifest.study)}
    assert len(orders) > 5
    # each order decided at bar t is filled (or cancelled) at bar t + 1; the last bar's wait
    fill_bar = {f.client_order_id: f.bar_ts for f in fills}
    for o in orders:
        if o.bar_ts == ts[-1]:
            assert o.status == PENDING
        else:
            assert o.status in (FILLED, CANCELLED)
            if o.status == FILLED:
                assert fill_bar[o.client_order_id] == ts[ts.index(o.bar_ts) + 1]
        close = panel.prices[start + ts.index(o.bar_ts), broker.symbols.index(o.symbol), 3]
        if o.target_weight > 0:  # everything but a full exit meets the minimum notional
            assert o.qty * close >= 25.0 * (1 - 1e-9)
    assert sum(d.n_orders for d in decisions) == len(orders)

    state = ledger.state()
    hb = heartbeat(root)
    assert hb is not None
    assert (hb["pid"], hb["state"], hb["bars_processed"]) == (os.getpid(), "stopped", 40)
    assert hb["last_bar"] == iso_ts(ts[-1]) and hb["generation"] == manifest.generation
    st = status(root)
    assert st["equity"] == pytest.approx(rows[-1].equity, rel=1e-12)
    assert st["cash"] == state.cash and st["drawdown"] == pytest.approx(rows[-1].drawdown, abs=1e-12)
    assert [st["positions"][s]["qty"] for s in state.symbols] == state.qty.tolist()
    assert (st["generation"], st["study"], st["source"]) == (manifest.generation, manifest.study, "ensemble")
    assert st["last_reload"] is not None and st["rejected_generation"] is None

    # a restart resumes at the last processed bar + 1
    config2 = config.model_copy(update={"max_bars": 50})
    Trader(config2, broker, EnsembleSource(root, PIPELINE, debounce_s=0.0), ledger).run()
    more = ledger.equity_rows()
    assert [r.bar_ts for r in more] == [int(t) for t in panel.timestamps[start : start + 50].astype("int64")]
    assert [(r.bar_ts, r.equity, r.cash) for r in more[:40]] == [(r.bar_ts, r.equity, r.cash) for r in rows]


def test_too_little_history_for_the_model_is_a_clear_error(
    synced_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = fresh_root(synced_root, tmp_path / "root")
    start = panel.index_of(DEFAULT_HOLDOUT_CUT)
    short = panel.slice(start - 3, start + 10)  # 4 bars up to the first traded one
    config = TraderConfig.build(root=root, speed=0.0)
    trader = Trader(config, SimBroker(panel=short), EnsembleSource(root, PIPELINE, debounce_s=0.0))
    with pytest.raises(TraderError, match=r"2019-07-01T00:00:00Z: 4 bars of history, the model needs \d+"):
        trader.run()
    assert Ledger(config.ledger_path).state().bars_processed == 0


@pytest.mark.slow
def test_a_deployment_slot_is_waited_for_then_traded(
    trained_study: TrainedStudy, synced_root: Path, panel: Panel, tmp_path: Path
) -> None:
    root = fresh_root(synced_root, tmp_path / "root", ensemble=False)
    config = TraderConfig.build(root=root, speed=0.0, max_bars=15, deployment="0", poll_s=0.05)
    trader = Trader(config, SimBroker(panel=panel), DeploymentSource(root, "0", PIPELINE))
    thread = threading.Thread(target=trader.run, daemon=True)
    thread.start()
    wait_until(lambda: (heartbeat(root) or {}).get("state") == "waiting_for_model", "a waiting heartbeat")
    assert Ledger(config.ledger_path).state().bars_processed == 0

    bundle_dir = trained_study.root / "trials" / trained_study.study_name / "0" / "bundle"
    sha = load_bundle(bundle_dir).sha256
    stage = stage_slot(root, 0, bundle_dir, {"number": 0}, {"sha256": sha, "trial_number": 0})
    install_slot(root, 0, stage)
    thread.join(timeout=300)
    assert not thread.is_alive()
    decisions = Ledger(config.ledger_path).decisions()
    assert len(decisions) == 15
    assert {(d.source, d.study) for d in decisions} == {
        (f"deployment:0@{sha[:12]}", trained_study.study_name)
    }
    assert status(root)["reload"]["sha256"] == sha


@pytest.mark.slow
def test_trader_process_waits_reloads_rejects_and_stops_cleanly(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    study = trained_study.study_name
    root = ensemble_root(trained_study.root, tmp_path / "root", study, sync=False)
    url = default_storage_url(root)
    proc = start_trader(root, "--speed", "20", "--min-notional", "10")
    try:
        hb = wait_until(
            lambda: (h := heartbeat(root)) and h["state"] == "waiting_for_model" and h, "a waiting heartbeat"
        )
        assert (hb["pid"], hb["generation"], hb["bars_processed"]) == (proc.pid, None, 0)

        # one trader per root: a second one is refused with one clear line
        second = subprocess.run(
            [sys.executable, "-m", "paper_trader", "--root", str(root)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert second.returncode == 2
        assert f"another paper trader (pid {proc.pid}) runs on this root" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1

        # the first ensemble appears: trading starts on generation 1
        sync_ensemble(root, url, study, PIPELINE, top_n=3)
        wait_until(lambda: bars_done(root) >= 5, "bars on generation 1")
        assert heartbeat(root)["generation"] == 1

        # a new generation is swapped in between bars, without a restart
        sync_ensemble(root, url, study, PIPELINE, top_n=2)
        wait_until(lambda: (heartbeat(root) or {}).get("generation") == 2, "generation 2 in use")
        wait_until(lambda: status(root).get("generation") == 2, "status of generation 2")

        # a bad generation 3 (truncated manifest) is rejected; trading goes on with generation 2
        path = root / "ensemble" / MANIFEST_FILE
        text = path.read_text().replace('"generation": 2', '"generation": 3')
        atomic_write_bytes(path, text[: len(text) // 2].encode())
        st = wait_until(lambda: (s := status(root)).get("rejected_generation") == 3 and s, "the rejection")
        assert "not valid JSON" in st["rejection_reason"]
        before = bars_done(root)
        wait_until(lambda: bars_done(root) >= before + 3, "trading after the rejection")
        assert heartbeat(root)["generation"] == 2

        # SIGHUP forces a reload (of the same bad manifest: rejected once more)
        rejections = status(root)["reload"]["rejections"]
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: status(root)["reload"]["rejections"] > rejections, "a forced reload")
        assert proc.poll() is None

        # a good generation 4 replaces it; the old rejection no longer shows
        atomic_write_bytes(path, text.replace('"generation": 3', '"generation": 4').encode())
        wait_until(lambda: (heartbeat(root) or {}).get("generation") == 4, "generation 4 in use")
        st = wait_until(lambda: (s := status(root)).get("generation") == 4 and s, "status of generation 4")
        assert st["rejected_generation"] is None and st["reload"]["rejected_generation"] == 3

        # SIGTERM: the current bar is finished, exit 0
        os.kill(proc.pid, signal.SIGTERM)
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    hb = heartbeat(root)
    ledger = Ledger(root / "paper_trader" / "ledger.db")
    state = ledger.state()
    assert hb["state"] == "stopped" and hb["bars_processed"] == state.bars_processed
    assert hb["last_bar"] == iso_ts(state.last_bar_ts)
    gens = [d.generation for d in ledger.decisions()]
    assert gens == sorted(gens) and gens[0] == 1 and 2 in gens and 3 not in gens and gens[-1] == 4
    by_bar = {d.bar_ts: d.generation for d in ledger.decisions()}
    assert all(o.generation == by_bar[o.bar_ts] for o in ledger.orders())


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paper_trader", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_bad_options_end_in_one_line_naming_the_option(tmp_path: Path) -> None:
    res = run_cli("--root", str(tmp_path), "--fee", "1.5")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: --fee: Input should be less than 1 (got 1.5)"]
    res = run_cli("--root", str(tmp_path), "--deployment", "../elsewhere")
    assert res.returncode == 2 and res.stderr.startswith("error: --deployment: ")
    assert not (tmp_path / "paper_trader" / "ledger.db").exists()


def test_cappuccino_trade_has_the_options_of_python_m_paper_trader() -> None:
    trade = typer.main.get_command(cappuccino_app).commands["trade"]  # type: ignore[attr-defined]
    ours = typer.main.get_command(trader_app)
    # plus --config, which every command reading the runtime takes (tests/daemon/test_cli_convention.py)
    assert [p.name for p in trade.params] == [p.name for p in ours.params] + ["config"]
    assert {"root", "data", "speed", "max_bars", "deployment", "broker", "live", "trailing_stop"} <= {
        p.name for p in ours.params
    }
    assert {"max_weight", "min_cash", "min_notional", "fee", "slippage", "initial_cash"} <= {
        p.name for p in ours.params
    }

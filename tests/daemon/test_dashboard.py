"""``cappuccino dashboard`` on a real small root (trained study, real sync, real paper-trader
replay): one frame with the supervisor down, with a supervisor's status document, with a
real running supervisor, the best value and grades against the study's baselines, the live
view on a pseudo-terminal, and its error lines."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from daemon.children import Child, ChildSpec
from daemon.scheduler import JobRecord
from daemon.views.status import build_status
from ensemble.manifest import read_manifest
from tests.conftest import TINY, TrainedStudy
from tests.daemon._supervisor_proc import REPO, Supervisors, clean_env, run_cli, trials, write_config
from tests.daemon.traded_root import REPLAY_BARS, make_traded_root, pg_study
from trainers.atomic_io import atomic_write_json
from trainers.fold_baselines import ensure_fold_baselines
from trainers.naming import grade_for
from trainers.objective import StudyData
from trainers.runtime.heartbeat import read_heartbeat
from trainers.runtime.pidlock import PidLock
from trainers.storage import default_storage_url
from trainers.study_db.baselines import FOLD_BASELINES_ATTR

ANSI = "\x1b["


@pytest.fixture(scope="module")
def traded(trained_study: TrainedStudy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared traded root (read-only for the tests: copy it to modify)."""
    dest = tmp_path_factory.mktemp("dashboard") / "root"
    return make_traded_root(trained_study.root, dest, trained_study.study_name)


def _copy(traded: Path, dest: Path) -> Path:
    shutil.copytree(traded, dest)
    return dest


def _last_equity(root: Path) -> tuple[float, int]:
    """(equity of the last bar, bars) straight from the ledger file."""
    con = sqlite3.connect(f"file:{root / 'paper_trader' / 'ledger.db'}?mode=ro", uri=True)
    try:
        equity = con.execute("SELECT equity FROM equity ORDER BY bar_ts DESC LIMIT 1").fetchone()[0]
        bars = con.execute("SELECT bars_processed FROM account").fetchone()[0]
    finally:
        con.close()
    return float(equity), int(bars)


def _env() -> dict[str, str]:
    """The test environment without COLUMNS/LINES: a piped frame is then 140 columns wide."""
    return {k: v for k, v in clean_env().items() if k not in ("COLUMNS", "LINES")}


def _once(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run_cli("dashboard", "--once", "--root", str(root), *extra, env=_env())
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def test_once_with_the_supervisor_down_reads_storage_manifest_and_ledger(
    traded: Path, trained_study: TrainedStudy
) -> None:
    study = trained_study.study_name
    frozen = trials(traded, study)
    complete = sorted(
        (t for t in frozen if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number)
    )
    generation = read_manifest(traded / "ensemble" / "ensemble_manifest.json").generation
    equity, bars = _last_equity(traded)
    assert bars == REPLAY_BARS

    result = _once(traded)
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert ANSI not in out  # not a terminal: plain text
    assert "supervisor is not running" in out
    assert f"study {study}" in out
    assert f"COMPLETE {len(complete)}  PRUNED 0  FAIL 0" in out
    for t in complete[:10]:
        assert t.user_attrs["vin"] in out
    assert f"manifest generation {generation}" in out
    assert f"{generation} in use" in out
    assert f"{equity:,.2f}" in out
    assert f"{REPLAY_BARS} processed" in out
    assert "no supervised workers" in out and "no scheduled jobs" in out

    snap = json.loads(run_cli("dashboard", "--json", "--root", str(traded)).stdout)
    assert snap["supervisor"]["running"] is False
    assert snap["study_stats"]["trials"] == {"COMPLETE": len(complete)}
    assert [r["vin"] for r in snap["top"]["trials"]] == [t.user_attrs["vin"] for t in complete[:10]]
    assert [r["number"] for r in snap["top"]["trials"]] == [t.number for t in complete[:10]]
    assert snap["study_stats"]["best"]["number"] == complete[0].number
    assert snap["ensemble"]["generation"] == generation
    assert snap["paper_trader"]["ledger"]["bars"] == REPLAY_BARS
    assert snap["paper_trader"]["ledger"]["equity"] == pytest.approx(equity)
    assert snap["paper_trader"]["status"]["equity"] == pytest.approx(equity)


def _status_doc(root: Path, study: str, sup_pid: int, child: Child) -> dict:
    """A status document as the supervisor writes it, from a real child's snapshot and real
    job records (:meth:`daemon.supervisor.Supervisor.status_self` fields)."""
    sync = JobRecord("ensemble_sync", 600.0, runs=3, failures=1, last_outcome="ok", last_duration_s=2.5)
    sync.last_start = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()
    watchdog = JobRecord("watchdog", 30.0, runs=40, last_outcome="failed", last_duration_s=0.1)
    watchdog.last_start = datetime.now(UTC).isoformat()
    now = datetime.now(UTC)
    supervisor = {
        "pid": sup_pid,
        "started_at": (now - timedelta(hours=2)).isoformat(),
        "uptime_s": 7200.0,
        "updated_at": now.isoformat(),
        "study": study,
        "config": None,
        "children": [child.snapshot()],
        "jobs": {
            "ensemble_sync": sync.as_dict(now + timedelta(minutes=7)),
            "watchdog": watchdog.as_dict(now + timedelta(seconds=30)),
        },
        "monitor": None,
        "systemd": False,
    }
    return build_status(root, default_storage_url(root), study, supervisor)


def test_once_shows_workers_and_jobs_from_a_live_supervisors_status(
    traded: Path, trained_study: TrainedStudy, tmp_path: Path
) -> None:
    root = _copy(traded, tmp_path / "root")
    child = Child(
        ChildSpec("worker-0", (sys.executable, "-c", "import time; time.sleep(300)")), root / "logs"
    )
    child.start()
    try:
        child.total_restarts = 2
        doc = _status_doc(root, trained_study.study_name, os.getpid(), child)
        atomic_write_json(root / "run" / "status.json", doc)
        lock = PidLock(root / "run" / "supervisor.pid")  # held by a live process: this one
        with lock:
            out = _once(root).stdout
        assert f"supervisor running: pid {os.getpid()}" in out
        assert "uptime 2h 00m" in out
        worker_rows = [line for line in out.splitlines() if "worker-0" in line]
        assert len(worker_rows) == 1 and str(child.pid) in worker_rows[0]
        assert "running" in worker_rows[0] and "2 (0/h)" in worker_rows[0]
        sync_row = next(line for line in out.splitlines() if "ensemble_sync" in line)
        assert " ok " in sync_row and "2.5s" in sync_row and "3/1" in sync_row
        assert "ago)" in sync_row and "(in " in sync_row  # last run in the past, next in the future
        watchdog_row = next(line for line in out.splitlines() if "watchdog" in line)
        assert "failed" in watchdog_row and "40/0" in watchdog_row
        # the study part is still read from the storage, not from the status document
        assert f"COMPLETE {len(trials(root, trained_study.study_name))}" in out

        # a supervisor that died (its lock went with it; its pid file stays): its last status
        # is not shown as live
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (root / "run" / "supervisor.pid").write_text(f"{gone.pid}\n")
        out = _once(root).stdout
        assert "supervisor is not running" in out
        assert "worker-0" not in out and "ensemble_sync" not in out
    finally:
        child.stop(10.0)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_once_with_a_real_supervisor_running_and_after_it_stops(
    traded: Path, trained_study: TrainedStudy, tmp_path: Path, sups: Supervisors
) -> None:
    root = _copy(traded, tmp_path / "root")
    cfg = write_config(
        tmp_path / "c.toml",
        root,
        workers={"count": 0},
        paper_trader={"enabled": True, "speed": 2.0, "heartbeat_timeout_s": 120},
    )
    sup = sups.start(cfg, root)
    child = sup.wait_for("the paper trader running", lambda: sup.running_child("paper_trader"))
    sup.wait_for(
        "the trader's own heartbeat",
        lambda: (
            (read_heartbeat(root / "run" / "heartbeats" / "paper_trader.json") or {}).get("pid")
            == child["pid"]
        ),
    )
    sup.wait_for(
        "a scheduled next run of every job",
        lambda: all(j.get("next_run") for j in ((sup.status() or {})["supervisor"]["jobs"]).values()),
    )
    result = run_cli("dashboard", "--once", "--config", str(cfg), "--root", str(root), env=_env())
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert f"supervisor running: pid {sup.pid}" in out
    trader_row = next(line for line in out.splitlines() if line.strip("| ").startswith("paper_trader"))
    assert str(child["pid"]) in trader_row and "running" in trader_row
    for job in ("watchdog", "monitor", "ensemble_sync", "deploy"):
        assert any(line.strip("| ").startswith(job) for line in out.splitlines()), job
    assert "process     running" in out  # the trader's heartbeat names a live pid
    assert sup.terminate() == 0, sup.describe()

    after = _once(root, "--config", str(cfg)).stdout
    assert "supervisor is not running" in after
    assert "process     not running" in after


def _read_pty(fd: int, until: str, timeout: float = 120.0) -> str:
    """Read from a pseudo-terminal until ``until`` appears (or fail after ``timeout``)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            buf += chunk
            if until.encode() in buf:
                return buf.decode(errors="replace")
    raise AssertionError(f"no {until!r} on the terminal; got {buf[-2000:]!r}")


def test_live_view_on_a_terminal_redraws_and_exits_cleanly_on_sigterm(traded: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = {**_env(), "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "dashboard", "--root", str(traded), "--refresh", "0.5"],
        cwd=REPO,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        raw = _read_pty(master, "no scheduled jobs")  # the last panel drawn
        first = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)  # the text without control sequences
        assert "\x1b[?1049h" in raw  # the alternate screen of the live view
        assert "top 3 trials" in first and "supervisor is not running" in first
        assert "\x1b[1m" in raw  # styled: a terminal gets bold and colours
        more = _read_pty(master, "no scheduled jobs")  # a redraw after --refresh
        assert "study " in more
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        rest = b""
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            rest += chunk
        assert b"\x1b[?1049l" in rest  # the terminal's normal screen is restored
        assert b"Traceback" not in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        os.close(master)


def test_errors_are_clear_lines(traded: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".current_study").write_text("some_study\n")
    result = _once(empty)
    assert result.returncode == 0, result.stderr
    assert f"storage {empty / 'optuna.db'}: no such SQLite file" in result.stdout
    assert f"no ledger at {empty / 'paper_trader' / 'ledger.db'}" in result.stdout
    assert not (empty / "paper_trader" / "ledger.db").exists()  # read-only: nothing created
    assert not (empty / "optuna.db").exists()

    missing = run_cli("dashboard", "--once", "--root", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: runtime root {tmp_path / 'nope'} does not exist (pass --root DIR, set CAPPUCCINO_ROOT, "
        "or run cappuccino quickstart)"
    ]

    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[workers]\ncuont = 2\n")
    bad = run_cli("dashboard", "--once", "--config", str(bad_cfg), "--root", str(traded))
    assert bad.returncode == 2 and "workers.cuont: unknown key" in bad.stderr
    assert "Traceback" not in bad.stderr

    broken = _copy(traded, tmp_path / "broken")
    (broken / "paper_trader" / "ledger.db").write_bytes(b"this is not a database" * 100)
    for extra in ("-wal", "-shm"):
        (broken / "paper_trader" / f"ledger.db{extra}").unlink(missing_ok=True)
    (broken / "ensemble" / "ensemble_manifest.json").write_text('{"study": ')
    out = _once(broken).stdout
    assert f"{broken / 'paper_trader' / 'ledger.db'}: not a readable paper-trader ledger" in out
    assert f"{broken / 'ensemble' / 'ensemble_manifest.json'}: not valid JSON" in out
    assert "top 3 trials" in out  # the rest is still shown

    other = run_cli("dashboard", "--once", "--root", str(traded), "--study", "no_such_study")
    assert other.returncode == 0
    assert "study 'no_such_study' does not exist in the storage yet" in other.stdout


@pytest.mark.postgres
def test_snapshot_and_frame_from_a_postgresql_storage(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pg_study("pg_dashboard", [0.1, None, 0.3, 0.2]) as url:
        args = ("--root", str(root), "--storage", url, "--study", "pg_dashboard")
        snap = json.loads(run_cli("dashboard", "--json", *args).stdout)
        frame = _once(root, *args[2:])
    assert snap["study_stats"]["trials"] == {"COMPLETE": 3, "FAIL": 1}
    assert snap["study_stats"]["best"]["number"] == 2
    assert [r["vin"] for r in snap["top"]["trials"]] == ["PPO-T-PG-2", "PPO-T-PG-3", "PPO-T-PG-0"]
    assert frame.returncode == 0
    assert "COMPLETE 3  PRUNED 0  FAIL 1" in frame.stdout
    assert "PPO-T-PG-2" in frame.stdout and "no ledger at" in frame.stdout


def test_once_reads_the_best_value_and_grades_against_the_baselines(
    traded: Path, trained_study: TrainedStudy, study_data: StudyData, tmp_path: Path
) -> None:
    root = _copy(traded, tmp_path / "root")
    name = trained_study.study_name
    bare = _once(root).stdout
    assert "vs baselines not recorded yet (the study's first worker computes them)" in bare
    assert "(baselines not recorded)" in bare

    study = optuna.load_study(study_name=name, storage=default_storage_url(root))
    record, computed = ensure_fold_baselines(study, study_data, TINY)
    assert computed
    want = {k: record["baselines"][k]["value"] for k in ("invested", "cash")}
    top = max(want.values()) + 0.5  # a trial that beats both, among the fixture's own
    study.add_trial(create_trial(value=top, user_attrs={"vin": "PPO-S-TOP", "grade": grade_for(top)}))
    complete = sorted(
        (t for t in trials(root, name) if t.state == TrialState.COMPLETE), key=lambda t: (-t.value, t.number)
    )

    result = _once(root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    n_folds = len(study_data.folds)
    assert (
        f"vs baselines best {top:.4f} · always invested {want['invested']:.4f} · "
        f"always in cash {want['cash']:.4f} · untrained start "
        f"{record['zero_action']['value']:.4f} (same {n_folds} folds and costs)"
    ) in out
    assert f"grade {grade_for(top)} (beats both baselines) PPO-S-TOP" in out
    table = out[out.index("trials (Sharpe: fold mean") :].splitlines()
    for t in complete:  # the top table: each grade with its verdict, independently computed
        row = next(line for line in table if t.user_attrs["vin"] in line and f"{t.value:.4f}" in line)
        verdict = "yes" if t.value > want["invested"] and t.value > want["cash"] else "no"
        assert f" {t.user_attrs['grade']} " in row and f" {verdict} " in row, row
    assert any(t.value < max(want.values()) for t in complete)  # both verdicts were shown

    snap = json.loads(run_cli("dashboard", "--json", "--root", str(root)).stdout)
    assert snap["study_stats"]["baselines"]["invested"] == want["invested"]
    assert snap["study_stats"]["baselines"]["cash"] == want["cash"]
    assert snap["study_stats"]["best"]["beats_baselines"] is True
    assert [r["beats_baselines"] for r in snap["top"]["trials"]] == [
        t.value > max(want.values()) for t in complete
    ]

    # a best value below the better baseline: its grade says so
    study.set_user_attr(
        FOLD_BASELINES_ATTR, {**record, "baselines": {**record["baselines"], "cash": {"value": top + 1}}}
    )
    below = _once(root).stdout
    assert f"grade {grade_for(top)} (below always in cash {top + 1:+.4f}) PPO-S-TOP" in below

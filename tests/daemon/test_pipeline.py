"""``cappuccino pipeline``: every mode on a tiny budget as real processes on temp roots.

Training reaches its trial target with real worker processes; archive archives; deploy
decides and logs; full runs clean, training, archive and deploy in that order; the exit
codes (0 ok, 1 a step failed, 2 bad arguments, 3 refused, 130 interrupted); SIGTERM and
SIGINT stop the workers gracefully; ``--background`` writes ``run/pipeline.json``; a held
supervisor lock (or pipeline lock) refuses training.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from optuna.trial import TrialState

from daemon.pipeline import pipeline_lock
from ensemble.deploy import read_log
from ensemble.registry import read_registry
from tests.conftest import TrainedStudy
from tests.daemon._supervisor_proc import REPO, clean_env, proc_gone, run_cli, trials, write_config
from trainers.runtime.pidlock import PidLock

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WAIT_SECONDS = 240.0
LAX_DEPLOY = {"min_grade": "F", "min_sharpe": -1000.0, "max_drawdown": 1.0, "min_improvement": 0.0}
ALL_ARCHIVED = {"top_percent": 100.0, "min_grade": "F"}


# --------------------------------------------------------------------------- helpers
class Started:
    """Pipelines started with Popen by a test, and the workers they report; whatever is
    still alive at the end is stopped by pid + create time (process group), never by name."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.roots: list[Path] = []
        self.pids: dict[int, float] = {}

    def watch(self, root: Path) -> Path:
        """Clean up the workers that ``root``'s ``run/pipeline.json`` names, whatever happens."""
        self.roots.append(root)
        return root

    def popen(self, root: Path, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "pipeline", "--root", str(root), *args],
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        self.roots.append(root)
        return proc

    def remember(self, root: Path) -> None:
        """Record the pipeline's pid and its workers' pids from ``run/pipeline.json``."""
        if root not in self.roots:
            self.roots.append(root)
        doc = _doc(root)
        if isinstance(doc.get("pid"), int):
            with contextlib.suppress(psutil.NoSuchProcess):
                self.pids.setdefault(doc["pid"], psutil.Process(doc["pid"]).create_time())
        for w in _workers(doc):
            if isinstance(w.get("pid"), int) and isinstance(w.get("create_time"), float):
                self.pids.setdefault(w["pid"], w["create_time"])

    def cleanup(self) -> None:
        for root in self.roots:
            self.remember(root)
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate(timeout=10)
        for pid, ctime in self.pids.items():
            if not proc_gone(pid, ctime):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) == pid:  # a group leader we started (own session)
                        os.killpg(pid, signal.SIGKILL)
                    else:
                        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    try:
        yield s
    finally:
        s.cleanup()


def _doc(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / "run" / "pipeline.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _workers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    training = doc.get("training") or next(
        (s.get("figures") for s in doc.get("steps", []) if s.get("name") == "training"), None
    )
    workers = (training or {}).get("workers")
    return workers if isinstance(workers, list) else []


def _config(tmp: Path, root: Path, **sections: dict[str, Any]) -> Path:
    """Tiny budget ([study] budget_steps = 256, n_envs = 2), no paper trader, 20 s stop grace."""
    return write_config(tmp / "cappuccino.toml", root, **sections)


def _pipeline(cfg: Path, *args: str, timeout: float = 420.0) -> subprocess.CompletedProcess[str]:
    return run_cli("pipeline", "--config", str(cfg), *args, timeout=timeout)


def _copy(trained: TrainedStudy, tmp: Path, name: str = "root") -> Path:
    root = tmp / name
    shutil.copytree(trained.root, root)
    return root


def _steps(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["name"], s["outcome"]) for s in doc["steps"]]


def _step(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["steps"] if s["name"] == name)


def _finished(root: Path, study: str) -> int:
    return sum(1 for t in trials(root, study) if t.state in FINISHED)


def _summary_rows(stdout: str) -> list[tuple[str, str]]:
    """(step, outcome) of each step line of the printed summary, in order."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if (
            line.startswith("  ")
            and len(parts) >= 2
            and parts[0] in ("clean", "training", "archive", "deploy")
        ):
            rows.append((parts[0], parts[1]))
    return rows


def _wait(what: str, check: Any, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"pipeline exited ({proc.returncode}) while waiting for {what}\n{out}\n{err}"
            )
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- modes
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_training_runs_workers_until_the_study_has_n_finished_trials(
    tmp_path: Path, started: Started
) -> None:
    root = started.watch(tmp_path / "root")
    cfg = _config(tmp_path, root)
    res = _pipeline(cfg, "--mode", "training", "--workers", "2", "--trials", "3", "--study", "fresh")
    started.remember(root)
    assert res.returncode == 0, res.stdout + res.stderr

    assert _finished(root, "fresh") >= 3
    assert not [t.number for t in trials(root, "fresh") if t.state == TrialState.RUNNING]
    doc = _doc(root)
    assert doc["state"] == "finished" and doc["exit_code"] == 0 and doc["study"] == "fresh"
    assert _steps(doc) == [("training", "ok")]
    figures = _step(doc, "training")["figures"]
    assert figures["finished_before"] == 0 and figures["finished"] >= 3 and figures["target"] == 3
    assert figures["best"]["vin"] and figures["best"]["number"] is not None
    workers = figures["workers"]
    assert [w["name"] for w in workers] == ["worker-0", "worker-1"]
    # each worker ran as its own process group and is gone now
    assert all(proc_gone(w["pid"], w["create_time"]) for w in workers)
    assert all(codes and codes[-1] == 0 for codes in figures["exit_codes"].values())
    assert _summary_rows(res.stdout) == [("training", "ok")]
    assert "result: ok (exit 0)" in res.stdout

    # the target is a count of the study's trials: reached already, no worker starts
    again = _pipeline(cfg, "--mode", "training", "--workers", "2", "--trials", "3", "--study", "fresh")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already has" in again.stdout
    assert "worker_count" in (fig := _step(_doc(root), "training")["figures"]) and not fig.get("workers")


def test_archive_mode_archives_the_top_trials(trained_study: TrainedStudy, tmp_path: Path) -> None:
    root = _copy(trained_study, tmp_path)
    cfg = _config(tmp_path, root, archive=ALL_ARCHIVED)
    res = _pipeline(cfg, "--mode", "archive", "--study", trained_study.study_name)
    assert res.returncode == 0, res.stdout + res.stderr

    registry = read_registry(root)
    assert registry is not None
    complete = [t for t in trials(root, trained_study.study_name) if t.state == TrialState.COMPLETE]
    assert sorted(m.trial_number for m in registry.models) == sorted(t.number for t in complete)
    for m in registry.models:
        assert (root / "trial_archive" / m.dir / "actor.pth").is_file()
    doc = _doc(root)
    assert _steps(doc) == [("archive", "ok")]
    fig = _step(doc, "archive")["figures"]
    assert len(fig["added"]) == len(complete) and fig["total"] == len(complete)
    assert _summary_rows(res.stdout) == [("archive", "ok")]
    assert f"{len(complete)} archived" in res.stdout

    again = _pipeline(cfg, "--mode", "archive", "--study", trained_study.study_name)
    assert again.returncode == 0
    fig = _step(_doc(root), "archive")["figures"]
    assert fig["added"] == [] and fig["unchanged"] == len(complete)


def test_deploy_mode_promotes_with_the_config_thresholds(trained_study: TrainedStudy, tmp_path: Path) -> None:
    root = _copy(trained_study, tmp_path)
    (root / ".current_study").write_text(trained_study.study_name + "\n")  # the default study
    cfg = _config(tmp_path, root, deploy=LAX_DEPLOY)
    res = _pipeline(cfg, "--mode", "deploy")
    assert res.returncode == 0, res.stdout + res.stderr

    doc = _doc(root)
    assert doc["study"] == trained_study.study_name
    assert _steps(doc) == [("deploy", "ok")]
    fig = _step(doc, "deploy")["figures"]
    assert fig["decision"] == "promoted"
    assert fig["thresholds"]["min_sharpe"] == -1000.0  # the config's thresholds reached the gates
    info = json.loads((root / "deployments" / "model_0" / "deployment_info.json").read_text())
    assert info["trial_number"] == fig["trial"]
    assert read_log(root)[-1]["decision"] == "promoted"
    assert "promoted" in res.stdout


def test_deploy_mode_refused_by_a_gate_exits_0_with_its_reasons(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    root = _copy(trained_study, tmp_path)
    cfg = _config(tmp_path, root, deploy={**LAX_DEPLOY, "min_sharpe": 1000.0})
    res = _pipeline(cfg, "--mode", "deploy", "--study", trained_study.study_name)
    assert res.returncode == 0, res.stdout + res.stderr

    fig = _step(_doc(root), "deploy")["figures"]
    assert fig["decision"] == "refused"
    assert any("Sharpe" in r for r in fig["reasons"])
    assert _summary_rows(res.stdout) == [("deploy", "refused")]
    assert "Sharpe" in res.stdout  # the reasons are in the summary
    record = read_log(root)[-1]
    assert record["decision"] == "refused" and record["reasons"] == fig["reasons"]
    assert not (root / "deployments" / "model_0").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_full_mode_cleans_trains_archives_and_deploys_in_order(
    trained_study: TrainedStudy, tmp_path: Path, started: Started
) -> None:
    root = started.watch(_copy(trained_study, tmp_path))
    study = trained_study.study_name
    (root / ".current_study").write_text(study + "\n")
    old_log = root / "logs" / "old-job.out"
    old_log.parent.mkdir(parents=True, exist_ok=True)
    old_log.write_bytes(b"x" * 4096)
    month_ago = time.time() - 30 * 86400
    os.utime(old_log, (month_ago, month_ago))
    cfg = _config(tmp_path, root, archive=ALL_ARCHIVED, deploy=LAX_DEPLOY)
    before = _finished(root, study)

    res = _pipeline(cfg, "--mode", "full", "--workers", "1", "--trials", str(before + 1))
    started.remember(root)
    assert res.returncode == 0, res.stdout + res.stderr

    order = [("clean", "ok"), ("training", "ok"), ("archive", "ok"), ("deploy", "ok")]
    assert _summary_rows(res.stdout) == order
    doc = _doc(root)
    assert _steps(doc) == order and doc["exit_code"] == 0 and doc["mode"] == "full"
    clean = _step(doc, "clean")["figures"]
    assert clean["freed_bytes"] >= 4096 and not old_log.exists()  # space freed, reported
    training = _step(doc, "training")["figures"]
    assert training["finished_before"] == before and training["finished"] >= before + 1
    assert _finished(root, study) >= before + 1
    archive = _step(doc, "archive")["figures"]
    registry = read_registry(root)
    assert registry is not None and archive["total"] == len(registry.models) >= before + 1
    deploy = _step(doc, "deploy")["figures"]
    assert deploy["decision"] == "promoted" and read_log(root)[-1]["decision"] == "promoted"
    # steps ran in order: each started after the previous one ended
    assert [s["name"] for s in doc["steps"]] == ["clean", "training", "archive", "deploy"]


def test_a_failed_step_stops_the_pipeline_with_exit_1(trained_study: TrainedStudy, tmp_path: Path) -> None:
    root = _copy(trained_study, tmp_path)
    manifest = root / "ensemble" / "ensemble_manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("{not json")  # cleanup cannot know what is referenced: it refuses
    cfg = _config(tmp_path, root)
    before = _finished(root, trained_study.study_name)

    res = _pipeline(cfg, "--mode", "full", "--trials", str(before + 5), "--study", trained_study.study_name)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = _doc(root)
    assert _steps(doc) == [
        ("clean", "failed"),
        ("training", "skipped"),
        ("archive", "skipped"),
        ("deploy", "skipped"),
    ]
    assert "ensemble_manifest.json" in _step(doc, "clean")["detail"]
    assert _finished(root, trained_study.study_name) == before  # nothing trained
    assert "result: failed (exit 1)" in res.stdout

    unknown = _pipeline(cfg, "--mode", "archive", "--study", "no_such_study")
    assert unknown.returncode == 1
    assert _steps(_doc(root)) == [("archive", "failed")]
    assert "no_such_study" in _step(_doc(root), "archive")["detail"]


# --------------------------------------------------------------------------- signals
def _training_running(root: Path, study: str, n_workers: int) -> tuple[list[dict[str, Any]], set[int]] | None:
    """The workers of a running pipeline and the RUNNING trials, once each worker is up and
    a trial runs."""
    doc = _doc(root)
    workers = _workers(doc) if doc.get("state") == "running" else []
    if len(workers) != n_workers:
        return None
    running = _running_trials(root, study)
    return (workers, running) if running else None


def _running_trials(root: Path, study: str) -> set[int]:
    return {t.number for t in trials(root, study) if t.state == TrialState.RUNNING}


def _assert_stopped_gracefully(
    root: Path, study: str, workers: list[dict[str, Any]], were_running: set[int]
) -> None:
    """Workers gone; no trial left RUNNING; each trial that was running ended FAIL and was
    re-queued (WAITING), or completed when the stop came in its last fold."""
    assert were_running
    assert all(proc_gone(w["pid"], w["create_time"]) for w in workers)
    by_number = {t.number: t for t in trials(root, study)}
    assert TrialState.RUNNING not in {t.state for t in by_number.values()}
    ended = {n: by_number[n].state for n in were_running}
    assert set(ended.values()) <= {TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED}, ended
    failed = sum(1 for state in ended.values() if state == TrialState.FAIL)
    assert sum(1 for t in by_number.values() if t.state == TrialState.WAITING) >= failed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_during_training_stops_the_workers_and_exits_130(tmp_path: Path, started: Started) -> None:
    root = tmp_path / "root"
    cfg = _config(tmp_path, root, study={"name": "s"})  # no --study, no .current_study: the config's
    proc = started.popen(
        root, "--config", str(cfg), "--mode", "training", "--workers", "2", "--trials", "500"
    )
    up = _wait("both workers up and a trial running", lambda: _training_running(root, "s", 2), proc)
    workers, were_running = up
    started.remember(root)
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process group
    out, err = proc.communicate(timeout=WAIT_SECONDS)

    assert proc.returncode == 130, out + err
    assert _summary_rows(out) == [("training", "interrupted")]
    assert "result: interrupted (exit 130)" in out
    _assert_stopped_gracefully(root, "s", workers, were_running)
    doc = _doc(root)
    assert doc["state"] == "finished" and doc["exit_code"] == 130 and doc["study"] == "s"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_next_pipeline_stops_workers_left_by_a_killed_one(tmp_path: Path, started: Started) -> None:
    root = started.watch(tmp_path / "root")
    cfg = _config(tmp_path, root)
    proc = started.popen(root, "--config", str(cfg), "--mode", "training", "--workers", "1", "--study", "k")
    up = _wait("the worker up and a trial running", lambda: _training_running(root, "k", 1), proc)
    workers, were_running = up
    started.remember(root)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to stop its workers
    proc.communicate(timeout=60)
    assert not proc_gone(workers[0]["pid"], workers[0]["create_time"])  # orphaned, still training

    res = _pipeline(cfg, "--mode", "archive", "--study", "k")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"stopped worker pid {workers[0]['pid']}" in res.stderr
    _assert_stopped_gracefully(root, "k", workers, were_running)


# --------------------------------------------------------------------------- background
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_background_runs_detached_and_sigterm_leaves_the_summary_in_pipeline_json(
    tmp_path: Path, started: Started
) -> None:
    root = started.watch(tmp_path / "root")
    cfg = _config(tmp_path, root)
    args = ("--mode", "training", "--workers", "1", "--trials", "500", "--study", "bg", "--background")
    res = _pipeline(cfg, *args, timeout=120)
    started.remember(root)
    assert res.returncode == 0, res.stdout + res.stderr
    pid = int(res.stdout.split("pid ")[1].split()[0])
    assert str(root / "run" / "pipeline.json") in res.stdout
    assert str(root / "logs" / "pipeline.log") in res.stdout
    assert os.getsid(pid) == pid  # its own session: outlives the terminal that started it
    assert _doc(root)["pid"] == pid

    up = _wait("the worker up and a trial running", lambda: _training_running(root, "bg", 1))
    workers, were_running = up
    started.remember(root)
    os.kill(pid, signal.SIGTERM)
    doc = _wait("the final summary", lambda: (d := _doc(root)).get("state") == "finished" and d)
    assert doc["pid"] == pid and doc["exit_code"] == 130
    assert _steps(doc) == [("training", "interrupted")]
    _wait("the background pipeline to exit", lambda: proc_gone(pid))
    _assert_stopped_gracefully(root, "bg", workers, were_running)
    log_text = (root / "logs" / "pipeline.log").read_text()
    assert "result: interrupted (exit 130)" in log_text  # the summary went to the log too


def test_background_archive_writes_its_summary(
    trained_study: TrainedStudy, tmp_path: Path, started: Started
) -> None:
    root = _copy(trained_study, tmp_path)
    cfg = _config(tmp_path, root, archive=ALL_ARCHIVED)
    res = _pipeline(
        cfg, "--mode", "archive", "--study", trained_study.study_name, "--background", timeout=120
    )
    started.remember(root)
    assert res.returncode == 0, res.stdout + res.stderr
    pid = int(res.stdout.split("pid ")[1].split()[0])
    doc = _wait("the final summary", lambda: (d := _doc(root)).get("state") == "finished" and d)
    assert doc["pid"] == pid and doc["exit_code"] == 0 and doc["outcome"] == "ok"
    assert _steps(doc) == [("archive", "ok")]
    registry = read_registry(root)
    assert registry is not None and len(registry.models) == len(_step(doc, "archive")["figures"]["added"]) > 0


# --------------------------------------------------------------------------- refusals
def test_training_is_refused_while_a_supervisor_holds_the_root(
    trained_study: TrainedStudy, tmp_path: Path
) -> None:
    root = _copy(trained_study, tmp_path)
    cfg = _config(tmp_path, root, archive=ALL_ARCHIVED)
    lock = PidLock(root / "run" / "supervisor.pid")
    lock.acquire()  # the real lock a supervisor holds, with this process's pid
    try:
        before = _finished(root, trained_study.study_name)
        for mode in ("training", "full"):
            res = _pipeline(
                cfg, "--mode", mode, "--trials", str(before + 5), "--study", trained_study.study_name
            )
            assert res.returncode == 3, res.stdout + res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0] and "supervisor" in lines[0]
        bg = _pipeline(cfg, "--mode", "training", "--background", "--study", trained_study.study_name)
        assert bg.returncode == 3 and f"pid {os.getpid()}" in bg.stderr
        assert _finished(root, trained_study.study_name) == before
        assert not (root / "run" / "pipeline.json").exists()  # nothing ran
        # archive and deploy do not need the workers: they run next to a supervisor
        ok = _pipeline(cfg, "--mode", "archive", "--study", trained_study.study_name)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        lock.release()
    after = _pipeline(cfg, "--mode", "training", "--trials", "1", "--study", trained_study.study_name)
    assert after.returncode == 0, after.stdout + after.stderr  # released lock: not refused


def test_a_second_pipeline_on_the_same_root_is_refused(trained_study: TrainedStudy, tmp_path: Path) -> None:
    root = _copy(trained_study, tmp_path)
    cfg = _config(tmp_path, root)
    with pipeline_lock(root):
        res = _pipeline(cfg, "--mode", "archive", "--study", trained_study.study_name)
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"another pipeline (pid {os.getpid()})" in res.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--mode", "bogus"), "--mode"),
        (("--mode", "training", "--trials", "0"), "--trials must be >= 1"),
        (("--mode", "training", "--workers", "0"), "--workers must be >= 1"),
        (("--mode", "archive", "--workers", "2"), "only apply to --mode full|training"),
        (("--mode", "deploy", "--trials", "5"), "only apply to --mode full|training"),
        (("--mode", "training", "--trials", "many"), "--trials"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    root = tmp_path / "root"
    cfg = _config(tmp_path, root, study={"name": "s"})
    res = _pipeline(cfg, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert not (root / "run" / "pipeline.json").exists()


def test_bad_config_or_no_study_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root)  # no study name anywhere
    res = _pipeline(cfg, "--mode", "archive")
    assert res.returncode == 2
    assert "no study" in res.stderr and ".current_study" in res.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nbudget_stepz = 5\nname = "s"\n')
    res = run_cli("pipeline", "--config", str(bad), "--root", str(root), "--mode", "archive")
    assert res.returncode == 2
    assert "study.budget_stepz" in res.stderr and "unknown key" in res.stderr

    missing = run_cli("pipeline", "--config", str(tmp_path / "nope.toml"), "--mode", "archive")
    assert missing.returncode == 2 and "nope.toml" in missing.stderr

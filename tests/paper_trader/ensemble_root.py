"""Runtime roots with a real ensemble for the paper-trader tests: a copy of the
``trained_study`` fixture's root (real trials, real bundles) synced with the real
:func:`ensemble.sync.sync_ensemble`, plus helpers to run ``python -m paper_trader``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ensemble.sync import sync_ensemble
from trainers.bundle import PipelineSpec
from trainers.data import load_panel
from trainers.storage import default_storage_url

SYMBOLS = load_panel().symbols
PIPELINE = PipelineSpec(SYMBOLS)
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 180.0  # generous bound for a busy machine; no test asserts on how long anything takes


def ensemble_root(trained_root: Path, dest: Path, study: str, top_n: int = 3, sync: bool = True) -> Path:
    """Copy the trained root to ``dest``, write ``.current_study`` and (if ``sync``) sync
    the ensemble of the study's top ``top_n`` trials. Returns ``dest``."""
    shutil.copytree(trained_root, dest)
    (dest / ".current_study").write_text(study + "\n")
    if sync:
        sync_ensemble(dest, default_storage_url(dest), study, PIPELINE, top_n=top_n)
    return dest


def wait_until(cond: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``cond`` until truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written atomically by another process, or None while it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def heartbeat(root: Path) -> dict[str, Any] | None:
    return read_json(root / "run" / "heartbeats" / "paper_trader.json")


def bars_done(root: Path) -> int:
    hb = heartbeat(root)
    return 0 if hb is None else int(hb["bars_processed"])


def start_trader(root: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``python -m paper_trader --root ROOT ARGS`` as a real child process (own process
    group, output to ``log``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = open(log or root.parent / f"{root.name}-trader.log", "ab")  # noqa: SIM115 - closed by the child's exit
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "paper_trader", "--root", str(root), *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def finish(proc: subprocess.Popen[bytes], timeout: float = WAIT_S) -> int:
    """Wait for the child; kill its process group if it outlives ``timeout``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"trader pid {proc.pid} did not finish within {timeout} s") from None

"""The faults that ``bench/soak.py`` injects into a running supervisor, and the private
resources some of them need (a tmpfs, a private PostgreSQL server, a lock-holding process).

Each injector returns a line saying what it did (or why it was skipped) and, for a fault
that lasts, an undo callable the soak runs when the fault's duration has passed. Processes
are only ever signalled by pid (checked against the create time recorded with it), never
by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # the repository's tests/ package (bench scripts run as files)

Undo = Callable[[], str]
STORAGE_OUTAGE_S = 30.0
DISK_FULL_S = 60.0
FILL_FILE = "soak_disk_fill.bin"

# the SQLite lock holder: BEGIN EXCLUSIVE (no reader or writer gets in, WAL or not) for N s
_LOCK_HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def same_process(pid: int, create_time: float | None) -> psutil.Process | None:
    """The live process ``pid`` if it is still the one started at ``create_time``."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 0.01:
            return None
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except psutil.NoSuchProcess:
        return None


def read_children(root: Path) -> list[dict[str, Any]]:
    """``<root>/run/children.json`` (name, pid, create_time, argv per child); [] when absent."""
    try:
        data = json.loads((root / "run" / "children.json").read_text())
    except (OSError, ValueError):
        return []
    return [c for c in data if isinstance(c, dict) and "pid" in c] if isinstance(data, list) else []


def kill_random_child(root: Path, rng: random.Random) -> str:
    """SIGKILL one child of ``run/children.json``, drawn with ``rng``."""
    children = read_children(root)
    if not children:
        return "skipped: no child recorded in run/children.json"
    child = rng.choice(sorted(children, key=lambda c: str(c.get("name"))))
    proc = same_process(int(child["pid"]), child.get("create_time"))
    if proc is None:
        return f"skipped: {child.get('name')} (pid {child['pid']}) already gone"
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    return f"SIGKILL {child.get('name')} pid {proc.pid}"


def break_manifest(root: Path, rng: random.Random) -> str:
    """Corrupt (truncated JSON, written in place) or remove the ensemble manifest."""
    path = root / "ensemble" / "ensemble_manifest.json"
    if not path.exists():
        return "skipped: no ensemble manifest yet"
    if rng.random() < 0.5:
        path.unlink()
        return f"removed {path.name}"
    if path.is_symlink():
        path.unlink()
    path.write_text('{"members": [{"trial": ')
    return f"corrupted {path.name} (truncated JSON)"


def lock_sqlite(db: Path, seconds: float, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a process that holds ``BEGIN EXCLUSIVE`` on ``db`` for ``seconds`` (own session;
    the caller tracks and reaps it). Waits until the lock is taken (at most 60 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(db), str(seconds)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    line = proc.stdout.readline().decode().strip() if proc.stdout else ""
    if line != "locked":
        return proc, f"could not lock {db.name} (lock holder rc={proc.poll()})"
    return proc, f"{db.name} held under BEGIN EXCLUSIVE by pid {proc.pid} for {seconds:.0f} s"


def fill_disk(root: Path) -> tuple[str, Undo]:
    """Write zeros to ``<root>/soak_disk_fill.bin`` until the filesystem says ENOSPC; the
    undo deletes the file."""
    from tests.tmpfs import fill_until_full

    path = root / FILL_FILE
    written = fill_until_full(path)

    def undo() -> str:
        path.unlink(missing_ok=True)
        return "disk space given back"

    return f"filled the tmpfs ({written / 2**20:.0f} MB written until ENOSPC)", undo


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """:func:`tests.tmpfs.mounted_tmpfs` for the soak's runtime root.

    Raises:
        SystemExit: not root, or the mount was refused (with mount's message).
    """
    from tests.tmpfs import mounted_tmpfs as mount

    try:
        stack = contextlib.ExitStack()
        mounted = stack.enter_context(mount(path, size_mb))
    except RuntimeError as exc:
        raise SystemExit(f"--tmpfs-mb: {exc}") from None
    with stack:
        yield mounted


@contextlib.contextmanager
def private_postgres_server() -> Iterator[Any]:
    """A private PostgreSQL server (``tests/pg_instance.py``'s :func:`private_postgres`):
    initdb into a temporary folder, started on a free loopback port, stopped and removed
    afterwards. The machine's own server is never touched.

    Raises:
        SystemExit: no server binaries, or initdb/start failed (with the reason).
    """
    from tests.pg_instance import private_postgres

    try:
        server = contextlib.ExitStack()
        pg = server.enter_context(private_postgres())
    except RuntimeError as exc:
        raise SystemExit(f"--storage postgres: {exc}") from None
    with server:
        yield pg

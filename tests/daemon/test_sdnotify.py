"""systemd's notify protocol on a real Unix datagram socket: the supervisor sends READY=1
once it runs, WATCHDOG=1 from its main loop, and STOPPING=1 on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon._supervisor_proc import SupervisorProc, Supervisors, clean_env, write_config


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="sdn")  # short: a socket path has at most 107 bytes
    path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    try:
        yield sock, path
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def _receive_until(sock: socket.socket, sup: SupervisorProc, got: list[str], want: str) -> None:
    """Append datagrams to ``got`` until one holds the line ``want`` (bounded)."""
    deadline = time.monotonic() + 180.0
    while time.monotonic() < deadline:
        if any(want in msg.splitlines() for msg in got):
            return
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            if sup.proc.poll() is not None and want != "STOPPING=1":
                raise AssertionError(f"supervisor exited before {want}\n{sup.describe()}") from None
    raise AssertionError(f"no {want} within the bound; received {got}\n{sup.describe()}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ready_watchdog_and_stopping_datagrams(
    tmp_path: Path, sups: Supervisors, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    root = tmp_path / "root"
    cfg = write_config(tmp_path / "c.toml", root, study={"name": "notify"}, workers={"count": 0})
    sup = sups.start(cfg, root, env=clean_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000"))
    got: list[str] = []
    _receive_until(sock, sup, got, "READY=1")
    assert got[0].splitlines()[0] == "READY=1"  # nothing before READY
    assert "STATUS=supervising study notify" in got[0].splitlines()
    _receive_until(sock, sup, got, "WATCHDOG=1")
    sup.wait_for("a status written under systemd", lambda: (sup.status() or {}).get("supervisor"))
    assert sup.status()["supervisor"]["systemd"] is True

    os.kill(sup.pid, signal.SIGTERM)
    _receive_until(sock, sup, got, "STOPPING=1")
    assert sup.proc.wait(120) == 0, sup.describe()
    lines = [line for msg in got for line in msg.splitlines()]
    assert lines.index("READY=1") < lines.index("WATCHDOG=1") < lines.index("STOPPING=1")
    assert "READY=1" not in lines[lines.index("READY=1") + 1 :]  # sent once
    assert json.loads((root / "run" / "status.json").read_text())["supervisor"]["pid"] == sup.pid

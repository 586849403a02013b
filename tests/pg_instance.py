"""A private PostgreSQL server for tests that must stop and start their database (outage
drills): ``initdb`` into a temporary folder, ``pg_ctl start`` on a free loopback port, trust
authentication, stopped and removed afterwards. The machine's own server is never touched.

The binaries are found like a person would: ``pg_ctl`` and ``initdb`` on the ``PATH``, else
in ``pg_config --bindir`` (Debian keeps them out of the ``PATH``). PostgreSQL refuses to run
as root, so under root the server runs as the ``postgres`` system user (the owner of the
data folder). :func:`private_postgres` skips the test when none of this is possible.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl"), shutil.which("initdb")
    if all(found):
        return (
            Path(str(found[0])).parent if Path(str(found[0])).parent == Path(str(found[1])).parent else None
        )
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
    path = Path(out) if out else None
    return path if path is not None and (path / "pg_ctl").is_file() and (path / "initdb").is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    """A private server: ``url`` (``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``),
    :meth:`stop` (``pg_ctl stop -m fast``) and :meth:`start`."""

    bindir: Path
    data: Path
    port: int
    user: str | None  # run the binaries as this user (None: as ourselves)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / argv[0]), *argv[1:]],
            user=self.user,
            cwd=self.data.parent,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
        )

    def start(self) -> None:
        """``pg_ctl start -w`` (waits until the server accepts connections).

        Raises:
            RuntimeError: the server did not start (with pg_ctl's output).
        """
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data.parent} -c fsync=off"
        res = self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.data.parent / "server.log"),
            "-o",
            opts,
            "-w",
            "start",
        )
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {res.stdout}{res.stderr}{self.server_log()}")

    def stop(self) -> None:
        """``pg_ctl stop -m fast``: open connections are terminated, as in a routine restart.

        Raises:
            RuntimeError: pg_ctl failed.
        """
        res = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {res.stdout}{res.stderr}")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def server_log(self) -> str:
        path = self.data.parent / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL server; always stopped and its folder removed afterwards.

    Raises:
        RuntimeError: no server binaries, no ``postgres`` user to run it as under root, or
            ``initdb`` failed (the message says which; CI provides all three).
    """
    bindir = _bindir()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server binaries (pg_ctl, initdb) on PATH or in pg_config --bindir")
    user = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root and there is no postgres user to run a private server as"
            ) from None
        user = owner.pw_name
    base = Path(tempfile.mkdtemp(prefix="cappuccino-pg-"))
    try:
        if user is not None:
            os.chown(base, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        server = PrivatePostgres(bindir, base / "data", _free_port(), user)
        res = server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stderr.strip()[:300]}")
        server.start()
        try:
            yield server
        finally:
            if server.running():
                server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)

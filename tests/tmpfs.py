"""A small real tmpfs and a real full disk, for the disk-full drill (tests) and the soak
bench's disk-full fault (``bench/_soak_faults.py``)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    """A ``size_mb`` MB tmpfs mounted at ``path`` (created if missing); lazily unmounted
    afterwards. Mounting needs root (CI runs as root).

    Raises:
        RuntimeError: not root, or the mount was refused (with mount's message).
    """
    if os.geteuid() != 0:
        raise RuntimeError("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs at {path}: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def fill_until_full(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem refuses with ENOSPC; returns the bytes
    written.

    Raises:
        OSError: any other write error.
    """
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        chunk = b"\0" * 65536
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written
    finally:
        os.close(fd)

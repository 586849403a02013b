"""Atomic file writes (docs/ARCHITECTURE.md section 2), free of heavy imports so that light processes
(the supervisor) can use them without loading torch. Re-exported by :mod:`trainers.bundle`."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it wraps) says the disk is full: an ``OSError`` with
    ``ENOSPC`` / ``EDQUOT``, or SQLite's ``database or disk is full`` (as ``sqlite3`` or
    SQLAlchemy raise it)."""
    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if "database or disk is full" in str(exc) or "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None)
    return False


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file atomically: temp file in the same folder, fsync, ``os.replace``,
    fsync the folder. Readers see the old file or the new one, never half of one.
    ``mode``: permissions of the new file (``mkstemp`` would leave 0600); secrets are
    never written with this function."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: str | Path) -> None:
    """fsync a folder, so a rename or a new entry in it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: str | Path, data: Any, mode: int = 0o644) -> None:
    """:func:`atomic_write_bytes` of pretty-printed JSON (``mode``: the new file's permissions)."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it cannot be read or is not valid JSON; the message names the file.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from None


def read_json_object(path: str | Path) -> dict[str, Any] | None:
    """A JSON object written atomically by another process, or None when the file is
    missing, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

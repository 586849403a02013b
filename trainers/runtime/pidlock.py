"""The one inter-process lock: an exclusive ``flock`` on a file that holds the holder's pid.

Used for every "one at a time per root" rule: the supervisor (``run/supervisor.pid``), the
pipeline, the paper trader, the ensemble sync, the archive, the deployer and Optuna's
schema creation on a SQLite file. The kernel releases an ``flock`` when its holder dies, so
a lock file left behind by a SIGKILLed process never blocks anyone, and
:func:`lock_holder` never mistakes a stale pid file (or a reused pid) for a live holder.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from trainers.runtime.layout import Layout


class LockHeld(RuntimeError):
    """Another process holds the lock.

    Attributes:
        path: the lock file.
        pid: the holder's pid, or None when it has not written it yet.
    """

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(f"{path}: held by {self.holder}")

    @property
    def holder(self) -> str:
        """``pid <n>``, or ``an unknown process`` when the file names none."""
        return f"pid {self.pid}" if self.pid is not None else "an unknown process"


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class PidLock:
    """An exclusive ``flock`` on ``path`` with the holder's pid written inside.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.

    Args:
        path: the lock file (its folder is created; the file is created ``0644``).
        blocking: wait for the lock instead of raising :class:`LockHeld`.
    """

    def __init__(self, path: str | Path, blocking: bool = False) -> None:
        self.path = Path(path)
        self.blocking = blocking
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write this process's pid into the file.

        Raises:
            LockHeld: another process holds it (only when not ``blocking``).
            OSError: the file cannot be created or opened.
        """
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if self.blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(self.path, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the file and release the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # a full or read-only disk must not keep the lock held
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> PidLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def lock_holder(path: str | Path) -> int | None:
    """Pid of the process holding the :class:`PidLock` on ``path``, or None when nobody does.

    The lock, not the file alone, decides: a pid file left by a process that died (its lock
    went with it) does not count. Returns ``-1`` when the lock is held but the file names no
    pid yet.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            return -1 if pid is None else pid
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def holding(
    path: str | Path, busy: Callable[[LockHeld], Exception] | None = None, blocking: bool = False
) -> Iterator[PidLock]:
    """Hold a :class:`PidLock` on ``path`` for the ``with`` block.

    Args:
        path: the lock file.
        busy: turns :class:`LockHeld` into the caller's own error (the message a user sees);
            None re-raises :class:`LockHeld`.
        blocking: wait for the lock instead.

    Raises:
        LockHeld, or what ``busy`` returns: another process holds the lock.
    """
    lock = PidLock(path, blocking)
    try:
        lock.acquire()
    except LockHeld as held:
        if busy is None:
            raise
        raise busy(held) from None
    try:
        yield lock
    finally:
        lock.release()


def supervisor_pid(root: str | Path) -> int | None:
    """Pid of the supervisor holding ``<root>/run/supervisor.pid``, or None when none runs
    (or it has not written its pid yet)."""
    pid = lock_holder(Layout(root).supervisor_pid)
    return pid if pid is not None and pid > 0 else None

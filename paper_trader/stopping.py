"""A stop request that a signal handler may set safely.

``threading.Event.set`` takes a lock that the interrupted main thread may be holding (inside
its own ``Event.wait``), so calling it from a signal handler can deadlock. :class:`StopSignal`
sets a plain attribute and writes one byte to a non-blocking pipe; :meth:`StopSignal.wait`
sleeps in ``select`` on that pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import time


class StopSignal:
    """``set()`` (signal-safe), ``is_set()``, ``wait(timeout) -> bool`` like ``threading.Event``."""

    def __init__(self) -> None:
        self._flag = False
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)

    def set(self) -> None:
        self._flag = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wfd, b"s")

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until :meth:`set` or ``timeout`` seconds; returns :meth:`is_set`."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._flag:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            with contextlib.suppress(InterruptedError):
                select.select([self._rfd], [], [], left)
        return self._flag

    def close(self) -> None:
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)

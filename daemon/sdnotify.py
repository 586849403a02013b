"""systemd's notify protocol (sd_notify(3)): one datagram per state change to the Unix
socket named by ``$NOTIFY_SOCKET`` (an abstract socket when it starts with ``@``).

Written here rather than taken from a library: the protocol is a single datagram, and the
Python packages for it are either unmaintained or need libsystemd headers to build.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STOPPING=1`` and ``STATUS=...``; a no-op when the
    process was not started by systemd (no ``NOTIFY_SOCKET``)."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address: str | None = None
        self.sock: socket.socket | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, message: str) -> bool:
        """Send one datagram; returns False (never raises) when it cannot be delivered."""
        if self.sock is None or self.address is None:
            return False
        try:
            self.sock.sendto(message.encode(), self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog_interval_s(self) -> float | None:
        """Half of ``$WATCHDOG_USEC`` in seconds (how often to ping), when systemd set it."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2e6

"""systemd's notification protocol (sd_notify): READY, WATCHDOG, STOPPING, STATUS.

A datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Written by hand:
it is a few lines, and the libraries for it are unmaintained or need libsystemd at build time.
Without ``NOTIFY_SOCKET`` every call is a no-op, so the agent runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages; ``enabled`` is False outside systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        self.failures = 0
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half of ``WATCHDOG_USEC`` (systemd's advice), when the watchdog is on for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def notify(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines, e.g. ``notify(READY=1, STATUS="running")``."""
        if self._sock is None or self._address is None:
            return False
        message = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(message, self._address)
            return True
        except OSError as err:
            # systemd may be restarting; the service keeps running and tries again next time.
            self.failures += 1
            log.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), err)
            return False

    def ready(self, status: str) -> bool:
        return self.notify(READY=1, STATUS=status)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def reloading(self) -> bool:
        return self.notify(RELOADING=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

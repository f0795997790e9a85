"""A real sd_notify socket for tests of the agent process: what systemd (Type=notify) would hear."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


class NotifySocket:
    """A bound AF_UNIX datagram socket at ``path``; pass ``str(path)`` to the agent as NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.5)
        self.messages: list[str] = []

    def read_until(
        self, wanted: str, timeout: float = 20, alive: Callable[[], object] | None = None
    ) -> list[str]:
        """Every message from now up to and including the first that contains ``wanted``.

        ``alive`` is called between reads (assert the process is still running there, with its log).
        """
        messages: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            try:
                messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            self.messages.append(messages[-1])
            if wanted in messages[-1]:
                return messages
        raise AssertionError(f"{wanted!r} never arrived; got {messages}")

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["NotifySocket"]

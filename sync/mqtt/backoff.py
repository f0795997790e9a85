"""What the link needs of a reconnect backoff. The one implementation lives with the device
drivers' I/O (``device_drivers._io.backoff``); sync only states the shape, so it imports none of it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ReconnectBackoff(Protocol):
    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; grows (capped, jittered) with each call."""
        ...

    def reset(self) -> None:
        """Called once a connection succeeded: the next delay starts from the minimum again."""
        ...


__all__ = ["ReconnectBackoff"]

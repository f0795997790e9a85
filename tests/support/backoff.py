"""A reconnect backoff for link tests: a fixed short delay, counting how the link uses it (the real
one, device_drivers.Backoff, grows and jitters its delays)."""

from __future__ import annotations


class QuickBackoff:
    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.delays = 0
        self.resets = 0

    def next_delay(self) -> float:
        self.delays += 1
        return self.delay

    def reset(self) -> None:
        self.resets += 1

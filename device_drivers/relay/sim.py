"""Simulated relay lines: in-memory output pins that record every change. Test and demo equipment
(see :mod:`device_drivers.registry`)."""

from __future__ import annotations

import time

from device_drivers.errors import DeviceError


class MemoryPin:
    """A pin that only remembers: its level and every change with its monotonic time (ns).
    The registry drives a ``simulated`` door with these; tests use them where no GPIO chip exists."""

    def __init__(self) -> None:
        self.active = False
        self.changes: list[tuple[int, bool]] = []
        self.closed = False

    def set_active(self, active: bool) -> None:
        if self.closed:
            raise DeviceError("pin is closed", code="offline")
        self.active = active
        self.changes.append((time.monotonic_ns(), active))

    def close(self) -> None:
        self.closed = True


__all__ = ["MemoryPin"]

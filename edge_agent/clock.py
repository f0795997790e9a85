"""The one clock of the gateway: monotonic time for intervals and deadlines, wall time for events.

Every component is handed the same :class:`Clock`; nothing else calls ``time.monotonic()``,
``datetime.now()`` or ``asyncio.sleep()`` for a delay that rules depend on. Tests hand in a fake
clock with the same three methods (tests/support/clock.py) and advance it instead of sleeping.
Frames are judged by their own capture time, never by the clock at analysis time.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What components may ask of time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines, rate limits)."""
        ...

    def now(self) -> datetime:
        """Wall time, timezone-aware UTC (event times, schedules)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


__all__ = ["Clock", "SystemClock"]

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


async def sleep_or_wake(clock: Clock, seconds: float, wake: asyncio.Event, *, name: str) -> None:
    """Until ``seconds`` of ``clock`` have passed or ``wake`` is set (a component's next check,
    brought forward by a change it hears of); ``wake`` is set either way when this returns."""

    async def alarm() -> None:
        await clock.sleep(seconds)
        wake.set()

    async with asyncio.TaskGroup() as group:
        timer = group.create_task(alarm(), name=name)
        await wake.wait()
        timer.cancel()


__all__ = ["Clock", "SystemClock", "sleep_or_wake"]

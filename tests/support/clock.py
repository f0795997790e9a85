"""A fake clock for tests: time moves only when the test says so (STYLE.md 18).

Same method names as the real ``edge_agent.clock.Clock``: ``monotonic()``, ``now()``, ``sleep()``.
A test hands it to the code under test and calls :meth:`FakeClock.advance` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime, timedelta

EPOCH = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic and wall time that advance together, and only through :meth:`advance`.

    ``sleep(s)`` returns once the fake time has been advanced by at least ``s`` past the moment it
    was called; ``sleep(0)`` (or less) yields to the loop once, as ``asyncio.sleep(0)`` does.
    """

    def __init__(self, start: datetime = EPOCH, monotonic_start: float = 1000.0) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._wall0 = start.astimezone(UTC)
        self._mono0 = monotonic_start
        self._elapsed = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self._mono0 + self._elapsed

    def now(self) -> datetime:
        """The wall time, timezone-aware UTC."""
        return self._wall0 + timedelta(seconds=self._elapsed)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A cancelled sleep leaves its (done) future in the heap; advance() skips it.
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones not counted)."""
        return sum(not f.done() for _, _, f in self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake, in deadline order, every sleep that is now due.

        Synchronous: the woken coroutines run when the caller next yields to the loop (``await
        asyncio.sleep(0)``, or :meth:`advance_and_settle`).
        """
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._elapsed += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    async def advance_and_settle(self, seconds: float, *, rounds: int = 3) -> None:
        """:meth:`advance`, then yield to the loop a few times so the woken coroutines run."""
        self.advance(seconds)
        for _ in range(rounds):
            await asyncio.sleep(0)

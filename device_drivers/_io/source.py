"""What every driver shares: the readings queue behind ``async for reading in driver.readings()``,
the ``counters`` the agent exports, the summary of what the device dropped (one log line per
interval, :class:`~device_drivers._io.stream.DropSummary`), online/offline reporting, and the slot
for a simulator the registry attaches to a ``simulated`` device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from types import TracebackType
from typing import Any, Protocol, cast

from device_drivers._io.stream import DropSummary
from device_drivers.readings import DeviceOffline, DeviceOnline, Reading, utc_now

logger = logging.getLogger(__name__)

_CLOSED = object()


class AttachedSimulator(Protocol):
    """The far end of a simulated device's line, attached by the registry: the driver enters it
    before it opens its port, opens ``url`` (known only once it runs: a fresh pty, a free TCP port),
    and exits it after the port is closed. Drivers know only this shape, never a simulator class."""

    @property
    def url(self) -> str: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Any: ...


class ReadingSource:
    """Readings out through a bounded queue (newest kept, drops counted), counters, drops logged
    at most once per ``noise_log_interval_s``, and online/offline transitions reported once each.

    Subclasses call :meth:`_open_readings` when entered, :meth:`_close_readings` when left.
    """

    def __init__(self, device_id: str, queue_size: int = 1000, noise_log_interval_s: float = 10.0) -> None:
        self.device_id = device_id
        self.queue_size = queue_size
        self.counters: dict[str, int] = {}
        self.drops = DropSummary(device_id, noise_log_interval_s)
        self.online = False
        self._readings: asyncio.Queue[object] = asyncio.Queue(queue_size)
        self._offline_reported = False
        self._task: asyncio.Task[None] | None = None

    async def readings(self) -> AsyncIterator[Reading]:
        """Readings until the driver is closed."""
        while True:
            item = await self._readings.get()
            if item is _CLOSED:
                return
            yield cast(Reading, item)

    def _start(self, run: Coroutine[Any, Any, None]) -> None:
        """Open the readings and run ``run`` (the driver's loop) as a named task."""
        if self._task is not None:
            run.close()
            raise RuntimeError(f"driver {self.device_id} is already running")
        self._open_readings()
        self._task = asyncio.create_task(run, name=f"driver:{self.device_id}")

    async def _stop(self) -> None:
        """Cancel the driver's loop and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _open_readings(self) -> None:
        self._readings = asyncio.Queue(self.queue_size)
        self._offline_reported = False

    def _close_readings(self) -> None:
        self.online = False
        self.drops.close()
        self._put(_CLOSED)

    def _emit(self, reading: Reading) -> None:
        self._put(reading)

    def _put(self, item: object) -> None:
        while True:
            try:
                self._readings.put_nowait(item)
                return
            except asyncio.QueueFull:
                # Nobody reads: keep the newest, count and log what goes.
                dropped = self._readings.get_nowait()
                self._count("dropped_readings")
                self.drops.dropped("dropped_readings", 0, f"reading queue full, dropped {dropped}")

    def _count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def _went_online(self, reason: str) -> None:
        if not self.online:
            self.online = True
            logger.info("device %s online: %s", self.device_id, reason)
            self._emit(DeviceOnline(self.device_id, reason, utc_now()))

    def _went_offline(self, reason: str) -> None:
        """Report offline on a transition, and once when the device was never online."""
        if self.online or not self._offline_reported:
            self.online = False
            self._offline_reported = True
            logger.warning("device %s offline: %s", self.device_id, reason)
            self._emit(DeviceOffline(self.device_id, reason, utc_now()))


__all__ = ["AttachedSimulator", "ReadingSource"]

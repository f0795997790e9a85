"""Wiegand readers wired straight to GPIO lines D0 and D1.

* :class:`~device_drivers.gpio.codec.WiegandBitCollector` (sans-I/O): edges in, frames out.
* :class:`GpioWiegandReader` feeds it from an :class:`EdgeSource` and decodes frames with a
  profile's Wiegand layouts (parity checked, raw bits kept), yielding :class:`CardRead`.
* :class:`LibgpiodEdges` is the pin-level part: edge events from libgpiod (python ``gpiod`` >= 2)
  read in a thread. No GPIO chip exists on build machines, so tests use a fake edge source.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from device_drivers._io.source import ReadingSource
from device_drivers._io.threads import show_thread_name
from device_drivers.card.codec import CardCodec
from device_drivers.errors import DeviceError
from device_drivers.gpio.codec import WiegandBitCollector
from device_drivers.gpio.config import GpioWiegandConfig
from device_drivers.profiles import wiegand
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import utc_now


class EdgeSource(Protocol):
    """The pin-level boundary: falling edges on D0 (0) and D1 (1) with monotonic times (ns)."""

    def edges(self) -> AsyncIterator[tuple[Literal[0, 1], int]]: ...

    def close(self) -> None: ...


class LibgpiodEdges:
    """Falling edges of two GPIO lines through libgpiod v2, read in a thread.

    Not exercised by the test suite (no GPIO chip on the build machines)."""

    def __init__(self, chip: str, d0: int, d1: int, consumer: str = "edge-agent") -> None:
        try:
            import gpiod
            from gpiod.line import Bias, Direction, Edge
        except ImportError as err:
            raise DeviceError(
                "GPIO needs the `gpiod` package (libgpiod v2 bindings)", code="unsupported"
            ) from err
        settings = gpiod.LineSettings(
            direction=Direction.INPUT, edge_detection=Edge.FALLING, bias=Bias.PULL_UP
        )
        try:
            self._request: Any = gpiod.request_lines(chip, consumer=consumer, config={(d0, d1): settings})
        except OSError as err:
            raise DeviceError(f"cannot request {chip} lines {d0}/{d1}: {err}", code="offline") from err
        self._lines: dict[int, Literal[0, 1]] = {d0: 0, d1: 1}
        self._stop = threading.Event()

    async def edges(self) -> AsyncIterator[tuple[Literal[0, 1], int]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[Literal[0, 1], int]] = asyncio.Queue()

        def pump() -> None:
            show_thread_name()
            while not self._stop.is_set():
                if self._request.wait_edge_events(0.1):
                    for event in self._request.read_edge_events():
                        bit = self._lines[event.line_offset]
                        loop.call_soon_threadsafe(queue.put_nowait, (bit, event.timestamp_ns))

        threading.Thread(target=pump, name="wiegand-gpio", daemon=True).start()
        while True:
            yield await queue.get()

    def close(self) -> None:
        self._stop.set()
        self._request.release()


class GpioWiegandReader(ReadingSource):
    """Reads Wiegand frames from an :class:`EdgeSource`; a reusable async context manager."""

    def __init__(
        self,
        device_id: str,
        edges: EdgeSource,
        codec: CardCodec,
        *,
        frame_gap_s: float = 0.025,
        noise_log_interval_s: float = 10.0,
    ) -> None:
        super().__init__(device_id, noise_log_interval_s=noise_log_interval_s)
        self.source = edges
        self.codec = codec
        self.frame_gap_s = frame_gap_s

    @classmethod
    def from_config(cls, config: GpioWiegandConfig) -> GpioWiegandReader:
        codec = CardCodec(load_profile(resolve_profile(config.wiegand_profile)))
        edges = LibgpiodEdges(config.chip, config.d0_line, config.d1_line, consumer=f"edge-agent:{config.id}")
        return cls(
            config.id,
            edges,
            codec,
            frame_gap_s=config.frame_gap_ms / 1000,
            noise_log_interval_s=config.noise_log_interval_s,
        )

    async def __aenter__(self) -> Self:
        self._start(self._run())
        self._went_online("GPIO lines ready")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()
        self._close_readings()

    async def _run(self) -> None:
        collector = WiegandBitCollector(self.frame_gap_s)
        # Waiting with a timeout directly on the generator would cancel (and so end) it: pump it.
        edges: asyncio.Queue[tuple[Literal[0, 1], int] | BaseException] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for edge in self.source.edges():
                    edges.put_nowait(edge)
                edges.put_nowait(EOFError("edge source ended"))
            except (OSError, DeviceError) as err:
                edges.put_nowait(err)

        pumping = asyncio.create_task(pump(), name=f"edges:{self.device_id}")
        try:
            while True:
                try:
                    item = await asyncio.wait_for(edges.get(), self.frame_gap_s)
                except TimeoutError:
                    frame = collector.flush(time.monotonic_ns())
                else:
                    if isinstance(item, BaseException):
                        self._went_offline(f"GPIO edges stopped: {item}")
                        return
                    frame = collector.edge(*item)
                if frame is not None:
                    self._frame(*frame)
        finally:
            pumping.cancel()

    def _frame(self, bits: int, value: int) -> None:
        packed = wiegand.pack(value, bits)
        try:
            card = self.codec.card_from_bits(bits, packed)
        except DeviceError as err:
            # Noise on D0/D1 makes bad frames at the rate of the noise: counted, summarised in the log.
            self._count(err.code)
            self.drops.dropped(err.code, 0, f"Wiegand frame ({err.code}): {err}")
            return
        self._count("cards")
        self._emit(card.to_read(self.device_id, utc_now(), time.monotonic_ns()))


__all__ = ["EdgeSource", "GpioWiegandReader", "LibgpiodEdges"]

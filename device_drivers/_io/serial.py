"""The one owner of serial ports: every driver opens its line here (:func:`open_serial`), through a
pyserial port URL, with a reader thread and reconnects with the shared backoff; readings go out
through ``async for``. :class:`PolledPort` serves protocol stacks that poll the port themselves.

Any pyserial URL works: ``/dev/ttyUSB0``, a pty path, ``socket://host:port``, ``loop://``.
Blocking pyserial calls never run on the event loop: reads happen in a thread per port, writes and
opens in a one-thread executor per driver, so a slow or noisy port cannot stall other devices. A
flooding port cannot hog the loop either: its driver decodes at most ``_TURN_BYTES`` per turn of
the loop, and its reader thread stops reading while ``_MAX_PENDING`` chunks wait, so the flood
backs up in the kernel's buffer (where a real UART drops it) instead of in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import serial

from device_drivers._io.backoff import Backoff, BackoffParameters, BackoffPolicy
from device_drivers._io.source import AttachedSimulator, ReadingSource
from device_drivers._io.stream import FrameStream
from device_drivers._io.threads import show_thread_name
from device_drivers.errors import DeviceError
from device_drivers.profiles.config import Transport
from device_drivers.profiles.framing import Codec
from device_drivers.readings import utc_now

logger = logging.getLogger(__name__)

# How long a reader thread's read waits for a byte before it looks at its stop flag again. Closing a
# port wakes it at once (cancel_read) where pyserial can (local and pty ports); the timeout bounds the
# rest (socket://). Each expiry wakes the thread and takes the GIL: at 0.1 s, five idle ports cost
# the agent 50 wake-ups a second (about 0.5 % of a core on the DESIGN.md idle load).
_READ_TIMEOUT_S = 1.0
_MAX_CHUNK = 4096
_MAX_PENDING = 16
# Bytes decoded per turn of the event loop. The most expensive input is a stream of short valid
# frames (up to ~2 us a byte on a busy 2-core box; noise costs less, bench/bench_serial_flood.py),
# so a flooded port's turn stays within a few ms.
_TURN_BYTES = 1024


def open_serial(
    url: str, transport: Transport, *, timeout: float | None, write_timeout: float
) -> serial.SerialBase:
    """Open ``url`` with ``transport``'s line settings; blocking (call it off the event loop)."""
    port = serial.serial_for_url(
        url,
        baudrate=transport.baudrate,
        bytesize=transport.bytesize,
        parity=transport.parity,
        stopbits=transport.stopbits,
        timeout=timeout,
        write_timeout=write_timeout,
        # A second process on the same line would steal bytes: refuse it (flock; ignored by socket://).
        exclusive=True,
        do_not_open=True,
    )
    port.open()
    return port


class PolledPort:
    """A serial port for a protocol stack that polls it from its own thread (libosdp): blocking-free
    ``read``/``write`` that never raise, because an exception would kill that thread. After a
    failure the port is closed and reopened no sooner than the backoff allows; meanwhile reads
    return nothing and writes write nothing."""

    def __init__(self, url: str, transport: Transport, backoff: BackoffPolicy, name: str) -> None:
        self.url = url
        self.transport = transport
        self.backoff = backoff
        self.name = name
        self.failures = 0
        self._port: serial.SerialBase | None = None
        self._next_try = 0.0

    def _ensure(self) -> serial.SerialBase | None:
        if self._port is None and time.monotonic() >= self._next_try:
            try:
                self._port = open_serial(self.url, self.transport, timeout=0, write_timeout=1)
                self.backoff.reset()
            except Exception as err:  # see read(): nothing may escape into the caller's thread
                self._fail(err)
        return self._port

    def _fail(self, err: Exception) -> None:
        self.failures += 1
        logger.warning("%s: %s failed: %s", self.name, self.url, err)
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
        self._port = None
        self._next_try = time.monotonic() + self.backoff.next_delay()

    def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` waiting bytes, or ``b""``."""
        port = self._ensure()
        if port is None:
            return b""
        # termios.error is not even an OSError: catch everything.
        try:
            return bytes(port.read(max_bytes))
        except Exception as err:
            self._fail(err)
            return b""

    def write(self, data: bytes) -> int:
        """How many bytes of ``data`` were written (0 while the port is down)."""
        port = self._ensure()
        if port is None:
            return 0
        try:
            return int(port.write(data) or 0)
        except Exception as err:
            self._fail(err)
            return 0

    def flush_input(self) -> None:
        """Drop what was received and not read."""
        if self._port is not None:
            try:
                self._port.reset_input_buffer()
            except Exception as err:
                self._fail(err)

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None


class SerialDriver(ReadingSource):
    """Base of the serial drivers: owns the port and the reconnect loop; subclasses turn decoded
    values into readings in :meth:`_on_value`.

    Use as a reusable async context manager::

        async with driver:
            async for reading in driver.readings():
                ...

    ``counters`` counts frames, bytes, every dropped frame by its code (``bad_checksum``,
    ``parity``, ``garbage``...), ``truncated`` frames cut by silence, all of them as ``bad_frames``
    and ``dropped_bytes``, ``reconnects``, readings dropped because nobody consumed them
    (``dropped_readings``), and ``throttled``: times the reader waited for the decoder to catch up.
    Drops are logged as one summary line per ``noise_log_interval_s``.
    """

    def __init__(
        self,
        device_id: str,
        url: str,
        transport: Transport,
        codec: Codec,
        *,
        backoff: BackoffParameters | None = None,
        inter_byte_timeout_s: float | None = None,
        queue_size: int = 1000,
        noise_log_interval_s: float = 10.0,
        simulator: AttachedSimulator | None = None,
    ) -> None:
        super().__init__(device_id, queue_size, noise_log_interval_s)
        self.simulator = simulator
        self.url = url
        self.transport = transport
        self.codec = codec
        self.backoff: BackoffPolicy = Backoff(backoff)
        self.stream = FrameStream(
            codec,
            count=self._count,
            drops=self.drops,
            inter_byte_timeout_ns=None if inter_byte_timeout_s is None else int(inter_byte_timeout_s * 1e9),
        )
        self._port: serial.SerialBase | None = None
        self._io: ThreadPoolExecutor | None = None
        self._stop_reader = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._task is not None:  # before anything is started twice
            raise RuntimeError(f"driver {self.device_id} is already running")
        if self.simulator is not None:
            # A simulated device: its simulator lives exactly as long as the driver.
            await self.simulator.__aenter__()
            self.url = self.simulator.url
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"serial-{self.device_id}")
        self._start(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()
        await self._close_port()
        if self._io is not None:
            self._io.shutdown(wait=False)
            self._io = None
        self._close_readings()
        if self.simulator is not None:
            await self.simulator.__aexit__(exc_type, exc, tb)

    # -- the connection loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._open_port()
            except (serial.SerialException, OSError, ValueError) as err:
                self._went_offline(f"cannot open {self.url}: {err}")
                await asyncio.sleep(self.backoff.next_delay())
                continue
            self.backoff.reset()
            self._went_online(f"opened {self.url}")
            reason = await self._pump()
            await self._close_port()
            self._went_offline(reason)
            self._count("reconnects")
            await asyncio.sleep(self.backoff.next_delay())

    async def _open_port(self) -> None:
        t = self.transport
        loop = asyncio.get_running_loop()

        def open_port() -> serial.SerialBase:
            return open_serial(self.url, t, timeout=_READ_TIMEOUT_S, write_timeout=2.0)

        self._port = await loop.run_in_executor(self._io, open_port)

    async def _close_port(self) -> None:
        self._stop_reader.set()
        port, self._port = self._port, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            port.cancel_read()
        # Closing may block (draining a USB adapter): not on the loop.
        with contextlib.suppress(Exception):
            await asyncio.get_running_loop().run_in_executor(None, port.close)

    async def _pump(self) -> str:
        """Feed received bytes to the codec until the port fails; returns why it stopped."""
        port = self._port
        assert port is not None
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[bytes, int, datetime] | BaseException] = asyncio.Queue()
        self._stop_reader = stop = threading.Event()
        # Free slots for chunks read and not yet decoded: the reader waits for one before it reads.
        slots = threading.Semaphore(_MAX_PENDING)

        def reader() -> None:
            show_thread_name()
            try:
                while not stop.is_set():
                    if not slots.acquire(blocking=False):
                        loop.call_soon_threadsafe(self._count, "throttled")
                        while not slots.acquire(timeout=_READ_TIMEOUT_S):
                            if stop.is_set():
                                return
                    data = port.read(min(max(port.in_waiting, 1), _MAX_CHUNK))
                    if data:
                        loop.call_soon_threadsafe(chunks.put_nowait, (data, time.monotonic_ns(), utc_now()))
                    else:
                        slots.release()
            except Exception as err:  # pyserial raises more than SerialException: hand all to the loop
                if not stop.is_set():
                    loop.call_soon_threadsafe(chunks.put_nowait, err)

        thread = threading.Thread(target=reader, name=f"read-{self.device_id}", daemon=True)
        thread.start()
        self.stream.reset()
        try:
            while True:
                item = await chunks.get()
                if isinstance(item, BaseException):
                    return f"read failed: {item}"
                data, received_ns, at = item
                # A flooded port has chunks ready at once, and get() would not yield: decode a
                # bounded slice per turn of the loop, so the other devices keep their latency.
                for offset in range(0, len(data), _TURN_BYTES):
                    for value in self.stream.feed(data[offset : offset + _TURN_BYTES], received_ns):
                        self._on_value(value, at, received_ns)
                    await asyncio.sleep(0)
                slots.release()
        finally:
            stop.set()

    # -- helpers for subclasses ------------------------------------------------------------------

    def _on_value(self, value: Any, at: datetime, received_ns: int) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        """Write ``data`` to the port without blocking the event loop; :class:`DeviceError`
        ``offline`` when the port is not open, ``write_failed`` when the write fails."""
        port = self._port
        if port is None or self._io is None:
            raise DeviceError(f"device {self.device_id} is offline", device_id=self.device_id, code="offline")
        write: Callable[[bytes], int | None] = port.write
        try:
            # Local serial ports are opened non-blocking by pyserial: a command frame goes straight
            # into the kernel's buffer from here, without a thread hop on the gate's hot path. What
            # does not fit (a stalled line) goes through the I/O thread, which may wait for it.
            fd = getattr(port, "fd", None)
            if isinstance(fd, int) and fd >= 0:
                with contextlib.suppress(BlockingIOError):
                    data = data[os.write(fd, data) :]
            if data:
                await asyncio.get_running_loop().run_in_executor(self._io, write, data)
        except (serial.SerialException, OSError) as err:
            self._count("write_failed")
            raise DeviceError(
                f"device {self.device_id}: write failed: {err}", device_id=self.device_id, code="write_failed"
            ) from err
        self._count("frames_out")


__all__ = ["PolledPort", "SerialDriver", "open_serial"]

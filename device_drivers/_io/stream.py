"""What a device's line drops, summarised; and the byte stream of a serial line turned into values.

* :class:`DropSummary` counts what a device dropped (garbage bytes, bad frames by code, lost
  readings) and logs it at most once per interval: the first drop after a quiet interval at once,
  with its detail; the rest of a burst as one summary line when the interval is over. A flooded
  line costs counters, never a log line per byte or per frame.
* :class:`FrameStream` feeds the chunks a serial port delivers to a codec: it buffers a frame split
  across chunks, drops a frame cut by silence, counts good frames and dropped bytes, and hands every
  drop to a :class:`DropSummary`. The codec resynchronises in bulk, and the stream never holds more
  than one chunk plus one frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from device_drivers.errors import MalformedFrame
from device_drivers.profiles.framing import Codec, drain

logger = logging.getLogger(__name__)

CountFn = Callable[[str, int], None]
"""Adds to one of a driver's counters: ``count(name, n)``."""


class DropSummary:
    """Counts one device's drops and logs them, at most one line per ``interval_s``.

    The summary line gives, for the time since the previous line: the bytes dropped, the drops by
    code (``garbage``, ``bad_checksum``...), the good frames, and the detail of the first drop.
    A burst that ends inside an interval is summarised when the interval is over (a timer on the
    running event loop; without one, at the next drop or at :meth:`close`).
    """

    def __init__(
        self, device_id: str, interval_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the summary interval must be positive")
        self.device_id = device_id
        self.interval_s = interval_s
        self.clock = clock
        self._last_line = float("-inf")
        self._window_started = clock()
        self._codes: Counter[str] = Counter()
        self._bytes = 0
        self._good = 0
        self._first = ""
        self._timer: asyncio.TimerHandle | None = None

    @property
    def wants_detail(self) -> bool:
        """Whether the next drop opens a summary (so its detail is worth formatting)."""
        return not self._codes

    def good(self, frames: int = 1) -> None:
        """Frames decoded: reported beside the drops, so a line shows how much still gets through."""
        self._good += frames

    def dropped(self, code: str, size: int, detail: str) -> None:
        """``size`` bytes (0 where no bytes apply, as for a lost reading) dropped for ``code``."""
        if not self._codes:
            self._first = detail
            self._window_started = self.clock()
            self._good = 0
        self._codes[code] += 1
        self._bytes += size
        now = self.clock()
        if now - self._last_line >= self.interval_s:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not on a loop (a bench, a sans-I/O test): the next drop or close() logs it
            self._timer = loop.call_later(self._last_line + self.interval_s - now, self._due)

    def _due(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Log what was dropped since the last line, if anything."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._codes:
            return
        now = self.clock()
        drops = sum(self._codes.values())
        codes = ", ".join(f"{code}={n}" for code, n in self._codes.most_common())
        logger.warning(
            "device %s: line noise over %.1f s: dropped %d bytes in %d bad frames or reads (%s), "
            "%d good frames; first: %s",
            self.device_id,
            max(0.0, now - self._window_started),
            self._bytes,
            drops,
            codes,
            self._good,
            self._first,
            extra={"device": self.device_id},  # journald's DEVICE= field
        )
        self._last_line = now
        self._codes.clear()
        self._bytes = self._good = 0

    def close(self) -> None:
        """Log what is pending and stop the timer (the device is being closed)."""
        self.flush()


class FrameStream:
    """Chunks of one serial line in, decoded values out (see the module docstring).

    ``inter_byte_timeout_ns``: a buffered partial frame that is not continued within this time
    is dropped as ``truncated``. Counters it keeps through ``count``: ``bytes``, ``frames``,
    ``dropped_bytes``, ``bad_frames``, and each drop by its code.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        count: CountFn,
        drops: DropSummary,
        inter_byte_timeout_ns: int | None = None,
    ) -> None:
        self.codec = codec
        self.count = count
        self.drops = drops
        self.inter_byte_timeout_ns = inter_byte_timeout_ns
        self._buffer = bytearray()
        self._last_ns = 0

    def feed(self, data: bytes, received_ns: int) -> Iterator[Any]:
        """The values decoded once ``data`` (received at ``received_ns``) is added."""
        self.count("bytes", len(data))
        buffer = self._buffer
        if (
            buffer
            and self.inter_byte_timeout_ns
            and received_ns - self._last_ns > self.inter_byte_timeout_ns
            and not self._continues(data)
        ):
            self._dropped(
                MalformedFrame(
                    "frame cut by silence", code="truncated", consumed=len(buffer), raw=bytes(buffer)
                )
            )
            buffer.clear()
        self._last_ns = received_ns
        buffer += data
        good = 0
        for value in drain(self.codec, buffer):
            if isinstance(value, MalformedFrame):
                self._dropped(value)
            else:
                good += 1
                yield value
        if good:
            self.count("frames", good)
            self.drops.good(good)

    def reset(self) -> None:
        """Forget a partial frame (the port was closed)."""
        self._buffer.clear()

    def _dropped(self, err: MalformedFrame) -> None:
        self.count(err.code, 1)
        self.count("bad_frames", 1)
        self.count("dropped_bytes", err.consumed)
        detail = f"{err.code}: {err} raw={err.raw.hex()}" if self.drops.wants_detail else ""
        self.drops.dropped(err.code, err.consumed, detail)

    def _continues(self, data: bytes) -> bool:
        """Whether ``data``, read after a gap, is the rest of the frame in the buffer.

        The gap is measured when the reader thread got the bytes, not when they crossed the wire: on
        a busy box the thread can be descheduled in the middle of a frame that arrived whole. So the
        bytes decide: they continue the frame if, with it, they make a frame the codec accepts, or
        if they cannot be the start of a frame of their own.
        """
        with_buffer = next(drain(self.codec, bytearray(self._buffer + data)), None)
        if with_buffer is not None and not isinstance(with_buffer, MalformedFrame):
            return True
        alone = next(drain(self.codec, bytearray(data)), None)
        return isinstance(alone, MalformedFrame)


__all__ = ["CountFn", "DropSummary", "FrameStream"]

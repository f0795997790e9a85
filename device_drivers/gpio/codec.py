"""Sans-I/O Wiegand bit collector: falling edges on D0/D1 with their times in, frames out; a frame
ends after ``frame_gap`` of silence (readers send bits every ~2 ms, frames tens of ms apart). The
frames are decoded by a profile's Wiegand layouts (:class:`~device_drivers.card.codec.CardCodec`).
No I/O and no asyncio here."""

from __future__ import annotations

from typing import Literal


class WiegandBitCollector:
    """Collects Wiegand bits from D0/D1 falling edges (D0 = a 0 bit, D1 = a 1 bit)."""

    def __init__(self, frame_gap_s: float = 0.025, max_bits: int = 128) -> None:
        self.frame_gap_ns = int(frame_gap_s * 1e9)
        self.max_bits = max_bits
        self._value = 0
        self._count = 0
        self._last_ns = 0

    def edge(self, line: Literal[0, 1], at_ns: int) -> tuple[int, int] | None:
        """Record a bit; returns the previous frame ``(bits, value)`` if this edge starts a new one."""
        done = self.flush(at_ns)
        if self._count < self.max_bits:
            self._value = (self._value << 1) | line
            self._count += 1
        self._last_ns = at_ns
        return done

    def flush(self, now_ns: int) -> tuple[int, int] | None:
        """The frame collected so far if the line has been silent for the frame gap."""
        if self._count and now_ns - self._last_ns >= self.frame_gap_ns:
            frame = (self._count, self._value)
            self._count = self._value = 0
            return frame
        return None


__all__ = ["WiegandBitCollector"]

"""Simulated Wiegand lines: D0/D1 falling edges as a reader sends them (one bit every ~2 ms, real
monotonic times), standing where libgpiod would (see :class:`~device_drivers.gpio.driver.EdgeSource`).
Test and demo equipment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

from device_drivers.card.codec import CardCodec, CardData, card_from_text
from device_drivers.profiles import wiegand


class SimulatedWiegandLines:
    """Sends the frames given to :meth:`present` / :meth:`present_bits` as edges on D0/D1, each
    followed by ``frame_gap_s`` of silence."""

    def __init__(self, codec: CardCodec, bit_interval_s: float = 0.002, frame_gap_s: float = 0.06) -> None:
        self.codec = codec
        self.bit_interval_s = bit_interval_s
        self.frame_gap_s = frame_gap_s
        self.closed = False
        self._frames: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    def present(self, text: str) -> CardData:
        """Present a card written ``FC:NUMBER[/BITS]`` (default 26 bits), with correct parity."""
        card = card_from_text(self.codec, text)
        self.present_bits(card.bits, wiegand.unpack(bytes.fromhex(card.raw_hex), card.bits))
        return card

    def present_bits(self, bits: int, value: int) -> None:
        """Send ``bits`` bits of ``value`` (first bit the most significant), right or wrong."""
        self._frames.put_nowait((bits, value))

    async def edges(self) -> AsyncIterator[tuple[Literal[0, 1], int]]:
        # Edges carry the time they happened on the wire (as libgpiod's kernel timestamps do),
        # not when they are handled: a busy event loop then cannot cut a frame or join two.
        bit_ns, gap_ns = int(self.bit_interval_s * 1e9), int(self.frame_gap_s * 1e9)
        last_ns = 0
        while True:
            bits, value = await self._frames.get()
            start_ns = max(time.monotonic_ns(), last_ns + gap_ns)
            for index in range(bits):
                bit: Literal[0, 1] = 1 if (value >> (bits - 1 - index)) & 1 else 0
                last_ns = start_ns + index * bit_ns
                yield bit, last_ns

    def close(self) -> None:
        self.closed = True


__all__ = ["SimulatedWiegandLines"]

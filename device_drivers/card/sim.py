"""Card reader simulator: an EM4100/UID reader or a Wiegand-to-serial converter of a firmware
profile, speaking its real bytes over a pty or a TCP socket; ``present()`` a card, or inject
garbage, a bad checksum or bad parity. Test and demo equipment (see :mod:`device_drivers.registry`)."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

from device_drivers._io.sim import SimEndpoint, Simulator
from device_drivers.card.codec import CardCodec, CardData, card_from_text
from device_drivers.errors import DeviceError
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.framing import Frame


def _corrupt_checksum(profile: FirmwareProfile, frame: bytes) -> bytes:
    """``frame`` with its last checksum byte changed (still hex where the checksum is ASCII hex)."""
    index = len(frame) - len(profile.framing.end or b"") - 1
    out = bytearray(frame)
    out[index] = ord("0") if out[index] != ord("0") else ord("1")
    if profile.framing.checksum is not None and profile.framing.checksum.encoding == "binary":
        out[index] = frame[index] ^ 0x01
    return bytes(out)


class CardReaderSimulator(Simulator):
    """A card reader or Wiegand converter of ``profile``; while running it presents ``cards`` (if
    any) in turn every ``interval_s``, as a demo does."""

    def __init__(
        self,
        profile: FirmwareProfile,
        endpoint: SimEndpoint | None = None,
        *,
        cards: list[str] | None = None,
        interval_s: float = 5.0,
    ) -> None:
        super().__init__(endpoint)
        self.profile = profile
        self.codec = CardCodec(profile)
        self.cards = [self.card(text) for text in cards or []]
        self.interval_s = interval_s
        self._demo: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if self.cards:
            self._demo = asyncio.create_task(self._present_in_turn(), name=f"demo-cards:{self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._demo
            self._demo = None
        await super().__aexit__(exc_type, exc, tb)

    async def _present_in_turn(self) -> None:
        index = 0
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(DeviceError):
                self.present(self.cards[index % len(self.cards)])
            index += 1

    def card(self, text: str) -> CardData:
        """A card from text (see :func:`card_from_text`)."""
        return card_from_text(self.codec, text)

    def present(self, card: CardData | str) -> bytes:
        """Send the frame of ``card``; returns the bytes sent."""
        if isinstance(card, str):
            card = self.card(card)
        return self._send(self.codec.encode(card))

    def present_bad_checksum(self, card: CardData | str) -> bytes:
        """Send ``card`` with a wrong checksum."""
        if isinstance(card, str):
            card = self.card(card)
        return self._send(_corrupt_checksum(self.profile, self.codec.encode(card)))

    def present_bad_parity(self, card: CardData | str) -> bytes:
        """Send a Wiegand ``card`` with its last bit flipped (the frame check stays valid)."""
        if isinstance(card, str):
            card = self.card(card)
        if self.profile.wiegand is None:
            raise ValueError("parity exists only on Wiegand converters")
        raw = bytearray(bytes.fromhex(card.raw_hex))
        raw[(card.bits - 1) // 8] ^= 0x80 >> ((card.bits - 1) % 8)
        return self._send(self.codec.frames.encode(Frame(data=bytes([card.bits]) + bytes(raw))))


__all__ = ["CardReaderSimulator"]

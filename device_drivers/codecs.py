"""Pick the sans-I/O codec a firmware profile needs."""

from __future__ import annotations

from typing import Any, Protocol

from device_drivers.card_codec import CardCodec
from device_drivers.profile import FirmwareProfile
from device_drivers.turnstile_codec import TurnstileCodec


class Codec(Protocol):
    """What every codec offers: ``decode(buffer) -> (value, consumed)`` and ``encode(value) -> bytes``."""

    def decode(self, buffer: bytes | bytearray | memoryview) -> tuple[Any, int]: ...

    def encode(self, value: Any) -> bytes: ...


def codec_for(profile: FirmwareProfile, address: int | None = None) -> CardCodec | TurnstileCodec:
    """The codec for ``profile``'s family; ``address`` overrides a turnstile profile's RS-485 address."""
    if profile.family == "turnstile":
        return TurnstileCodec(profile, address)
    return CardCodec(profile)


__all__ = ["Codec", "codec_for"]

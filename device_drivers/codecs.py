"""Pick the sans-I/O codec a firmware profile needs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from device_drivers.card_codec import CardCodec
from device_drivers.errors import IncompleteFrame, MalformedFrame
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


def drain(codec: Codec, buffer: bytearray) -> Iterator[Any]:
    """Decode every complete frame in ``buffer``, deleting the bytes consumed as it goes.

    Yields decoded values and, for bytes that had to be dropped, the :class:`MalformedFrame` itself
    (not raised), so a caller can log and count it and go on. Stops at an incomplete frame, whose
    bytes stay in ``buffer``. Each step consumes at least one byte, so this always ends.
    """
    while buffer:
        try:
            value, consumed = codec.decode(buffer)
        except IncompleteFrame:
            return
        except MalformedFrame as err:
            del buffer[: err.consumed]
            yield err
            continue
        del buffer[:consumed]
        yield value


__all__ = ["Codec", "codec_for", "drain"]

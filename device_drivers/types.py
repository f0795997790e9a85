"""Typed readings the drivers hand to the agent: plain, immutable dataclasses.

Times are timezone-aware UTC ``datetime``s taken when the bytes arrived; ``received_ns`` is the
same instant on ``time.monotonic_ns()``, for latency measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from device_drivers.profile import Direction

TurnstileEventKind = Literal[
    "passage_done", "passage_timeout", "forced", "tailgating", "fire_alarm", "door_held_open", "fault", "nak"
]


def utc_now() -> datetime:
    """Now, UTC, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card presented at a reader.

    ``credential`` is the normalised card number the roster matches (see
    :class:`device_drivers.card_codec.CardData`); ``card_format`` the profile's format label
    (``em4100``, ``uid``, ``H10301``...); ``raw_hex`` and ``bits`` the payload as received.
    """

    device_id: str
    credential: str
    card_format: str
    facility_code: int | None
    card_number: int | None
    raw_hex: str
    bits: int
    at: datetime
    received_ns: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class TurnstileEvent:
    """Something a turnstile or door controller reported.

    ``direction`` is set for passage, timeout, forced and tailgating events where the device says
    it; ``detail`` names a fault (from the profile's fault codes); ``value`` is the raw byte behind it
    (fault code, or the command code a ``nak`` refers to).
    """

    device_id: str
    kind: TurnstileEventKind
    direction: Direction | None
    at: datetime
    detail: str | None = None
    value: int | None = None
    received_ns: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    """The device answers again (port opened; or first contact)."""

    device_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    """The device is gone (port unplugged, peer closed, cannot open); the driver keeps retrying."""

    device_id: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DeviceTamper:
    """A reader's tamper switch or power supply changed state (OSDP local status)."""

    device_id: str
    tampered: bool
    power_failure: bool
    at: datetime


Reading = CardRead | TurnstileEvent | DeviceOnline | DeviceOffline | DeviceTamper
"""Everything ``driver.readings()`` yields."""

__all__ = [
    "CardRead",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceTamper",
    "Reading",
    "TurnstileEvent",
    "TurnstileEventKind",
    "utc_now",
]

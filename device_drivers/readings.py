"""Typed readings the drivers hand to the agent: plain, immutable dataclasses.

Times are timezone-aware UTC ``datetime``s taken when the bytes arrived; ``received_ns`` is the
same instant on ``time.monotonic_ns()``, for latency measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from device_drivers.profiles.config import Direction

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
    :class:`device_drivers.card.codec.CardData`); ``card_format`` the profile's format label
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


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """A frame for analysis: BGR ``HxWx3`` uint8; ``seq`` counts delivered frames from 1 (gaps are
    frames replaced before anyone took them); ``received_ns`` is ``time.monotonic_ns()`` at capture."""

    device_id: str
    frame: NDArray[np.uint8] = field(repr=False, compare=False)
    at: datetime
    seq: int
    received_ns: int = field(default=0, compare=False)

    @property
    def monotonic_s(self) -> float:
        """Capture time in seconds on the monotonic clock (for trackers and tamper checks)."""
        return self.received_ns / 1e9


@dataclass(frozen=True, slots=True)
class CameraOnline(DeviceOnline):
    """The camera delivers good frames (again)."""


@dataclass(frozen=True, slots=True)
class CameraOffline(DeviceOffline):
    """The camera delivers nothing usable; ``reason`` says why (``no frames for 10 s``, ``cannot open``)."""


CameraItem = CameraFrame | CameraOnline | CameraOffline
"""Everything ``camera.frames()`` (and ``camera.readings()``) yields."""

__all__ = [
    "CameraFrame",
    "CameraItem",
    "CameraOffline",
    "CameraOnline",
    "CardRead",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceTamper",
    "Reading",
    "TurnstileEvent",
    "TurnstileEventKind",
    "utc_now",
]

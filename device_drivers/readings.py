"""Typed readings the drivers hand to the agent: plain, immutable dataclasses.

Times are timezone-aware UTC ``datetime``s taken when the bytes arrived; ``received_ns`` is the
same instant on ``time.monotonic_ns()``, for latency measurements.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

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


AttendanceMethod = Literal["fingerprint", "face", "card", "password", "palm", "other"]
"""How a vendor terminal verified a person (from its verify type / verify mode)."""


@dataclass(frozen=True, slots=True)
class TerminalAttendance:
    """An attendance record a vendor terminal (ZKTeco, Hikvision) made itself.

    ``user_id`` is the terminal's own user id (ZKTeco user id, Hikvision employee number); the agent
    maps it to a roster person, never guesses one. ``terminal_time`` is the terminal's timestamp
    (its local clock, made aware with the device's configured timezone, then UTC); ``at`` is when the
    gateway received it. ``record_id`` is unique per record of this terminal and stable across
    re-reads (the agent derives the event id from it, so a record delivered again in a crash window
    carries the same event id). ``punch`` is the terminal's state key (``check_in``, ``check_out``,
    ``break_out``, ``break_in``, ``overtime_in``, ``overtime_out``) where it says one. ``raw`` is the
    record as received, JSON-able, for the ``attendance.unmapped`` event.

    Drivers that hold a high-water mark advance it in ``acknowledge(reading)``, which the agent calls
    once the event made from the reading is committed to the outbox (in reading order).
    """

    device_id: str
    user_id: str
    method: AttendanceMethod
    terminal_time: datetime
    at: datetime
    record_id: str
    punch: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


TerminalAccessKind = Literal[
    "granted", "denied", "door_open", "door_closed", "door_held_open", "forced", "tamper"
]


@dataclass(frozen=True, slots=True)
class TerminalAccess:
    """An access-control event a terminal or access controller decided or saw itself (Hikvision).

    ``granted`` / ``denied``: the terminal verified (or refused) ``user_id`` / ``card`` by ``method``;
    ``reason`` is the terminal's own reason for a denial (``card_unknown``, ``face_mismatch``,
    ``expired``, ``outside_schedule``, ...). The door kinds name ``door`` (the terminal's door number).
    ``record_id`` is the terminal's event serial number (stable, for catch-up de-duplication).
    Acknowledged like :class:`TerminalAttendance`.
    """

    device_id: str
    kind: TerminalAccessKind
    terminal_time: datetime
    at: datetime
    record_id: str
    door: int | None = None
    user_id: str | None = None
    card: str | None = None
    method: AttendanceMethod | None = None
    reason: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class MotionDetected:
    """A camera's own motion detector changed state (ONVIF ``RuleEngine/CellMotionDetector``...)."""

    device_id: str
    active: bool
    at: datetime
    topic: str = ""
    """The device's event topic, as it named it."""


InputRole = Literal["door_contact", "fire_alarm", "generic"]


@dataclass(frozen=True, slots=True)
class DigitalInput:
    """A digital input of an I/O module changed state (Modbus discrete input or coil read back).

    ``name`` is the input's configured name; ``active`` is the logical state after the input's
    configured polarity (door contact: open; fire alarm: in alarm). ``role`` and ``target`` come from
    the input's config: a door contact names the door it watches, a fire alarm the zone it covers.
    """

    device_id: str
    name: str
    active: bool
    role: InputRole
    at: datetime
    target: str | None = None


Reading = (
    CardRead
    | TurnstileEvent
    | DeviceOnline
    | DeviceOffline
    | DeviceTamper
    | TerminalAttendance
    | TerminalAccess
    | MotionDetected
    | DigitalInput
)
"""Everything ``driver.readings()`` yields."""


class UndecodedPicture(Protocol):
    """A frame's picture still compressed (an MJPEG packet): its ``shape`` is known from the header,
    ``decode()`` gives the pixels (decoded once, however many threads ask at once) or raises
    :class:`~device_drivers.errors.CameraError` (code ``bad_frame``) when the data does not decode."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def decode(self) -> NDArray[np.uint8]: ...


@dataclass(frozen=True, slots=True)
class CameraFrame:
    """A frame for analysis: BGR ``HxWx3`` uint8; ``seq`` counts delivered frames from 1 (gaps are
    frames replaced before anyone took them); ``received_ns`` is ``time.monotonic_ns()`` at capture.

    ``picture`` is the pixels, or (an MJPEG camera) the JPEG packet not yet decoded: :attr:`frame`
    decodes it the first time it is read, so a frame replaced before an inference thread took it
    is never decoded, and the decoding happens on that thread, not on the capture thread or the
    event loop. :attr:`shape` never decodes."""

    device_id: str
    picture: NDArray[np.uint8] | UndecodedPicture = field(repr=False, compare=False)
    at: datetime
    seq: int
    received_ns: int = field(default=0, compare=False)
    original: NDArray[np.uint8] | None = field(default=None, repr=False, compare=False)
    """The picture at the main stream's resolution when ``frame`` is smaller (``analysis_width``):
    the decoded frame before it was shrunk, or the JPEG packet (1-D bytes) an MJPEG frame was
    decoded from at a reduced scale. None when ``frame`` is all there is (a sub-stream, no shrink)."""

    @property
    def frame(self) -> NDArray[np.uint8]:
        """The pixels (decoded on first use: blocking for a few ms, so read it off the event loop
        unless :attr:`decoded`). Raises ``CameraError`` (``bad_frame``) for a packet that does
        not decode."""
        picture = self.picture
        if isinstance(picture, np.ndarray):
            return picture
        pixels = picture.decode()
        object.__setattr__(self, "picture", pixels)  # the same array for every reader
        return pixels

    @property
    def decoded(self) -> bool:
        """Whether :attr:`frame` is free to read (the pixels are there)."""
        return isinstance(self.picture, np.ndarray)

    @property
    def shape(self) -> tuple[int, ...]:
        """``frame.shape``, without decoding."""
        return tuple(self.picture.shape)

    @property
    def monotonic_s(self) -> float:
        """Capture time in seconds on the monotonic clock (for trackers and tamper checks)."""
        return self.received_ns / 1e9

    def full_resolution(self) -> NDArray[np.uint8]:
        """The picture at the best resolution this frame holds, for evidence (decodes a kept JPEG
        packet, so call it off the event loop); ``frame`` when nothing better was kept or the packet
        does not decode."""
        if self.original is None:
            return self.frame
        if self.original.ndim == 3:
            return self.original
        import cv2  # only evidence needs it; readings stay importable without OpenCV loaded

        decoded = cv2.imdecode(self.original, cv2.IMREAD_COLOR)
        return self.frame if decoded is None else np.asarray(decoded, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class CameraOnline(DeviceOnline):
    """The camera delivers good frames (again)."""


@dataclass(frozen=True, slots=True)
class CameraOffline(DeviceOffline):
    """The camera delivers nothing usable; ``reason`` says why (``no frames for 10 s``, ``cannot open``)."""


CameraItem = CameraFrame | CameraOnline | CameraOffline
"""Everything ``camera.frames()`` (and ``camera.readings()``) yields."""

__all__ = [
    "AttendanceMethod",
    "CameraFrame",
    "CameraItem",
    "CameraOffline",
    "CameraOnline",
    "CardRead",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceTamper",
    "DigitalInput",
    "InputRole",
    "MotionDetected",
    "Reading",
    "TerminalAccess",
    "TerminalAccessKind",
    "TerminalAttendance",
    "TurnstileEvent",
    "TurnstileEventKind",
    "UndecodedPicture",
    "utc_now",
]

"""Sans-I/O parts of ISAPI: the ``multipart/mixed`` alert stream, access-control event records
(from the stream and from an ``AcsEvent`` search) and their mapping to readings.

Codes are Hikvision's own (HCNetSDK ``MAJOR_*`` / ``MINOR_*``, the same numbers ISAPI puts in
``majorEventType``/``subEventType`` and ``major``/``minor``); docs/HIKVISION.md has the table.
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from device_drivers.readings import AttendanceMethod, TerminalAccess, TerminalAccessKind, TerminalAttendance

MAJOR_ALARM = 0x1
MAJOR_EXCEPTION = 0x2
MAJOR_OPERATION = 0x3
MAJOR_EVENT = 0x5

# major 5 (event): verifications (method, denial reason).
MINOR_LEGAL_CARD_PASS = 0x01
MINOR_CARD_AND_PSW_PASS = 0x02
MINOR_CARD_AND_PSW_FAIL = 0x03
MINOR_CARD_NO_RIGHT = 0x06
MINOR_CARD_INVALID_PERIOD = 0x07
MINOR_CARD_OUT_OF_DATE = 0x08
MINOR_INVALID_CARD = 0x09
MINOR_ANTI_SNEAK_FAIL = 0x0A
MINOR_LOCK_OPEN = 0x15
MINOR_LOCK_CLOSE = 0x16
MINOR_DOOR_OPEN_NORMAL = 0x19
MINOR_DOOR_CLOSE_NORMAL = 0x1A
MINOR_DOOR_OPEN_ABNORMAL = 0x1B
MINOR_DOOR_OPEN_TIMEOUT = 0x1C
MINOR_FINGERPRINT_COMPARE_PASS = 0x26
MINOR_FINGERPRINT_COMPARE_FAIL = 0x27
MINOR_FACE_VERIFY_PASS = 0x4B
MINOR_FACE_VERIFY_FAIL = 0x4C
# major 1 (alarm): the case or a reader opened.
MINOR_HOST_DESMANTLE_ALARM = 0x404
MINOR_CARD_READER_DESMANTLE_ALARM = 0x406

GRANTED: dict[int, AttendanceMethod] = {
    MINOR_LEGAL_CARD_PASS: "card",
    MINOR_CARD_AND_PSW_PASS: "card",
    MINOR_FINGERPRINT_COMPARE_PASS: "fingerprint",
    MINOR_FACE_VERIFY_PASS: "face",
}
DENIED: dict[int, tuple[AttendanceMethod, str]] = {
    MINOR_CARD_AND_PSW_FAIL: ("card", "password_mismatch"),
    MINOR_CARD_NO_RIGHT: ("card", "no_right"),
    MINOR_CARD_INVALID_PERIOD: ("card", "outside_schedule"),
    MINOR_CARD_OUT_OF_DATE: ("card", "expired"),
    MINOR_INVALID_CARD: ("card", "card_unknown"),
    MINOR_ANTI_SNEAK_FAIL: ("card", "anti_passback"),
    MINOR_FINGERPRINT_COMPARE_FAIL: ("fingerprint", "fingerprint_mismatch"),
    MINOR_FACE_VERIFY_FAIL: ("face", "face_mismatch"),
}
DOOR: dict[int, TerminalAccessKind] = {
    MINOR_LOCK_OPEN: "door_open",
    MINOR_LOCK_CLOSE: "door_closed",
    MINOR_DOOR_OPEN_NORMAL: "door_open",
    MINOR_DOOR_CLOSE_NORMAL: "door_closed",
    MINOR_DOOR_OPEN_ABNORMAL: "forced",
    MINOR_DOOR_OPEN_TIMEOUT: "door_held_open",
}
TAMPER = frozenset({MINOR_HOST_DESMANTLE_ALARM, MINOR_CARD_READER_DESMANTLE_ALARM})

PUNCH = {
    "checkIn": "check_in",
    "checkOut": "check_out",
    "breakOut": "break_out",
    "breakIn": "break_in",
    "overtimeIn": "overtime_in",
    "overtimeOut": "overtime_out",
}
"""``attendanceStatus`` → our punch key (``undefined`` is no punch)."""

_VERIFY_MODES: dict[str, AttendanceMethod] = {
    "card": "card",
    "face": "face",
    "fingerprint": "fingerprint",
    "fp": "fingerprint",
    "password": "password",
    "employeeNoAndPw": "password",
}

MAX_HEADER_BYTES = 8192


class MalformedPart(ValueError):
    """A part of the alert stream, or an event in it, that cannot be read; ``code`` names why."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# -- multipart/mixed -------------------------------------------------------------------------------


def boundary_from_content_type(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/...; boundary=...`` header value (quotes removed)."""
    if not content_type or not content_type.lower().startswith("multipart/"):
        raise MalformedPart(f"not a multipart stream: {content_type!r}", "not_multipart")
    found = re.search(r'boundary\s*=\s*"?([^";,]+)"?', content_type, re.IGNORECASE)
    if not found:
        raise MalformedPart(f"no boundary in {content_type!r}", "no_boundary")
    return found.group(1).strip().encode("latin-1")


@dataclass(frozen=True, slots=True)
class Part:
    """One part: its headers (lower-case names) and body."""

    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Dropped:
    """Bytes the parser threw away: ``reason`` is ``garbage`` (between parts), ``oversize`` (a part
    larger than the bound, skipped), ``bad_headers`` (unreadable part headers)."""

    reason: str
    size: int


class MultipartParser:
    """Feed it the stream's bytes as they come; it returns the complete parts (and what it dropped).

    A part ends where its ``Content-Length`` says, or else at the next boundary line. Anything that
    is not a part (garbage between parts, a part cut off by a reconnect that never was) is skipped
    up to the next boundary line: the parser resynchronises. No part is held beyond ``max_part_bytes``.
    """

    def __init__(self, boundary: bytes, *, max_part_bytes: int = 2_000_000) -> None:
        self.delimiter = b"--" + boundary
        self.max_part_bytes = max_part_bytes
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None
        self._length: int | None = None
        self._skip = 0  # bytes of an oversize part still to throw away
        self._skipped = 0

    def feed(self, data: bytes) -> list[Part | Dropped]:
        self._buf += data
        out: list[Part | Dropped] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
                continue
            if self._headers is None:
                if not self._seek_headers(out):
                    return out
                continue
            if not self._read_body(out):
                return out

    def _seek_headers(self, out: list[Part | Dropped]) -> bool:
        at = self._buf.find(self.delimiter)
        if at < 0:
            # Keep a tail that may be the start of a delimiter; the rest is garbage.
            keep = len(self.delimiter) + 1
            if len(self._buf) > keep:
                self._drop(len(self._buf) - keep, out)
            return False
        if at > 0:
            self._drop(at, out)
        end = self._buf.find(b"\r\n\r\n", len(self.delimiter))
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                del self._buf[: len(self.delimiter)]
                out.append(Dropped("bad_headers", len(self.delimiter)))
                return True
            return False
        head = bytes(self._buf[len(self.delimiter) : end])
        del self._buf[: end + 4]
        headers: dict[str, str] = {}
        lines = head.split(b"\r\n")
        if lines and lines[0].strip() == b"--":  # closing delimiter: the stream ends here
            return True
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        length: int | None = None
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                length = None
            if length is not None and length < 0:
                length = None
        if length is not None and length > self.max_part_bytes:
            self._skip = length
            out.append(Dropped("oversize", length))
            return True
        self._headers, self._length = headers, length
        return True

    def _read_body(self, out: list[Part | Dropped]) -> bool:
        assert self._headers is not None
        if self._length is not None:
            if len(self._buf) < self._length:
                return False
            body = bytes(self._buf[: self._length])
            del self._buf[: self._length]
        else:
            at = self._buf.find(self.delimiter)
            if at < 0:
                if len(self._buf) > self.max_part_bytes:
                    out.append(Dropped("oversize", len(self._buf)))
                    self._buf.clear()
                    self._headers = None
                return False
            body = bytes(self._buf[:at])
            del self._buf[:at]
            if body.endswith(b"\r\n"):
                body = body[:-2]
        out.append(Part(self._headers, body))
        self._headers, self._length = None, None
        return True

    def _drop(self, n: int, out: list[Part | Dropped]) -> None:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        if chunk.strip():  # the CRLF between parts is not garbage
            out.append(Dropped("garbage", len(chunk)))


def encode_part(
    content_type: str, body: bytes, boundary: bytes, extra: Mapping[str, str] | None = None
) -> bytes:
    """One part as a terminal writes it (``--boundary``, headers with ``Content-Length``, body, CRLF)."""
    lines = [
        b"--" + boundary,
        f"Content-Type: {content_type}".encode(),
        f"Content-Length: {len(body)}".encode(),
    ]
    lines += [f"{k}: {v}".encode() for k, v in (extra or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body + b"\r\n"


# -- access-control event records ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AcsRecord:
    """An access-control event, from the stream or an ``AcsEvent`` search, in one shape."""

    serial: int | None
    major: int
    minor: int
    time: datetime
    employee_no: str | None = None
    card_no: str | None = None
    verify_mode: str | None = None
    door: int | None = None
    attendance_status: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A keep-alive part (``videoloss`` ``inactive``, or JSON ``heartBeat``)."""


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event of a type this driver does not turn into readings (motion, ...)."""

    event_type: str


def parse_time(text: str, default_tz: tzinfo) -> datetime:
    """An ISAPI time (``2026-09-01T08:00:00+08:00``, or without offset: terminal local time) as UTC."""
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError) as err:
        raise MalformedPart(f"bad time {text!r}", "bad_time") from err
    if at.tzinfo is None:
        at = at.replace(tzinfo=default_tz)
    return at.astimezone(UTC)


def format_time(at: datetime, tz: tzinfo) -> str:
    """A time as ISAPI writes it: the terminal's local time with its offset, whole seconds."""
    return at.astimezone(tz).replace(microsecond=0).isoformat()


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise MalformedPart(f"{name} is not a number: {value!r}", "bad_event")
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise MalformedPart(f"{name} is not a number: {value!r}", "bad_event") from err


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def record_from_info(info: Mapping[str, Any], default_tz: tzinfo) -> AcsRecord:
    """An ``AcsEvent`` search result (``InfoList`` item: ``major``, ``minor``, ``time``, ...)."""
    if not isinstance(info, Mapping):
        raise MalformedPart("an AcsEvent item is not an object", "bad_event")
    return AcsRecord(
        serial=_int(info["serialNo"], "serialNo") if info.get("serialNo") is not None else None,
        major=_int(info.get("major"), "major"),
        minor=_int(info.get("minor"), "minor"),
        time=parse_time(str(info.get("time", "")), default_tz),
        employee_no=_text(info.get("employeeNoString") or info.get("employeeNo")),
        card_no=_text(info.get("cardNo")),
        verify_mode=_text(info.get("currentVerifyMode")),
        door=_int(info["doorNo"], "doorNo") if info.get("doorNo") is not None else None,
        attendance_status=_text(info.get("attendanceStatus")),
        raw=dict(info),
    )


def parse_part(part: Part, default_tz: tzinfo) -> AcsRecord | Heartbeat | OtherEvent | None:
    """What a part says; None for a picture. Raises :class:`MalformedPart`."""
    kind = part.content_type
    if kind.startswith("image/"):
        return None
    if kind == "application/json":
        try:
            doc = json.loads(part.body)
        except (ValueError, UnicodeDecodeError) as err:
            raise MalformedPart(f"part is not JSON: {err}", "bad_json") from err
        if not isinstance(doc, dict):
            raise MalformedPart("JSON part is not an object", "bad_json")
        event_type = str(doc.get("eventType", ""))
        if event_type == "AccessControllerEvent":
            acs = doc.get("AccessControllerEvent")
            if not isinstance(acs, dict):
                raise MalformedPart("AccessControllerEvent without its object", "bad_event")
            info = dict(acs)
            info["major"] = acs.get("majorEventType")
            info["minor"] = acs.get("subEventType")
            info["time"] = doc.get("dateTime", "")
            record = record_from_info(info, default_tz)
            return AcsRecord(**{**_fields(record), "raw": doc})
        if event_type in ("heartBeat", "heartbeat"):
            return Heartbeat()
        return OtherEvent(event_type or "unknown")
    if kind in ("application/xml", "text/xml"):
        try:
            root = ET.fromstring(part.body)
        except ET.ParseError as err:
            raise MalformedPart(f"part is not XML: {err}", "bad_xml") from err
        values = {el.tag.rsplit("}", 1)[-1]: (el.text or "").strip() for el in root.iter()}
        event_type = values.get("eventType", "")
        if event_type == "videoloss" and values.get("eventState") == "inactive":
            return Heartbeat()
        return OtherEvent(event_type or "unknown")
    raise MalformedPart(f"part of type {kind or 'none'!r}", "bad_part_type")


def _fields(record: AcsRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in AcsRecord.__slots__}


def record_id(record: AcsRecord) -> str:
    """The terminal's event serial number; for firmware that sends none, a digest of the event."""
    if record.serial is not None:
        return str(record.serial)
    key = f"{record.time.isoformat()}|{record.major}|{record.minor}|{record.employee_no}|{record.card_no}"
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _method(record: AcsRecord, by_code: AttendanceMethod) -> AttendanceMethod:
    # The code says what was verified; a combined verify mode (``cardOrFace``) does not. Only a
    # card code without a card number, under a single-method mode, is read from the mode.
    mode = record.verify_mode
    if mode in _VERIFY_MODES and by_code == "card" and record.card_no is None:
        return _VERIFY_MODES[mode]
    return by_code


def to_readings(
    device_id: str, record: AcsRecord, *, received_at: datetime, attendance: bool
) -> list[TerminalAccess | TerminalAttendance]:
    """The readings an event gives: none (a code we do not map), one access event, and for a
    granted verification that marks attendance also an attendance record (its ``record_id`` is the
    serial with ``.att``, so the two events have different ids)."""
    rid = record_id(record)
    common: dict[str, Any] = {
        "device_id": device_id,
        "terminal_time": record.time,
        "at": received_at,
        "record_id": rid,
        "raw": record.raw,
    }
    if record.major == MAJOR_EVENT and record.minor in GRANTED:
        method = _method(record, GRANTED[record.minor])
        access = TerminalAccess(
            kind="granted",
            door=record.door,
            user_id=record.employee_no,
            card=record.card_no,
            method=method,
            **common,
        )
        out: list[TerminalAccess | TerminalAttendance] = [access]
        status = record.attendance_status
        marks = status is not None and status != "undefined"
        if record.employee_no and (marks or attendance):
            out.append(
                TerminalAttendance(
                    device_id=device_id,
                    user_id=record.employee_no,
                    method=method,
                    terminal_time=record.time,
                    at=received_at,
                    record_id=rid + ".att",
                    punch=PUNCH.get(status or ""),
                    raw=record.raw,
                )
            )
        return out
    if record.major == MAJOR_EVENT and record.minor in DENIED:
        method, reason = DENIED[record.minor]
        return [
            TerminalAccess(
                kind="denied",
                door=record.door,
                user_id=record.employee_no,
                card=record.card_no,
                method=_method(record, method),
                reason=reason,
                **common,
            )
        ]
    if record.major == MAJOR_EVENT and record.minor in DOOR:
        return [TerminalAccess(kind=DOOR[record.minor], door=record.door, **common)]
    if record.major == MAJOR_ALARM and record.minor in TAMPER:
        return [TerminalAccess(kind="tamper", door=record.door, **common)]
    return []


def serial_of(record_id_text: str) -> int | None:
    """The serial number a reading's ``record_id`` carries (None for a serial-less record)."""
    head = record_id_text.split(".", 1)[0]
    return int(head) if head.isdigit() else None


__all__ = [
    "DENIED",
    "DOOR",
    "GRANTED",
    "TAMPER",
    "AcsRecord",
    "Dropped",
    "Heartbeat",
    "MalformedPart",
    "MultipartParser",
    "OtherEvent",
    "Part",
    "boundary_from_content_type",
    "encode_part",
    "format_time",
    "parse_part",
    "parse_time",
    "record_from_info",
    "record_id",
    "serial_of",
    "to_readings",
]

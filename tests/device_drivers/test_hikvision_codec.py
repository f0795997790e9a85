"""The ISAPI alert stream's multipart parser and the event mapping, from byte vectors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_drivers.hikvision import codec
from device_drivers.hikvision.codec import Dropped, MultipartParser, Part

B = b"MIME_boundary"
# A part as a DS-K1T671M writes it on the alert stream (newer firmware: JSON event parts).
EVENT = {
    "ipAddress": "192.0.2.11",
    "dateTime": "2026-09-01T08:00:00+08:00",
    "eventType": "AccessControllerEvent",
    "AccessControllerEvent": {
        "majorEventType": 5,
        "subEventType": 75,
        "employeeNoString": "S1001",
        "currentVerifyMode": "cardOrFace",
        "doorNo": 1,
        "serialNo": 1234,
        "attendanceStatus": "checkIn",
    },
}
HEARTBEAT = (
    b'<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">'
    b"<eventType>videoloss</eventType><eventState>inactive</eventState></EventNotificationAlert>"
)
STREAM = (
    codec.encode_part("application/xml", HEARTBEAT, B)
    + codec.encode_part("application/json", json.dumps(EVENT).encode(), B)
    + codec.encode_part("image/jpeg", b"\xff\xd8" + b"\x00" * 100 + b"\xff\xd9", B)
)


def _parts(items: list[Part | Dropped]) -> list[Part]:
    return [i for i in items if isinstance(i, Part)]


def test_boundary_from_header() -> None:
    assert codec.boundary_from_content_type("multipart/mixed; boundary=MIME_boundary") == B
    assert codec.boundary_from_content_type('multipart/mixed; boundary="abc def"') == b"abc def"
    with pytest.raises(codec.MalformedPart):
        codec.boundary_from_content_type("application/json")
    with pytest.raises(codec.MalformedPart):
        codec.boundary_from_content_type("multipart/mixed")


def test_parts_in_one_feed_and_byte_by_byte_are_the_same() -> None:
    whole = _parts(MultipartParser(B).feed(STREAM))
    assert [p.content_type for p in whole] == ["application/xml", "application/json", "image/jpeg"]
    parser = MultipartParser(B)
    trickled: list[Part | Dropped] = []
    for i in range(len(STREAM)):
        trickled += parser.feed(STREAM[i : i + 1])
    assert trickled == whole
    assert json.loads(whole[1].body) == EVENT


def test_part_without_content_length_ends_at_the_next_boundary() -> None:
    data = (
        b"--"
        + B
        + b'\r\nContent-Type: application/json\r\n\r\n{"a": 1}\r\n'
        + codec.encode_part("application/xml", HEARTBEAT, B)
    )
    parts = _parts(MultipartParser(B).feed(data))
    assert [p.body for p in parts] == [b'{"a": 1}', HEARTBEAT]


def test_garbage_between_parts_is_dropped_and_the_parser_resyncs() -> None:
    data = b"\x00\xffnoise noise\r\n" + STREAM[:40] + b"garbage" * 3 + STREAM
    items = MultipartParser(B).feed(data)
    assert any(isinstance(i, Dropped) and i.reason == "garbage" for i in items)
    # The cut part's Content-Length swallows some bytes; the three whole parts after it still arrive.
    assert [p.content_type for p in _parts(items)][-3:] == [
        "application/xml",
        "application/json",
        "image/jpeg",
    ]


def test_an_oversize_part_is_skipped_without_being_held() -> None:
    big = codec.encode_part("image/jpeg", b"x" * 50_000, B)
    parser = MultipartParser(B, max_part_bytes=10_000)
    items: list[Part | Dropped] = []
    for i in range(0, len(big), 1000):
        items += parser.feed(big[i : i + 1000])
        assert len(parser._buf) <= 10_000 + 1000
    items += parser.feed(STREAM)
    assert Dropped("oversize", 50_000) in items
    assert len(_parts(items)) == 3


def test_unbounded_part_without_length_is_dropped() -> None:
    parser = MultipartParser(B, max_part_bytes=5000)
    items = parser.feed(b"--" + B + b"\r\nContent-Type: image/jpeg\r\n\r\n" + b"y" * 6000)
    assert any(isinstance(i, Dropped) and i.reason == "oversize" for i in items)
    assert _parts(parser.feed(STREAM))[-1].content_type == "image/jpeg"


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300).filter(lambda b: b"--MIME" not in b), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=200), max_size=20),
)
def test_round_trip_whatever_the_chunking(bodies: list[bytes], cuts: list[int]) -> None:
    data = b"".join(codec.encode_part("application/octet-stream", b, B) for b in bodies)
    parser = MultipartParser(B)
    out: list[Part | Dropped] = []
    at = 0
    for n in cuts:
        out += parser.feed(data[at : at + n])
        at += n
    out += parser.feed(data[at:])
    assert [p.body for p in _parts(out)] == bodies


# -- events -------------------------------------------------------------------------------------


def _record(major: int, minor: int, **extra: object) -> codec.AcsRecord:
    info = {"major": major, "minor": minor, "time": "2026-09-01T08:00:00+08:00", "serialNo": 7, **extra}
    return codec.record_from_info(info, UTC)


NOW = datetime(2026, 9, 1, tzinfo=UTC)


def test_a_json_part_is_an_access_record_with_its_local_time_as_utc() -> None:
    part = _parts(MultipartParser(B).feed(STREAM))[1]
    record = codec.parse_part(part, UTC)
    assert isinstance(record, codec.AcsRecord)
    assert (record.serial, record.major, record.minor, record.employee_no) == (1234, 5, 0x4B, "S1001")
    assert record.time == datetime(2026, 9, 1, 0, 0, tzinfo=UTC)
    readings = codec.to_readings("hik", record, received_at=NOW, attendance=False)
    assert [type(r).__name__ for r in readings] == ["TerminalAccess", "TerminalAttendance"]
    assert readings[0].kind == "granted" and readings[0].method == "face"  # type: ignore[union-attr]
    assert readings[1].punch == "check_in" and readings[1].record_id == "1234.att"  # type: ignore[union-attr]
    assert readings[0].record_id == "1234"


def test_heartbeat_and_pictures() -> None:
    parts = _parts(MultipartParser(B).feed(STREAM))
    assert isinstance(codec.parse_part(parts[0], UTC), codec.Heartbeat)
    assert codec.parse_part(parts[2], UTC) is None


@pytest.mark.parametrize(
    ("major", "minor", "kind", "method", "reason"),
    [
        (5, 0x01, "granted", "card", None),
        (5, 0x4B, "granted", "face", None),
        (5, 0x26, "granted", "fingerprint", None),
        (5, 0x4C, "denied", "face", "face_mismatch"),
        (5, 0x06, "denied", "card", "no_right"),
        (5, 0x07, "denied", "card", "outside_schedule"),
        (5, 0x08, "denied", "card", "expired"),
        (5, 0x09, "denied", "card", "card_unknown"),
        (5, 0x15, "door_open", None, None),
        (5, 0x16, "door_closed", None, None),
        (5, 0x19, "door_open", None, None),
        (5, 0x1A, "door_closed", None, None),
        (5, 0x1B, "forced", None, None),
        (5, 0x1C, "door_held_open", None, None),
        (1, 0x404, "tamper", None, None),
    ],
)
def test_code_mapping(major: int, minor: int, kind: str, method: str | None, reason: str | None) -> None:
    (reading,) = codec.to_readings(
        "hik", _record(major, minor, cardNo="42"), received_at=NOW, attendance=False
    )
    assert (reading.kind, reading.reason) == (kind, reason)  # type: ignore[union-attr]
    if method is not None:
        assert reading.method == method  # type: ignore[union-attr]


def test_unmapped_codes_give_nothing_and_attendance_by_config() -> None:
    assert codec.to_readings("hik", _record(3, 0x70), received_at=NOW, attendance=False) == []
    granted = _record(5, 0x01, employeeNoString="S1", cardNo="9")
    assert len(codec.to_readings("hik", granted, received_at=NOW, attendance=False)) == 1
    both = codec.to_readings("hik", granted, received_at=NOW, attendance=True)
    assert both[1].punch is None  # type: ignore[union-attr]


def test_bad_parts_raise_with_a_code() -> None:
    bad = [
        (Part({"content-type": "application/json"}, b"{not json"), "bad_json"),
        (Part({"content-type": "application/xml"}, b"<a>"), "bad_xml"),
        (Part({"content-type": "text/plain"}, b"hi"), "bad_part_type"),
        (Part({"content-type": "application/json"}, b'{"eventType": "AccessControllerEvent"}'), "bad_event"),
    ]
    for part, code in bad:
        with pytest.raises(codec.MalformedPart) as err:
            codec.parse_part(part, UTC)
        assert err.value.code == code


def test_time_without_offset_is_the_terminals_local_time() -> None:
    tz = timezone(timedelta(hours=8))
    assert codec.parse_time("2026-09-01T08:00:00", tz) == datetime(2026, 9, 1, tzinfo=UTC)
    assert codec.format_time(datetime(2026, 9, 1, tzinfo=UTC), tz) == "2026-09-01T08:00:00+08:00"

"""A vendor terminal's records into the one contract (edge_agent.terminals), on a real outbox file.

Every event is read back from the outbox's SQLite file and validated against its published schema;
the family tests (tests/agent/test_zkteco_agent.py, test_hikvision_agent.py) run the same path end
to end from the terminals' simulators to a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from device_drivers import TerminalAccess, TerminalAttendance
from edge_agent.attendance import AttendanceBook
from edge_agent.config import GatewayConfig
from edge_agent.roster import RosterIndex
from edge_agent.services import Counters, Emitter
from edge_agent.terminals import TerminalRecords, record_event_id
from sync import Lane, Outbox, OutboxConfig, Person
from sync.contract import validate_event

SITE, GW = "term-site", "gw-term"
# Tuesday 2026-09-01, 08:02 in Shanghai: inside the 08:00 session, before it is late (5 min).
ON_TIME = datetime(2026, 9, 1, 0, 2, tzinfo=UTC)


def _config(**extra: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway": {"site": SITE, "id": GW, "timezone": "Asia/Shanghai"},
            "devices": [
                {"kind": "zkteco", "id": "zk-office", "host": "192.0.2.10"},
                {"kind": "hikvision", "id": "hik-gate", "host": "192.0.2.11"},
            ],
            "terminals": [
                {
                    "device": "zk-office",
                    "point": "office-a",
                    "attendance": {
                        "sessions": [{"id": "morning", "weekdays": ["tue"], "start": "08:00", "end": "12:00"}]
                    },
                },
                {"device": "hik-gate", "gate": "main-gate", "direction": "entry"},
            ],
            **extra,
        }
    )


ROSTER = RosterIndex(
    version=1,
    persons={
        "S1001": Person(id="S1001", name="Li Wei", role="student", group="7A", terminal_user_ids=["4711"]),
        # Enrolled as 17 on the office terminal only: 17 elsewhere is someone else, or no one.
        "T2001": Person(id="T2001", name="Wang Fang", role="teacher", terminal_user_ids=["zk-office:17"]),
    },
)


def _punch(user_id: str, at: datetime, n: int = 0, device: str = "zk-office") -> TerminalAttendance:
    return TerminalAttendance(
        device_id=device,
        user_id=user_id,
        method="fingerprint",
        terminal_time=at,
        at=at + timedelta(seconds=3),
        record_id=f"{user_id}|{at.isoformat()}|{n}",
        punch="check_in",
        raw={"user_id": user_id, "timestamp": at.replace(tzinfo=None), "status": 1, "punch": 0},
    )


async def _run(tmp_path: Path, readings: list[Any]) -> tuple[list[dict[str, Any]], Counters]:
    """Hand ``readings`` to a TerminalRecords on a real outbox; the committed events as published."""
    config = _config()
    counters = Counters()
    book = AttendanceBook(tmp_path)
    try:
        async with Outbox(tmp_path, OutboxConfig(), f"campus/{SITE}/{GW}/gateway") as outbox:
            emitter = Emitter(outbox, SITE, GW, counters)
            records = TerminalRecords(
                config, roster=lambda: ROSTER, attendance=book, emitter=emitter, counters=counters
            )
            for reading in readings:
                await records.on_record(reading)
            rows = [
                row
                for lane in (Lane.ALERT, Lane.ACCESS, Lane.TELEMETRY)
                for row in outbox.fetch_pending(lane, 0, 1000)
            ]
    finally:
        book.close()
    events = [json.loads(row.payload) for row in sorted(rows, key=lambda r: r.seq)]
    for event in events:
        validate_event(event)
    return events, counters


def test_terminal_attendance_is_mapped_to_the_roster_person_never_guessed(tmp_path: Path) -> None:
    late = ON_TIME + timedelta(minutes=20)
    evening = ON_TIME + timedelta(hours=10)  # 18:02 local: outside every session, still delivered
    events, counters = asyncio.run(
        _run(
            tmp_path,
            [
                _punch("4711", ON_TIME),
                _punch("17", late),  # scoped to this terminal: the teacher
                _punch("4711", late, 1),  # a second punch in the session: delivered, not first
                _punch("4711", evening),
                _punch("9999", ON_TIME),  # nobody's id
                _punch("17", ON_TIME, device="zk-other"),  # 17 is the teacher's on zk-office only
            ],
        )
    )
    kinds = [(e["type"].split(".")[2:4], e.get("subject")) for e in events]
    assert kinds == [
        (["attendance", "recorded"], "S1001"),
        (["attendance", "recorded"], "T2001"),
        (["attendance", "recorded"], "S1001"),
        (["attendance", "recorded"], "S1001"),
        (["attendance", "unmapped"], None),
        (["attendance", "unmapped"], None),
    ]
    first, teacher, again, evening_event, unmapped, other_terminal = (e["data"] for e in events)
    assert first["status"] == "present" and first["first_in_session"] is True
    assert first["session"]["id"] == "morning" and first["session"]["date"] == "2026-09-01"
    assert first["point"] == "office-a" and first["method"] == "fingerprint" and first["punch"] == "check_in"
    assert first["terminal_time"] == "2026-09-01T00:02:00.000Z"
    assert first["received_at"] == "2026-09-01T00:02:03.000Z"
    assert teacher["status"] == "late" and teacher["person"]["id"] == "T2001"
    assert again["first_in_session"] is False
    assert evening_event["session"] is None and evening_event["status"] == "outside_session"
    assert unmapped["terminal_user_id"] == "9999" and unmapped["record"]["timestamp"] == "2026-09-01T00:02:00"
    assert other_terminal["device"] == "zk-other" and other_terminal["point"] == "zk-other"
    # The event's time is the terminal's; its id is the record's, whatever time it arrives.
    assert events[0]["time"].startswith("2026-09-01T00:02:00")
    assert events[0]["id"] == record_event_id("zk-office", _punch("4711", ON_TIME).record_id, ON_TIME)
    assert counters.snapshot().get("attendance_unmapped") == 2


def test_the_same_record_read_twice_is_the_same_event_id(tmp_path: Path) -> None:
    events, _ = asyncio.run(_run(tmp_path, [_punch("4711", ON_TIME), _punch("4711", ON_TIME)]))
    assert len(events) == 2 and events[0]["id"] == events[1]["id"]
    other = record_event_id("zk-office", "another record", ON_TIME)
    assert other != events[0]["id"] and other[:10] == events[0]["id"][:10]  # same time, other record


def test_a_terminals_own_decisions_and_door_events(tmp_path: Path) -> None:
    def access(kind: Any, n: int, **fields: Any) -> TerminalAccess:
        return TerminalAccess(
            device_id="hik-gate", kind=kind, terminal_time=ON_TIME, at=ON_TIME, record_id=str(n), **fields
        )

    events, counters = asyncio.run(
        _run(
            tmp_path,
            [
                access("granted", 1, user_id="4711", card="0004711", method="card"),
                access("denied", 2, user_id="4711", method="face", reason="face_mismatch"),
                access("granted", 3, user_id="8888", method="face"),  # the terminal knows them, we do not
                access("denied", 9, method="face", reason="face_unknown"),  # a face it knows as no one
                access("door_open", 4, door=1),
                access("door_held_open", 5, door=1),
                access("forced", 6, door=1),
                access("tamper", 7),
                access("door_closed", 8, door=1),
            ],
        )
    )
    by_type = [e["type"] for e in events]
    # Alerts ride their own lane, ahead of the access lane (DESIGN.md lanes).
    assert sorted(by_type) == sorted(
        [
            "edu.campus.access.granted.v1",
            "edu.campus.access.denied.v1",
            "edu.campus.access.granted.v1",
            "edu.campus.access.denied.v1",
            "edu.campus.access.door_state.v1",
            "edu.campus.access.door_held_open.v1",
            "edu.campus.access.forced.v1",
            "edu.campus.device.tamper.v1",
            "edu.campus.access.door_state.v1",
        ]
    )
    granted = next(e for e in events if e["type"].endswith("granted.v1") and e.get("subject"))
    assert granted["data"]["gate"] == "main-gate" and granted["data"]["decided_by"] == "terminal"
    assert granted["data"]["person"]["id"] == "S1001" and "decision_us" not in granted["data"]
    unknown_face = next(e for e in events if e["data"].get("detail") == "face_unknown")
    assert unknown_face["data"]["credential"] == "unidentified_face" and "subject" not in unknown_face
    denied = next(e for e in events if e["type"].endswith("denied.v1"))
    assert denied["data"]["reason"] == "refused_by_terminal" and denied["data"]["detail"] == "face_mismatch"
    stranger = next(e for e in events if e["type"].endswith("granted.v1") and not e.get("subject"))
    assert "person" not in stranger["data"] and stranger["data"]["terminal_user_id"] == "8888"
    assert counters.snapshot().get("terminal_access_unmapped") == 1
    doors = [e["data"]["open"] for e in events if e["type"].endswith("door_state.v1")]
    assert doors == [True, False]


def test_terminals_must_name_a_terminal_device() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        _config(terminals=[{"device": "zk-ofice"}, {"device": "hik-gate"}, {"device": "hik-gate"}])
    text = str(err.value)
    assert "did you mean 'zk-office'" in text
    assert "hik-gate" in text and "twice" in text

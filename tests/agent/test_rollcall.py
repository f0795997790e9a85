"""Classroom roll-call (edge_agent/rollcall.py): the pure computation over real attendance records,
the closing component on the test clock over real SQLite files and a real outbox (restarts, a
session that closed while the agent was down, an attendance file of before the roll-call), and the
real gateway publishing ``attendance.session_closed`` to a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from edge_agent.attendance import ATTENDANCE_DB, MIGRATIONS, AttendanceBook
from edge_agent.config import AttendancePointConfig, parse_config
from edge_agent.rollcall import (
    Occurrence,
    RollCall,
    attendance_points,
    occurrences,
    roll_call,
    session_closed_data,
)
from edge_agent.services import Counters, Emitter
from sync import Lane, Outbox, OutboxConfig, Person, apply_migrations
from sync.contract import validate_event
from tests.agent.roster_data import snapshot
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway, gate_simulators
from tests.support.clock import FakeClock
from tests.support.wait import async_wait_until

SITE, GW = "rollcall-site", "gw-rollcall"
BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = date(2026, 12, 7)
SESSION_CLOSED = "edu.campus.attendance.session_closed.v1"

POINTS = {
    "room-7a": AttendancePointConfig.model_validate(
        {
            "sessions": [
                {
                    "id": "math-1",
                    "name": "7A mathematics",
                    "weekdays": ["mon"],
                    "start": "08:00",
                    "end": "08:45",
                    "late_after_min": 5,
                    "groups": ["7A"],
                },
                {
                    "id": "physics",
                    "weekdays": ["mon"],
                    "start": "09:00",
                    "end": "09:45",
                    "groups": ["7A"],
                    "close_after_min": 20,
                },
            ]
        }
    ),
    # Overlaps math-1 (08:30 < 08:45); open to anyone, so nobody is absent there.
    "lab": AttendancePointConfig.model_validate(
        {"sessions": [{"id": "club", "weekdays": ["mon"], "start": "08:30", "end": "09:30"}]}
    ),
}


def _person(pid: str, group: str | None, **extra: Any) -> Person:
    return Person.model_validate({"id": pid, "name": pid.title(), "role": "student", "group": group, **extra})


PERSONS = {
    p.id: p
    for p in (
        _person("ann", "7A"),
        _person("ben", "7A"),
        _person("cat", "7A"),
        _person("dan", "7B"),
        # Left the school before the session: no longer expected.
        _person("eve", "7A", valid_until="2026-11-30T00:00:00Z"),
    )
}


def _at(hhmm: str, day: date = MONDAY) -> datetime:
    """``hh:mm`` of ``day`` in Berlin, as the gates and cameras hand it to the book."""
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=BERLIN)


def _monday(point: str, session: str) -> Any:
    return next(o for o in occurrences(POINTS, MONDAY) if o.point == point and o.session.id == session)


def test_present_late_absent_evidence_method_and_seen_elsewhere(tmp_path: Path) -> None:
    book = AttendanceBook(tmp_path)
    room = POINTS["room-7a"]
    assert book.record("room-7a", room, PERSONS["ann"], _at("07:58"), method="card") is not None
    # Ann's face at the same point later: a duplicate, whose votes and method add to her record.
    assert book.record("room-7a", room, PERSONS["ann"], _at("08:01"), method="face", evidence=4) is None
    assert book.record("room-7a", room, PERSONS["ben"], _at("08:06"), method="face", evidence=3) is not None
    assert book.record("room-7a", room, PERSONS["dan"], _at("08:02")) is None  # 7B: not this class
    # Cat is in the lab during math: absent here, seen elsewhere.
    assert book.record("lab", POINTS["lab"], PERSONS["cat"], _at("08:35"), method="terminal") is not None
    sheet = roll_call(_monday("room-7a", "math-1"), book.rows_of(MONDAY), PERSONS, POINTS, BERLIN)
    closed_at = datetime(2026, 12, 7, 7, 45, tzinfo=UTC)
    data = session_closed_data(sheet, closed_at)
    assert data == {
        "point": "room-7a",
        "session": "math-1",
        "session_name": "7A mathematics",
        "day": "2026-12-07",
        "start": "08:00",
        "end": "08:45",
        "expected": 3,  # ann, ben, cat; not dan (7B), not eve (left)
        "present": ["ann"],
        "late": ["ben"],  # 08:06 > 08:00 + 5 min
        "absent": ["cat"],
        "evidence": {"ann": 5, "ben": 3},
        "method": {"ann": "face+card", "ben": "face"},
        "seen_elsewhere": ["cat"],
        "closed_at": "2026-12-07T07:45:00.000Z",
    }
    # The lab takes anyone: its expected persons are those recorded, nobody is absent there.
    lab = session_closed_data(
        roll_call(_monday("lab", "club"), book.rows_of(MONDAY), PERSONS, POINTS, BERLIN), closed_at
    )
    assert (lab["expected"], lab["present"], lab["absent"]) == (1, ["cat"], [])
    assert lab["method"] == {"cat": "terminal"} and lab["seen_elsewhere"] == []
    # Physics (09:00) does not overlap the lab's records... but the club (until 09:30) does.
    physics = roll_call(_monday("room-7a", "physics"), book.rows_of(MONDAY), PERSONS, POINTS, BERLIN)
    assert [a.person_id for a in physics.people if a.seen_elsewhere] == ["cat"]
    assert [a.status for a in physics.people] == ["absent", "absent", "absent"]
    book.close()


def test_closing_times_and_points_from_the_configuration() -> None:
    math, physics = _monday("room-7a", "math-1"), _monday("room-7a", "physics")
    assert math.closes == datetime(2026, 12, 7, 8, 45)  # at the end
    assert physics.closes == datetime(2026, 12, 7, 9, 20)  # start + close_after_min, before the end
    assert occurrences(POINTS, MONDAY + timedelta(days=1)) == []  # a Tuesday: no session
    config = parse_config(
        _gateway_yaml(
            Path("/tmp/unused"),
            "mqtt://127.0.0.1:1",
            "/dev/null",
            "/dev/null",
            timezone="UTC",
            start="08:00",
            end="09:00",
        )
    )
    points = attendance_points(config)
    assert sorted(points) == ["gate-1"] and [s.id for s in points["gate-1"].sessions] == ["lesson"]


# -- the component on the test clock ---------------------------------------------------------------


@dataclass
class Agentlet:
    """What the roll-call component needs, over files in one data directory."""

    book: AttendanceBook
    outbox: Outbox
    rollcall: RollCall
    counters: Counters
    task: asyncio.Task[None]

    def closed(self) -> list[dict[str, Any]]:
        rows = self.outbox.fetch_pending(Lane.ACCESS, 0, 1000)
        events = [json.loads(r.payload) for r in rows]
        for event in events:
            validate_event(event)
        return [e["data"] for e in events if e["type"] == SESSION_CLOSED]


@asynccontextmanager
async def agentlet(
    data: Path, clock: FakeClock, points: dict[str, AttendancePointConfig] = POINTS
) -> AsyncIterator[Agentlet]:
    book = AttendanceBook(data, now=clock.now)
    counters = Counters()
    try:
        async with Outbox(data, OutboxConfig(), f"campus/{SITE}/{GW}/gateway") as outbox:
            rollcall = RollCall(
                points,
                book=book,
                persons=lambda: PERSONS,
                emitter=Emitter(outbox, SITE, GW, counters),
                clock=clock,
                timezone=BERLIN,
                counters=counters,
            )
            await rollcall.start()
            task = asyncio.create_task(rollcall.run())
            try:
                # Asleep until its next look: only then does advancing the clock wake it.
                await async_wait_until(lambda: clock.sleepers == 1, 10, what="the roll-call asleep")
                yield Agentlet(book, outbox, rollcall, counters, task)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
    finally:
        book.close()


async def _closes(let: Agentlet, count: int) -> None:
    await async_wait_until(lambda: let.counters.get("rollcall_closed") >= count, 10, what=f"{count} closed")


def test_each_session_closes_once_across_restarts_and_while_down(tmp_path: Path) -> None:
    clock = FakeClock(start=_at("07:50"))

    async def scenario() -> None:
        async with agentlet(tmp_path, clock) as let:
            assert let.rollcall.current("room-7a") is not None
            assert let.book.record("room-7a", POINTS["room-7a"], PERSONS["ann"], _at("07:55")) is not None
            await clock.advance_and_settle(55 * 60)  # 08:45: math-1 ends
            await _closes(let, 1)
            assert [(d["session"], d["present"], d["absent"]) for d in let.closed()] == [
                ("math-1", ["ann"], ["ben", "cat"])
            ]
            await clock.advance_and_settle(60)
            assert let.counters.get("rollcall_closed") == 1
        # A restart at 08:50: math-1 is not published again.
        clock.advance(4 * 60)
        async with agentlet(tmp_path, clock) as let:
            assert let.counters.get("rollcall_closed") == 0
            # Physics opens at 08:45 (15 min before its start): the point's session now.
            assert let.rollcall.current("room-7a") == (_monday("room-7a", "physics"), "open")
        # Down from 08:50 to 10:00: physics (09:20) and the lab's club (09:30) closed meanwhile;
        # both are closed at the start, in the order they closed.
        clock.advance(70 * 60)
        async with agentlet(tmp_path, clock) as let:
            assert let.counters.get("rollcall_closed") == 2
            closed = let.closed()
            assert [d["session"] for d in closed] == ["math-1", "physics", "club"]
            assert closed[1]["absent"] == ["ann", "ben", "cat"] and closed[1]["start"] == "09:00"
            ids = [json.loads(r.payload)["id"] for r in let.outbox.fetch_pending(Lane.ACCESS, 0, 1000)]
            assert len(ids) == len(set(ids))
        # Monday's sessions are never closed on a later day, even if they were not closed then.
        other = tmp_path / "other"
        monday_clock = FakeClock(start=_at("07:00"))
        async with agentlet(other, monday_clock) as let:  # the file begins recording on Monday morning
            assert let.rollcall.current("lab") is None  # the club opens at 08:15
        tuesday = FakeClock(start=_at("10:00", MONDAY + timedelta(days=1)))
        async with agentlet(other, tuesday) as let:
            assert let.closed() == [] and let.counters.get("rollcall_closed") == 0

    asyncio.run(scenario())


def test_the_current_session_of_back_to_back_lessons_is_the_next_once_it_opens(tmp_path: Path) -> None:
    # As arrivals are counted: from 08:40 the 08:55 lesson is open while the first one still runs.
    room = AttendancePointConfig.model_validate(
        {
            "sessions": [
                {"id": "first", "weekdays": ["mon"], "start": "08:00", "end": "08:45"},
                {"id": "second", "weekdays": ["mon"], "start": "08:55", "end": "09:40"},
            ]
        }
    )
    clock = FakeClock(start=_at("08:39"))

    async def scenario() -> None:
        async with agentlet(tmp_path, clock, {"room": room}) as let:
            assert let.rollcall.current("room") == (Occurrence("room", room.sessions[0], MONDAY), "open")
            clock.advance(3 * 60)  # 08:42
            assert let.rollcall.current("room") == (Occurrence("room", room.sessions[1], MONDAY), "open")
            record = let.book.record("room", room, PERSONS["dan"], _at("08:42"))
            assert record is not None and (record.session.id, record.status) == ("second", "present")

    asyncio.run(scenario())


def test_no_rollcall_for_sessions_before_the_file_began_recording(tmp_path: Path) -> None:
    # A first install (or a store replaced after corruption) at 10:00 knows nothing of the morning:
    # closing math-1 now would report the whole class absent.
    clock = FakeClock(start=_at("10:00"))

    async def scenario() -> None:
        async with agentlet(tmp_path, clock) as let:
            await clock.advance_and_settle(1)
            assert let.closed() == [] and let.counters.get("rollcall_closed") == 0
            assert let.rollcall.current("room-7a") == (_monday("room-7a", "physics"), "closed")

    asyncio.run(scenario())


def test_a_version_2_attendance_file_is_migrated_and_its_records_count(tmp_path: Path) -> None:
    # The file as the agent of before kept it: migrations 1 and 2, rows without status or method.
    conn = sqlite3.connect(tmp_path / ATTENDANCE_DB, isolation_level=None)
    apply_migrations(conn, MIGRATIONS[:2])
    conn.executemany(
        "INSERT INTO recorded (point, session, day, person_id, at) VALUES (?, ?, ?, ?, ?)",
        [
            ("room-7a", "math-1", "2026-12-07", "ann", "2026-12-07T08:02:00+01:00"),
            ("room-7a", "math-1", "2026-12-07", "ben", "2026-12-07T08:20:00"),  # a terminal's naive time
            ("room-7a", "math-1", "2026-12-07", "cat", "garbled"),  # damaged: skipped and counted
        ],
    )
    conn.close()
    book = AttendanceBook(tmp_path)
    rows = book.rows_of(MONDAY, point="room-7a", session="math-1")
    assert [(r.person_id, r.status, r.method, r.evidence) for r in rows] == [
        ("ann", None, "unknown", 1),
        ("ben", None, "unknown", 1),
    ]
    assert book.unrecorded.count == 1
    sheet = roll_call(_monday("room-7a", "math-1"), book.rows_of(MONDAY), PERSONS, POINTS, BERLIN)
    data = session_closed_data(sheet, datetime(2026, 12, 7, 8, 45, tzinfo=UTC))
    # Cat's record could not be read: the roll-call goes on without it (cat counts as absent).
    assert (data["present"], data["late"], data["absent"]) == (["ann"], ["ben"], ["cat"])
    # The old records still de-duplicate; a repeat adds its method to the unknown one.
    assert book.record("room-7a", POINTS["room-7a"], PERSONS["ann"], _at("08:30"), method="face") is None
    assert book.rows_of(MONDAY, point="room-7a")[0].method == "face"
    assert book.rows_of(MONDAY, point="room-7a")[0].evidence == 2
    book.close()


# -- the real gateway -----------------------------------------------------------------------------


def _gateway_yaml(
    tmp_path: Path,
    mqtt_url: str,
    reader_url: str,
    turnstile_url: str,
    *,
    timezone: str,
    start: str,
    end: str,
) -> str:
    seed = tmp_path / "roster.json"
    config: dict[str, Any] = {
        "gateway": {"site": SITE, "id": GW, "timezone": timezone},
        "agent": {"data_dir": str(tmp_path / "data"), "roster_seed": str(seed), "shutdown_timeout_s": 3},
        "mqtt": {"url": mqtt_url, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "api": {"enabled": False},
        "devices": [
            {"kind": "card_reader", "id": "reader-in", "profile": "em4100_id12", "port": reader_url},
            {"kind": "turnstile", "id": "turnstile-1", "profile": "turnstile_stx_xor", "port": turnstile_url},
        ],
        "gates": [
            {
                "id": "gate-1",
                "readers": [{"device": "reader-in", "direction": "entry"}],
                "turnstile": "turnstile-1",
                "attendance": {
                    "sessions": [
                        {
                            "id": "lesson",
                            "name": "7A lesson",
                            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                            "start": start,
                            "end": end,
                            "late_after_min": 60,
                            "groups": ["7A"],
                        }
                    ]
                },
            }
        ],
    }
    return yaml.safe_dump(config)


def _noon_zone(utc_now: datetime) -> str:
    """A fixed-offset zone in which it is about noon now: the test's session never crosses midnight."""
    offset = 12 - utc_now.hour  # -11 .. +12; Etc/GMT signs are inverted
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def _pump(clock: FakeClock) -> None:
    """Move the test clock with real time, so the link, the gates and the supervisor run as usual."""
    step = 0.02
    while True:
        await asyncio.sleep(step)
        clock.advance(step)


def test_the_gateway_publishes_the_rollcall_when_the_session_ends(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    real_now = datetime.now(UTC)
    zone = _noon_zone(real_now)
    local = real_now.astimezone(ZoneInfo(zone))
    start = (local - timedelta(minutes=30)).strftime("%H:%M")
    end_at = (local + timedelta(minutes=2)).replace(second=0, microsecond=0)
    (tmp_path / "roster.json").write_text(json.dumps(snapshot(1)))
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/events/attendance")

    async def scenario() -> None:
        reader, turnstile = gate_simulators()
        async with reader, turnstile:
            text = _gateway_yaml(
                tmp_path,
                mosquitto.url,
                reader.url,
                turnstile.url,
                timezone=zone,
                start=start,
                end=end_at.strftime("%H:%M"),
            )
            clock = FakeClock(start=real_now)
            pump = asyncio.create_task(_pump(clock))
            agent = build_gateway(parse_config(text), data_dir=tmp_path / "data", clock=clock)
            task = asyncio.create_task(agent.run())
            try:
                await async_wait_until(
                    lambda: (
                        agent.services is not None
                        and agent.services.rollcall is not None
                        and agent.link.connected.is_set()
                        and agent.devices.state.get("reader-in", {}).get("online") is True
                    ),
                    20,
                    what="the gateway running",
                )
                reader.present("0012AB34CD")  # S1 (7A): present; B1 (7A, blocked) never comes
                await async_wait_until(
                    lambda: any(
                        m.json()["type"] == "edu.campus.attendance.recorded.v1" for m in collector.snapshot()
                    ),
                    20,
                    what="S1's attendance",
                )
                # To the session's end (the real clock's minutes do not matter: the test clock's do).
                clock.advance((end_at - clock.now().astimezone(ZoneInfo(zone))).total_seconds())
                await async_wait_until(
                    lambda: any(m.json()["type"] == SESSION_CLOSED for m in collector.snapshot()),
                    20,
                    what="attendance.session_closed on MQTT",
                )
            finally:
                agent.request_stop("test")
                await asyncio.wait_for(task, 20)
                pump.cancel()

    asyncio.run(scenario())
    collector.close()
    events = [m.json() for m in collector.snapshot()]
    for event in events:
        validate_event(event)
    closed = [e["data"] for e in events if e["type"] == SESSION_CLOSED]
    assert len(closed) == 1
    data = closed[0]
    assert (data["point"], data["session"], data["session_name"]) == ("gate-1", "lesson", "7A lesson")
    assert data["day"] == end_at.date().isoformat() and data["end"] == end_at.strftime("%H:%M")
    assert (data["expected"], data["present"], data["late"], data["absent"]) == (2, ["S1"], [], ["B1"])
    assert data["method"] == {"S1": "card"} and data["evidence"] == {"S1": 1}
    assert data["seen_elsewhere"] == []

"""Classroom roll-call: who was expected, present, late and absent in a session, published once
when the session closes (``attendance.session_closed``), and shown live by the local API.

The computation (:func:`roll_call`) is pure: one point's session on one day, the attendance records
kept of that day (edge_agent/attendance.py) and the roster.

- **expected**: the roster's persons whose ``group`` is in the session's ``groups`` and who are valid
  at its start (``valid_from``/``valid_until``), and anyone recorded in it (they were expected when
  recorded; a group change since does not hide them). A session with no ``groups`` takes anyone
  with access, so its expected persons are only those recorded, and nobody is absent.
- **present** / **late**: the persons recorded, by their record's status (recorded by start +
  ``late_after_min``: present; later: late). A record kept before statuses were (migration 3) gets
  its status from its time.
- **absent**: expected and not recorded.
- **evidence** and **method**: per recorded person, from the record: the observations behind it (a
  face decision's votes, each card swipe) and the methods that saw them (``face``, ``card``,
  ``face+card``, ``terminal``).
- **seen_elsewhere**: the persons of this roll-call recorded the same day at another point, in a
  session overlapping this one (start to end): a student in the wrong room, or a lent card.

Closing (:class:`RollCall`, a gateway component): a session closes at its end, or at start +
``close_after_min`` when that is set; one event per (point, session, day). The event is committed
to the outbox first and the close is marked in the attendance file after, so a crash in between
closes it once more after the restart, with the same event id (derived from the point, session and
day), which the centre de-duplicates. At start the component closes every session of today that
closed while the agent was down. Sessions of earlier days are not closed: their records may be gone
with the retention, the roster may have changed since, and the centre has each of that day's
``attendance.recorded``. Nor is a session that closed before the attendance file began recording (a
first install, a store replaced after corruption): it would report everyone absent. A person
recorded after the close (``close_after_min`` shorter than the session) is shown by the API, not
published again.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Literal

from edge_agent.attendance import AttendanceBook, RecordRow, session_at
from edge_agent.clock import Clock
from edge_agent.config import AttendancePointConfig, GatewayConfig, SessionConfig
from edge_agent.services import Counters, Emitter
from edge_agent.terminals import record_event_id
from sync import WEEKDAYS, Event, Person, format_time

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 60.0
"""The longest the component sleeps between two looks at the timetable: a wall clock set forward
or back (NTP, DST) is noticed within this."""

SESSION_CLOSED = "edu.campus.attendance.session_closed.v1"

RollCallState = Literal["open", "closed", "none"]


def attendance_points(config: GatewayConfig) -> dict[str, AttendancePointConfig]:
    """Every attendance point of the configuration, by point id: gates with a timetable, cameras
    with ``face.attendance`` and terminals with ``attendance``. A point several of them share (a
    camera given its room's gate id) has the sessions of all, the first of each session id."""
    timetables: list[tuple[str, AttendancePointConfig | None]] = [(g.id, g.attendance) for g in config.gates]
    timetables += [(c.face.point or c.id, c.face.attendance) for c in config.cameras if c.face is not None]
    timetables += [(t.point or t.device, t.attendance) for t in config.terminals]
    sessions: dict[str, dict[str, SessionConfig]] = {}
    for point, timetable in timetables:
        if timetable is not None:
            of_point = sessions.setdefault(point, {})
            for session in timetable.sessions:
                of_point.setdefault(session.id, session)
    return {point: AttendancePointConfig(sessions=list(s.values())) for point, s in sessions.items()}


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One session of one point on one day; times are naive gateway-local."""

    point: str
    session: SessionConfig
    day: date

    @property
    def start(self) -> datetime:
        return session_at(self.day, self.session.start)

    @property
    def end(self) -> datetime:
        return session_at(self.day, self.session.end)

    @property
    def opens(self) -> datetime:
        """From when arrivals count (``open_before_min`` before the start)."""
        return self.start - timedelta(minutes=self.session.open_before_min)

    @property
    def closes(self) -> datetime:
        """When its roll-call is closed: start + ``close_after_min``, else the end."""
        if self.session.close_after_min is not None:
            return self.start + timedelta(minutes=self.session.close_after_min)
        return self.end

    @property
    def late_after(self) -> datetime:
        return self.start + timedelta(minutes=self.session.late_after_min)


def occurrences(points: Mapping[str, AttendancePointConfig], day: date) -> list[Occurrence]:
    """The sessions of ``day`` at every point, in timetable order."""
    weekday = WEEKDAYS[day.weekday()]
    return [
        Occurrence(point, session, day)
        for point, timetable in points.items()
        for session in timetable.sessions
        if weekday in session.weekdays
    ]


@dataclass(frozen=True, slots=True)
class Attendee:
    """One expected or recorded person of a roll-call; ``record`` is None for the absent."""

    person_id: str
    status: Literal["present", "late", "absent"]
    record: RecordRow | None
    seen_elsewhere: bool


@dataclass(frozen=True, slots=True)
class RollCallSheet:
    """A session's roll-call: every expected person once, by person id."""

    occurrence: Occurrence
    people: list[Attendee]

    @property
    def expected(self) -> int:
        return len(self.people)

    def having(self, status: Literal["present", "late", "absent"]) -> list[Attendee]:
        return [a for a in self.people if a.status == status]


def _valid_at(person: Person, at: datetime) -> bool:
    return (person.valid_from is None or person.valid_from <= at) and (
        person.valid_until is None or at <= person.valid_until
    )


def _overlaps(row: RecordRow, here: Occurrence, points: Mapping[str, AttendancePointConfig]) -> bool:
    """Whether ``row`` (at another point) was made in a session overlapping ``here``."""
    timetable = points.get(row.point)
    session = next((s for s in timetable.sessions if s.id == row.session), None) if timetable else None
    if session is None:
        # A point or session no longer configured: its record's own time tells.
        return here.start <= row.at < here.end
    there = Occurrence(row.point, session, row.day)
    return there.start < here.end and here.start < there.end


def roll_call(
    here: Occurrence,
    day_rows: Iterable[RecordRow],
    persons: Mapping[str, Person],
    points: Mapping[str, AttendancePointConfig],
    timezone: tzinfo,
) -> RollCallSheet:
    """The roll-call of ``here`` from the records of its day (every point's) and the roster."""
    rows = list(day_rows)
    recorded = {r.person_id: r for r in rows if r.point == here.point and r.session == here.session.id}
    groups = set(here.session.groups)
    starts_at = here.start.replace(tzinfo=timezone).astimezone(UTC)
    expected = {
        p.id for p in persons.values() if groups and p.group in groups and _valid_at(p, starts_at)
    } | recorded.keys()
    elsewhere = {r.person_id for r in rows if r.point != here.point and _overlaps(r, here, points)}
    people = []
    for person_id in sorted(expected):
        row = recorded.get(person_id)
        status: Literal["present", "late", "absent"]
        if row is None:
            status = "absent"
        else:
            status = row.status or ("late" if row.at > here.late_after else "present")
        people.append(Attendee(person_id, status, row, person_id in elsewhere))
    return RollCallSheet(here, people)


def session_closed_data(sheet: RollCallSheet, closed_at: datetime) -> dict[str, Any]:
    """The ``attendance.session_closed`` payload of ``sheet``."""
    here = sheet.occurrence
    recorded = [a for a in sheet.people if a.record is not None]
    return {
        "point": here.point,
        "session": here.session.id,
        "session_name": here.session.name,
        "day": here.day.isoformat(),
        "start": here.session.start,
        "end": here.session.end,
        "expected": sheet.expected,
        "present": [a.person_id for a in sheet.having("present")],
        "late": [a.person_id for a in sheet.having("late")],
        "absent": [a.person_id for a in sheet.having("absent")],
        "evidence": {a.person_id: a.record.evidence for a in recorded if a.record is not None},
        "method": {a.person_id: a.record.method for a in recorded if a.record is not None},
        "seen_elsewhere": [a.person_id for a in sheet.people if a.seen_elsewhere],
        "closed_at": format_time(closed_at),
    }


class RollCall:
    """The roll-call component: closes each session once when it is due, and answers what a point's
    roll-call is now (the local API). Uses the attendance book on the event loop, as the gates do."""

    def __init__(
        self,
        points: Mapping[str, AttendancePointConfig],
        *,
        book: AttendanceBook,
        persons: Callable[[], Mapping[str, Person]],
        emitter: Emitter,
        clock: Clock,
        timezone: tzinfo,
        counters: Counters,
    ) -> None:
        self.points = dict(points)
        self._book = book
        self._persons = persons
        self._emitter = emitter
        self._clock = clock
        self.timezone = timezone
        self._counters = counters
        self._since: datetime | None = None
        """Sessions closing from then on (local) are looked at; moved on after each look."""

    def local_now(self) -> datetime:
        return self._clock.now().astimezone(self.timezone).replace(tzinfo=None)

    def sheet(self, here: Occurrence) -> RollCallSheet:
        """The roll-call of ``here`` as the records are now."""
        return roll_call(here, self._book.rows_of(here.day), self._persons(), self.points, self.timezone)

    def current(self, point: str) -> tuple[Occurrence, RollCallState] | None:
        """The point's session now (``open``: arrivals count and it is not closed yet), else its last
        one today (``closed``); None before its first session of the day or on a day without any."""
        now = self.local_now()
        today = occurrences({point: self.points[point]}, now.date())
        open_now = [here for here in today if here.opens <= now < here.closes]
        if open_now:
            # As arrivals are counted (attendance.current_session): the one starting last.
            return max(open_now, key=lambda here: here.start), "open"
        past = [here for here in today if here.closes <= now]
        return (max(past, key=lambda o: o.closes), "closed") if past else None

    # -- the component ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Close what closed today while the agent was down (or not yet running)."""
        now = self.local_now()
        midnight = datetime.combine(now.date(), datetime.min.time())
        recording_since = self._book.recording_since.astimezone(self.timezone).replace(tzinfo=None)
        self._since = max(midnight, recording_since)
        await self._close_due(now)

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._until_next_close())
            await self._close_due(self.local_now())

    async def stop(self) -> None:
        pass

    def _until_next_close(self) -> float:
        now = self.local_now()
        upcoming = [
            here.closes
            for day in (now.date(), now.date() + timedelta(days=1))
            for here in occurrences(self.points, day)
            if here.closes > now
        ]
        return min([CHECK_INTERVAL_S, *((at - now).total_seconds() for at in upcoming)])

    async def _close_due(self, now: datetime) -> None:
        assert self._since is not None, "start() sets it"
        since = self._since
        # A session of yesterday may close at 24:00, i.e. today.
        days = [since.date() + timedelta(days=n) for n in range(-1, (now.date() - since.date()).days + 1)]
        due = sorted(
            (here for day in days for here in occurrences(self.points, day) if since <= here.closes <= now),
            key=lambda o: o.closes,
        )
        retry_from = now
        for here in due:
            try:
                await self._close(here)
            except sqlite3.Error as err:
                # Tried again at the next look; the records stay until then.
                retry_from = min(retry_from, here.closes)
                self._counters.count("rollcall_failed")
                log.error(
                    "roll-call of %s %s on %s not closed (retrying): %s",
                    here.point,
                    here.session.id,
                    here.day,
                    err,
                    extra={"code": "rollcall_failed"},
                )
        self._since = retry_from

    async def _close(self, here: Occurrence) -> None:
        if self._book.is_closed(here.point, here.session.id, here.day):
            return
        sheet = self.sheet(here)
        closed_at = self._clock.now()
        source = self._emitter.source("gateway")
        event = Event(
            SESSION_CLOSED,
            source,
            session_closed_data(sheet, closed_at),
            time=closed_at,
            # The same for every closing of this session: a repeat after a crash is de-duplicated.
            id=record_event_id(
                source,
                f"{here.point}/{here.session.id}/{here.day.isoformat()}",
                here.closes.replace(tzinfo=self.timezone),
            ),
        )
        await self._emitter.commit(event)
        self._book.mark_closed(here.point, here.session.id, here.day, closed_at, event.id)
        self._counters.count("rollcall_closed")
        log.info(
            "roll-call of %s %s on %s closed: %d expected, %d present, %d late, %d absent",
            here.point,
            here.session.id,
            here.day,
            sheet.expected,
            len(sheet.having("present")),
            len(sheet.having("late")),
            len(sheet.having("absent")),
        )


__all__ = [
    "SESSION_CLOSED",
    "Attendee",
    "Occurrence",
    "RollCall",
    "RollCallSheet",
    "RollCallState",
    "attendance_points",
    "occurrences",
    "roll_call",
    "session_closed_data",
]

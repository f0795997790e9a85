"""Attendance: timetable sessions per attendance point, one record per person per session.

Used by classroom card readers (method ``card``) and, later, cameras (``face``). The de-duplication
survives restarts: what was recorded today is kept in SQLite, so a restarted agent does not record
the same student twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from edge_agent.config import AttendancePointConfig, SessionConfig
from edge_agent.roster import person_data
from sync import WEEKDAYS, DamagedRows, Event, Migration, Person, open_store, utc_now

ATTENDANCE_DB = "attendance.db"


@dataclass(frozen=True, slots=True)
class Attendance:
    session: SessionConfig
    day: date
    status: Literal["present", "late"]


def attendance_event(
    found: Attendance,
    person: Person,
    *,
    method: Literal["card", "face", "face+card"],
    point: str,
    device: str,
    source: str,
    at: datetime,
    **evidence: Any,
) -> Event:
    """The ``attendance.recorded`` event for a record; ``evidence`` adds distance, confidence, model."""
    session = found.session
    return Event(
        "edu.campus.attendance.recorded.v1",
        source,
        {
            "person": person_data(person),
            "method": method,
            "point": point,
            "device": device,
            "session": {
                "id": session.id,
                "name": session.name,
                "date": found.day.isoformat(),
                "start": session.start,
                "end": session.end,
            },
            "status": found.status,
            **evidence,
        },
        time=at,
        subject=person.id,
    )


def _at(day: date, hhmm: str) -> datetime:
    if hhmm == "24:00":
        return datetime.combine(day, datetime.min.time()) + timedelta(days=1)
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time())


def current_session(point: AttendancePointConfig, local_now: datetime) -> tuple[SessionConfig, str] | None:
    """The session whose window (start - open_before .. end) contains ``local_now`` (naive local)."""
    local_now = local_now.replace(tzinfo=None)
    day = local_now.date()
    weekday = WEEKDAYS[local_now.weekday()]
    for session in point.sessions:
        if weekday not in session.weekdays:
            continue
        start = _at(day, session.start)
        if start - timedelta(minutes=session.open_before_min) <= local_now < _at(day, session.end):
            late = local_now > start + timedelta(minutes=session.late_after_min)
            return session, "late" if late else "present"
    return None


def _migration_1(db: sqlite_utils.Database) -> None:
    db["recorded"].create(  # type: ignore[union-attr]
        {"point": str, "session": str, "day": str, "person_id": str, "at": str},
        pk=("point", "session", "day", "person_id"),
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # A person's records are found (dossier) and deleted (they left the roster) by person.
    db["recorded"].create_index(["person_id"])  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [
    ("0001_attendance_initial", _migration_1),
    ("0002_attendance_by_person", _migration_2),
]


class AttendanceBook:
    """Records attendance once per (point, session, day, person).

    A corrupt ``attendance.db`` is moved aside at open and the book starts empty (``recovery`` says
    so): a person already recorded today may then be recorded once more, never missed.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        synchronous: Literal["full", "normal"] = "full",
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._conn, self.recovery = open_store(
            "attendance",
            data_dir / ATTENDANCE_DB,
            MIGRATIONS,
            synchronous=synchronous,
            now=now,
            # Where a child was, when: a deleted row is overwritten on disk, not just unlinked.
            pragmas=("secure_delete=ON",),
        )
        self.duplicates = 0
        self.unrecorded = DamagedRows("attendance")
        """De-duplication records that could not be written (the attendance was still reported)."""

    def record(
        self, point_id: str, point: AttendancePointConfig, person: Person, local_now: datetime
    ) -> Attendance | None:
        """The attendance to report, or None (no session now, not expected, or already recorded)."""
        found = current_session(point, local_now)
        if found is None:
            return None
        session, status = found
        if session.groups and person.group not in session.groups:
            return None
        day = local_now.date()
        try:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO recorded (point, session, day, person_id, at) VALUES (?, ?, ?, ?, ?)",
                (point_id, session.id, day.isoformat(), person.id, local_now.isoformat()),
            )
        except sqlite3.Error as err:
            # The de-duplication record is lost, not the attendance: reporting it (perhaps twice)
            # is better than a card decision that raises, or a student marked absent.
            self.unrecorded.note(f"{point_id}/{session.id}/{person.id}", err)
            return Attendance(session, day, status)  # type: ignore[arg-type]
        if cur.rowcount == 0:
            self.duplicates += 1
            return None
        return Attendance(session, day, status)  # type: ignore[arg-type]

    def records_of(self, person_id: str) -> list[dict[str, str]]:
        """The de-duplication records kept of ``person_id`` (point, session, day, local time), oldest
        first: what a data-subject request is shown."""
        rows = self._conn.execute(
            "SELECT point, session, day, at FROM recorded WHERE person_id=? ORDER BY at", (person_id,)
        )
        return [{"point": p, "session": s, "day": d, "at": a} for p, s, d, a in rows]

    def forget(self, person_id: str) -> int:
        """Delete the records of ``person_id``; returns how many. Their attendance events stay what
        the centre was sent; only the local de-duplication goes (a forgotten person who is still on
        the roster may then be recorded once more today)."""
        return self._conn.execute("DELETE FROM recorded WHERE person_id=?", (person_id,)).rowcount

    def housekeeping(self, today: date, keep_days: int) -> int:
        """Delete the records of days before ``today - keep_days`` (gateway local dates): a record
        only prevents a second one in its session, so older ones are kept no longer. Returns how many
        went."""
        cutoff = (today - timedelta(days=keep_days)).isoformat()
        return self._conn.execute("DELETE FROM recorded WHERE day < ?", (cutoff,)).rowcount

    def close(self) -> None:
        self._conn.close()


__all__ = [
    "Attendance",
    "AttendanceBook",
    "attendance_event",
    "current_session",
]

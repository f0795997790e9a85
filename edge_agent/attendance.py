"""Attendance: timetable sessions per attendance point, one record per person per session.

Used by classroom card readers (method ``card``), cameras (``face``, ``face+card``) and vendor
terminals (``terminal``). The de-duplication survives restarts: what was recorded today is kept in
SQLite, so a restarted agent does not record the same student twice. Each record also keeps what the
roll-call (edge_agent/rollcall.py) reports of it: its status, the methods that saw the person and
the evidence (observations: a face decision's votes, each card swipe). The same file keeps which
sessions' roll-calls were closed, so a restart neither repeats nor misses one.
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


@dataclass(frozen=True, slots=True)
class RecordRow:
    """One kept record: who was recorded at which point in which session, when (gateway local time,
    naive), as what, on how many observations."""

    point: str
    session: str
    day: date
    person_id: str
    at: datetime
    status: Literal["present", "late"] | None
    """None for a record kept before statuses were (migration 3): the roll-call derives it."""
    method: str
    evidence: int


UNKNOWN_METHOD = "unknown"
"""The method of a record kept before methods were (migration 3)."""

_METHOD_ORDER = ("face", "card", "terminal")


def merged_method(first: str, then: str) -> str:
    """The methods that saw a person, as one name: ``face`` then ``card`` is ``face+card``."""
    parts = {*first.split("+"), *then.split("+")}
    if len(parts) > 1:
        parts.discard(UNKNOWN_METHOD)
    known = [m for m in _METHOD_ORDER if m in parts]
    return "+".join(known + sorted(parts - set(known)))


def session_at(day: date, hhmm: str) -> datetime:
    """``HH:MM`` of ``day`` as a naive local datetime (``24:00`` is the next midnight)."""
    if hhmm == "24:00":
        return datetime.combine(day, datetime.min.time()) + timedelta(days=1)
    return datetime.combine(day, datetime.strptime(hhmm, "%H:%M").time())


def current_session(
    point: AttendancePointConfig, local_now: datetime, person: Person | None = None
) -> tuple[SessionConfig, str] | None:
    """The session an arrival at ``local_now`` (naive local) counts for, and its status: of the
    sessions whose window (start - open_before .. end) contains it and, with ``person``, that expect
    them (a session without groups expects anyone), the one starting last; at the same start, one
    naming the person's group before one open to anyone.

    Windows overlap in every timetable of back-to-back lessons (the next one opens
    ``open_before_min`` early): someone coming in at 08:42 for the 08:55 lesson arrives for it, not
    late for the one ending at 08:45. Half classes may share a room at the same time."""
    local_now = local_now.replace(tzinfo=None)
    day = local_now.date()
    weekday = WEEKDAYS[local_now.weekday()]
    best: tuple[datetime, bool, SessionConfig] | None = None
    for session in point.sessions:
        if weekday not in session.weekdays:
            continue
        named = person is not None and person.group in session.groups
        if person is not None and session.groups and not named:
            continue
        start = session_at(day, session.start)
        opens = start - timedelta(minutes=session.open_before_min)
        if opens <= local_now < session_at(day, session.end) and (best is None or (start, named) > best[:2]):
            best = (start, named, session)
    if best is None:
        return None
    start, _, session = best
    late = local_now > start + timedelta(minutes=session.late_after_min)
    return session, "late" if late else "present"


def _migration_1(db: sqlite_utils.Database) -> None:
    db["recorded"].create(  # type: ignore[union-attr]
        {"point": str, "session": str, "day": str, "person_id": str, "at": str},
        pk=("point", "session", "day", "person_id"),
    )


def _migration_2(db: sqlite_utils.Database) -> None:
    # A person's records are found (dossier) and deleted (they left the roster) by person.
    db["recorded"].create_index(["person_id"])  # type: ignore[union-attr]


def _migration_3(db: sqlite_utils.Database) -> None:
    # What the roll-call reports of a record. Rows kept before have NULL status and method (the
    # roll-call derives the status from `at`; the method is unknown) and one observation.
    recorded = db["recorded"]
    recorded.add_column("status", str)  # type: ignore[union-attr]
    recorded.add_column("method", str)  # type: ignore[union-attr]
    recorded.add_column("evidence", int, not_null_default=1)  # type: ignore[union-attr]
    # One roll-call per (point, session, day): its row is written once its event is committed.
    db["closed"].create(  # type: ignore[union-attr]
        {"point": str, "session": str, "day": str, "closed_at": str, "event_id": str},
        pk=("point", "session", "day"),
    )
    # When this file began recording: a roll-call of a session that ended before then would list
    # everyone absent (a fresh install, a store replaced after corruption), so none is made.
    db["book"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


MIGRATIONS: list[Migration] = [
    ("0001_attendance_initial", _migration_1),
    ("0002_attendance_by_person", _migration_2),
    ("0003_attendance_rollcall", _migration_3),
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
        """Records that could not be written (the attendance was still reported) or read back (the
        roll-call goes on without them)."""
        self._conn.execute(
            "INSERT OR IGNORE INTO book (key, value) VALUES ('recording_since', ?)", (now().isoformat(),)
        )
        (since,) = self._conn.execute("SELECT value FROM book WHERE key='recording_since'").fetchone()
        self.recording_since = datetime.fromisoformat(since)
        """When this file began keeping records (UTC): nothing before then was recorded here."""

    def record(
        self,
        point_id: str,
        point: AttendancePointConfig,
        person: Person,
        local_now: datetime,
        *,
        method: str = "card",
        evidence: int = 1,
    ) -> Attendance | None:
        """The attendance to report, or None (no session now, not expected, or already recorded).

        ``method`` and ``evidence`` (observations behind this record) are kept for the roll-call; a
        repeat in the same session adds its evidence and method to the first record."""
        found = current_session(point, local_now, person)
        if found is None:
            return None
        session, status = found
        day = local_now.date()
        key = (point_id, session.id, day.isoformat(), person.id)
        try:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO recorded (point, session, day, person_id, at, status, method, "
                "evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, local_now.isoformat(), status, method, evidence),
            )
        except sqlite3.Error as err:
            # The de-duplication record is lost, not the attendance: reporting it (perhaps twice)
            # is better than a card decision that raises, or a student marked absent.
            self.unrecorded.note(f"{point_id}/{session.id}/{person.id}", err)
            return Attendance(session, day, status)  # type: ignore[arg-type]
        if cur.rowcount == 0:
            self.duplicates += 1
            try:
                self._add_evidence(key, method, evidence)
            except sqlite3.Error as err:
                # Already recorded and reported: only the roll-call's evidence count stays short.
                self.unrecorded.note(f"{point_id}/{session.id}/{person.id}", err)
            return None
        return Attendance(session, day, status)  # type: ignore[arg-type]

    def _add_evidence(self, key: tuple[str, str, str, str], method: str, evidence: int) -> None:
        (first,) = self._conn.execute(
            "SELECT method FROM recorded WHERE point=? AND session=? AND day=? AND person_id=?", key
        ).fetchone()
        self._conn.execute(
            "UPDATE recorded SET evidence = evidence + ?, method = ? "
            "WHERE point=? AND session=? AND day=? AND person_id=?",
            (evidence, merged_method(first or UNKNOWN_METHOD, method), *key),
        )

    def rows_of(self, day: date, *, point: str | None = None, session: str | None = None) -> list[RecordRow]:
        """The records of ``day`` (of one point, of one session), oldest first."""
        query = (
            "SELECT point, session, day, person_id, at, status, method, evidence FROM recorded WHERE day=?"
        )
        args: list[str] = [day.isoformat()]
        for column, value in (("point", point), ("session", session)):
            if value is not None:
                query += f" AND {column}=?"
                args.append(value)
        rows = []
        for p, s, d, who, at, status, method, evidence in self._conn.execute(query + " ORDER BY at", args):
            try:
                row = RecordRow(
                    point=p,
                    session=s,
                    day=date.fromisoformat(d),
                    person_id=who,
                    # Kept as the caller's local time, with or without its offset: compared naive.
                    at=datetime.fromisoformat(at).replace(tzinfo=None),
                    status=status if status in ("present", "late") else None,
                    method=method or UNKNOWN_METHOD,
                    evidence=int(evidence),
                )
            except (TypeError, ValueError) as err:
                self.unrecorded.note(f"{p}/{s}/{who}", err)
                continue
            rows.append(row)
        return rows

    def is_closed(self, point: str, session: str, day: date) -> bool:
        """Whether the roll-call of this session on ``day`` was closed (its event committed)."""
        row = self._conn.execute(
            "SELECT 1 FROM closed WHERE point=? AND session=? AND day=?", (point, session, day.isoformat())
        ).fetchone()
        return row is not None

    def mark_closed(self, point: str, session: str, day: date, closed_at: datetime, event_id: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO closed (point, session, day, closed_at, event_id) VALUES (?, ?, ?, ?, ?)",
            (point, session, day.isoformat(), closed_at.isoformat(), event_id),
        )

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
        # Closing marks go with them: a roll-call is only ever made for today's sessions.
        self._conn.execute("DELETE FROM closed WHERE day < ?", (cutoff,))
        return self._conn.execute("DELETE FROM recorded WHERE day < ?", (cutoff,)).rowcount

    def close(self) -> None:
        self._conn.close()


__all__ = [
    "UNKNOWN_METHOD",
    "Attendance",
    "AttendanceBook",
    "RecordRow",
    "attendance_event",
    "current_session",
    "merged_method",
    "session_at",
]

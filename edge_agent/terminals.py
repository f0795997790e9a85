"""Vendor terminals' own records (ZKTeco, Hikvision) into the one event contract, under the one identity.

A terminal identifies people by its own user id. :class:`TerminalRecords` maps that id to a roster
person through master data (``Person.terminal_user_ids``; for a terminal the gateway writes its users
to, ``sync_roster``, the id *is* the person id) and never guesses: a record for an id nobody holds is
``attendance.unmapped``, carrying the record as the terminal sent it.

Every record becomes one event whose id is derived from the terminal and the record, so a record the
terminal or the driver delivers again (after a crash, a retried push) is the same event to the
centre, which de-duplicates on ``source`` + ``id``. The driver is told a record is safe only once its
event is committed (``on_record`` returns the commit; edge_agent.devices acknowledges in order).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ulid import ULID

from device_drivers import TerminalAccess, TerminalAttendance
from edge_agent.attendance import AttendanceBook, current_session
from edge_agent.config import GatewayConfig, TerminalSetup
from edge_agent.devices import Committed
from edge_agent.roster import RosterIndex, person_data
from edge_agent.services import Counters, Emitter
from sync import Event, Person, Severity

log = logging.getLogger(__name__)

_LOG_INTERVAL_S = 60.0
TERMINAL_CREDENTIAL_FORMAT = "terminal"
"""``credential_format`` of a terminal's decision: the credential is what the terminal verified."""


def record_event_id(device_id: str, record_id: str, at: datetime) -> str:
    """The event id of a terminal record: a ULID whose time is the record's and whose random part
    is a digest of the terminal and the record, so the same record always gives the same id."""
    digest = hashlib.sha256(f"{device_id}\x00{record_id}".encode()).digest()[:10]
    millis = max(0, int(at.timestamp() * 1000))
    return str(ULID.from_bytes(millis.to_bytes(6, "big") + digest))


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_able(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)] = value
        elif isinstance(value, datetime):
            out[str(key)] = value.isoformat()
        elif isinstance(value, Mapping):
            out[str(key)] = _json_able(value)
        else:
            out[str(key)] = str(value)
    return out


class TerminalRecords:
    """Turns ``TerminalAttendance`` and ``TerminalAccess`` readings into events."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        roster: Callable[[], RosterIndex],
        attendance: AttendanceBook | None,
        emitter: Emitter,
        counters: Counters,
    ) -> None:
        self.roster = roster
        self.attendance = attendance
        self.emitter = emitter
        self.counters = counters
        self.timezone = ZoneInfo(config.gateway.timezone)
        self.setups: dict[str, TerminalSetup] = {t.device: t for t in config.terminals}
        # Terminals the gateway writes its users to: their user id is the person id.
        self.person_id_terminals = {d.id for d in config.devices if getattr(d, "sync_roster", False) is True}
        self._unmapped_logged_at: float | None = None
        self._unmapped_unlogged = 0

    def _setup(self, device_id: str) -> TerminalSetup:
        setup = self.setups.get(device_id)
        if setup is None:  # not in `terminals:`: its defaults, made once (this runs per record)
            setup = self.setups[device_id] = TerminalSetup(device=device_id)
        return setup

    def person(self, device_id: str, user_id: str) -> Person | None:
        index = self.roster()
        if device_id in self.person_id_terminals and user_id in index.persons:
            return index.persons[user_id]
        return index.person_for_terminal_user(device_id, user_id)

    def on_record(self, reading: TerminalAttendance | TerminalAccess) -> Committed:
        event = (
            self._attendance(reading) if isinstance(reading, TerminalAttendance) else self._access(reading)
        )
        self.counters.count(f"terminal_{reading.__class__.__name__.lower()}")
        return self.emitter.commit(event)

    # -- attendance ------------------------------------------------------------------------------

    def _attendance(self, record: TerminalAttendance) -> Event:
        setup = self._setup(record.device_id)
        point = setup.point or record.device_id
        source = self.emitter.source(record.device_id)
        event_id = record_event_id(record.device_id, record.record_id, record.terminal_time)
        person = self.person(record.device_id, record.user_id)
        if person is None:
            self.counters.count("attendance_unmapped")
            self._log_unmapped(record)
            return Event(
                "edu.campus.attendance.unmapped.v1",
                source,
                {
                    "device": record.device_id,
                    "point": point,
                    "terminal_user_id": record.user_id,
                    "method": record.method,
                    "punch": record.punch,
                    "terminal_time": _iso(record.terminal_time),
                    "received_at": _iso(record.at),
                    "record": _json_able(record.raw),
                },
                time=record.terminal_time,
                id=event_id,
            )
        data: dict[str, Any] = {
            "person": person_data(person),
            "method": record.method,
            "point": point,
            "device": record.device_id,
            "session": None,
            "status": "outside_session",
            "terminal_time": _iso(record.terminal_time),
            "received_at": _iso(record.at),
            "terminal_user_id": record.user_id,
            "punch": record.punch,
        }
        timetable = setup.attendance
        local = record.terminal_time.astimezone(self.timezone).replace(tzinfo=None)
        found = current_session(timetable, local, person) if timetable is not None else None
        if timetable is not None and found is not None:
            session, status = found
            first = (
                self.attendance.record(point, timetable, person, local, method="terminal")
                if self.attendance
                else None
            )
            data["session"] = {
                "id": session.id,
                "name": session.name,
                "date": local.date().isoformat(),
                "start": session.start,
                "end": session.end,
            }
            data["status"] = status
            data["first_in_session"] = first is not None
        return Event(
            "edu.campus.attendance.recorded.v1",
            source,
            data,
            time=record.terminal_time,
            subject=person.id,
            id=event_id,
        )

    def _log_unmapped(self, record: TerminalAttendance) -> None:
        # A terminal full of people nobody mapped costs one line a minute, not one per record.
        self._unmapped_unlogged += 1
        now = time.monotonic()
        if self._unmapped_logged_at is not None and now - self._unmapped_logged_at < _LOG_INTERVAL_S:
            return
        log.warning(
            "%s: user id %r is no person's terminal id in the roster (Person.terminal_user_ids); sent as "
            "attendance.unmapped (%d such since the last line)",
            record.device_id,
            record.user_id,
            self._unmapped_unlogged,
            extra={"code": "attendance_unmapped"},
        )
        self._unmapped_logged_at, self._unmapped_unlogged = now, 0

    # -- the terminal's own access decisions and door events ---------------------------------------

    def _access(self, event: TerminalAccess) -> Event:
        setup = self._setup(event.device_id)
        gate = setup.gate or event.device_id
        source = self.emitter.source(event.device_id)
        event_id = record_event_id(event.device_id, event.record_id, event.terminal_time)
        common = {"time": event.terminal_time, "id": event_id}
        if event.kind in ("granted", "denied"):
            person = self.person(event.device_id, event.user_id) if event.user_id else None
            data: dict[str, Any] = {
                "gate": gate,
                "reader": event.device_id,
                "direction": setup.direction,
                # A face the terminal recognised as no one carries neither card nor user id.
                "credential": event.card or event.user_id or f"unidentified_{event.method or 'credential'}",
                "credential_format": TERMINAL_CREDENTIAL_FORMAT,
                "decided_by": "terminal",
                "terminal_time": _iso(event.terminal_time),
            }
            if event.method is not None:
                data["method"] = event.method
            if event.user_id:
                data["terminal_user_id"] = event.user_id
            if person is not None:
                data["person"] = person_data(person)
            elif event.user_id:
                self.counters.count("terminal_access_unmapped")
            if event.kind == "denied":
                data["reason"] = "refused_by_terminal"
                if event.reason:
                    data["detail"] = event.reason
            return Event(
                f"edu.campus.access.{event.kind}.v1",
                source,
                data,
                subject=person.id if person else None,
                **common,  # type: ignore[arg-type]
            )
        if event.kind in ("door_open", "door_closed"):
            return Event(
                "edu.campus.access.door_state.v1",
                source,
                {
                    "gate": gate,
                    "device": event.device_id,
                    "door": event.door,
                    "open": event.kind == "door_open",
                },
                **common,  # type: ignore[arg-type]
            )
        if event.kind == "tamper":
            return Event(
                "edu.campus.device.tamper.v1",
                source,
                {"device": event.device_id, "kind": "terminal", "tampered": True, "power_failure": False},
                severity=Severity.WARNING,
                **common,  # type: ignore[arg-type]
            )
        # forced, door_held_open: the same alerts a turnstile's own report raises (edge_agent.gates).
        return Event(
            f"edu.campus.access.{event.kind}.v1",
            source,
            {"gate": gate, "device": event.device_id, "direction": None},
            severity=Severity.CRITICAL if event.kind == "forced" else Severity.WARNING,
            **common,  # type: ignore[arg-type]
        )


__all__ = ["TerminalRecords", "record_event_id"]

"""Gates: card read → decision → open the turnstile → passage, and the events on the way.

The hot path (:meth:`GateController.on_card`) decides from memory, writes the open command, and only
then hands events to the outbox without waiting for their commit: the gate never waits on the
network, the broker or an fsync.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from device_drivers import CardRead, DeviceError, TurnstileEvent
from edge_agent.access import AntiPassback, Decision, decide
from edge_agent.attendance import AttendanceBook, attendance_event
from edge_agent.clock import Clock, SystemClock
from edge_agent.config import Direction, GateConfig
from edge_agent.metrics import DECISION_SECONDS
from edge_agent.roster import Roster, person_data
from sync import Event, Person, Severity

log = logging.getLogger(__name__)


# Turnstile alarms that become alerts as they are: event type, severity, the payload beyond gate/device.
_ALARMS: dict[str, tuple[str, Severity, Callable[[TurnstileEvent], dict[str, Any]]]] = {
    "forced": ("edu.campus.access.forced.v1", Severity.CRITICAL, lambda e: {"direction": e.direction}),
    "tailgating": (
        "edu.campus.access.tailgating.v1",
        Severity.WARNING,
        lambda e: {"direction": e.direction, "evidence": "turnstile_alarm"},
    ),
    "fire_alarm": ("edu.campus.access.free_passage.v1", Severity.CRITICAL, lambda e: {"active": True}),
    "door_held_open": (
        "edu.campus.access.door_held_open.v1",
        Severity.WARNING,
        lambda e: {"direction": e.direction},
    ),
}

Opener = Callable[[Direction], Awaitable[None]]
Feedback = Callable[[str, bool], Awaitable[None]]
Holder = Callable[[bool], Awaitable[None]]
"""Holds a gate's opener open (``True``: fire-alarm free passage) or back to normal (``False``)."""


@dataclass
class _Transaction:
    person: Person | None
    """None for a passage opened remotely (a command), not by a card."""
    direction: Direction
    grant_id: str
    opened_at: float
    deadline: float


@dataclass
class GateStats:
    granted: int = 0
    denied: int = 0
    passages: int = 0
    timeouts: int = 0
    open_failures: int = 0
    last_decision_us: int = 0
    forced: int = 0
    held_open: int = 0
    door_changes: int = 0


@dataclass
class _DoorState:
    """What the gate's door contact said last (relay and Modbus doors)."""

    device: str
    door: str | None
    open: bool
    opened_at: float = 0.0
    held_reported: bool = False


class GrantLog:
    """Recent grants per gate: face attendance confirms a card at the same gate, and video
    tailgating compares people seen with grants given."""

    KEEP_S = 300.0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def note(self, gate_id: str, person_id: str) -> None:
        now = self.clock.monotonic()
        self._last[(gate_id, person_id)] = now
        times = self._times[gate_id]
        times.append(now)
        while times and now - times[0] > self.KEEP_S:
            times.popleft()

    def grants_within(self, gate_id: str, window_s: float) -> int:
        """Grants at a gate in the last ``window_s`` seconds."""
        now = self.clock.monotonic()
        return sum(1 for t in self._times.get(gate_id, ()) if now - t <= window_s)

    def recent_card(self, gate_id: str, person_id: str, window_s: float) -> bool:
        """Whether ``person_id`` was granted at ``gate_id`` in the last ``window_s`` seconds."""
        at = self._last.get((gate_id, person_id))
        return at is not None and self.clock.monotonic() - at <= window_s


class GateController:
    """One gate's state machine. ``emit`` hands an event to the outbox and returns at once."""

    def __init__(
        self,
        config: GateConfig,
        *,
        roster: Roster,
        emit: Callable[[Event], None],
        source: Callable[[str], str],
        timezone: ZoneInfo,
        anti_passback: AntiPassback,
        attendance: AttendanceBook | None,
        opener: Opener | None,
        feedback: Feedback | None,
        on_grant: Callable[[str, str], None] | None = None,
        clock: Clock | None = None,
        holder: Holder | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.roster = roster
        self.emit = emit
        self.source = source
        self.timezone = timezone
        self.anti_passback = anti_passback
        self.attendance = attendance
        self.opener = opener
        self.feedback = feedback
        self.on_grant = on_grant
        self.holder = holder
        self.free_passage = False
        """In fire-alarm free passage: the opener is held open; cards are still decided and logged."""
        self.door: _DoorState | None = None
        self.door_device: Any = None
        """For a gate with ``door:``: the Modbus relay door's command surface (``open``,
        ``hold_open``, ``lock``, ``normal``), set by :class:`edge_agent.doors.Doors`."""
        self._authorised_until = float("-inf")
        self.stats = GateStats()
        self.directions = {r.device: r.direction for r in config.readers}
        self._open: collections.deque[_Transaction] = collections.deque()

    async def on_card(self, read: CardRead) -> Decision:
        """Decide, open, give feedback, report. Returns the decision (for tests and metrics)."""
        started = time.perf_counter_ns()
        cfg = self.config
        direction = self.directions[read.device_id]
        now = read.at
        decision = decide(
            self.roster.index,
            credential=read.credential,
            card_format=read.card_format,
            gate=cfg.id,
            direction=direction,
            now=now,
            local_now=now.astimezone(self.timezone),
            monotonic_now=self.clock.monotonic(),
            anti_passback=self.anti_passback,
            anti_passback_config=cfg.anti_passback,
        )
        opened = False
        # In free passage the opener is held open: a pulse would end the hold (a relay releases).
        if decision.granted and self.opener is not None and not self.free_passage:
            try:
                await self.opener(direction)
                opened = True
                self._authorised_until = self.clock.monotonic() + cfg.passage_timeout_s
            except DeviceError as err:
                self.stats.open_failures += 1
                log.error("gate %s: granted %s but could not open: %s", cfg.id, read.credential, err)
        decision_us = (time.perf_counter_ns() - started) // 1000
        self.stats.last_decision_us = decision_us
        DECISION_SECONDS.observe(decision_us / 1e6)
        self._report(read, direction, decision, decision_us, opened)
        if self.feedback is not None:
            # After the gate opened and the events are handed over: the LED/buzzer round trip only
            # delays the next read of this same reader, never this decision.
            await self._give_feedback(read.device_id, decision.granted)
        return decision

    async def _give_feedback(self, device_id: str, granted: bool) -> None:
        assert self.feedback is not None
        try:
            await self.feedback(device_id, granted)
        except DeviceError as err:
            log.warning("reader %s: LED/buzzer feedback failed: %s", device_id, err)

    def _report(
        self, read: CardRead, direction: Direction, decision: Decision, decision_us: int, opened: bool
    ) -> None:
        cfg = self.config
        common: dict[str, Any] = {
            "gate": cfg.id,
            "reader": read.device_id,
            "direction": direction,
            "credential": read.credential,
            "credential_format": read.card_format,
            "decision_us": decision_us,
        }
        person = decision.person
        if not decision.granted:
            self.stats.denied += 1
            assert decision.reason is not None
            data = {**common, "reason": decision.reason.value}
            if decision.detail:
                data["detail"] = decision.detail
            if person is not None:
                data["person"] = person_data(person)
            denied = Event(
                "edu.campus.access.denied.v1",
                self.source(read.device_id),
                data,
                time=read.at,
                subject=person.id if person else None,
            )
            self.emit(denied)
            log.info(
                "gate %s: denied %s (%s)",
                cfg.id,
                read.credential,
                decision.reason.value,
                extra={
                    "device": read.device_id,
                    "gate": cfg.id,
                    "event_id": denied.id,
                    "person": person.id if person else None,
                },
            )
            return
        assert person is not None
        self.stats.granted += 1
        granted = Event(
            "edu.campus.access.granted.v1",
            self.source(read.device_id),
            {**common, "person": person_data(person), "anti_passback": decision.anti_passback},
            time=read.at,
            subject=person.id,
        )
        self.emit(granted)
        log.debug(
            "gate %s: granted %s to %s",
            cfg.id,
            read.credential,
            person.id,
            extra={"device": read.device_id, "gate": cfg.id, "event_id": granted.id, "person": person.id},
        )
        if self.on_grant is not None:
            self.on_grant(cfg.id, person.id)
        mono = self.clock.monotonic()
        if opened:
            self._open.append(_Transaction(person, direction, granted.id, mono, mono + cfg.passage_timeout_s))
        else:
            # No turnstile feedback to wait for (a reader-only point, or the open failed): the grant
            # itself is the passage as far as anti-passback knows.
            self._record_passback(person, direction, mono)
        if cfg.attendance is not None and self.attendance is not None:
            self._attendance(person, read, "card")

    def _attendance(
        self, person: Person, read: CardRead, method: Literal["card", "face", "face+card"]
    ) -> None:
        assert self.config.attendance is not None and self.attendance is not None
        local = read.at.astimezone(self.timezone)
        found = self.attendance.record(self.config.id, self.config.attendance, person, local, method=method)
        if found is None:
            return
        self.emit(
            attendance_event(
                found,
                person,
                method=method,
                point=self.config.id,
                device=read.device_id,
                source=self.source(read.device_id),
                at=read.at,
            )
        )

    def expect_remote_passage(self, direction: Direction, authorised_by: str) -> None:
        """The gate was opened by a remote command: the passage that follows is authorised, not
        tailgating. Anti-passback learns nothing from it (nobody presented a card)."""
        mono = self.clock.monotonic()
        self._authorised_until = mono + self.config.passage_timeout_s
        self._open.append(
            _Transaction(
                None, direction, f"remote:{authorised_by}", mono, mono + self.config.passage_timeout_s
            )
        )

    def _record_passback(self, person: Person, direction: Direction, mono: float) -> None:
        cfg = self.config.anti_passback
        if cfg.mode != "off":
            self.anti_passback.record(cfg.area or self.config.id, person.id, direction, mono)

    def on_turnstile(self, event: TurnstileEvent) -> None:
        """Close transactions on passage/timeout; raise alerts for forced, tailgating, fire."""
        cfg = self.config
        src = self.source(event.device_id)
        base = {"gate": cfg.id, "device": event.device_id}
        if event.kind == "passage_done":
            tx = self._take(event.direction)
            if tx is None:
                # More passages than grants: someone went through without a grant.
                self.emit(
                    Event(
                        "edu.campus.access.passage.v1",
                        src,
                        {**base, "direction": event.direction, "result": "no_grant"},
                        time=event.at,
                    )
                )
                self.emit(
                    Event(
                        "edu.campus.access.tailgating.v1",
                        src,
                        {
                            **base,
                            "direction": event.direction,
                            "evidence": "passage_without_grant",
                            "grants": 0,
                            "passages": 1,
                        },
                        time=event.at,
                        severity=Severity.WARNING,
                    )
                )
                return
            self.stats.passages += 1
            if tx.person is not None:
                self._record_passback(tx.person, tx.direction, self.clock.monotonic())
            self.emit(self._passage_event(tx, event.device_id, "passed" if tx.person else "remote", event.at))
        elif event.kind == "passage_timeout":
            tx = self._take(event.direction)
            if tx is not None:
                self._timed_out(tx, event.device_id, event.at)
        elif event.kind in _ALARMS:
            event_type, severity, extra = _ALARMS[event.kind]
            self.emit(Event(event_type, src, {**base, **extra(event)}, time=event.at, severity=severity))
        elif event.kind in ("fault", "nak"):
            self.emit(
                Event(
                    "edu.campus.device.fault.v1",
                    src,
                    {
                        "device": event.device_id,
                        "kind": "turnstile",
                        "detail": event.detail or event.kind,
                        "code": event.value,
                    },
                    time=event.at,
                )
            )

    def _take(self, direction: Direction | None) -> _Transaction | None:
        for tx in self._open:
            if direction is None or tx.direction == direction:
                self._open.remove(tx)
                return tx
        return None

    def _timed_out(self, tx: _Transaction, device_id: str, at: datetime) -> None:
        self.stats.timeouts += 1
        self.emit(self._passage_event(tx, device_id, "timeout", at))

    def _passage_event(
        self, tx: _Transaction, device_id: str, result: Literal["passed", "remote", "timeout"], at: datetime
    ) -> Event:
        data: dict[str, Any] = {
            "gate": self.config.id,
            "device": device_id,
            "direction": tx.direction,
            "result": result,
            "grant_id": tx.grant_id,
            "elapsed_ms": int((self.clock.monotonic() - tx.opened_at) * 1000),
        }
        if tx.person is not None:
            data["person"] = person_data(tx.person)
        return Event(
            "edu.campus.access.passage.v1",
            self.source(device_id),
            data,
            time=at,
            subject=tx.person.id if tx.person is not None else None,
        )

    def expire(self, now_mono: float, at: datetime) -> None:
        """Close granted passages the turnstile never confirmed, and raise door_held_open for a door
        contact open too long (called about once a second)."""
        while self._open and self._open[0].deadline <= now_mono:
            tx = self._open.popleft()
            self._timed_out(
                tx, self.config.turnstile or self.config.door or self.config.readers[0].device, at
            )
        door = self.door
        if (
            door is not None
            and door.open
            and not door.held_reported
            and not self.free_passage
            and now_mono - door.opened_at > self.config.held_open_s
        ):
            door.held_reported = True
            self.stats.held_open += 1
            self.emit(
                Event(
                    "edu.campus.access.door_held_open.v1",
                    self.source(door.device),
                    {"gate": self.config.id, "device": door.device, "direction": None},
                    time=at,
                    severity=Severity.WARNING,
                )
            )
            log.warning("gate %s: door held open for more than %ss", self.config.id, self.config.held_open_s)

    def on_door_contact(self, device_id: str, door: str | None, is_open: bool, at: datetime) -> None:
        """A door contact of this gate's door reported its state (every change, and once after each
        reconnect of its module: a repeated state is ignored).

        Every change becomes ``access.door_state``; opening without a grant, a remote open or free
        passage within ``passage_timeout_s`` is ``access.forced``; an authorised opening completes the
        oldest granted passage (a door has no passage sensor: the contact is the passage)."""
        cfg = self.config
        mono = self.clock.monotonic()
        previous = self.door
        if previous is not None and previous.open == is_open and previous.device == device_id:
            return
        self.door = _DoorState(device_id, door, is_open, opened_at=mono)
        self.stats.door_changes += 1
        src = self.source(device_id)
        base = {"gate": cfg.id, "device": device_id}
        self.emit(
            Event("edu.campus.access.door_state.v1", src, {**base, "door": door, "open": is_open}, time=at)
        )
        if not is_open or previous is None:
            # The first report after start is a state, not an opening we saw happen.
            return
        authorised = self.free_passage or bool(self._open) or mono <= self._authorised_until
        if not authorised:
            self.stats.forced += 1
            self.emit(
                Event(
                    "edu.campus.access.forced.v1",
                    src,
                    {**base, "direction": None},
                    time=at,
                    severity=Severity.CRITICAL,
                )
            )
            log.warning(
                "gate %s: door %s forced open", cfg.id, door, extra={"device": device_id, "gate": cfg.id}
            )
            return
        self._authorised_until = float("-inf")  # one grant, one opening
        tx = self._take(None)
        if tx is not None:
            self.stats.passages += 1
            if tx.person is not None:
                self._record_passback(tx.person, tx.direction, mono)
            self.emit(self._passage_event(tx, device_id, "passed" if tx.person else "remote", at))

    async def set_free_passage(self, active: bool, device_id: str, at: datetime) -> bool:
        """Fire alarm: hold the opener open (``active``) or back to normal, and report
        ``access.free_passage``. Returns whether the state changed."""
        if active == self.free_passage:
            return False
        self.free_passage = active
        if self.holder is not None:
            try:
                await self.holder(active)
            except DeviceError as err:
                self.stats.open_failures += 1
                log.error(
                    "gate %s: free passage %s failed: %s", self.config.id, "on" if active else "off", err
                )
        self.emit(
            Event(
                "edu.campus.access.free_passage.v1",
                self.source(device_id),
                {"gate": self.config.id, "device": device_id, "active": active},
                time=at,
                severity=Severity.CRITICAL if active else Severity.INFO,
            )
        )
        if not active and self.door is not None and self.door.open:
            # The hold is over: a door still open now starts its held-open clock.
            self.door.opened_at = self.clock.monotonic()
            self.door.held_reported = False
        return True


__all__ = ["Feedback", "GateController", "GateStats", "GrantLog", "Holder", "Opener"]

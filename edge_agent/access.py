"""Access decisions: grant or deny a presented credential, from the local roster, in memory.

:func:`decide` is a pure function of the roster view, the gate, the time and the anti-passback
state, so it is tested with plain values and costs microseconds. It never waits on anything.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from edge_agent.config import AntiPassbackConfig, Direction
from edge_agent.roster import RosterIndex
from sync import WEEKDAYS, Credential, Person, Schedule


class DenyReason(enum.StrEnum):
    UNKNOWN_CREDENTIAL = "unknown_credential"
    EXPIRED = "expired"
    OUTSIDE_SCHEDULE = "outside_schedule"
    NOT_IN_GROUP = "not_in_group"
    ANTI_PASSBACK = "anti_passback"
    BLOCKED = "blocked"
    PERSON_NOT_IN_ROSTER = "person_not_in_roster"
    """The card belonged to a person who has left the roster (or names a person it does not hold)."""


@dataclass(frozen=True, slots=True)
class Decision:
    granted: bool
    reason: DenyReason | None
    person: Person | None
    credential: Credential | None
    anti_passback: Literal["ok", "soft_violation", "off"] = "off"
    detail: str = ""


class AntiPassback:
    """Last passage direction per (area, person), kept in memory.

    Lost on restart on purpose: after a restart nobody is locked in or out by a state that may no
    longer be true; the first passage re-establishes it.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[Direction, float]] = {}

    def violates(
        self, cfg: AntiPassbackConfig, area: str, person_id: str, direction: Direction, now: float
    ) -> bool:
        last = self._last.get((area, person_id))
        if last is None or cfg.mode == "off":
            return False
        last_direction, at = last
        if cfg.mode == "timed":
            return last_direction == direction and now - at < cfg.window_s
        return last_direction == direction

    def record(self, area: str, person_id: str, direction: Direction, now: float) -> None:
        self._last[(area, person_id)] = (direction, now)

    def forget(self, person_ids: Collection[str]) -> int:
        """Drop what is held of ``person_ids`` (they left the roster), in one pass; returns how many
        (area, person) entries went."""
        keys = [key for key in self._last if key[1] in person_ids]
        for key in keys:
            del self._last[key]
        return len(keys)

    def holds(self, person_id: str) -> list[str]:
        """The areas where a last passage of ``person_id`` is kept."""
        return sorted(area for area, person in self._last if person == person_id)


def schedule_open(schedule: Schedule, local: datetime) -> bool:
    """Is ``local`` (gateway local time, naive or aware) inside the schedule?"""
    if local.date() in schedule.holidays:
        return False
    hhmm = local.strftime("%H:%M")
    windows = schedule.weekly.get(WEEKDAYS[local.weekday()], [])
    return any(w.start <= hhmm < w.end for w in windows)


def _expired(valid_from: datetime | None, valid_until: datetime | None, now: datetime) -> str:
    if valid_from is not None and now < valid_from:
        return "not valid yet"
    if valid_until is not None and now >= valid_until:
        return "expired"
    return ""


def decide(
    roster: RosterIndex,
    *,
    credential: str,
    card_format: str,
    gate: str,
    direction: Direction,
    now: datetime,
    local_now: datetime,
    monotonic_now: float,
    anti_passback: AntiPassback,
    anti_passback_config: AntiPassbackConfig,
) -> Decision:
    """Grant or deny ``credential`` at ``gate``; checks in the order a guard would explain them."""
    blocked = roster.blocklist.get(credential)
    cred = roster.credentials.get(credential)
    person = roster.persons.get(cred.person_id) if cred is not None else None
    if blocked is not None:
        return Decision(
            False, DenyReason.BLOCKED, person, cred, detail=blocked.reason or "card on the blocklist"
        )
    if cred is None:
        if credential in roster.departed:
            # Never attributed to the former holder: the person id is not in the decision.
            return Decision(
                False,
                DenyReason.PERSON_NOT_IN_ROSTER,
                None,
                None,
                detail="the card's holder has left the roster",
            )
        return Decision(False, DenyReason.UNKNOWN_CREDENTIAL, None, None)
    if person is None:  # an index that passed check() has none; a card is never granted on it
        return Decision(
            False,
            DenyReason.PERSON_NOT_IN_ROSTER,
            None,
            None,
            detail="the card names a person the roster does not hold",
        )
    if cred.format not in ("any", card_format):
        return Decision(
            False,
            DenyReason.UNKNOWN_CREDENTIAL,
            None,
            None,
            detail=f"card registered as {cred.format}, read as {card_format}",
        )
    if person.blocked:
        return Decision(False, DenyReason.BLOCKED, person, cred, detail="person blocked")
    why = _expired(cred.valid_from, cred.valid_until, now) or _expired(
        person.valid_from, person.valid_until, now
    )
    if why:
        return Decision(False, DenyReason.EXPIRED, person, cred, detail=why)
    groups = [roster.access_groups[g] for g in person.access_groups if g in roster.access_groups]
    allowed = [g for g in groups if gate in g.gates or "*" in g.gates]
    if not allowed:
        return Decision(False, DenyReason.NOT_IN_GROUP, person, cred)
    if not any(g.schedule is None or schedule_open(roster.schedules[g.schedule], local_now) for g in allowed):
        return Decision(False, DenyReason.OUTSIDE_SCHEDULE, person, cred)
    if anti_passback_config.mode == "off":
        return Decision(True, None, person, cred, "off")
    area = anti_passback_config.area or gate
    if anti_passback.violates(anti_passback_config, area, person.id, direction, monotonic_now):
        if anti_passback_config.mode == "soft":
            return Decision(True, None, person, cred, "soft_violation")
        return Decision(
            False, DenyReason.ANTI_PASSBACK, person, cred, detail=f"already {direction} in {area}"
        )
    return Decision(True, None, person, cred, "ok")


__all__ = [
    "AntiPassback",
    "Decision",
    "DenyReason",
    "decide",
    "schedule_open",
]

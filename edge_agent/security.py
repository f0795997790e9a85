"""Security rules on camera analysis: intrusion, line crossing, loitering, crowding, tamper, tailgating.

:class:`SecurityRules` is a pure function of what the person pipeline saw (tracks, zone entries and
exits, line crossings, tamper changes), the local time and the gate grants: it returns the alerts to
raise, each with its evidence. Each rule has a schedule (when it is armed), a severity and a cooldown.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sync.event_types import Severity
from sync.roster_messages import WEEKDAYS, TimeWindow, Weekday
from vision.person import PersonFrameResult, PersonPipelineConfig
from vision.zones import CameraZones, LineCrossing, LineZone, PolygonZone, ZoneEntered, ZoneJudge

TamperKind = Literal["covered", "defocused", "moved", "stream_lost"]
_ALL_TAMPER: tuple[TamperKind, ...] = ("covered", "defocused", "moved", "stream_lost")


class RuleSchedule(BaseModel):
    """When a rule is armed, in the gateway's local time; no schedule means always."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weekdays: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), description="Days it is armed.")
    windows: list[TimeWindow] = Field(
        default_factory=list, description="Times of day it is armed (HH:MM-HH:MM); empty means all day."
    )

    @field_validator("weekdays")
    @classmethod
    def _some_day(cls, days: list[Weekday]) -> list[Weekday]:
        if not days:
            raise ValueError("a schedule with no weekdays can never be armed")
        return days

    def armed(self, local: datetime) -> bool:
        if WEEKDAYS[local.weekday()] not in self.weekdays:
            return False
        hhmm = local.strftime("%H:%M")
        return not self.windows or any(w.start <= hhmm < w.end for w in self.windows)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Rule id; named in the alert.")
    severity: Severity = Field(Severity.WARNING, description="Alert severity.")
    cooldown_s: float = Field(60.0, ge=0, description="At most one alert of this rule per this period.")
    schedule: RuleSchedule | None = Field(None, description="When the rule is armed; always if unset.")


class IntrusionRule(_Rule):
    kind: Literal["intrusion"] = Field(description="Someone enters a zone.")
    zone: str = Field(description="Zone id.")


class LineCrossingRule(_Rule):
    kind: Literal["line_crossing"] = Field(description="Someone crosses a line in a direction.")
    line: str = Field(description="Line id.")
    direction: Literal["a_to_b", "b_to_a", "both"] = Field("both", description="Which crossings count.")


class LoiteringRule(_Rule):
    kind: Literal["loitering"] = Field(description="Someone stays in a zone too long.")
    zone: str = Field(description="Zone id.")
    dwell_s: float = Field(gt=0, description="How long counts as loitering (short track breaks tolerated).")


class CrowdingRule(_Rule):
    kind: Literal["crowding"] = Field(description="Too many people in a zone for too long.")
    zone: str = Field(description="Zone id.")
    min_people: int = Field(ge=2, description="How many people make a crowd.")
    for_s: float = Field(0.0, ge=0, description="For how long before it is an alert.")


class TamperRule(_Rule):
    kind: Literal["tamper"] = Field(description="The camera is covered, defocused, moved or lost.")
    kinds: list[TamperKind] = Field(default_factory=lambda: list(_ALL_TAMPER), description="Which tampers.")


class TailgatingRule(_Rule):
    kind: Literal["tailgating"] = Field(description="More people cross the gate line than the gate granted.")
    line: str = Field(description="Line drawn across the gate passage.")
    direction: Literal["a_to_b", "b_to_a"] = Field(description="The crossing direction that is an entry.")
    gate: str = Field(description="Gate id whose grants are counted.")
    window_s: float = Field(8.0, gt=0, description="Grants and crossings are compared over this window.")


Rule = Annotated[
    IntrusionRule | LineCrossingRule | LoiteringRule | CrowdingRule | TamperRule | TailgatingRule,
    Field(discriminator="kind"),
]


class SecurityConfig(BaseModel):
    """Zones, lines and rules of one camera (coordinates as in ``vision.zones``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: list[PolygonZone] = Field(default_factory=list, description="Polygon zones.")
    lines: list[LineZone] = Field(default_factory=list, description="Directed lines.")
    reference_size: tuple[int, int] | None = Field(
        None, description="[width, height] the pixel coordinates were drawn on."
    )
    rules: list[Rule] = Field(default_factory=list, description="Alert rules.")
    pipeline: PersonPipelineConfig = Field(
        default_factory=PersonPipelineConfig,
        description="Person detection, tracking, motion and tamper settings.",
    )

    @model_validator(mode="after")
    def _references(self) -> SecurityConfig:
        zones = {z.id for z in self.zones}
        lines = {line.id for line in self.lines}
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise ValueError("rule ids must be unique per camera")
        for rule in self.rules:
            zone = getattr(rule, "zone", None)
            if zone is not None and zone not in zones:
                raise ValueError(f"rule {rule.id}: unknown zone {zone!r}")
            line = getattr(rule, "line", None)
            if line is not None and line not in lines:
                raise ValueError(f"rule {rule.id}: unknown line {line!r}")
            if isinstance(rule, TamperRule) and self.pipeline.tamper is None:
                raise ValueError(f"rule {rule.id}: tamper checks are off in pipeline.tamper")
        return self

    def camera_zones(self, camera_id: str) -> CameraZones:
        return CameraZones(
            camera_id=camera_id, zones=self.zones, lines=self.lines, reference_size=self.reference_size
        )


@dataclass(frozen=True)
class Alert:
    """An alert to raise: its event type, severity, payload, and the tracks to draw on the snapshot."""

    type: str
    severity: Severity
    data: dict[str, Any]
    track_ids: tuple[int, ...] = ()


@dataclass
class _State:
    last_alert: float = -1e18
    loiter_reported: set[int] = field(default_factory=set)
    crowd_since: float | None = None
    crowd_reported: bool = False
    crossings: collections.deque[float] = field(default_factory=collections.deque)
    excess_reported: int = 0


class SecurityRules:
    """Evaluates one camera's rules frame by frame (not thread-safe: one per camera)."""

    def __init__(
        self, camera_id: str, config: SecurityConfig, grants: Callable[[str, float], int] | None = None
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.grants = grants or (lambda gate, window: 0)
        self._state: dict[str, _State] = {r.id: _State() for r in config.rules}

    def evaluate(
        self, result: PersonFrameResult, judge: ZoneJudge | None, local_now: datetime
    ) -> list[Alert]:
        now = result.at
        alerts: list[Alert] = []
        for rule in self.config.rules:
            if rule.schedule is not None and not rule.schedule.armed(local_now):
                self._disarm(rule.id)
                continue
            state = self._state[rule.id]
            found = self._rule(rule, state, result, judge, now)
            if found is None:
                continue
            if now - state.last_alert < rule.cooldown_s:
                continue
            state.last_alert = now
            alerts.append(found)
        return alerts

    def _disarm(self, rule_id: str) -> None:
        state = self._state[rule_id]
        state.crowd_since = None
        state.crowd_reported = False

    def _base(self, rule: _Rule, **extra: Any) -> dict[str, Any]:
        return {"camera": self.camera_id, "rule": rule.id, **extra}

    def _rule(
        self, rule: Any, state: _State, result: PersonFrameResult, judge: ZoneJudge | None, now: float
    ) -> Alert | None:
        if isinstance(rule, IntrusionRule):
            entered = [
                o.track_id for o in result.zones if isinstance(o, ZoneEntered) and o.zone_id == rule.zone
            ]
            if not entered:
                return None
            count = len(judge.occupants(rule.zone)) if judge else len(entered)
            return Alert(
                "edu.campus.security.intrusion.v1",
                rule.severity,
                self._base(rule, zone=rule.zone, track_ids=entered, count=count),
                tuple(entered),
            )
        if isinstance(rule, LineCrossingRule):
            crossed = [
                o
                for o in result.zones
                if isinstance(o, LineCrossing)
                and o.line_id == rule.line
                and (rule.direction == "both" or (o.direction > 0) == (rule.direction == "a_to_b"))
            ]
            if not crossed:
                return None
            first = crossed[0]
            return Alert(
                "edu.campus.security.line_crossing.v1",
                rule.severity,
                self._base(
                    rule,
                    line=rule.line,
                    direction="a_to_b" if first.direction > 0 else "b_to_a",
                    label=first.label,
                    track_ids=[o.track_id for o in crossed],
                ),
                tuple(o.track_id for o in crossed),
            )
        if isinstance(rule, LoiteringRule):
            if judge is None:
                return None
            occupants = judge.occupants(rule.zone)
            state.loiter_reported &= set(occupants)
            long_stay = {
                tid: now - at
                for tid, at in occupants.items()
                if now - at >= rule.dwell_s and tid not in state.loiter_reported
            }
            if not long_stay:
                return None
            state.loiter_reported |= set(long_stay)
            return Alert(
                "edu.campus.security.loitering.v1",
                rule.severity,
                self._base(
                    rule,
                    zone=rule.zone,
                    track_ids=sorted(long_stay),
                    dwell_s=round(max(long_stay.values()), 1),
                ),
                tuple(sorted(long_stay)),
            )
        if isinstance(rule, CrowdingRule):
            if judge is None:
                return None
            occupants = judge.occupants(rule.zone)
            if len(occupants) < rule.min_people:
                state.crowd_since, state.crowd_reported = None, False
                return None
            if state.crowd_since is None:
                state.crowd_since = now
            if state.crowd_reported or now - state.crowd_since < rule.for_s:
                return None
            state.crowd_reported = True
            return Alert(
                "edu.campus.security.crowding.v1",
                rule.severity,
                self._base(
                    rule,
                    zone=rule.zone,
                    count=len(occupants),
                    track_ids=sorted(occupants),
                    for_s=round(now - state.crowd_since, 1),
                ),
                tuple(sorted(occupants)),
            )
        if isinstance(rule, TamperRule):
            change = next((c for c in result.tamper if c.active and c.kind in rule.kinds), None)
            if change is None:
                return None
            return Alert(
                "edu.campus.security.camera_tamper.v1",
                rule.severity,
                self._base(rule, kind=change.kind, reason=change.reason),
            )
        if isinstance(rule, TailgatingRule):
            entries = [
                o
                for o in result.zones
                if isinstance(o, LineCrossing)
                and o.line_id == rule.line
                and (o.direction > 0) == (rule.direction == "a_to_b")
            ]
            for _ in entries:
                state.crossings.append(now)
            while state.crossings and now - state.crossings[0] > rule.window_s:
                state.crossings.popleft()
            if not entries:
                return None
            passages = len(state.crossings)
            granted = self.grants(rule.gate, rule.window_s)
            if passages <= granted:
                return None
            return Alert(
                "edu.campus.access.tailgating.v1",
                rule.severity,
                {
                    "gate": rule.gate,
                    "device": self.camera_id,
                    "direction": "entry",
                    "evidence": "video",
                    "grants": granted,
                    "passages": passages,
                    "track_ids": [o.track_id for o in entries],
                },
                tuple(o.track_id for o in entries),
            )
        return None


__all__ = [
    "Alert",
    "CrowdingRule",
    "IntrusionRule",
    "LineCrossingRule",
    "LoiteringRule",
    "RuleSchedule",
    "SecurityConfig",
    "SecurityRules",
    "TailgatingRule",
    "TamperRule",
]

"""Security rules on camera analysis: intrusion, line crossing, loitering, crowding, tamper, tailgating.

:class:`SecurityRules` is a function of what the person pipeline observed in one frame (its
:class:`vision.PersonFrameResult`: tracks, zone entries and exits, occupants, line crossings, tamper
changes), the local time and the gate grants: it returns the alerts to raise, each with its
evidence. It never looks into the pipeline. Each rule has a schedule (when it is armed), a severity
and a cooldown, all judged on the frame's capture time. A silent camera (``stream_lost``) comes from
a periodic check instead of a frame and is judged by :meth:`SecurityRules.evaluate_stream`, on that
check's own time and state, so a check never moves the time frames are judged by.

The settings models live in the config leaf :mod:`edge_agent.config.cameras`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.config.cameras import (
    CrowdingRule,
    IntrusionRule,
    LineCrossingRule,
    LoiteringRule,
    RuleBase,
    SecurityConfig,
    TailgatingRule,
    TamperRule,
)
from sync import Severity
from vision import LineCrossing, PersonFrameResult, TamperChange, ZoneEntered


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
        # Stream-lost alerts have their own cooldown on the periodic check's clock: that clock must
        # never meet the frames' capture times in one state.
        self._stream_last_alert: dict[str, float] = {}

    def evaluate(self, result: PersonFrameResult, local_now: datetime) -> list[Alert]:
        """The alerts this frame raises. ``result.at`` (the capture time) is the rules' time;
        ``local_now`` is the frame's wall time in the gateway's timezone (for schedules)."""
        now = result.at
        alerts: list[Alert] = []
        for rule in self.config.rules:
            if rule.schedule is not None and not rule.schedule.armed(local_now):
                self._disarm(rule.id)
                continue
            state = self._state[rule.id]
            found = self._rule(rule, state, result, now)
            if found is None:
                continue
            if now - state.last_alert < rule.cooldown_s:
                continue
            state.last_alert = now
            alerts.append(found)
        return alerts

    def evaluate_stream(self, changes: list[TamperChange], now: float, local_now: datetime) -> list[Alert]:
        """Alerts for stream changes from a periodic silence check at ``now`` (its own monotonic
        time, not a frame's): tamper rules that watch ``stream_lost`` and are armed at ``local_now``."""
        alerts: list[Alert] = []
        for rule in self.config.rules:
            if not isinstance(rule, TamperRule) or "stream_lost" not in rule.kinds:
                continue
            if rule.schedule is not None and not rule.schedule.armed(local_now):
                continue
            change = next((c for c in changes if c.active and c.kind == "stream_lost"), None)
            if change is None:
                continue
            last = self._stream_last_alert.get(rule.id)
            if last is not None and now - last < rule.cooldown_s:
                continue
            self._stream_last_alert[rule.id] = now
            alerts.append(
                Alert(
                    "edu.campus.security.camera_tamper.v1",
                    rule.severity,
                    self._base(rule, kind=change.kind, reason=change.reason),
                )
            )
        return alerts

    def _disarm(self, rule_id: str) -> None:
        state = self._state[rule_id]
        state.crowd_since = None
        state.crowd_reported = False

    def _base(self, rule: RuleBase, **extra: Any) -> dict[str, Any]:
        return {"camera": self.camera_id, "rule": rule.id, **extra}

    def _rule(self, rule: Any, state: _State, result: PersonFrameResult, now: float) -> Alert | None:
        if isinstance(rule, IntrusionRule):
            entered = [
                o.track_id for o in result.zones if isinstance(o, ZoneEntered) and o.zone_id == rule.zone
            ]
            if not entered:
                return None
            count = len(result.occupants.get(rule.zone, {})) or len(entered)
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
            occupants = result.occupants.get(rule.zone, {})
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
            occupants = result.occupants.get(rule.zone, {})
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
            # stream_lost never comes from a frame: see evaluate_stream.
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
    "SecurityRules",
]

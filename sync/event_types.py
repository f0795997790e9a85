"""The registry of event types: their delivery lane, and the JSON Schema of their payload.

One place says which types exist. The envelope refuses a type that is not registered here, the
outbox takes the lane from here, and the schema files under ``schemas/events/`` are named after
these types (a test checks that the two agree).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sync.config import Severity


class Lane(enum.IntEnum):
    """Delivery lanes: a lower number is always published first (DESIGN.md, store-and-forward)."""

    ALERT = 0
    ACCESS = 1
    TELEMETRY = 2


@dataclass(frozen=True, slots=True)
class EventType:
    """One registered event type.

    ``lane`` decides delivery order and the drop policy: only ``Lane.TELEMETRY`` rows may ever be
    dropped undelivered. ``alert`` types carry a ``severity`` and are also published on
    ``alerts/{severity}``.
    """

    name: str
    lane: Lane
    alert: bool = False

    @property
    def area(self) -> str:
        """The ``<area>`` of ``edu.campus.<area>.<name>.v1``; it names the ``events/{area}`` topic."""
        return self.name.split(".")[2]


_TYPES = [
    EventType("edu.campus.gateway.started.v1", Lane.ACCESS),
    EventType("edu.campus.gateway.stopped.v1", Lane.ACCESS),
    # Drop and storage reports ride the access lane so they are never themselves dropped.
    EventType("edu.campus.gateway.events_dropped.v1", Lane.ACCESS),
    EventType("edu.campus.gateway.storage_recovered.v1", Lane.ACCESS),
    # The disk is full even for alerts and access (they wait in memory): an alert of its own.
    EventType("edu.campus.gateway.storage_critical.v1", Lane.ALERT, alert=True),
    # Every mutating call on the local API or a remote command: who did what, and the outcome.
    EventType("edu.campus.gateway.audit.v1", Lane.ACCESS),
    EventType("edu.campus.gateway.roster_applied.v1", Lane.ACCESS),
    EventType("edu.campus.gateway.roster_rejected.v1", Lane.ACCESS),
    EventType("edu.campus.access.granted.v1", Lane.ACCESS),
    EventType("edu.campus.access.denied.v1", Lane.ACCESS),
    EventType("edu.campus.access.passage.v1", Lane.ACCESS),
    EventType("edu.campus.access.forced.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.access.tailgating.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.access.free_passage.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.access.door_held_open.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.access.door_state.v1", Lane.ACCESS),
    EventType("edu.campus.attendance.recorded.v1", Lane.ACCESS),
    # A terminal's record for a user id the roster does not map: never a guessed person.
    EventType("edu.campus.attendance.unmapped.v1", Lane.ACCESS),
    # A session's roll-call when it closes: present, late, absent (edge_agent/rollcall.py).
    EventType("edu.campus.attendance.session_closed.v1", Lane.ACCESS),
    EventType("edu.campus.device.online.v1", Lane.TELEMETRY),
    EventType("edu.campus.device.offline.v1", Lane.TELEMETRY),
    EventType("edu.campus.device.heartbeat.v1", Lane.TELEMETRY),
    EventType("edu.campus.device.fault.v1", Lane.TELEMETRY),
    EventType("edu.campus.device.tamper.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.device.motion.v1", Lane.TELEMETRY),
    EventType("edu.campus.security.test_alert.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.stranger.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.intrusion.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.line_crossing.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.loitering.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.crowding.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.camera_tamper.v1", Lane.ALERT, alert=True),
    EventType("edu.campus.security.fire_alarm.v1", Lane.ALERT, alert=True),
    # An operator's action on an alert: audited, never dropped.
    EventType("edu.campus.security.alert_acknowledged.v1", Lane.ACCESS),
]

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in _TYPES}

__all__ = ["EVENT_TYPES", "EventType", "Lane", "Severity"]

"""One example of every message in the contract, for the AsyncAPI document and for integrators.

Each example is built with the same code the gateway publishes with (``Event.to_dict``), with a fixed
id and time so the generated document does not change from run to run; a test validates every
example against its schema, so an example cannot drift from the contract.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync.envelope import Event
from sync.event_types import EVENT_TYPES, Severity

SITE, GW = "north-campus", "gw-gate-1"
AT = datetime(2026, 9, 1, 7, 42, 13, 250000, tzinfo=UTC)
STUDENT = {"id": "S1001", "name": "Li Wei", "role": "student", "group": "7A"}
SESSION = {
    "id": "7a-math-mon-1",
    "name": "7A mathematics",
    "date": "2026-09-01",
    "start": "08:00",
    "end": "08:45",
}

# type -> (device, data, subject, severity)
_EVENTS: dict[str, tuple[str, dict[str, Any], str | None, Severity | None]] = {
    "edu.campus.gateway.started.v1": (
        "gateway",
        {"version": "0.1.0", "hostname": "edge-gate-1", "outbox_backlog": 0, "previous_shutdown": "clean"},
        None,
        None,
    ),
    "edu.campus.gateway.stopped.v1": (
        "gateway",
        {"version": "0.1.0", "reason": "SIGTERM", "uptime_s": 86400.5},
        None,
        None,
    ),
    "edu.campus.gateway.events_dropped.v1": (
        "gateway",
        {
            "reason": "disk_full",
            "delivered_purged": 120000,
            "undelivered_dropped": 5000,
            "first_seq": 1001,
            "last_seq": 6000,
            "types": {"edu.campus.device.heartbeat.v1": 5000},
            "used_bytes": 1073000000,
            "limit_bytes": 1073741824,
            "free_bytes": 0,
            "never_committed": 12,
            "never_committed_types": {"edu.campus.device.heartbeat.v1": 12},
            "never_committed_from": "2026-09-01T07:40:00.125Z",
            "never_committed_to": "2026-09-01T07:40:00.380Z",
        },
        None,
        None,
    ),
    "edu.campus.gateway.storage_recovered.v1": (
        "gateway",
        {
            "store": "outbox",
            "moved_to": "/var/lib/edge-agent/outbox.db.corrupt-20260901T074000",
            "error": "file is not a database",
            "seq_resumed_at": 200001,
            "salvaged": 412,
        },
        None,
        None,
    ),
    "edu.campus.gateway.storage_critical.v1": (
        "gateway",
        {
            "path": "/var/lib/edge-agent",
            "free_bytes": 0,
            "memory_queue_max": 10000,
            "error": "database or disk is full",
        },
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.gateway.audit.v1": (
        "gateway",
        {
            "actor": "centre-ops",
            "role": "centre",
            "via": "mqtt",
            "action": "open",
            "target": "gate-1",
            "result": "ok",
            "request_id": "req-7731",
        },
        None,
        None,
    ),
    "edu.campus.gateway.roster_applied.v1": (
        "gateway",
        {"kind": "delta", "from_version": 41, "version": 42, "persons": 1834, "credentials": 2101},
        None,
        None,
    ),
    "edu.campus.gateway.roster_rejected.v1": (
        "gateway",
        {
            "kind": "delta",
            "held_version": 40,
            "requested_version": 42,
            "result": "resync_needed",
            "reason": "delta 41->42 does not follow version 40; a full snapshot is needed",
        },
        None,
        None,
    ),
    "edu.campus.access.granted.v1": (
        "reader-in",
        {
            "gate": "gate-1",
            "reader": "reader-in",
            "direction": "entry",
            "credential": "0012AB34CD",
            "credential_format": "em4100",
            "decision_us": 180,
            "person": STUDENT,
            "anti_passback": "ok",
        },
        "S1001",
        None,
    ),
    "edu.campus.access.denied.v1": (
        "reader-in",
        {
            "gate": "gate-1",
            "reader": "reader-in",
            "direction": "entry",
            "credential": "00DEADBEEF",
            "credential_format": "em4100",
            "reason": "unknown_credential",
            "decision_us": 95,
        },
        None,
        None,
    ),
    "edu.campus.access.passage.v1": (
        "turnstile-1",
        {
            "gate": "gate-1",
            "device": "turnstile-1",
            "direction": "entry",
            "result": "passed",
            "person": STUDENT,
            "grant_id": "01K3ZV5Q8M4T2X9C7B6N1R0PAS",
            "elapsed_ms": 2140,
        },
        "S1001",
        None,
    ),
    "edu.campus.access.forced.v1": (
        "turnstile-1",
        {"gate": "gate-1", "device": "turnstile-1", "direction": "exit"},
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.access.tailgating.v1": (
        "cam-gate-1",
        {
            "gate": "gate-1",
            "device": "cam-gate-1",
            "direction": "entry",
            "evidence": "video",
            "grants": 1,
            "passages": 2,
            "track_ids": [17, 18],
        },
        None,
        Severity.WARNING,
    ),
    "edu.campus.access.free_passage.v1": (
        "turnstile-1",
        {"gate": "gate-1", "device": "turnstile-1", "active": True},
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.access.door_held_open.v1": (
        "turnstile-1",
        {"gate": "gate-1", "device": "turnstile-1", "direction": "entry"},
        None,
        Severity.WARNING,
    ),
    "edu.campus.attendance.recorded.v1": (
        "cam-7a",
        {
            "person": STUDENT,
            "method": "face",
            "point": "room-7a",
            "device": "cam-7a",
            "session": SESSION,
            "status": "present",
            "distance": 0.3812,
            "confidence": 0.2376,
            "model_id": "dlib_resnet_v1",
        },
        "S1001",
        None,
    ),
    "edu.campus.attendance.session_closed.v1": (
        "gateway",
        {
            "point": "room-7a",
            "session": SESSION["id"],
            "session_name": SESSION["name"],
            "day": SESSION["date"],
            "start": SESSION["start"],
            "end": SESSION["end"],
            "expected": 4,
            "present": ["S1001", "S1002"],
            "late": ["S1003"],
            "absent": ["S1004"],
            "evidence": {"S1001": 7, "S1002": 1, "S1003": 2},
            "method": {"S1001": "face", "S1002": "card", "S1003": "face+card"},
            "seen_elsewhere": ["S1004"],
            "closed_at": "2026-09-01T07:42:13.250Z",
        },
        None,
        None,
    ),
    "edu.campus.attendance.unmapped.v1": (
        "zk-office-1",
        {
            "device": "zk-office-1",
            "point": "office-a",
            "terminal_user_id": "4711",
            "method": "fingerprint",
            "punch": "check_in",
            "terminal_time": "2026-09-01T07:42:10Z",
            "received_at": "2026-09-01T07:42:13.250Z",
            "record": {
                "uid": 12,
                "user_id": "4711",
                "timestamp": "2026-09-01 15:42:10",
                "status": 1,
                "punch": 0,
            },
        },
        None,
        None,
    ),
    "edu.campus.access.door_state.v1": (
        "io-1",
        {"gate": "door-lab", "device": "io-1", "door": "lab-contact", "open": True},
        None,
        None,
    ),
    "edu.campus.device.motion.v1": (
        "cam-hall",
        {"device": "cam-hall", "active": True, "topic": "tns1:RuleEngine/CellMotionDetector/Motion"},
        None,
        None,
    ),
    "edu.campus.security.fire_alarm.v1": (
        "io-1",
        {
            "zone": "building-a",
            "device": "io-1",
            "input": "fire-panel",
            "active": True,
            "gates": ["gate-1", "door-lab"],
        },
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.device.online.v1": (
        "reader-in",
        {"device": "reader-in", "kind": "card_reader", "reason": "opened /dev/ttyUSB0"},
        None,
        None,
    ),
    "edu.campus.device.offline.v1": (
        "cam-7a",
        {"device": "cam-7a", "kind": "camera", "reason": "no frames for 10 s"},
        None,
        None,
    ),
    "edu.campus.device.heartbeat.v1": (
        "gateway",
        {"device": "gateway", "kind": "gateway", "uptime_s": 3600.0, "counter": 48213, "errors": 0},
        None,
        None,
    ),
    "edu.campus.device.fault.v1": (
        "turnstile-1",
        {"device": "turnstile-1", "kind": "turnstile", "detail": "motor_overcurrent", "code": 3},
        None,
        None,
    ),
    "edu.campus.device.tamper.v1": (
        "osdp-in",
        {"device": "osdp-in", "kind": "osdp_reader", "tampered": True, "power_failure": False},
        None,
        Severity.WARNING,
    ),
    "edu.campus.security.test_alert.v1": (
        "cam-1",
        {"device": "cam-1", "reason": "monthly test of the alarm chain", "requested_by": "it-ops"},
        None,
        Severity.INFO,
    ),
    "edu.campus.security.stranger.v1": (
        "cam-7a",
        {
            "camera": "cam-7a",
            "track_id": 4,
            "point": "room-7a",
            "nearest_distance": 0.71,
            "model_id": "dlib_resnet_v1",
            "box": [412.0, 120.5, 498.0, 231.0],
            "snapshot": True,
        },
        None,
        Severity.WARNING,
    ),
    "edu.campus.security.intrusion.v1": (
        "cam-yard",
        {
            "camera": "cam-yard",
            "rule": "yard-after-hours",
            "zone": "yard",
            "track_ids": [31],
            "count": 1,
            "snapshot": True,
        },
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.security.line_crossing.v1": (
        "cam-gate-1",
        {
            "camera": "cam-gate-1",
            "rule": "fence-line",
            "line": "fence",
            "direction": "a_to_b",
            "label": "in",
            "track_ids": [9],
            "snapshot": True,
        },
        None,
        Severity.WARNING,
    ),
    "edu.campus.security.loitering.v1": (
        "cam-yard",
        {
            "camera": "cam-yard",
            "rule": "bike-shed",
            "zone": "bike-shed",
            "track_ids": [12],
            "dwell_s": 312.5,
            "snapshot": True,
        },
        None,
        Severity.WARNING,
    ),
    "edu.campus.security.crowding.v1": (
        "cam-hall",
        {
            "camera": "cam-hall",
            "rule": "stairs",
            "zone": "stairs",
            "count": 14,
            "track_ids": list(range(40, 54)),
            "for_s": 30.2,
            "snapshot": True,
        },
        None,
        Severity.WARNING,
    ),
    "edu.campus.security.camera_tamper.v1": (
        "cam-yard",
        {
            "camera": "cam-yard",
            "rule": "tamper",
            "kind": "covered",
            "reason": "mean 9, spread 2 for 15 frames",
            "snapshot": True,
        },
        None,
        Severity.CRITICAL,
    ),
    "edu.campus.security.alert_acknowledged.v1": (
        "gateway",
        {
            "alert_id": "01K3ZV9D3W5Q1M8B2C7X4N6RTA",
            "alert_type": "edu.campus.security.intrusion.v1",
            "by": "guard-wang",
            "via": "console",
            "at": "2026-09-01T07:43:02.118Z",
            "note": "cleaner, known",
        },
        None,
        None,
    ),
}


def event_example(event_type: str) -> dict[str, Any]:
    """The example of one event type, as the gateway would publish it."""
    device, data, subject, severity = _EVENTS[event_type]
    index = sorted(EVENT_TYPES).index(event_type)
    event = Event(
        event_type,
        f"campus/{SITE}/{GW}/{device}",
        data,
        time=AT,
        subject=subject,
        severity=severity,
        id=f"01K3ZV5Q8M4T2X9C7B6N1R{index:04d}",
    )
    return event.to_dict(seq=100_000 + index)


def missing_examples() -> list[str]:
    return sorted(set(EVENT_TYPES) - set(_EVENTS))


STATUS_EXAMPLE: dict[str, Any] = {
    "state": "online",
    "reason": "periodic",
    "site": SITE,
    "gateway": GW,
    "version": "0.1.0",
    "at": "2026-09-01T07:42:13.250Z",
    "last_seq": 100231,
    "mqtt_protocol": "5",
    "roster_version": 42,
    "backlog": {
        "alert": {"pending": 0, "oldest_age_s": None},
        "access": {"pending": 3, "oldest_age_s": 0.4},
        "telemetry": {"pending": 120, "oldest_age_s": 35.2},
    },
    "devices": {
        "reader-in": {"kind": "card_reader", "online": True},
        "cam-7a": {"kind": "camera", "online": False},
    },
}

TELEMETRY_EXAMPLE: dict[str, Any] = {
    "site": SITE,
    "gateway": GW,
    "version": "0.1.0",
    "at": "2026-09-01T07:42:13.250Z",
    "uptime_s": 3600.0,
    "outbox": {
        "pending": 123,
        "appended": 48213,
        "delivered": 48090,
        "commit_failures": 0,
        "dropped_undelivered": 0,
    },
    "mqtt": {"published": 48090, "acked": 48090, "connects": 2, "refused_publishes": 0},
    "gates": {
        "gate-1": {
            "granted": 812,
            "denied": 14,
            "passages": 805,
            "timeouts": 7,
            "open_failures": 0,
            "last_decision_us": 170,
        }
    },
    "devices": {"reader-in": {"frames": 826, "bad_checksum": 2}},
    "agent": {},
}

ROSTER_EXAMPLES: dict[str, dict[str, Any]] = {
    "snapshot": {
        "kind": "snapshot",
        "version": 42,
        "persons": [
            {"id": "S1001", "name": "Li Wei", "role": "student", "group": "7A", "access_groups": ["students"]}
        ],
        "credentials": [{"credential": "0012AB34CD", "format": "em4100", "person_id": "S1001"}],
        "access_groups": [{"id": "students", "gates": ["gate-1", "room-7a"], "schedule": "school-days"}],
        "schedules": [
            {
                "id": "school-days",
                "weekly": {
                    d: [{"start": "07:00", "end": "18:00"}] for d in ("mon", "tue", "wed", "thu", "fri")
                },
                "holidays": ["2026-10-01"],
            }
        ],
        "blocklist": [{"credential": "00DEAD0000", "reason": "reported lost"}],
        "face_templates": [
            {"id": "ft-S1001-1", "person_id": "S1001", "model_id": "dlib_resnet_v1", "embedding": [0.0] * 128}
        ],
    },
    "delta": {
        "kind": "delta",
        "from_version": 42,
        "version": 43,
        "upsert": {"credentials": [{"credential": "0012AB34CE", "format": "em4100", "person_id": "S1001"}]},
        "delete": {"credentials": ["0012AB34CD"]},
    },
    "reply": {
        "gateway": GW,
        "result": "resync_needed",
        "version": 40,
        "requested_version": 43,
        "reason": "delta 42->43 does not follow version 40; a full snapshot is needed",
    },
}

# The worked example of docs/COMMANDS.md (its Ed25519 test-vector key), and a reply to it.
COMMAND_EXAMPLES: dict[str, dict[str, Any]] = {
    "request": {
        "args": {"direction": "entry", "gate": "gate-1"},
        "expires_at": "2026-11-29T08:00:30Z",
        "id": "req-0001",
        "issued_at": "2026-11-29T08:00:00Z",
        "key_id": "centre-2026a",
        "name": "open",
        "nonce": "q3LmV0tZb1d3R2xNa1p4Yw",
        "signature": "n5JUxvXnVRNTaRtTZ3cJmajZg2pqrNdffHbd2d/0z2bF/"
        "uwWSH6dIgQ3fLcSlt8OIT7Kg+1GbHO0xXF2+Z1xAA==",
    },
    "reply": {
        "id": "req-0001",
        "name": "open",
        "result": "ok",
        "code": "ok",
        "message": "gate-1 opened for entry",
        "data": {"gate": "gate-1", "direction": "entry"},
    },
}

__all__ = [
    "COMMAND_EXAMPLES",
    "ROSTER_EXAMPLES",
    "STATUS_EXAMPLE",
    "TELEMETRY_EXAMPLE",
    "event_example",
    "missing_examples",
]

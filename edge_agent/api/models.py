"""Request and response models of the local API (one module, so the OpenAPI document has one source)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vision.config import FinitePoint


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Model):
    """Every 4xx/5xx answer: a stable code for programs and a sentence for people."""

    code: str = Field(description="Stable machine-readable reason, e.g. 'unknown_alert'.")
    message: str = Field(description="What went wrong, for a person.")
    details: list[dict[str, Any]] = Field(
        default_factory=list, description="Per-item problems (validation errors, rejected photos)."
    )


class Health(_Model):
    """Liveness: the process answers HTTP."""

    status: Literal["ok"] = Field(description="Always 'ok' when the process answers.")
    version: str = Field(description="Agent version.")


class Readiness(_Model):
    """Readiness: configuration loaded, outbox open, devices started. The broker is reported only."""

    ready: bool = Field(description="True when every check passed.")
    checks: dict[str, bool] = Field(description="Each readiness check and whether it passed.")
    broker: str = Field(description="MQTT link state; not part of readiness (the gateway works offline).")


class BrokerStatus(_Model):
    """The MQTT link as the agent sees it."""

    url: str = Field(description="Broker URL from the configuration.")
    state: str = Field(description="starting, connecting, connected, disconnected, refused or stopped.")
    last_error: str = Field(description="Last connection error, empty when none.")
    connect_failures: int = Field(description="Failed connection attempts since start.")
    auth_failures: int = Field(description="Connections refused for bad credentials since start.")
    published: int = Field(description="Messages published since start.")
    acked: int = Field(description="Publishes the broker acknowledged since start.")


class LaneStatus(_Model):
    """Undelivered events of one delivery lane."""

    pending: int = Field(description="Events committed but not yet acknowledged by the broker.")
    oldest_age_s: float | None = Field(description="Age of the oldest undelivered event, null when none.")


class OutboxStatus(_Model):
    """The store-and-forward queue."""

    last_seq: int = Field(description="Highest sequence number committed.")
    pending: int = Field(description="Undelivered events, all lanes.")
    appended: int = Field(description="Events committed since start.")
    delivered: int = Field(description="Events delivered since start.")
    dropped_undelivered: dict[str, int] = Field(description="Telemetry dropped undelivered, by event type.")
    commit_failures: int = Field(description="Failed commits since start.")
    lanes: dict[str, LaneStatus] = Field(description="Backlog per lane (alert, access, telemetry).")


class GatewayStatus(_Model):
    """What ``edge-agent status`` shows, as JSON."""

    version: str = Field(description="Agent version.")
    site: str = Field(description="Site id.")
    gateway: str = Field(description="Gateway id.")
    uptime_s: float = Field(description="Seconds since the agent started.")
    broker: BrokerStatus = Field(description="MQTT link.")
    outbox: OutboxStatus = Field(description="Outbox.")
    roster_version: int = Field(description="Version of the roster the gates decide from.")
    devices_online: int = Field(description="Devices reporting online.")
    devices_offline: int = Field(description="Devices not reporting online (offline or never seen).")
    faces: dict[str, Any] | None = Field(
        None, description="Face recognition: enabled, error, templates; null without cameras."
    )


class Device(_Model):
    """One device and its health."""

    id: str = Field(description="Device id from the configuration.")
    kind: str = Field(description="card_reader, turnstile, camera, osdp_reader, simulated, ...")
    online: bool = Field(description="Reporting online (a simulated source: its task is running).")
    counters: dict[str, int] = Field(description="Reads, frames, errors and drops counted by the driver.")
    gate: str | None = Field(None, description="Gate this device belongs to, if any.")


class DeviceList(_Model):
    """Every device the agent knows."""

    devices: list[Device] = Field(description="Devices sorted by id.")
    offline: list[str] = Field(description="Ids of the devices not online, for a quick look.")


class EventList(_Model):
    """Events from the outbox, oldest first."""

    events: list[dict[str, Any]] = Field(description="CloudEvents as published (with 'seq').")
    delivered: dict[str, bool] = Field(description="Event id → acknowledged by the broker.")
    next_after_seq: int = Field(description="Pass as after_seq to page forward.")


class PersonSummary(_Model):
    """A person of the roster."""

    id: str = Field(description="Person id from the central master data.")
    name: str = Field(description="Display name.")
    role: str = Field(description="student, teacher, staff or visitor.")
    group: str | None = Field(description="Class or group.")
    blocked: bool = Field(description="Blocked: every credential is denied.")
    access_groups: list[str] = Field(description="Access group ids.")


class PersonDetail(PersonSummary):
    """A person with their credentials (card numbers masked)."""

    valid_from: str | None = Field(description="Not valid before (UTC, ISO 8601).")
    valid_until: str | None = Field(description="Not valid after (UTC, ISO 8601).")
    credentials: list[dict[str, str]] = Field(description="Masked card number and format of each card.")
    face_templates: int | None = Field(description="Enrolled face templates; null when faces are off.")


class PersonList(_Model):
    """A page of the roster."""

    roster_version: int = Field(description="Roster version the list comes from.")
    total: int = Field(description="Persons matching the filters.")
    persons: list[PersonSummary] = Field(description="This page, sorted by id.")


class RejectedPhoto(_Model):
    """A photo the enrollment refused."""

    photo: str = Field(description="File name as uploaded.")
    code: str = Field(description="Reason code: no_face, several_faces, low_quality, not_an_image, ...")
    message: str = Field(description="Why, for the person enrolling.")


class EnrollmentResult(_Model):
    """What became of each photo of one enrollment."""

    person_id: str = Field(description="Person enrolled.")
    stored: list[str] = Field(description="Ids of the templates stored (encrypted), one per good photo.")
    rejected: list[RejectedPhoto] = Field(description="Photos refused, with the reason.")
    warnings: list[str] = Field(description="Things to check (a refusal an admin forced, with why).")
    forced: list[RejectedPhoto] = Field(
        default_factory=list, description="Refusals set aside by force (audited with the reason)."
    )


class TemplateSummary(_Model):
    """One face template's metadata (the template itself never leaves the gateway)."""

    id: str = Field(description="Template id.")
    created_at: str = Field(description="When it was stored (UTC, ISO 8601).")
    source: str = Field(description="enrolled (here) or centre (from the roster).")
    model: str = Field(description="Embedding model that made it, e.g. dlib_resnet_v1.")


class PersonTemplates(_Model):
    """A person's face templates, metadata only."""

    person_id: str = Field(description="Person id.")
    templates: list[TemplateSummary] = Field(description="Oldest first.")


class TemplatesDeleted(_Model):
    """The outcome of deleting a person's face templates."""

    person_id: str = Field(description="Person id.")
    deleted: int = Field(description="Templates deleted (from disk, overwritten, and from the gallery).")


class Alert(_Model):
    """An alert from the local alert book."""

    id: str = Field(description="Event id of the alert.")
    type: str = Field(description="Event type, e.g. edu.campus.access.forced.v1.")
    severity: str = Field(description="info, warning or critical.")
    source: str = Field(description="CloudEvents source (campus/site/gateway/device).")
    device: str = Field(description="Camera, gate or device that raised it.")
    time: str = Field(description="When it happened (UTC, ISO 8601).")
    data: dict[str, Any] = Field(description="The event's payload (zone, evidence, ...).")
    has_snapshot: bool = Field(description="A JPEG snapshot is available at snapshot_url.")
    snapshot_url: str | None = Field(description="Where the snapshot is, when there is one.")
    acknowledged_by: str | None = Field(description="Who acknowledged it, null while open.")
    acknowledged_at: str | None = Field(description="When it was acknowledged.")
    note: str = Field(description="Note given with the acknowledgement.")


class AlertList(_Model):
    """Alerts, newest first."""

    alerts: list[Alert] = Field(description="Alerts matching the filters.")


class AckRequest(_Model):
    """Acknowledging an alert."""

    note: str = Field("", max_length=500, description="Optional note (what was done).")


class Session(_Model):
    """The console's login: who the token belongs to."""

    role: str = Field(description="viewer, operator or admin.")
    name: str = Field(description="Name the audit trail uses for this token.")


class ConfigIssueOut(_Model):
    """One problem of a configuration, located by YAML line."""

    path: str = Field(description="Dotted path of the setting, empty for the whole file.")
    line: int | None = Field(description="1-based YAML line, when known.")
    message: str = Field(description="What is wrong.")


class ConfigValidation(_Model):
    """The result of ``edge-agent config check`` on the posted YAML."""

    valid: bool = Field(description="True when the configuration would load.")
    issues: list[ConfigIssueOut] = Field(description="Every problem found, by line.")


class CameraZone(_Model):
    """A polygon zone of a camera, as the configuration has it (``security.zones``)."""

    id: str = Field(min_length=1, description="Zone id, unique per camera; named in alerts.")
    name: str = Field("", description="Human-readable name.")
    coords: Literal["pixel", "normalized"] = Field(
        "pixel", description="'pixel': pixels of the analysed frame (or reference_size); 'normalized': 0..1."
    )
    inertia_frames: int = Field(3, ge=1, le=100, description="Frames a point stays in before it counts.")
    points: list[FinitePoint] = Field(description="Vertices in order, [x, y] each.")


class CameraLine(_Model):
    """A directed line of a camera (``security.lines``): side A is on the left walking start→end."""

    id: str = Field(min_length=1, description="Line id, unique per camera (zones included).")
    name: str = Field("", description="Human-readable name.")
    coords: Literal["pixel", "normalized"] = Field("pixel", description="As for zones.")
    inertia_frames: int = Field(
        3, ge=1, le=100, description="Frames a point stays on a side before it counts."
    )
    start: FinitePoint = Field(description="First end, [x, y].")
    end: FinitePoint = Field(description="Second end, [x, y].")
    label_a_to_b: str = Field("a_to_b", description="Name of the crossing from side A to side B.")
    label_b_to_a: str = Field("b_to_a", description="Name of the crossing from side B to side A.")


class FrameInfo(_Model):
    """The newest frame a camera delivered for analysis."""

    width: int = Field(description="Width in pixels (the analysed resolution).")
    height: int = Field(description="Height in pixels.")
    at: str = Field(description="When it was captured (UTC, ISO 8601).")


class CameraView(_Model):
    """A camera with its newest frame's size and its zones and lines as configured."""

    id: str = Field(description="Device id of the camera.")
    kind: str = Field(description="camera or camera_sim.")
    frame: FrameInfo | None = Field(description="The newest frame; null until the camera delivers one.")
    frame_url: str = Field(description="Where the newest frame is as JPEG (add ?overlay=1 for the zones).")
    security: bool = Field(description="The camera has a security section (person detection, rules).")
    reference_size: tuple[int, int] | None = Field(
        description="[width, height] the pixel coordinates were drawn on; null: the frame's own pixels."
    )
    zones: list[CameraZone] = Field(description="Polygon zones.")
    lines: list[CameraLine] = Field(description="Directed lines.")
    zones_version: str = Field(
        description="Names these zones, lines and reference size: give it when applying a drawing "
        "so that one made over zones someone else has changed since is refused (zones_changed)."
    )


class CameraList(_Model):
    """Every configured camera."""

    cameras: list[CameraView] = Field(description="Cameras in configuration order.")


# A camera's zones and lines are a handful; a drawing with more is a runaway script, not a site plan.
MAX_SHAPES = 64


class ZoneEdit(_Model):
    """A camera's zones and lines as drawn on the console: they replace the configured ones."""

    reference_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        None,
        description="[width, height] the pixel coordinates are in; null: the newest frame's size.",
    )
    zones: list[CameraZone] = Field(default_factory=list, max_length=MAX_SHAPES, description="Polygon zones.")
    lines: list[CameraLine] = Field(
        default_factory=list, max_length=MAX_SHAPES, description="Directed lines."
    )


class ZoneYaml(_Model):
    """The edited zones as the YAML to paste, and the whole configuration checked with them in."""

    camera: str = Field(description="Camera id: paste under this camera's entry of `cameras:`.")
    yaml: str = Field(description="The camera's `security:` zones, lines and reference_size, as YAML.")
    checked_against: str = Field(
        description="The configuration the fragment was checked in: the agent's file, or the running "
        "configuration when the agent was not started from a file."
    )
    validation: ConfigValidation = Field(description="That configuration with the fragment applied.")
    paste_only: bool = Field(
        False,
        description="The fragment is right to paste, but the file cannot take it in place (it shares "
        "this camera's zones with another part of itself through a YAML anchor): `validation` has the "
        "one issue saying so, and apply answers 409 `config_layout`.",
    )


class ZoneApply(ZoneEdit):
    """A drawing to apply: the camera judges by it from its next frame, and the agent's file has it."""

    zones_version: str | None = Field(
        None,
        max_length=64,
        description="The camera's zones_version the drawing was made over; when given and no longer "
        "current (someone applied or edited since), the drawing is refused with zones_changed.",
    )


class ZonesApplied(_Model):
    """A drawing applied: written into the configuration file and used by the camera's analysis."""

    camera: str = Field(description="Camera id.")
    config_file: str = Field(description="The configuration file the drawing was written into.")
    previous: str = Field(description="Where the file as it was before is kept (to roll back by hand).")
    live: bool = Field(
        description="The camera's analysis judges by the new zones from its next frame; false when "
        "its analysis is not running (it takes them when it starts)."
    )
    zones_version: str = Field(description="The camera's zones_version now.")
    yaml: str = Field(description="What was written: the camera's `security:` zones and lines.")


class RollCallSession(_Model):
    """A timetable session of an attendance point on one day."""

    id: str = Field(description="Session id from the timetable.")
    name: str = Field(description="Display name.")
    start: str = Field(description="HH:MM local start.")
    end: str = Field(description="HH:MM local end.")
    day: str = Field(description="Gateway-local date (ISO 8601).")


class AttendancePoint(_Model):
    """An attendance point and its session now (or its last one today)."""

    point: str = Field(description="Point id: a gate, a camera's face.point, a terminal's point.")
    session: RollCallSession | None = Field(description="Its session now or its last today; null: none yet.")
    state: Literal["open", "closed", "none"] = Field(
        description="open: arrivals count now; closed: its roll-call is closed; none: no session today yet."
    )


class AttendancePointList(_Model):
    """Every attendance point of the configuration."""

    points: list[AttendancePoint] = Field(description="Points sorted by id.")


class RollCallPresent(_Model):
    """A person recorded in the session."""

    person_id: str = Field(description="Person id.")
    name: str = Field(description="Display name from the roster; empty when no longer in it.")
    at: str = Field(description="When recorded (gateway local time, ISO 8601 with offset).")
    method: str = Field(
        description="What saw them: face, card, face+card, terminal (unknown: before methods were kept)."
    )
    evidence: int = Field(description="Observations behind the record (face votes, card swipes).")
    seen_elsewhere: bool = Field(
        description="Also recorded at another point in an overlapping session today."
    )


class RollCallAbsent(_Model):
    """A person expected and not recorded."""

    person_id: str = Field(description="Person id.")
    name: str = Field(description="Display name from the roster.")


class RollCall(_Model):
    """The roll-call of a point's session, as the records are now."""

    point: str = Field(description="Point id.")
    session: RollCallSession | None = Field(
        description="The session shown; null when the point has none today yet."
    )
    state: Literal["open", "closed", "none"] = Field(description="As in the list of points.")
    expected: int = Field(description="present + late + absent.")
    present: list[RollCallPresent] = Field(description="Recorded by start + late_after_min, by person id.")
    late: list[RollCallPresent] = Field(description="Recorded later, by person id.")
    absent: list[RollCallAbsent] = Field(
        description="Expected (the session's groups) and not recorded, by person id."
    )


__all__ = [
    "AckRequest",
    "Alert",
    "AlertList",
    "AttendancePoint",
    "AttendancePointList",
    "BrokerStatus",
    "CameraLine",
    "CameraList",
    "CameraView",
    "CameraZone",
    "ConfigIssueOut",
    "ConfigValidation",
    "Device",
    "DeviceList",
    "EnrollmentResult",
    "ErrorBody",
    "EventList",
    "FrameInfo",
    "GatewayStatus",
    "Health",
    "LaneStatus",
    "OutboxStatus",
    "PersonDetail",
    "PersonList",
    "PersonSummary",
    "PersonTemplates",
    "Readiness",
    "RejectedPhoto",
    "RollCall",
    "RollCallAbsent",
    "RollCallPresent",
    "RollCallSession",
    "Session",
    "TemplateSummary",
    "TemplatesDeleted",
    "ZoneEdit",
    "ZoneYaml",
]

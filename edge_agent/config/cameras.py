"""Settings of the cameras and what the agent does with their frames: one :class:`CameraSetup` per
camera (the ``cameras:`` list of the YAML), its face analysis and security rules, and the gateway-wide
:class:`FaceSettings`.

A config leaf: it imports only pydantic, the standard library and other config leaves (vision's
settings live in :mod:`vision.config`), so the root configuration composes it without loading
models, OpenCV or the agent.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from device_drivers.camera.config import CameraConfig, SimulatedCameraConfig

# sync has no config leaf for these yet; the root is the one allowed entry meanwhile.
from edge_agent.config.access import AttendancePointConfig
from edge_agent.config.references import ReferenceProblem, duplicates, raise_unless_deferred, unknown
from sync.config import WEEKDAYS, Severity, TimeWindow, Weekday
from vision.config import (
    TAMPER_KINDS,
    CameraZones,
    ExecutionProvider,
    FacePipelineConfig,
    FaceTrackerConfig,
    LineZone,
    PersonPipelineConfig,
    PolygonZone,
    RuntimeConfig,
    TamperKind,
)


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


class RuleBase(BaseModel):
    """What every rule has: an id, a severity, a cooldown and a schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Rule id; named in the alert.")
    severity: Severity = Field(Severity.WARNING, description="Alert severity.")
    cooldown_s: float = Field(60.0, ge=0, description="At most one alert of this rule per this period.")
    schedule: RuleSchedule | None = Field(None, description="When the rule is armed; always if unset.")


class IntrusionRule(RuleBase):
    kind: Literal["intrusion"] = Field(description="Someone enters a zone.")
    zone: str = Field(description="Zone id.")


class LineCrossingRule(RuleBase):
    kind: Literal["line_crossing"] = Field(description="Someone crosses a line in a direction.")
    line: str = Field(description="Line id.")
    direction: Literal["a_to_b", "b_to_a", "both"] = Field("both", description="Which crossings count.")


class LoiteringRule(RuleBase):
    kind: Literal["loitering"] = Field(description="Someone stays in a zone too long.")
    zone: str = Field(description="Zone id.")
    dwell_s: float = Field(gt=0, description="How long counts as loitering (short track breaks tolerated).")


class CrowdingRule(RuleBase):
    kind: Literal["crowding"] = Field(description="Too many people in a zone for too long.")
    zone: str = Field(description="Zone id.")
    min_people: int = Field(ge=2, description="How many people make a crowd.")
    for_s: float = Field(0.0, ge=0, description="For how long before it is an alert.")


class TamperRule(RuleBase):
    kind: Literal["tamper"] = Field(description="The camera is covered, defocused, moved or lost.")
    kinds: list[TamperKind] = Field(default_factory=lambda: list(TAMPER_KINDS), description="Which tampers.")


class TailgatingRule(RuleBase):
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
    def _references(self, info: ValidationInfo) -> SecurityConfig:
        raise_unless_deferred(self.reference_problems(), info)
        return self

    def reference_problems(self) -> list[ReferenceProblem]:
        """Rule ids used twice, zone and line ids used twice, rules naming a zone or line this
        camera does not have, tamper rules with the tamper checks off; paths relative to here."""
        zones = {z.id for z in self.zones}
        lines = {line.id for line in self.lines}
        problems = duplicates([(r.id, ("rules", i, "id")) for i, r in enumerate(self.rules)], "rule ids")
        problems += duplicates(
            [(z.id, ("zones", i, "id")) for i, z in enumerate(self.zones)]
            + [(line.id, ("lines", i, "id")) for i, line in enumerate(self.lines)],
            "zone and line ids",
        )
        for i, rule in enumerate(self.rules):
            zone = getattr(rule, "zone", None)
            if zone is not None and zone not in zones:
                message = (
                    f"{zone!r} is a line, not a zone"
                    if zone in lines
                    else unknown("zone", zone, zones, "this camera")
                )
                problems.append(ReferenceProblem(("rules", i, "zone"), f"rule {rule.id}: {message}"))
            line = getattr(rule, "line", None)
            if line is not None and line not in lines:
                message = (
                    f"{line!r} is a zone, not a line"
                    if line in zones
                    else unknown("line", line, lines, "this camera")
                )
                problems.append(ReferenceProblem(("rules", i, "line"), f"rule {rule.id}: {message}"))
            if isinstance(rule, TamperRule) and self.pipeline.tamper is None:
                problems.append(
                    ReferenceProblem(
                        ("rules", i, "kind"), f"rule {rule.id}: tamper checks are off in pipeline.tamper"
                    )
                )
        return problems

    def drawing(self) -> dict[str, Any]:
        """What the console's zone editor draws: the zones, lines and the size they were drawn on."""
        return {"zones": self.zones, "lines": self.lines, "reference_size": self.reference_size}

    def differs_only_in_drawing(self, other: SecurityConfig) -> bool:
        """Whether ``other`` is this with other zones and lines drawn (its rules and pipeline the same)."""
        return self.model_copy(update=other.drawing()) == other

    def camera_zones(self, camera_id: str) -> CameraZones:
        return CameraZones(
            camera_id=camera_id, zones=self.zones, lines=self.lines, reference_size=self.reference_size
        )


class FaceAnalysisConfig(BaseModel):
    """Face recognition on one camera: attendance by timetable, strangers where that matters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    point: str | None = Field(
        None, description="Attendance point id (a classroom); defaults to the camera id."
    )
    attendance: AttendancePointConfig | None = Field(None, description="Timetable for attendance by face.")
    card_gate: str | None = Field(
        None,
        description="A gate whose card grants confirm a face: 'face+card' when both agree within "
        "card_window_s.",
    )
    card_window_s: float = Field(60.0, gt=0, description="How close in time card and face must be.")
    stranger_alerts: bool = Field(False, description="Raise security.stranger for unknown faces here.")
    stranger_cooldown_s: float = Field(60.0, ge=0, description="At most one stranger alert per this period.")
    pipeline: FacePipelineConfig = Field(
        default_factory=FacePipelineConfig, description="Motion gate, quality gate and per-camera threshold."
    )
    detector_max_side: int | None = Field(
        None,
        ge=64,
        le=4096,
        description="The face detector's input on this camera: the frame's long side scaled to at most "
        "this (null: the agent's, 640). A roll-call camera whose back-row faces are small in a 4 MP "
        "picture wants its full width, 2560 (docs/FACE_ACCURACY.md, 'Minimum face size'); the "
        "detector's cost grows with its square, so such a camera wants a low analysis_fps.",
    )
    tracker: FaceTrackerConfig = Field(
        default_factory=FaceTrackerConfig, description="Voting over frames before an identity is decided."
    )


class CameraSetup(BaseModel):
    """One camera and what the agent does with its frames."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Annotated[CameraConfig | SimulatedCameraConfig, Field(discriminator="kind")] = Field(
        description="The camera (kind 'camera': RTSP/USB/file) or a simulated one (kind 'camera_sim')."
    )
    face: FaceAnalysisConfig | None = Field(None, description="Face recognition on this camera.")
    security: SecurityConfig | None = Field(None, description="Person detection, zones and alert rules.")
    idle_analysis_fps: float | None = Field(
        1.0,
        gt=0,
        description="Frames/s analysed while the scene is still (no motion, nobody seen); back to the "
        "camera's analysis_fps at the first motion. Null keeps the full rate always.",
    )
    idle_after_s: float = Field(10.0, gt=0, description="How long a still scene lasts before the idle rate.")

    @model_validator(mode="after")
    def _pixel_zones_know_their_size(self) -> Self:
        # Pixel zones are in the analysed frame's pixels; a shrunk frame would put them elsewhere.
        if self.device.analysis_width is None or self.security is None:
            return self
        if self.security.reference_size is not None:
            return self
        pixel = [z.id for z in (*self.security.zones, *self.security.lines) if z.coords == "pixel"]
        if pixel:
            raise ValueError(
                f"camera {self.id}: analysis_width shrinks the frames, so pixel zones/lines "
                f"({', '.join(pixel)}) need security.reference_size (the width and height they were "
                "drawn on), or coords: normalized"
            )
        return self

    @property
    def id(self) -> str:
        return self.device.id


class VisionSettings(BaseModel):
    """Gateway-wide model runtime settings: every model the gateway loads (face detector, face
    embedder, person detector) runs on the same execution providers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    execution_providers: tuple[ExecutionProvider, ...] = Field(
        ("cpu",),
        min_length=1,
        description="ONNX Runtime execution providers in order of preference (cpu, openvino, cuda, "
        "tensorrt). One this onnxruntime build lacks is skipped with a warning naming it; CPU is always "
        "the last resort.",
    )

    inference_threads: int | None = Field(
        None,
        ge=1,
        le=32,
        description="Threads of the inference service every camera shares (and runs of one model at "
        "a time); unset: one per core, at most 8.",
    )
    max_batch: int = Field(
        2,
        ge=1,
        le=16,
        description="Face camera frames one inference thread analyses together: the embedder takes all "
        "their faces in one run, the detector up to detector_batch equal-size frames per run.",
    )
    detector_batch: int = Field(
        1,
        ge=1,
        le=16,
        description="Equal-size face camera frames per face detector run (of the ones analysed together). "
        "1 on a CPU: a batch saves little there and every frame of a run keeps its activations in the "
        "model's memory arena (about 47 MiB at 640x384); raise it where a GPU or NPU runs the model.",
    )
    attendance_max_wait_s: float = Field(
        0.3,
        gt=0,
        le=60,
        description="Security frames are analysed before face (attendance) frames; a face camera that "
        "has waited this long goes next, so attendance is slowed under overload, never starved. The "
        "default gives each face camera about 2.5 frames/s under overload: the 3 votes of a face in "
        "about a second (at 0.4, 1.8 frames/s missed a walker whose face matched for 1.2 s).",
    )
    attendance_max_share: float = Field(
        0.4,
        gt=0,
        le=1,
        description="The most of the analysed frames face cameras get by having waited "
        "attendance_max_wait_s while security frames wait too (over the last few seconds): under deep "
        "overload every face camera has always waited that long, and security would lose its priority. "
        "Face frames still take every core security leaves idle.",
    )

    @property
    def threads(self) -> int:
        """The inference threads: as configured, else one per core (at most 8)."""
        return self.inference_threads or min(os.cpu_count() or 1, 8)

    def runtime(self) -> RuntimeConfig:
        """The runtime options of every model (validated there: no duplicates)."""
        return RuntimeConfig(execution_providers=self.execution_providers, concurrent_runs=self.threads)

    @model_validator(mode="after")
    def _valid_runtime(self) -> Self:
        self.runtime()
        return self


class FaceSettings(BaseModel):
    """Gateway-wide face recognition settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template_key_credential: str = Field(
        "face_template_key", description="Credential holding the template encryption key (64 hex digits)."
    )
    threshold: float | None = Field(
        None, gt=0, lt=2, description="Open-set distance threshold; the model's default when unset (0.50)."
    )
    duplicate_margin: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="Enrollment refuses a face closer than threshold + this margin to another person "
        "(matches_other_person) unless an admin forces it with a reason.",
    )
    max_templates_per_person: int = Field(
        5, ge=1, le=20, description="Templates one person may hold; more are refused (too_many_templates)."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_duplicate_warning(cls, data: Any) -> Any:
        # Before enrollment refused look-alikes it warned below an absolute distance: read it as the
        # margin above the threshold it implied, so an old file keeps loading.
        if isinstance(data, dict) and "duplicate_warning_distance" in data:
            data = dict(data)
            legacy = data.pop("duplicate_warning_distance")
            if "duplicate_margin" not in data and isinstance(legacy, int | float):
                # 0.50: vision.gallery's default for dlib_resnet_v1 (a config leaf does not import vision).
                threshold = data.get("threshold") or 0.50
                data["duplicate_margin"] = max(0.0, float(legacy) - float(threshold))
        return data


__all__ = [
    "CameraSetup",
    "CrowdingRule",
    "FaceAnalysisConfig",
    "FaceSettings",
    "IntrusionRule",
    "LineCrossingRule",
    "LoiteringRule",
    "Rule",
    "RuleBase",
    "RuleSchedule",
    "SecurityConfig",
    "TailgatingRule",
    "TamperRule",
]

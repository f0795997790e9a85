"""Cameras in the agent: frames → face pipeline (off the event loop) → identities → attendance.

Each camera has one worker thread for its pipeline; the camera driver keeps only the latest frame,
so a slow model never builds a queue. Decisions come from the face tracker (votes over several
frames), so one blurry frame neither adds nor loses a student.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from device_drivers.camera import Camera, CameraConfig, CameraFrame
from device_drivers.camera_sim import SimulatedCamera, SimulatedCameraConfig
from edge_agent.attendance import AttendanceBook, AttendancePointConfig, attendance_event
from edge_agent.faces import FaceService
from edge_agent.metrics import MODEL_SECONDS
from edge_agent.roster import Roster
from edge_agent.security import Alert, SecurityConfig, SecurityRules
from sync.envelope import Event, utc_now
from sync.event_types import Severity
from vision.errors import VisionError
from vision.face_pipeline import FacePipeline, FacePipelineConfig
from vision.face_track import FaceTracker, FaceTrackerConfig, IdentityDecision
from vision.person import PersonDetector, PersonFrameResult, PersonPipeline, draw_detections
from vision.zones import draw_zones

log = logging.getLogger(__name__)


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

    @property
    def id(self) -> str:
        return self.device.id


def open_camera(setup: CameraSetup) -> Camera:
    if isinstance(setup.device, SimulatedCameraConfig):
        return SimulatedCamera(setup.device)
    return Camera(setup.device)


def snapshot_jpeg(
    frame: npt.NDArray[np.uint8], box: tuple[float, float, float, float] | None, max_width: int = 640
) -> bytes:
    """The frame (with ``box`` drawn), scaled to at most ``max_width``: small evidence, not an archive."""
    image = frame.copy()
    if box is not None:
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), 2)
    small: npt.NDArray[Any] = image
    if image.shape[1] > max_width:
        scale = max_width / image.shape[1]
        small = cv2.resize(image, (max_width, int(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])
    return data.tobytes() if ok else b""


class CameraWorker:
    """Runs one camera's face analysis and turns decisions into events."""

    def __init__(
        self,
        setup: CameraSetup,
        *,
        faces: FaceService,
        roster: Roster,
        attendance: AttendanceBook,
        emit: Callable[..., None],
        source: Callable[[str], str],
        timezone: Any,
        recent_card: Callable[[str, str, float], bool],
    ) -> None:
        assert setup.face is not None
        self.setup = setup
        self.config = setup.face
        self.faces = faces
        self.roster = roster
        self.attendance = attendance
        self.emit = emit
        self.source = source
        self.timezone = timezone
        self.recent_card = recent_card
        self.pipeline = FacePipeline(
            faces.gallery, detector=faces.detector, embedder=faces.embedder, config=self.config.pipeline
        )
        self.tracker = FaceTracker(self.config.tracker)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"faces-{setup.id}")
        self.errors = 0
        self._last_stranger = -1e9
        self.last_activity = time.monotonic()
        """When this camera last saw motion or a face (monotonic); the agent idles the camera after."""

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _analyse(self, frame: CameraFrame) -> tuple[list[IdentityDecision], float]:
        # The gallery may have been rebuilt (enrollment, roster): always match against the current one.
        self.pipeline.gallery = self.faces.gallery
        analysis = self.pipeline.process(frame.frame, frame.monotonic_s)
        if analysis.faces or (analysis.motion is not None and analysis.motion.motion):
            self.last_activity = time.monotonic()
        for stage, seconds in analysis.timings.items():
            MODEL_SECONDS.labels(self.setup.id, stage).observe(seconds)
        return self.tracker.update(analysis.faces, frame.monotonic_s), time.perf_counter()

    async def on_frame(self, frame: CameraFrame) -> list[IdentityDecision]:
        """Analyse one frame off the event loop and report what the tracker decided."""
        loop = asyncio.get_running_loop()
        try:
            decisions, _ = await loop.run_in_executor(self.executor, self._analyse, frame)
        except VisionError as err:
            self.errors += 1
            log.error("camera %s: frame %d not analysed: %s", self.setup.id, frame.seq, err)
            return []
        for decision in decisions:
            if decision.person_id is None:
                self._stranger(decision, frame)
            else:
                self._identified(decision, frame)
        return decisions

    def _identified(self, decision: IdentityDecision, frame: CameraFrame) -> None:
        cfg = self.config
        person = self.roster.index.persons.get(decision.person_id or "")
        if person is None or cfg.attendance is None:
            return
        point = cfg.point or self.setup.id
        found = self.attendance.record(point, cfg.attendance, person, frame.at.astimezone(self.timezone))
        if found is None:
            return
        both = cfg.card_gate is not None and self.recent_card(cfg.card_gate, person.id, cfg.card_window_s)
        threshold = self.faces.gallery.threshold
        self.emit(
            attendance_event(
                found,
                person,
                method="face+card" if both else "face",
                point=point,
                device=self.setup.id,
                source=self.source(self.setup.id),
                at=frame.at,
                distance=round(decision.distance, 4),
                confidence=round(max(0.0, min(1.0, 1 - decision.distance / threshold)), 4),
                model_id=decision.model_id,
            )
        )

    def _stranger(self, decision: IdentityDecision, frame: CameraFrame) -> None:
        cfg = self.config
        now = time.monotonic()
        if not cfg.stranger_alerts or now - self._last_stranger < cfg.stranger_cooldown_s:
            return
        self._last_stranger = now
        jpeg = snapshot_jpeg(frame.frame, decision.box)
        data: dict[str, Any] = {
            "camera": self.setup.id,
            "track_id": decision.track_id,
            "nearest_distance": round(decision.distance, 4) if np.isfinite(decision.distance) else None,
            "model_id": decision.model_id,
            "box": [round(v, 1) for v in decision.box],
            "snapshot": bool(jpeg),
        }
        if cfg.point:
            data["point"] = cfg.point
        self.emit(
            Event(
                "edu.campus.security.stranger.v1",
                self.source(self.setup.id),
                data,
                time=frame.at,
                severity=Severity.WARNING,
            ),
            attachment=jpeg or None,
        )


class SecurityWorker:
    """Runs one camera's person pipeline and rules; raises alerts with a snapshot (boxes drawn)."""

    def __init__(
        self,
        setup: CameraSetup,
        *,
        detector: PersonDetector,
        emit: Callable[..., None],
        source: Callable[[str], str],
        timezone: Any,
        grants: Callable[[str, float], int],
    ) -> None:
        assert setup.security is not None
        self.setup = setup
        self.config = setup.security
        self.zones = self.config.camera_zones(setup.id)
        self.pipeline = PersonPipeline(setup.id, self.zones, self.config.pipeline, detector=detector)
        self.rules = SecurityRules(setup.id, self.config, grants)
        self.emit = emit
        self.source = source
        self.timezone = timezone
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"persons-{setup.id}")
        self.errors = 0
        self.last_activity = time.monotonic()
        """When this camera last saw motion or a person (monotonic); the agent idles the camera after."""

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _analyse(self, frame: CameraFrame) -> list[tuple[Alert, bytes]]:
        result = self.pipeline.process(frame.frame, frame.monotonic_s)
        if (
            result.tracks
            or result.detections
            or result.motion >= self.config.pipeline.motion.min_changed_fraction
        ):
            self.last_activity = time.monotonic()
        alerts = self.rules.evaluate(result, self.pipeline.zone_judge, frame.at.astimezone(self.timezone))
        return [(alert, self._snapshot(frame.frame, result, alert)) for alert in alerts]

    def _snapshot(self, image: npt.NDArray[np.uint8], result: PersonFrameResult, alert: Alert) -> bytes:
        height, width = image.shape[:2]
        drawn = draw_zones(image, self.zones.in_pixels(width, height))
        boxes = [
            (t.box, f"#{t.track_id}")
            for t in result.tracks
            if not alert.track_ids or t.track_id in alert.track_ids
        ]
        drawn = draw_detections(drawn, boxes)
        return snapshot_jpeg(drawn, None)

    async def on_frame(self, frame: CameraFrame) -> int:
        """Analyse one frame off the event loop; returns how many alerts it raised."""
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.executor, self._analyse, frame)
        except VisionError as err:
            self.errors += 1
            log.error("camera %s: frame %d not analysed for security: %s", self.setup.id, frame.seq, err)
            return 0
        for alert, jpeg in found:
            self._raise(alert, jpeg, frame.at)
        return len(found)

    def poll(self, now_mono: float) -> None:
        """Between frames: a stream that stopped is a tamper too."""
        changes = self.pipeline.poll(now_mono)
        if not changes:
            return
        empty = PersonFrameResult(now_mono, False, 0.0, [], [], [], [], changes)
        for alert in self.rules.evaluate(empty, None, utc_now().astimezone(self.timezone)):
            self._raise(alert, b"", utc_now())

    def _raise(self, alert: Alert, jpeg: bytes, at: datetime) -> None:
        data = dict(alert.data)
        if alert.type.startswith("edu.campus.security."):
            data["snapshot"] = bool(jpeg)
        event = Event(alert.type, self.source(self.setup.id), data, time=at, severity=alert.severity)
        self.emit(event, attachment=jpeg or None)
        log.warning(
            "camera %s: %s (%s)",
            self.setup.id,
            alert.type,
            alert.severity.value,
            extra={"camera": self.setup.id, "event_id": event.id},
        )


__all__ = [
    "CameraSetup",
    "CameraWorker",
    "FaceAnalysisConfig",
    "open_camera",
    "snapshot_jpeg",
]

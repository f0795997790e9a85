"""Cameras in the agent: frames → vision (off the event loop) → observations → rules → events.

Two workers per camera: :class:`CameraWorker` (face recognition → attendance and stranger alerts)
and :class:`SecurityWorker` (person detection, zones and tamper → security alerts). Each has a lane
in the agent's one inference service (:mod:`edge_agent.inference`: a thread per core for every
camera, security first, round-robin, face frames batched). The camera's reader hands each frame to
:meth:`submit`, which never blocks: the lane keeps only the newest frame not yet taken (latest frame
wins), so a slow model never builds a queue; the outcome comes back to the event loop, where the
worker acts on it (events, alerts) in frame order.

Time: every frame is judged by its capture time (``CameraFrame.monotonic_s`` for the pipelines and
rules, ``CameraFrame.at`` for events and schedules). The only periodic check, "no frame for a
while" (``stream_lost``), runs inside :meth:`SecurityWorker.run` on the injected clock, with its own
state (:class:`vision.StreamWatch`); it never moves the time frames are judged by, so a frame
captured before a check and analysed after it is still analysed.

Workers never see the agent: they are given narrow services (``emit``, ``source``, a roster lookup,
the attendance book, the clock as callables) and only read what vision returns for a frame
(:class:`vision.FaceFrameResult`, :class:`vision.PersonFrameResult`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal, Protocol

from device_drivers import CameraError
from edge_agent.attendance import AttendanceBook, attendance_event
from edge_agent.config.cameras import CameraSetup, FaceAnalysisConfig, SecurityConfig
from edge_agent.inference import Analysis, InferenceService, Lane, Outcome, Skipped
from edge_agent.memory import release_free_memory
from edge_agent.metrics import MODEL_SECONDS
from edge_agent.security import Alert, SecurityRules
from sync import Event, Severity, utc_now
from vision import (
    FaceCamera,
    FaceDetector,
    FaceFrameResult,
    IdentityDecision,
    PersonDetector,
    PersonFrameResult,
    PersonPipeline,
    StreamWatch,
    TamperChange,
    VisionError,
    evidence_jpeg,
    process_cameras,
    snapshot_jpeg,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from device_drivers import CameraFrame
    from edge_agent.faces import FaceModels
    from sync import Person

log = logging.getLogger(__name__)

STREAM_CHECK_INTERVAL_S = 1.0
"""How often :meth:`SecurityWorker.run` checks for a silent camera (seconds of the injected clock)."""


class Emit(Protocol):
    """Hands an event (and its JPEG evidence) to the outbox; never blocks."""

    def __call__(self, event: Event, attachment: bytes | None = None) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class _Worker:
    """What both workers share: the lane in the inference service, counters, and acting on results.

    ``inference`` is the agent's shared service; a worker made without one (a test, a tool) gets a
    one-thread service of its own, closed with the worker.
    """

    kind: Analysis = "security"

    def __init__(
        self,
        setup: CameraSetup,
        *,
        emit: Emit,
        source: Callable[[str], str],
        tz: tzinfo,
        inference: InferenceService | None,
    ) -> None:
        camera_id = self.camera_id = setup.id
        self._emit = emit
        self._source = source
        self._tz = tz
        self._own_inference = inference is None
        self.inference = inference or InferenceService(workers=1, name=f"{self.kind}-{camera_id}")
        self.counters: Counter[str] = Counter()
        """``frames_submitted``, ``frames_replaced`` (newer frame won), ``frames_analysed``,
        ``analysis_errors``, ``alerts``, ``heap_releases`` (still spells that asked for the freed heap
        to go back to the system; the release itself is rate limited process-wide)..."""
        self.errors = 0
        """Frames whose analysis failed (logged and counted; the worker goes on)."""
        self.last_activity = 0.0
        """Capture time (monotonic) of the newest frame with motion, a face or a person (the start
        before the first); the agent lowers the camera's analysis rate when it is old."""
        self._still_after_s = setup.idle_after_s
        self._heap_released = False

    lane: Lane[Any]
    """The worker's lane in the inference service (each worker makes its own)."""

    def submit(self, frame: CameraFrame) -> None:
        """A new frame from the camera (never blocks; the newest frame wins): its outcome is acted
        on when the service has analysed it."""
        self.counters["frames_submitted"] += 1
        self.lane.offer(frame).add_done_callback(lambda done: self._settle(frame, done.result()))

    async def on_frame(self, frame: CameraFrame) -> Any:
        """Analyse one frame (through the service, off the event loop) and act on it; returns what
        acting gave (nothing for a frame replaced before it was taken)."""
        return self._settle(frame, await self.lane.offer(frame))

    def _settle(self, frame: CameraFrame, outcome: Outcome) -> Any:
        if isinstance(outcome, Skipped):
            if outcome.reason == "replaced":
                self.counters["frames_replaced"] += 1
            return self._nothing()
        if isinstance(outcome, VisionError | CameraError):  # a model's error, a packet that did not decode
            self._failed(frame, outcome)
            return self._nothing()
        if isinstance(outcome, BaseException):
            # A bug, not a bad frame: logged with its traceback; the camera goes on.
            self.errors += 1
            self.counters["analysis_errors"] += 1
            self.counters["analysis_errors_unexpected"] += 1
            log.error(
                "camera %s: frame %d not analysed (%s): unexpected error",
                self.camera_id,
                frame.seq,
                self.kind,
                exc_info=outcome,
                extra={"camera": self.camera_id, "code": "unexpected"},
            )
            return self._nothing()
        self.counters["frames_analysed"] += 1
        acted = self._act(frame, outcome)
        self._release_heap_when_still(frame)  # after the events: never delays one
        return acted

    def _nothing(self) -> Any:
        raise NotImplementedError

    def _act(self, frame: CameraFrame, outcome: Any) -> Any:
        raise NotImplementedError

    async def run(self) -> None:
        """Frames reach the worker through :meth:`submit`; ``run`` holds the camera's component
        until cancelled (the security worker also watches for a silent camera meanwhile)."""
        await asyncio.Event().wait()

    def _release_heap_when_still(self, frame: CameraFrame) -> None:
        """Once per still spell: when the scene has been still for ``idle_after_s`` (the moment the
        camera drops to its idle rate), hand the heap memory freed by the analysis back to the
        system. A burst of analysis (and the start: model loading, the first runs) leaves frames and
        tensors freed but resident; an agent left in an empty room should not keep them."""
        if frame.monotonic_s - self.last_activity < self._still_after_s:
            self._heap_released = False
        elif not self._heap_released:
            self._heap_released = True
            self.counters["heap_releases"] += 1
            # Off the loop, and off the inference threads: it walks the heap.
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    def close(self) -> None:
        """Leave the inference service (a frame still waiting is dropped; an analysis under way
        finishes in the background). The worker may be used again: the next frame re-joins."""
        self.lane.close()
        if self._own_inference:
            self.inference.close()

    async def stop(self) -> None:
        """:meth:`close`, for the component contract."""
        self.close()

    def _failed(self, frame: CameraFrame, err: VisionError | CameraError) -> None:
        self.errors += 1
        self.counters["analysis_errors"] += 1
        self.counters[f"analysis_errors_{err.code}"] += 1
        log.error(
            "camera %s: frame %d not analysed (%s): %s",
            self.camera_id,
            frame.seq,
            self.kind,
            err,
            extra={"camera": self.camera_id, "code": err.code},
        )


class CameraWorker(_Worker):
    """One camera's face analysis: attendance for identified people, stranger alerts for unknown ones.

    Services: ``models`` (the shared face models and the current gallery, ``FaceService.models``),
    ``person`` (roster lookup by person id), ``attendance`` (the book that de-duplicates records),
    ``recent_card(gate, person_id, window_s)`` (a card grant confirms a face), ``emit(event,
    attachment)``, ``source(device)`` (the event source), ``timezone`` (for timetables) and
    ``monotonic()`` (the clock; only the idle timer's start comes from it: frames bring their time).
    """

    kind = "faces"

    def __init__(
        self,
        setup: CameraSetup,
        *,
        models: FaceModels,
        person: Callable[[str], Person | None],
        attendance: AttendanceBook,
        recent_card: Callable[[str, str, float], bool],
        emit: Emit,
        source: Callable[[str], str],
        timezone: tzinfo,
        monotonic: Callable[[], float] = time.monotonic,
        inference: InferenceService | None = None,
    ) -> None:
        if setup.face is None:
            raise ValueError(f"camera {setup.id} has no face analysis configured")
        super().__init__(setup, emit=emit, source=source, tz=timezone, inference=inference)
        self.config: FaceAnalysisConfig = setup.face
        self._person = person
        self._attendance = attendance
        self._recent_card = recent_card
        self.last_activity = monotonic()
        self._models = models
        detector = models.detector
        if self.config.detector_max_side is not None:
            # The agent's ONNX session (one copy of the model in memory); only the input size is ours.
            detector = FaceDetector(
                detector.config.model_copy(update={"max_side": self.config.detector_max_side}),
                model=detector.model,
            )
        self.pipeline = FaceCamera(
            setup.id,
            models.gallery,
            detector=detector,
            embedder=models.embedder,
            config=self.config.pipeline,
            tracker=self.config.tracker,
        )
        """Read by the metrics for its ``counters``."""
        self._last_stranger = -math.inf

        # Every face camera is in one batch group: the detector and embedder are the agent's.
        self.lane: Lane[FaceFrameResult] = Lane(
            self.inference,
            setup.id,
            "faces",
            self._analyse,
            batch_group="faces",
            analyse_batch=_analyse_faces,
            owner=self,
        )

    def _analyse(self, frame: CameraFrame) -> FaceFrameResult:
        result = self.pipeline.process(frame.frame, frame.monotonic_s)
        self._observe(result)
        return result

    def _observe(self, result: FaceFrameResult) -> None:
        for stage, seconds in result.timings.items():
            MODEL_SECONDS.labels(self.camera_id, stage).observe(seconds)

    def _nothing(self) -> list[IdentityDecision]:
        return []

    def _act(self, frame: CameraFrame, result: FaceFrameResult) -> list[IdentityDecision]:
        """Act on what the tracker decided with this frame."""
        if result.faces or result.moving:
            self.last_activity = max(self.last_activity, result.at)
        for decision in result.decisions:
            if decision.person_id is None:
                self._stranger(decision, frame)
            else:
                self._identified(decision, frame, result.threshold)
        return result.decisions

    def _identified(
        self, decision: IdentityDecision, frame: CameraFrame, threshold: float | None = None
    ) -> None:
        cfg = self.config
        if threshold is None:  # the threshold the match was made with
            threshold = cfg.pipeline.threshold or self._models.gallery().threshold
        person = self._person(decision.person_id or "")
        if person is None or cfg.attendance is None:
            return
        point = cfg.point or self.camera_id
        both = cfg.card_gate is not None and self._recent_card(cfg.card_gate, person.id, cfg.card_window_s)
        method: Literal["face", "face+card"] = "face+card" if both else "face"
        # The roll-call counts the votes that named the person as the evidence of this record.
        found = self._attendance.record(
            point,
            cfg.attendance,
            person,
            frame.at.astimezone(self._tz),
            method=method,
            evidence=decision.votes,
        )
        if found is None:
            return
        self._emit(
            attendance_event(
                found,
                person,
                method=method,
                point=point,
                device=self.camera_id,
                source=self._source(self.camera_id),
                at=frame.at,
                distance=round(decision.distance, 4),
                confidence=round(max(0.0, min(1.0, 1 - decision.distance / threshold)), 4),
                model_id=decision.model_id,
            )
        )

    def _stranger(self, decision: IdentityDecision, frame: CameraFrame) -> None:
        cfg = self.config
        # Judged on the capture time of the frame that decided, like every rule.
        at = frame.monotonic_s
        if not cfg.stranger_alerts or at - self._last_stranger < cfg.stranger_cooldown_s:
            return
        self._last_stranger = at
        jpeg = snapshot_jpeg(frame.frame, decision.box)
        data: dict[str, Any] = {
            "camera": self.camera_id,
            "track_id": decision.track_id,
            "nearest_distance": round(decision.distance, 4) if math.isfinite(decision.distance) else None,
            "model_id": decision.model_id,
            "box": [round(v, 1) for v in decision.box],
            "snapshot": bool(jpeg),
        }
        if cfg.point:
            data["point"] = cfg.point
        self.counters["alerts"] += 1
        self._emit(
            Event(
                "edu.campus.security.stranger.v1",
                self._source(self.camera_id),
                data,
                time=frame.at,
                severity=Severity.WARNING,
            ),
            jpeg or None,
        )


def _analyse_faces(
    jobs: Sequence[tuple[Lane[FaceFrameResult], CameraFrame]],
) -> list[FaceFrameResult | VisionError | CameraError]:
    """One frame of each of several face cameras, the models run once for all (the service's batch
    function for the ``faces`` group). A frame whose packet does not decode fails alone."""
    outcomes: list[FaceFrameResult | VisionError | CameraError | None] = [None] * len(jobs)
    batch: list[tuple[int, CameraWorker, NDArray[np.uint8], float]] = []
    for index, (lane, frame) in enumerate(jobs):
        try:
            pixels = frame.frame  # decoded here, on the inference thread
        except CameraError as err:
            outcomes[index] = err
            continue
        batch.append((index, lane.owner, pixels, frame.monotonic_s))
    analysed = process_cameras([(worker.pipeline, pixels, at) for _, worker, pixels, at in batch])
    for (index, worker, _, _), outcome in zip(batch, analysed, strict=True):
        outcomes[index] = outcome
        if not isinstance(outcome, VisionError):
            worker._observe(outcome)
    return [outcome for outcome in outcomes if outcome is not None]  # every one is set by now


class SecurityWorker(_Worker):
    """One camera's person pipeline and security rules; raises alerts with a snapshot (zones and the
    alert's tracks drawn), and ``stream_lost`` tamper alerts when the camera falls silent.

    Services: ``detector`` (the shared NanoDet), ``grants(gate, window_s)`` (grants at a gate, for
    tailgating), ``emit(event, attachment)``, ``source(device)``, ``timezone`` (rule schedules) and
    the clock as ``monotonic()``, ``now()`` and ``sleep(s)``: :meth:`run` checks for a silent camera
    every ``stream_check_interval_s`` of it (only with tamper checks on). Frames are judged by their
    capture time; the clock serves the silence check alone.
    """

    kind = "security"

    def __init__(
        self,
        setup: CameraSetup,
        *,
        detector: PersonDetector,
        grants: Callable[[str, float], int],
        emit: Emit,
        source: Callable[[str], str],
        timezone: tzinfo,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utc_now,
        sleep: Sleep = asyncio.sleep,
        stream_check_interval_s: float = STREAM_CHECK_INTERVAL_S,
        inference: InferenceService | None = None,
    ) -> None:
        if setup.security is None:
            raise ValueError(f"camera {setup.id} has no security analysis configured")
        super().__init__(setup, emit=emit, source=source, tz=timezone, inference=inference)
        self.config = setup.security
        self.pipeline = PersonPipeline(
            setup.id, self.config.camera_zones(setup.id), self.config.pipeline, detector=detector
        )
        """Read by the metrics for ``frames``, ``detector_runs`` and ``bad_frames``."""
        self._rules = SecurityRules(setup.id, self.config, grants)
        self._monotonic = monotonic
        self.last_activity = monotonic()
        self._now = now
        self._sleep = sleep
        self._check_interval_s = stream_check_interval_s
        tamper = self.config.pipeline.tamper
        self._stream = StreamWatch(setup.id, tamper.stream_timeout_s) if tamper is not None else None
        # NanoDet's graph has a fixed batch of one: security frames are analysed one at a time.
        self.lane: Lane[tuple[PersonFrameResult, list[tuple[Alert, bytes]]]] = Lane(
            self.inference, setup.id, "security", self._analyse, owner=self
        )

    def submit(self, frame: CameraFrame) -> None:
        if self._stream is not None:
            self._stream_changes(self._stream.seen(frame.monotonic_s))
        super().submit(frame)

    async def run(self) -> None:
        """Watch for a silent camera (with tamper checks on) until cancelled; frames reach the
        worker through :meth:`submit` (or straight through :meth:`on_frame`)."""
        if self._stream is None:
            await super().run()
        else:
            await self._watch()

    async def _watch(self) -> None:
        while True:
            await self._sleep(self._check_interval_s)
            self.check_stream()

    def check_stream(self) -> int:
        """Whether the camera has gone silent, at the clock's ``monotonic()`` now; returns the alerts
        raised. Run by :meth:`run`; only its own state changes (never the frames' time)."""
        if self._stream is None:
            return 0
        return self._stream_changes(self._stream.check(self._monotonic()))

    def _stream_changes(self, changes: list[TamperChange]) -> int:
        if not changes:
            return 0
        wall = self._now()
        alerts = self._rules.evaluate_stream(changes, self._monotonic(), wall.astimezone(self._tz))
        for alert in alerts:
            self._raise(alert, b"", wall)
        return len(alerts)

    def _analyse(self, frame: CameraFrame) -> tuple[PersonFrameResult, list[tuple[Alert, bytes]]]:
        result = self.pipeline.process(frame.frame, frame.monotonic_s)
        alerts = self._rules.evaluate(result, frame.at.astimezone(self._tz))
        return result, [(alert, self._snapshot(frame, result, alert)) for alert in alerts]

    def _snapshot(self, frame: CameraFrame, result: PersonFrameResult, alert: Alert) -> bytes:
        boxes = [
            (t.box, f"#{t.track_id}")
            for t in result.tracks
            if not alert.track_ids or t.track_id in alert.track_ids
        ]
        # The zones this frame was judged by (an operator may have redrawn them since the start).
        return evidence_jpeg(frame.frame, zones=self.pipeline.zones, boxes=boxes)

    def replace_zones(self, security: SecurityConfig) -> None:
        """Judge by the zones and lines of ``security`` from the next frame on: the camera's
        configuration with only its zones redrawn (its rules, which name zones by id, are the same,
        so their state carries on)."""
        if not security.differs_only_in_drawing(self.config):
            raise ValueError(f"camera {self.camera_id}: only zones and lines change while it runs")
        self.config = security
        self.pipeline.replace_zones(security.camera_zones(self.camera_id))

    async def on_frame(self, frame: CameraFrame) -> int:
        """Analyse one frame off the event loop; returns how many alerts it raised."""
        if self._stream is not None:
            self._stream_changes(self._stream.seen(frame.monotonic_s))
        acted: int = await super().on_frame(frame)
        return acted

    def _nothing(self) -> int:
        return 0

    def _act(self, frame: CameraFrame, outcome: tuple[PersonFrameResult, list[tuple[Alert, bytes]]]) -> int:
        result, found = outcome
        if result.tracks or result.detections or result.moving:
            self.last_activity = max(self.last_activity, result.at)
        for alert, jpeg in found:
            self._raise(alert, jpeg, frame.at)
        return len(found)

    def _raise(self, alert: Alert, jpeg: bytes, at: datetime) -> None:
        data = dict(alert.data)
        if alert.type.startswith("edu.campus.security."):
            data["snapshot"] = bool(jpeg)
        event = Event(alert.type, self._source(self.camera_id), data, time=at, severity=alert.severity)
        self.counters["alerts"] += 1
        self._emit(event, jpeg or None)
        log.warning(
            "camera %s: %s (%s)",
            self.camera_id,
            alert.type,
            alert.severity.value,
            extra={"camera": self.camera_id, "event_id": event.id},
        )


__all__ = [
    "STREAM_CHECK_INTERVAL_S",
    "CameraWorker",
    "Emit",
    "SecurityWorker",
]

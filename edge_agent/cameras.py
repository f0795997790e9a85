"""Cameras in the agent: frames → vision (off the event loop) → observations → rules → events.

Two workers per camera, each a component the gateway's TaskGroup runs: :class:`CameraWorker` (face
recognition → attendance and stranger alerts) and :class:`SecurityWorker` (person detection, zones
and tamper → security alerts). The camera's reader hands each frame to :meth:`submit`, which never
blocks: each worker keeps only the newest frame it has not started on (latest frame wins), so a slow
model never builds a queue and never holds back the other worker. :meth:`run` analyses frames one
after another in the worker's own thread until cancelled.

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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from edge_agent.attendance import AttendanceBook, attendance_event
from edge_agent.config.cameras import CameraSetup, FaceAnalysisConfig
from edge_agent.memory import release_free_memory
from edge_agent.metrics import MODEL_SECONDS
from edge_agent.security import Alert, SecurityRules
from sync import Event, Severity, utc_now
from vision import (
    FaceCamera,
    FaceFrameResult,
    IdentityDecision,
    PersonDetector,
    PersonFrameResult,
    PersonPipeline,
    StreamWatch,
    TamperChange,
    VisionError,
    evidence_jpeg,
    snapshot_jpeg,
)

if TYPE_CHECKING:
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


class FrameSlot:
    """One frame waiting for a worker: a newer frame replaces one nobody has taken yet.

    Owned by the event loop (``put`` and ``get`` are called from it only)."""

    def __init__(self) -> None:
        self._frame: CameraFrame | None = None
        self._ready = asyncio.Event()

    def put(self, frame: CameraFrame) -> bool:
        """Leave ``frame`` for the worker; True when it replaced one that was never taken."""
        replaced = self._frame is not None
        self._frame = frame
        self._ready.set()
        return replaced

    async def get(self) -> CameraFrame:
        """The newest frame, waiting for one if there is none."""
        while self._frame is None:
            self._ready.clear()
            await self._ready.wait()
        frame, self._frame = self._frame, None
        return frame


class _Worker:
    """What both workers share: the frame slot, the worker thread, counters and the run loop."""

    kind = "camera"

    def __init__(
        self,
        camera_id: str,
        *,
        emit: Emit,
        source: Callable[[str], str],
        tz: tzinfo,
        still_after_s: float,
    ) -> None:
        self.camera_id = camera_id
        self._emit = emit
        self._source = source
        self._tz = tz
        self._slot = FrameSlot()
        self._executor: ThreadPoolExecutor | None = None
        self.counters: Counter[str] = Counter()
        """``frames_submitted``, ``frames_replaced`` (newer frame won), ``frames_analysed``,
        ``analysis_errors``, ``alerts``, ``heap_releases`` (still spells that asked for the freed heap
        to go back to the system; the release itself is rate limited process-wide)..."""
        self.errors = 0
        """Frames whose analysis failed (logged and counted; the worker goes on)."""
        self.last_activity = 0.0
        """Capture time (monotonic) of the newest frame with motion, a face or a person (the start
        before the first); the agent lowers the camera's analysis rate when it is old."""
        self._still_after_s = still_after_s
        self._heap_released = False

    def submit(self, frame: CameraFrame) -> None:
        """A new frame from the camera (never blocks; the newest frame wins)."""
        self.counters["frames_submitted"] += 1
        if self._slot.put(frame):
            self.counters["frames_replaced"] += 1

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"{self.kind}-{self.camera_id}"
            )
        return self._executor

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread(), fn, *args)

    async def _consume(self) -> None:
        while True:
            frame = await self._slot.get()
            await self.on_frame(frame)

    async def on_frame(self, frame: CameraFrame) -> object:
        raise NotImplementedError

    async def _release_heap_when_still(self, frame: CameraFrame) -> None:
        """Once per still spell: when the scene has been still for ``idle_after_s`` (the moment the
        camera drops to its idle rate), hand the heap memory freed by the analysis back to the
        system. A burst of analysis (and the start: model loading, the first runs) leaves frames and
        tensors freed but resident; an agent left in an empty room should not keep them."""
        if frame.monotonic_s - self.last_activity < self._still_after_s:
            self._heap_released = False
        elif not self._heap_released:
            self._heap_released = True
            self.counters["heap_releases"] += 1
            await self._in_thread(release_free_memory)

    def close(self) -> None:
        """Release the worker thread (an analysis under way finishes in the background). The worker
        may run again after it: a new thread is started on the next frame."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def stop(self) -> None:
        """:meth:`close`, for the component contract."""
        self.close()

    def _failed(self, frame: CameraFrame, err: VisionError) -> None:
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
    ) -> None:
        if setup.face is None:
            raise ValueError(f"camera {setup.id} has no face analysis configured")
        super().__init__(setup.id, emit=emit, source=source, tz=timezone, still_after_s=setup.idle_after_s)
        self.config: FaceAnalysisConfig = setup.face
        self._person = person
        self._attendance = attendance
        self._recent_card = recent_card
        self.last_activity = monotonic()
        self._models = models
        self.pipeline = FaceCamera(
            setup.id,
            models.gallery,
            detector=models.detector,
            embedder=models.embedder,
            config=self.config.pipeline,
            tracker=self.config.tracker,
        )
        """Read by the metrics for its ``counters``."""
        self._last_stranger = -math.inf

    async def run(self) -> None:
        """Analyse submitted frames until cancelled."""
        await self._consume()

    def _analyse(self, frame: CameraFrame) -> FaceFrameResult:
        result = self.pipeline.process(frame.frame, frame.monotonic_s)
        for stage, seconds in result.timings.items():
            MODEL_SECONDS.labels(self.camera_id, stage).observe(seconds)
        return result

    async def on_frame(self, frame: CameraFrame) -> list[IdentityDecision]:
        """Analyse one frame off the event loop and act on what the tracker decided."""
        try:
            result: FaceFrameResult = await self._in_thread(self._analyse, frame)
        except VisionError as err:
            self._failed(frame, err)
            return []
        self.counters["frames_analysed"] += 1
        if result.faces or result.moving:
            self.last_activity = max(self.last_activity, result.at)
        for decision in result.decisions:
            if decision.person_id is None:
                self._stranger(decision, frame)
            else:
                self._identified(decision, frame, result.threshold)
        await self._release_heap_when_still(frame)  # after the events: never delays one
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
        found = self._attendance.record(point, cfg.attendance, person, frame.at.astimezone(self._tz))
        if found is None:
            return
        both = cfg.card_gate is not None and self._recent_card(cfg.card_gate, person.id, cfg.card_window_s)
        self._emit(
            attendance_event(
                found,
                person,
                method="face+card" if both else "face",
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
    ) -> None:
        if setup.security is None:
            raise ValueError(f"camera {setup.id} has no security analysis configured")
        super().__init__(setup.id, emit=emit, source=source, tz=timezone, still_after_s=setup.idle_after_s)
        self.config = setup.security
        self._zones = self.config.camera_zones(setup.id)
        self.pipeline = PersonPipeline(setup.id, self._zones, self.config.pipeline, detector=detector)
        """Read by the metrics for ``frames``, ``detector_runs`` and ``bad_frames``."""
        self._rules = SecurityRules(setup.id, self.config, grants)
        self._monotonic = monotonic
        self.last_activity = monotonic()
        self._now = now
        self._sleep = sleep
        self._check_interval_s = stream_check_interval_s
        tamper = self.config.pipeline.tamper
        self._stream = StreamWatch(setup.id, tamper.stream_timeout_s) if tamper is not None else None

    def submit(self, frame: CameraFrame) -> None:
        if self._stream is not None:
            self._stream_changes(self._stream.seen(frame.monotonic_s))
        super().submit(frame)

    async def run(self) -> None:
        """Analyse submitted frames and watch for a silent camera, until cancelled. Frames may also
        be handed straight to :meth:`on_frame` instead of :meth:`submit`; ``run`` is still what
        watches for silence then."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._consume(), name=f"security-frames:{self.camera_id}")
            if self._stream is not None:
                tasks.create_task(self._watch(), name=f"security-stream:{self.camera_id}")

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
        return evidence_jpeg(frame.frame, zones=self._zones, boxes=boxes)

    async def on_frame(self, frame: CameraFrame) -> int:
        """Analyse one frame off the event loop; returns how many alerts it raised."""
        if self._stream is not None:
            self._stream_changes(self._stream.seen(frame.monotonic_s))
        try:
            result, found = await self._in_thread(self._analyse, frame)
        except VisionError as err:
            self._failed(frame, err)
            return 0
        self.counters["frames_analysed"] += 1
        if result.tracks or result.detections or result.moving:
            self.last_activity = max(self.last_activity, result.at)
        for alert, jpeg in found:
            self._raise(alert, jpeg, frame.at)
        await self._release_heap_when_still(frame)  # after the alerts: never delays one
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
    "FrameSlot",
    "SecurityWorker",
]

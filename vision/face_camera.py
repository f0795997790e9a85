"""One camera's face recognition as a function of (frame, capture time): the face pipeline (motion
gate, detect, quality, align, embed, match) and the tracker that votes over frames, giving one
:class:`FaceFrameResult` with every face seen and every identity decided by this frame."""

from __future__ import annotations

import copy
import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from vision.config import FacePipelineConfig, FaceTrackerConfig
from vision.errors import VisionError
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_pipeline import FaceObservation, FacePipeline, FrameAnalysis, process_frames
from vision.face_track import FaceTracker, IdentityDecision
from vision.gallery import Gallery


@dataclass(frozen=True, slots=True)
class FaceFrameResult:
    """What one frame gave, and all the agent needs to act on it.

    ``at``: the frame's capture time (what the tracker judged it by); ``analysed``: False when the
    motion gate skipped the frame (``faces`` then means "not looked"); ``moving``: the motion gate
    saw change; ``faces``: each face with its quality and match; ``decisions``: identities the
    tracker confirmed with this frame (``person_id`` None = a stranger); ``threshold``: the distance
    threshold the matches were made with; ``timings``: seconds per stage that ran.
    """

    camera_id: str
    at: float
    analysed: bool
    moving: bool
    faces: list[FaceObservation]
    decisions: list[IdentityDecision]
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)


class FaceCamera:
    """Face pipeline + tracker of one camera. Blocking: run :meth:`process` off the event loop, from
    one thread at a time. ``gallery`` is read at every frame (a callable, or a fixed gallery), so an
    enrollment or a roster update is matched against from the next frame on."""

    def __init__(
        self,
        camera_id: str,
        gallery: Gallery | Callable[[], Gallery],
        *,
        detector: FaceDetector | None = None,
        embedder: FaceEmbedder | None = None,
        config: FacePipelineConfig | None = None,
        tracker: FaceTrackerConfig | None = None,
    ) -> None:
        self.camera_id = camera_id
        self._gallery: Callable[[], Gallery] = gallery if callable(gallery) else (lambda: gallery)
        self._pipeline = FacePipeline(self._gallery(), detector=detector, embedder=embedder, config=config)
        self._tracker = FaceTracker(tracker)
        self._gallery_contents = self._pipeline.gallery.contents
        """The templates the tracks' identities were last matched against (a change: match again)."""

    @property
    def detector(self) -> FaceDetector:
        """The face detector this camera runs (its ``config.max_side`` is this camera's input size)."""
        return self._pipeline.detector

    @property
    def counters(self) -> Counter[str]:
        """Frames, faces and quality rejections counted by the pipeline (for metrics)."""
        return self._pipeline.counters

    def process(self, frame_bgr: npt.NDArray[Any], at: float) -> FaceFrameResult:
        """Analyse one frame captured at ``at`` (seconds, monotonic). Raises a
        :class:`vision.VisionError` for an unusable frame or a failed model run."""
        outcome = process_cameras([(self, frame_bgr, at)])[0]
        if isinstance(outcome, VisionError):
            raise outcome
        return outcome

    def _decide(self, analysis: FrameAnalysis, at: float) -> FaceFrameResult:
        decisions = self._tracker.update(analysis.faces, at)
        threshold = self._pipeline.config.threshold or self._pipeline.gallery.threshold
        return FaceFrameResult(
            camera_id=self.camera_id,
            at=at,
            analysed=analysis.analysed,
            moving=analysis.motion is not None and analysis.motion.motion,
            faces=analysis.faces,
            decisions=decisions,
            threshold=threshold,
            timings=dict(analysis.timings),
        )


def process_cameras(
    jobs: Sequence[tuple[FaceCamera, npt.NDArray[Any], float]],
) -> list[FaceFrameResult | VisionError]:
    """:meth:`FaceCamera.process` for one frame of each of several cameras, with the models run once
    for all of them (:func:`vision.face_pipeline.process_frames`); each camera's result, or the
    :class:`vision.VisionError` (naming the camera) that its frame gave, in order. Call it from one
    thread per camera at a time, like ``process``."""
    for camera, _, at in jobs:
        gallery = camera._gallery()  # read at every frame: enrolments and erasures apply at once
        contents = gallery.contents
        if contents is not camera._gallery_contents:
            camera._tracker.reverify()
            camera._gallery_contents = contents
        camera._pipeline.gallery = gallery
        camera._pipeline.carry = functools.partial(camera._tracker.carried, timestamp=at)
    outcomes = process_frames([(camera._pipeline, frame, at) for camera, frame, at in jobs])
    results: list[FaceFrameResult | VisionError] = []
    claimed: set[int] = set()
    for (camera, _, at), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, VisionError):
            if id(outcome) in claimed:
                # One failed model run is the error of every frame in it: each camera gets its own
                # copy, naming it (the shared one already names the first camera).
                outcome = copy.copy(outcome)
                outcome.camera_id = camera.camera_id
            else:
                claimed.add(id(outcome))
                outcome.camera_id = outcome.camera_id or camera.camera_id
            results.append(outcome)
        else:
            results.append(camera._decide(outcome, at))
    return results


__all__ = ["FaceCamera", "FaceFrameResult", "process_cameras"]

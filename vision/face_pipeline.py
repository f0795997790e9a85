"""The face pipeline: motion gate → detect → quality → align → embed → match, on one BGR frame.

:meth:`FacePipeline.analyse` is a pure function of the frame (given the models and the gallery);
:meth:`FacePipeline.process` adds the per-camera motion gate. Both are blocking CPU work: the agent
calls them from a worker thread or process, never on the event loop.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from vision.align import AlignmentError, align_face, align_faces
from vision.config import FacePipelineConfig, QualityConfig
from vision.errors import VisionError
from vision.face_detect import FaceDetection, FaceDetector
from vision.face_embed import FaceEmbedder
from vision.gallery import Gallery
from vision.motion import MotionGate, MotionResult
from vision.quality import ALIGNMENT_FAILED, ENROLLMENT_QUALITY, FaceQuality, assess_face
from vision.runtime import InvalidImageError, as_bgr_frame

# Enrollment photos larger than this are refused before decoding (a decompression bomb, or simply not
# a portrait photo).
MAX_ENROLLMENT_BYTES = 20 * 1024 * 1024
MAX_ENROLLMENT_PIXELS = 40_000_000


@dataclass(frozen=True, slots=True)
class FaceObservation:
    """One face seen in one frame.

    ``person_id`` is None when the face is unknown *or* was not matched because it failed the quality
    gate (then ``matched`` is False and ``distance`` is None). ``carried``: the face continues a track
    already confirmed as ``person_id`` and was not embedded again (``matched`` True, ``distance``
    None; see :meth:`vision.face_track.FaceTracker.carried`).
    """

    box: tuple[float, float, float, float]
    landmarks: npt.NDArray[np.float32]
    detection_score: float
    quality: FaceQuality
    matched: bool
    person_id: str | None
    distance: float | None
    model_id: str
    carried: bool = False


@dataclass(frozen=True, slots=True)
class FrameAnalysis:
    """Everything the pipeline learnt from one frame.

    ``analysed`` is False when the motion gate skipped the frame (then ``faces`` is empty and means
    "not looked", not "nobody there"). ``timings`` holds seconds per stage that ran.
    """

    analysed: bool
    motion: MotionResult | None
    faces: list[FaceObservation]
    timings: dict[str, float] = field(default_factory=dict)


class FacePipeline:
    """One camera's face pipeline. The detector, embedder and gallery may be shared between cameras
    (they are thread-safe); the motion gate and the counters are this camera's own state, so call one
    pipeline from one worker at a time.

    ``counters`` counts frames (``frames``, ``frames_skipped``, ``frames_analysed``), faces
    (``faces``, ``faces_named``, ``faces_unknown``) and every quality reason (``rejected_<reason>``),
    for the agent's metrics.
    """

    def __init__(
        self,
        gallery: Gallery,
        *,
        detector: FaceDetector | None = None,
        embedder: FaceEmbedder | None = None,
        config: FacePipelineConfig | None = None,
    ) -> None:
        self.config = config or FacePipelineConfig()
        self.detector = detector or FaceDetector()
        self.embedder = embedder or FaceEmbedder()
        if gallery.model_id != self.embedder.model_id:
            raise VisionError(
                f"gallery holds {gallery.model_id!r} templates, the embedder is {self.embedder.model_id!r}",
                code="model_mismatch",
            )
        self.gallery = gallery
        self.motion_gate = MotionGate(self.config.motion)
        self.counters: Counter[str] = Counter()
        self._last_analysed: float | None = None
        self._faces_last_time = False
        self.carry: Callable[[list[tuple[float, float, float, float]]], list[str | None]] | None = None
        """Per face box of the frame being analysed, the identity its confirmed track carries (then
        the face is not embedded), or None; set by :class:`vision.FaceCamera` for each frame."""

    def analyse(self, frame: npt.NDArray[Any]) -> FrameAnalysis:
        """Detect, check, embed and match every face in ``frame`` (HxWx3 uint8 BGR), no motion gate."""
        return _result(analyse_frames([(self, frame)])[0])

    def process(self, frame: npt.NDArray[Any], timestamp: float | None = None) -> FrameAnalysis:
        """The camera path: run the motion gate, and :meth:`analyse` only when something changed, or
        when nothing has been analysed for ``max_skip_s`` (``timestamp`` in seconds, default the
        monotonic clock; pass the frame's capture time when replaying a clip)."""
        return _result(process_frames([(self, frame, timestamp)])[0])

    def _gate(
        self, frame: npt.NDArray[Any], timestamp: float | None
    ) -> FrameAnalysis | tuple[npt.NDArray[np.uint8], MotionResult | None, float]:
        """The motion gate's verdict on one frame: a skipped :class:`FrameAnalysis`, or the checked
        frame to analyse with its motion (None with the gate off) and the gate's time."""
        checked = as_bgr_frame(frame)
        now = time.monotonic() if timestamp is None else timestamp
        self.counters["frames"] += 1
        if not self.config.motion_gate:
            self._last_analysed = now
            return checked, None, 0.0
        t0 = time.perf_counter()
        motion = self.motion_gate.update(checked)
        gate_s = time.perf_counter() - t0
        # The periodic analysis is for a face that sits still; with no face last time and nothing
        # moving, there is no face to confirm, so an empty still room costs no detector runs.
        overdue = self._last_analysed is None or (
            self._faces_last_time and now - self._last_analysed >= self.config.max_skip_s
        )
        if not motion.motion and not overdue:
            self.counters["frames_skipped"] += 1
            return FrameAnalysis(False, motion, [], {"motion": gate_s})
        self._last_analysed = now
        return checked, motion, gate_s

    def _count(self, faces: list[FaceObservation]) -> None:
        c = self.counters
        c["frames_analysed"] += 1
        c["faces"] += len(faces)
        for obs in faces:
            if obs.matched:
                c["faces_named" if obs.person_id is not None else "faces_unknown"] += 1
            if obs.carried:
                c["faces_carried"] += 1
            for reason in obs.quality.reasons:
                c[f"rejected_{reason}"] += 1


FrameOutcome = FrameAnalysis | VisionError
"""One frame's analysis, or why it has none (a bad frame, a failed model run)."""


def _result(outcome: FrameOutcome) -> FrameAnalysis:
    if isinstance(outcome, VisionError):
        raise outcome
    return outcome


def _every(outcomes: list[FrameOutcome | None]) -> list[FrameOutcome]:
    missing = [i for i, o in enumerate(outcomes) if o is None]
    assert not missing, f"frames {missing} were given no outcome"
    return [o for o in outcomes if o is not None]


_Model = TypeVar("_Model")


def _by_model(indices: Iterable[int], model_of: Callable[[int], _Model]) -> list[tuple[_Model, list[int]]]:
    """``indices`` grouped by the model instance they use (cameras share one; a test may not), in
    order of first use."""
    groups: dict[int, tuple[_Model, list[int]]] = {}
    for i in indices:
        model = model_of(i)
        groups.setdefault(id(model), (model, []))[1].append(i)
    return list(groups.values())


def analyse_frames(jobs: Sequence[tuple[FacePipeline, npt.NDArray[Any]]]) -> list[FrameOutcome]:
    """:meth:`FacePipeline.analyse` for the frames of several cameras at once, each with its own
    pipeline: the detector runs once per batch of equal-size frames, the embedder once for every
    face of every frame. Each frame's result is what analysing it alone gives; a frame's timings are
    its share of the batched runs. A bad frame is its own error; a failed model run is the error of
    every frame in it."""
    outcomes: list[FrameOutcome | None] = [None] * len(jobs)
    frames: dict[int, npt.NDArray[np.uint8]] = {}
    for i, (_, frame) in enumerate(jobs):
        try:
            frames[i] = as_bgr_frame(frame)
        except VisionError as err:
            outcomes[i] = err
    timings: dict[int, dict[str, float]] = {i: {} for i in frames}
    detections: dict[int, list[FaceDetection]] = {}
    for detector, members in _by_model(frames, lambda i: jobs[i][0].detector):
        t0 = time.perf_counter()
        try:
            found = detector.detect_many([frames[i] for i in members])
        except VisionError as err:
            for i in members:
                outcomes[i] = err
            continue
        share = (time.perf_counter() - t0) / len(members)
        for i, dets in zip(members, found, strict=True):
            detections[i] = dets
            timings[i]["detect"] = share
    qualities: dict[int, list[FaceQuality]] = {}
    good: dict[int, list[int]] = {}
    chips: dict[int, list[npt.NDArray[np.uint8]]] = {}
    carried: dict[int, list[str | None]] = {}
    for i, dets in detections.items():
        pipeline, frame = jobs[i][0], frames[i]
        t1 = time.perf_counter()
        qualities[i] = [assess_face(frame, d.box, d.landmarks, pipeline.config.quality) for d in dets]
        t2 = time.perf_counter()
        timings[i]["quality"] = t2 - t1
        good[i], chips[i] = [], []
        carry = pipeline.carry
        carried[i] = carry([d.box for d in dets]) if carry is not None and dets else [None] * len(dets)
        for k, q in enumerate(qualities[i]):
            if not q.ok or carried[i][k] is not None:
                continue
            try:
                chips[i].append(align_face(frame, dets[k].landmarks))
            except AlignmentError:
                # Degenerate landmarks on one face must not cost the other faces of the frame.
                qualities[i][k] = replace(q, ok=False, reasons=(*q.reasons, ALIGNMENT_FAILED))
                continue
            good[i].append(k)
        if good[i]:
            timings[i]["align"] = time.perf_counter() - t2
    embeddings: dict[int, npt.NDArray[np.float32]] = {}
    with_faces = [i for i, faces in good.items() if faces]
    for embedder, members in _by_model(with_faces, lambda i: jobs[i][0].embedder):
        t3 = time.perf_counter()
        try:
            out = embedder.embed(np.stack([chip for i in members for chip in chips[i]]))
        except VisionError as err:
            for i in members:
                outcomes[i] = err
            continue
        share = (time.perf_counter() - t3) / len(members)
        start = 0
        for i in members:
            embeddings[i] = out[start : start + len(chips[i])]
            start += len(chips[i])
            timings[i]["embed"] = share
    for i, dets in detections.items():
        if outcomes[i] is not None:
            continue
        pipeline = jobs[i][0]
        matches: dict[int, tuple[str | None, float]] = {}
        if i in embeddings:
            t4 = time.perf_counter()
            found_matches = pipeline.gallery.match(embeddings[i], threshold=pipeline.config.threshold)
            for k, m in zip(good[i], found_matches, strict=True):
                matches[k] = (m.person_id, m.distance)
            timings[i]["match"] = time.perf_counter() - t4
        faces = []
        for k, (det, q) in enumerate(zip(dets, qualities[i], strict=True)):
            person, dist = matches.get(k, (None, None))
            kept = carried[i][k] if q.ok else None
            faces.append(
                FaceObservation(
                    box=det.box,
                    landmarks=det.landmarks,
                    detection_score=det.score,
                    quality=q,
                    matched=k in matches or kept is not None,
                    person_id=kept or person,
                    distance=dist,
                    model_id=pipeline.embedder.model_id,
                    carried=kept is not None,
                )
            )
        pipeline._count(faces)
        outcomes[i] = FrameAnalysis(True, None, faces, timings[i])
    return _every(outcomes)


def process_frames(
    jobs: Sequence[tuple[FacePipeline, npt.NDArray[Any], float | None]],
) -> list[FrameOutcome]:
    """:meth:`FacePipeline.process` for the frames of several cameras at once (each camera's motion
    gate first, then :func:`analyse_frames` on the frames it let through)."""
    outcomes: list[FrameOutcome | None] = [None] * len(jobs)
    gated: dict[int, tuple[npt.NDArray[np.uint8], MotionResult | None, float]] = {}
    for i, (pipeline, frame, timestamp) in enumerate(jobs):
        try:
            verdict = pipeline._gate(frame, timestamp)
        except VisionError as err:
            outcomes[i] = err
            continue
        if isinstance(verdict, FrameAnalysis):
            outcomes[i] = verdict
        else:
            gated[i] = verdict
    order = list(gated)
    analysed = analyse_frames([(jobs[i][0], gated[i][0]) for i in order])
    for i, outcome in zip(order, analysed, strict=True):
        _, motion, gate_s = gated[i]
        if isinstance(outcome, VisionError) or motion is None:
            outcomes[i] = outcome
            continue
        jobs[i][0]._faces_last_time = bool(outcome.faces)
        outcomes[i] = FrameAnalysis(True, motion, outcome.faces, {"motion": gate_s, **outcome.timings})
    return _every(outcomes)


class EnrollmentError(VisionError):
    """An enrollment photo was rejected. ``code`` is the reason shown to the operator:

    ``not_an_image``, ``empty_image``, ``image_too_large``, ``no_face``, ``several_faces``,
    ``too_small``, ``too_blurred``, ``turned_away``, ``too_dark``, ``too_bright``.
    ``quality`` holds the measures when a face was found.
    """

    def __init__(self, message: str, *, code: str, quality: FaceQuality | None = None) -> None:
        super().__init__(message, code=code)
        self.quality = quality


@dataclass(frozen=True, slots=True)
class EnrollmentResult:
    """An accepted enrollment photo: the embedding to store (never the photo) and how it was judged."""

    embedding: npt.NDArray[np.float32]
    model_id: str
    detection: FaceDetection
    quality: FaceQuality


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, None for other or broken headers.

    A 20 MB PNG of one colour can declare a gigapixel image; reading the header first lets us refuse it
    before OpenCV allocates gigabytes.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length field
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF and i + 9 <= len(data):
            return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
        i += 2 + length
    return None


def decode_image(image_bytes: bytes) -> npt.NDArray[np.uint8]:
    """Decode JPEG/PNG/... bytes to a BGR array; :class:`EnrollmentError` for anything that is not one.

    The EXIF orientation of phone photos is applied (OpenCV's ``IMREAD_COLOR`` default), so a portrait
    taken sideways is upright for the detector.
    """
    if not image_bytes:
        raise EnrollmentError("the photo is empty (0 bytes)", code="empty_image")
    if len(image_bytes) > MAX_ENROLLMENT_BYTES:
        raise EnrollmentError(
            f"the photo has {len(image_bytes)} bytes, more than {MAX_ENROLLMENT_BYTES}",
            code="image_too_large",
        )
    size = declared_size(image_bytes)
    if size is not None and size[0] * size[1] > MAX_ENROLLMENT_PIXELS:
        raise EnrollmentError(
            f"the photo declares {size[0]}x{size[1]} pixels, too large", code="image_too_large"
        )
    buf = np.frombuffer(image_bytes, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise EnrollmentError(f"the photo cannot be decoded: {err}", code="not_an_image") from err
    if img is None or img.size == 0:
        raise EnrollmentError("the data is not a decodable image", code="not_an_image")
    if img.shape[0] * img.shape[1] > MAX_ENROLLMENT_PIXELS:
        raise EnrollmentError(
            f"the photo is {img.shape[1]}x{img.shape[0]}, too large", code="image_too_large"
        )
    return np.asarray(img, dtype=np.uint8)


def embed_enrollment_photo(
    image: bytes | npt.NDArray[Any],
    *,
    detector: FaceDetector,
    embedder: FaceEmbedder,
    quality: QualityConfig = ENROLLMENT_QUALITY,
    other_face_ratio: float = 0.4,
) -> EnrollmentResult:
    """Embed the one face of an enrollment photo (encoded bytes or a BGR array), or say why not.

    A second face at least ``other_face_ratio`` times the size of the largest one makes the photo
    ambiguous (``several_faces``): whose template would it be? Much smaller faces far behind the
    subject are ignored. The first failed quality reason becomes the error code.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        frame = decode_image(bytes(image))
    else:
        try:
            frame = as_bgr_frame(image)
        except InvalidImageError as err:
            raise EnrollmentError(str(err), code="not_an_image") from err
    # A tight passport-style crop leaves the detector no context around the face; a neutral border
    # makes such photos detectable without changing normal ones.
    pad = max(frame.shape[:2]) // 4
    padded = np.asarray(
        cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(127, 127, 127)),
        dtype=np.uint8,
    )
    detections = detector.detect(padded)
    if not detections:
        raise EnrollmentError("no face found in the photo", code="no_face")
    largest = max(detections, key=lambda d: d.size)
    others = [d for d in detections if d is not largest and d.size >= other_face_ratio * largest.size]
    if others:
        raise EnrollmentError(
            f"the photo shows {len(others) + 1} faces; enrol from a photo of the person alone",
            code="several_faces",
        )
    q = assess_face(padded, largest.box, largest.landmarks, quality)
    if not q.ok:
        raise EnrollmentError(
            f"the face is not good enough for a template: {', '.join(q.reasons)}",
            code=q.reasons[0],
            quality=q,
        )
    chip = align_faces(padded, [largest.landmarks])
    embedding = embedder.embed(chip)[0]
    shift = np.array([pad, pad], dtype=np.float32)
    x1, y1, x2, y2 = largest.box
    detection = FaceDetection(
        (x1 - pad, y1 - pad, x2 - pad, y2 - pad),
        largest.score,
        (largest.landmarks - shift).astype(np.float32),
    )
    return EnrollmentResult(embedding, embedder.model_id, detection, q)

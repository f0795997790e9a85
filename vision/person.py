"""Person detection with NanoDet-m 416 (COCO, class 0 = person) on ONNX Runtime.

Pre- and post-processing are pure numpy functions (tested with synthetic arrays); the model runs
through :class:`vision.runtime.OnnxModel` (sha256-checked, warmed up). The exact processing is the
one verified in ``docs/MODELS.md``:

* input ``[1, 3, 416, 416]`` float32, BGR, ``(x - mean) / std`` with the mean/std below, the frame
  letterboxed (aspect kept, padded with the mean colour so padding is zero after normalisation);
* per stride 8/16/32 (grids 52², 26², 13², cells in row-major order) the model gives class scores
  ``[n², 80]`` (already sigmoid) and box distributions ``[n², 44]``: 4 sides (left, top, right,
  bottom) × 11 bins; softmax over the bins, expected bin × stride = distance from the cell's
  top-left corner to that side (GFL);
* threshold 0.6 on the person score, NMS at IoU 0.5, boxes scaled back to the frame.

:class:`PersonPipeline` is one camera's whole security analysis as a function of (frame, time):
motion gate → :class:`PersonDetector` → :class:`vision.tracking.Tracker` → :class:`vision.zones.ZoneJudge`,
plus :class:`vision.tamper.TamperDetector`; the agent's rules consume its :class:`PersonFrameResult`,
which carries every observation (zone events, occupants, tracks, tamper state). A silent camera is
:class:`vision.tamper.StreamWatch`'s to judge, outside the pipeline.

Recall, measured on the test photos, is modest and depends on scale: a full-body figure pasted on
a corridor is found at 200–300 px tall at every position tried (scores 0.6–0.83) but at 350 px at
only 2 of 20; in the large close-up group photos most people score below 0.6 and are missed.
Check a camera's placement with real footage before relying on counts (crowding).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.config import Box, PersonDetectorConfig, PersonPipelineConfig, TamperKind
from vision.errors import VisionError
from vision.motion import MotionGate
from vision.runtime import InvalidImageError, OnnxModel, as_bgr_frame
from vision.tamper import TamperChange, TamperDetector
from vision.tracking import Track, Tracker
from vision.zones import CameraZones, ZoneJudge, ZoneObservation, in_pixels

log = logging.getLogger(__name__)

MODEL_ID = "nanodet_m_416"
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_BINS = 11  # GFL bins per side: distances 0..10 in units of the stride
NUM_CLASSES = 80
PERSON_CLASS = 0
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)
_INV_STD = (1.0 / STD_BGR).astype(np.float32)
_OFFSET = (-MEAN_BGR / STD_BGR).astype(np.float32)


class PersonDetectorError(VisionError):
    """The model's outputs do not look like NanoDet's (code ``bad_model_output``)."""

    def __init__(self, message: str, *, code: str = "bad_model_output") -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class PersonDetection:
    """One person: ``box`` is ``(x1, y1, x2, y2)`` in frame pixels, ``score`` in 0..1."""

    box: Box
    score: float

    @property
    def bottom_centre(self) -> tuple[float, float]:
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was placed in the model input: ``model = frame * scale + (pad_x, pad_y)``."""

    scale: float
    pad_x: int
    pad_y: int
    frame_width: int
    frame_height: int


def shrink(frame_bgr: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """Resize to ``width`` × ``height`` without aliasing, cheaply.

    Halving with ``pyrDown`` (a Gaussian low-pass) until within 2× of the target, then bilinear:
    as good as ``INTER_AREA`` for the detector (same people, scores within ±0.02 on the test
    scenes) at about a tenth of its cost on 720p frames (0.9 ms against 7.7 ms on one core).
    """
    img = frame_bgr
    while img.shape[1] >= 2 * width and img.shape[0] >= 2 * height:
        img = np.asarray(cv2.pyrDown(img), dtype=np.uint8)
    return np.asarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR), dtype=np.uint8)


def _fit(w: int, h: int, size: int) -> tuple[float, int, int, int, int]:
    """The letterbox of a ``w`` × ``h`` frame on a ``size``² square: scale, resized size, offsets."""
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return scale, nw, nh, (size - nw) // 2, (size - nh) // 2


_PAD_BGR = np.round(MEAN_BGR).astype(np.uint8)
"""The letterbox's border: the mean colour, which the normalisation takes to (nearly) zero."""
_PAD_INPUT = _PAD_BGR.astype(np.float32) * _INV_STD + _OFFSET
"""The border as the model sees it (the same float32 arithmetic as the picture's pixels)."""


def letterbox(frame_bgr: NDArray[np.uint8], size: int = INPUT_SIZE) -> tuple[NDArray[np.uint8], Letterbox]:
    """Resize keeping the aspect ratio and centre the frame on a ``size``² canvas of the mean colour."""
    h, w = frame_bgr.shape[:2]
    scale, nw, nh, px, py = _fit(w, h, size)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[:, :] = _PAD_BGR
    canvas[py : py + nh, px : px + nw] = shrink(frame_bgr, nw, nh)
    return canvas, Letterbox(scale, px, py, w, h)


def preprocess(frame_bgr: NDArray[np.uint8]) -> tuple[NDArray[np.float32], Letterbox]:
    """Frame (HxWx3 uint8 BGR) → model input ``[1, 3, 416, 416]`` float32 and the letterbox used:
    the tensor of :func:`letterbox`'s canvas, made without the canvas. The picture is normalised
    channel by channel straight into the planar tensor (the obvious ``(canvas - mean) / std`` then
    transpose costs 25x more) and the border is filled with its constant: a 16:9 frame leaves 44 %
    of the square as border, which costs nothing to normalise."""
    h, w = frame_bgr.shape[:2]
    scale, nw, nh, px, py = _fit(w, h, INPUT_SIZE)
    resized = shrink(frame_bgr, nw, nh)
    x = np.empty((1, 3, INPUT_SIZE, INPUT_SIZE), np.float32)
    for c in range(3):
        plane = x[0, c]
        plane[:py] = _PAD_INPUT[c]  # the border: above, below, left, right
        plane[py + nh :] = _PAD_INPUT[c]
        plane[py : py + nh, :px] = _PAD_INPUT[c]
        plane[py : py + nh, px + nw :] = _PAD_INPUT[c]
        inner = plane[py : py + nh, px : px + nw]
        np.multiply(resized[:, :, c], _INV_STD[c], out=inner, casting="unsafe")
        inner += _OFFSET[c]
    return x, Letterbox(scale, px, py, w, h)


def _softmax(x: NDArray[np.float32], axis: int) -> NDArray[np.float32]:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: NDArray[np.float32] = e / e.sum(axis=axis, keepdims=True)
    return out


def decode_level(
    cls_scores: NDArray[np.float32],
    box_dist: NDArray[np.float32],
    stride: int,
    score_threshold: float,
    class_id: int = PERSON_CLASS,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Decode one stride level: ``(boxes [K, 4] in model pixels, scores [K])`` above the threshold.

    ``cls_scores`` is ``[n², classes]``, ``box_dist`` is ``[n², 4 × 11]``, cells row-major on an
    ``n × n`` grid.
    """
    cells = cls_scores.shape[0]
    grid = round(cells**0.5)
    if grid * grid != cells or box_dist.shape != (cells, 4 * REG_BINS):
        raise PersonDetectorError(
            f"stride {stride}: scores {cls_scores.shape} and boxes {box_dist.shape} are not an n²-cell level"
        )
    scores = cls_scores[:, class_id]
    keep = np.nonzero(scores >= score_threshold)[0]
    if keep.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    # Only the kept cells are decoded: the softmax over every cell costs more than the model's last layer.
    dist = _softmax(box_dist[keep].reshape(-1, 4, REG_BINS), axis=2)
    expected = (dist * np.arange(REG_BINS, dtype=np.float32)).sum(axis=2) * stride  # [K, 4]
    cx = (keep % grid).astype(np.float32) * stride
    cy = (keep // grid).astype(np.float32) * stride
    boxes = np.stack(
        [cx - expected[:, 0], cy - expected[:, 1], cx + expected[:, 2], cy + expected[:, 3]], axis=1
    )
    return boxes.astype(np.float32), scores[keep].astype(np.float32)


def nms(boxes: NDArray[np.float32], scores: NDArray[np.float32], iou_threshold: float) -> NDArray[np.intp]:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.intp)


def postprocess(
    outputs: dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]],
    lb: Letterbox,
    score_threshold: float = 0.6,
    nms_iou: float = 0.5,
) -> list[PersonDetection]:
    """Per-stride ``(scores [n², 80], boxes [n², 44])`` → person detections in frame pixels."""
    all_boxes: list[NDArray[np.float32]] = []
    all_scores: list[NDArray[np.float32]] = []
    for stride, (cls_scores, box_dist) in sorted(outputs.items()):
        b, s = decode_level(cls_scores, box_dist, stride, score_threshold)
        all_boxes.append(b)
        all_scores.append(s)
    if not all_boxes:
        return []
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    if boxes.shape[0] == 0:
        return []
    kept = nms(boxes, scores, nms_iou)
    boxes = boxes[kept]
    scores = scores[kept]
    # Back to the frame: undo the padding and the scale, then clip to the picture.
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - lb.pad_x) / lb.scale, 0, lb.frame_width)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - lb.pad_y) / lb.scale, 0, lb.frame_height)
    out = []
    for (x1, y1, x2, y2), sc in zip(boxes.tolist(), scores.tolist(), strict=True):
        if x2 > x1 and y2 > y1:
            out.append(PersonDetection((x1, y1, x2, y2), sc))
    return out


def split_outputs(
    outputs: list[NDArray[np.float32]],
) -> dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Pair the six raw outputs by grid size (independent of the converter's output names)."""
    by_cells: dict[int, dict[int, NDArray[np.float32]]] = {}
    for out in outputs:
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] not in (NUM_CLASSES, 4 * REG_BINS):
            raise PersonDetectorError(f"unexpected NanoDet output shape {out.shape}")
        by_cells.setdefault(out.shape[1], {})[out.shape[2]] = out[0]
    levels: dict[int, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for stride in STRIDES:
        cells = (INPUT_SIZE // stride) ** 2
        pair = by_cells.get(cells, {})
        if NUM_CLASSES not in pair or 4 * REG_BINS not in pair:
            raise PersonDetectorError(f"NanoDet outputs for stride {stride} ({cells} cells) are missing")
        levels[stride] = (pair[NUM_CLASSES], pair[4 * REG_BINS])
    return levels


class PersonDetector:
    """NanoDet-m person detector. ``detect`` is blocking (≈30 ms): call it off the event loop.

    One instance serves every camera: its model runs one inference at a time
    (:class:`vision.runtime.OnnxModel`), so calls from several camera workers are safe.
    """

    def __init__(self, config: PersonDetectorConfig | None = None, *, model: OnnxModel | None = None) -> None:
        self.config = config or PersonDetectorConfig()
        self.model = model if model is not None else OnnxModel(MODEL_ID, config=self.config.runtime)
        if self.model.input_names != ["input_1:0"]:
            raise PersonDetectorError(
                f"model {self.model.model_id!r} is not NanoDet-m 416 (inputs {self.model.input_names})",
                code="wrong_model",
            )
        self.bad_frames = 0
        """Frames rejected by :meth:`detect` because they were not usable images (counted)."""

    def detect(self, frame_bgr: NDArray[np.uint8]) -> list[PersonDetection]:
        """People in a BGR frame (HxWx3 uint8), best score first.

        Raises :class:`vision.runtime.InvalidImageError` (and counts it in ``bad_frames``) for a frame
        of the wrong type or shape.
        """
        try:
            frame = as_bgr_frame(frame_bgr)
        except InvalidImageError:
            self.bad_frames += 1
            raise
        x, lb = preprocess(frame)
        outputs = self.model.run({self.model.input_names[0]: x})
        dets = postprocess(split_outputs(outputs), lb, self.config.score_threshold, self.config.nms_iou)
        if self.config.min_box_height > 0:
            dets = [d for d in dets if d.box[3] - d.box[1] >= self.config.min_box_height]
        return dets


@dataclass(frozen=True, slots=True)
class PersonFrameResult:
    """Everything one frame gave, and all that rules need: they never look into the pipeline.

    ``at``: the frame's capture time (the time rules judge it by); ``detected``: whether NanoDet ran
    on this frame (motion, or ``refresh_s`` elapsed) or the previous detections were carried over;
    ``motion``: changed fraction of the picture, ``moving`` whether that passed the motion gate;
    ``tracks``: confirmed tracks seen in this frame, with ids and boxes (what rules judge);
    ``removed``: tracks dropped now (their ids never return); ``zones``: zone entries/exits and line
    crossings of this frame; ``occupants``: after this frame, per zone id, the tracks counted inside
    and when each was counted in (dwell = ``at`` - that time); ``tamper``: tamper state changes;
    ``tamper_active``: tamper states on after this frame, with their reasons; ``frame_size``:
    ``(width, height)`` the boxes and zones are in.
    """

    at: float
    detected: bool
    motion: float
    detections: list[PersonDetection]
    tracks: list[Track]
    removed: list[Track]
    zones: list[ZoneObservation]
    tamper: list[TamperChange]
    camera_id: str = ""
    moving: bool = False
    occupants: dict[str, dict[int, float]] = field(default_factory=dict)
    tamper_active: dict[TamperKind, str] = field(default_factory=dict)
    frame_size: tuple[int, int] = (0, 0)

    def dwell_s(self, zone_id: str) -> dict[int, float]:
        """Seconds each track counted in ``zone_id`` has been there at this frame."""
        return {tid: self.at - since for tid, since in self.occupants.get(zone_id, {}).items()}


class PersonPipeline:
    """Per-camera person analysis as a function of (frame, time): blocking, run it off the event loop.

    Motion gating and tracking interact: a person standing still makes no motion, yet a loitering
    rule needs their track to live on. So on a frame without motion the last detections are fed to
    the tracker again (the picture has not changed, so neither have they), and the detector runs
    anyway every ``refresh_s`` seconds.
    """

    def __init__(
        self,
        camera_id: str,
        zones: CameraZones | None = None,
        config: PersonPipelineConfig | None = None,
        *,
        detector: PersonDetector | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.config = config or PersonPipelineConfig()
        self.detector = detector or PersonDetector(self.config.detector)
        self.tracker = Tracker(self.config.tracker)
        self.motion = MotionGate(self.config.motion)
        self.tamper = (
            TamperDetector(camera_id, self.config.tamper) if self.config.tamper is not None else None
        )
        self._zones_config = zones or CameraZones(camera_id=camera_id)
        # Zones redrawn while the camera runs: set from the event loop, taken by the next frame in
        # the inference thread (so a frame is judged by one set of zones, never half of each).
        self._redrawn: CameraZones | None = None
        self._redrawn_lock = threading.Lock()
        self._judge: ZoneJudge | None = None
        self._frame_size: tuple[int, int] | None = None
        self._last_detections: list[PersonDetection] = []
        self._last_detect_at: float | None = None
        self.bad_frames = 0
        self.frames = 0
        self.detector_runs = 0

    @property
    def zones(self) -> CameraZones:
        """The zones frames are judged by (once :meth:`replace_zones` has been taken by a frame)."""
        return self._zones_config

    def replace_zones(self, zones: CameraZones) -> None:
        """Judge by ``zones`` from the next frame on, keeping tracks and, where their zone or line
        still holds, their place in it (:meth:`vision.zones.ZoneJudge.reconfigure`). Safe to call
        from another thread than the one running :meth:`process`."""
        with self._redrawn_lock:
            self._redrawn = zones

    @property
    def zone_judge(self) -> ZoneJudge | None:
        """The zone state once the first frame fixed the frame size (for inspection and tests: the
        same facts are in every :class:`PersonFrameResult`)."""
        return self._judge

    def process(self, frame_bgr: NDArray[np.uint8], at: float) -> PersonFrameResult:
        """Analyse one frame captured at ``at`` (seconds, monotonic): the capture time, never the time
        of analysis, so a frame that waited in a queue is judged when it happened.

        Raises :class:`vision.runtime.InvalidImageError` (counted in ``bad_frames``) for an unusable
        frame; the pipeline's state is unchanged by it.
        """
        try:
            return self._process(frame_bgr, at)
        except VisionError as err:
            err.camera_id = err.camera_id or self.camera_id
            raise

    def _process(self, frame_bgr: NDArray[np.uint8], at: float) -> PersonFrameResult:
        try:
            frame = as_bgr_frame(frame_bgr)
        except InvalidImageError:
            self.bad_frames += 1
            raise
        self.frames += 1
        h, w = frame.shape[:2]
        dropped: list[Track] = []
        observations: list[ZoneObservation] = []
        if self._frame_size != (w, h):
            if self._judge is not None:
                # The camera changed resolution: boxes of the old size cannot be matched to new ones,
                # so every track ends here (reported as removed, leaving its zones) and starts afresh.
                dropped = self.tracker.reset()
                for t in dropped:
                    observations += self._judge.forget(t.track_id, at)
                self._last_detections = []
                self._last_detect_at = None
            self._frame_size = (w, h)
            self._judge = ZoneJudge(in_pixels(self._zones_config, w, h))
            self.motion.reset()
        with self._redrawn_lock:
            redrawn, self._redrawn = self._redrawn, None
        if redrawn is not None:
            assert self._judge is not None
            self._judge.reconfigure(in_pixels(redrawn, w, h))
            self._zones_config = redrawn
        judge = self._judge
        assert judge is not None
        motion = self.motion.update(frame)
        # The refresh keeps still people's tracks alive; with nobody seen and nothing moving, the
        # picture holds nobody new, so an empty still scene costs no detector runs.
        stale = self._last_detect_at is None or (
            bool(self._last_detections) and at - self._last_detect_at >= self.config.refresh_s
        )
        run_detector = not self.config.motion_gating or motion.motion or stale
        if run_detector:
            self._last_detections = self.detector.detect(frame)
            self._last_detect_at = at
            self.detector_runs += 1
        update = self.tracker.update(self._last_detections, at)
        observations += judge.update({t.track_id: t.bottom_centre for t in update.visible}, at)
        for gone in update.removed:
            observations += judge.forget(gone.track_id, at)
        tamper = (
            self.tamper.update(frame, at, [d.box for d in self._last_detections], still=not motion.motion)
            if self.tamper is not None
            else []
        )
        return PersonFrameResult(
            camera_id=self.camera_id,
            moving=motion.motion,
            occupants={z.id: judge.occupants(z.id) for z in judge.config.zones},
            tamper_active=self.tamper.active if self.tamper is not None else {},
            frame_size=(w, h),
            at=at,
            detected=run_detector,
            motion=motion.changed_fraction,
            detections=list(self._last_detections),
            tracks=update.visible,
            removed=dropped + update.removed,
            zones=observations,
            tamper=tamper,
        )

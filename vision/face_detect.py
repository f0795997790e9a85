"""Face detection with CenterFace: pure-numpy pre/post-processing around an :class:`OnnxModel`.

Pre/post-processing follows ``docs/MODELS.md`` exactly: RGB 0..255 input with sides rounded up
to multiples of 32; outputs at 1/4 resolution decoded per heatmap cell, then NMS and scaling back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vision.config import FaceDetectorConfig, RuntimeConfig
from vision.runtime import ModelLoadError, OnnxModel, as_bgr_frame

MODEL_ID = "centerface"
_STRIDE = 4  # output maps are 1/4 of the input
_ALIGN = 32  # the network needs input sides that are multiples of 32

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FaceDetection:
    """One face in frame pixel coordinates.

    ``box`` is (x1, y1, x2, y2); ``landmarks`` is 5x2 (x, y): left eye, right eye, nose, left and right
    mouth corner, "left" meaning the left side of the image.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: FloatArray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Geometric mean of width and height: one number for "how big is this face"."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))


def preprocess(frame_bgr: npt.NDArray[Any], max_side: int) -> tuple[FloatArray, float]:
    """Resize (never up) so the long side is at most ``max_side``, pad right/bottom to /32, to NCHW RGB.

    Returns the blob and the factor that maps network coordinates back to the frame (frame = net * factor).
    Padding instead of stretching keeps the aspect ratio, so the landmark geometry stays undistorted.
    """
    h, w = frame_bgr.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = (
        frame_bgr if (nh, nw) == (h, w) else cv2.resize(frame_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    )
    ph, pw = -(-nh // _ALIGN) * _ALIGN, -(-nw // _ALIGN) * _ALIGN
    blob = np.empty((1, 3, ph, pw), dtype=np.float32)
    # Channel by channel, BGR -> RGB, uint8 straight into the planar float tensor (no HxWx3 float
    # temporary); only the padding is zeroed.
    for c in range(3):
        plane = blob[0, c]
        plane[:nh, :nw] = resized[:, :, 2 - c]
        plane[nh:] = 0.0
        plane[:nh, nw:] = 0.0
    return blob, (w / nw + h / nh) / 2.0


def decode(
    heatmap: FloatArray,
    scales: FloatArray,
    offsets: FloatArray,
    landmarks: FloatArray,
    score_threshold: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Decode one image's CenterFace maps (each without the batch axis) into network-input coordinates.

    Returns boxes (N, 4) as x1, y1, x2, y2, scores (N,) and landmarks (N, 5, 2).
    """
    ys, xs = np.nonzero(heatmap[0] > score_threshold)
    scores = heatmap[0, ys, xs].astype(np.float32)
    s0 = np.exp(scales[0, ys, xs]) * _STRIDE  # height
    s1 = np.exp(scales[1, ys, xs]) * _STRIDE  # width
    x1 = (xs + offsets[1, ys, xs] + 0.5) * _STRIDE - s1 / 2
    y1 = (ys + offsets[0, ys, xs] + 0.5) * _STRIDE - s0 / 2
    boxes = np.stack([x1, y1, x1 + s1, y1 + s0], axis=1).astype(np.float32)
    lm = landmarks[:, ys, xs].T.reshape(-1, 5, 2)  # per face: (y0, x0), (y1, x1)...
    lms = np.empty_like(lm, dtype=np.float32)
    lms[:, :, 0] = lm[:, :, 1] * s1[:, None] + x1[:, None]
    lms[:, :, 1] = lm[:, :, 0] * s0[:, None] + y1[:, None]
    return boxes, scores, lms


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4), x1 y1 x2 y2."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.asarray(np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0), dtype=np.float32)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlaps = iou_matrix(boxes[best : best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def postprocess(
    outputs: list[FloatArray],
    factor: float,
    frame_shape: tuple[int, ...],
    config: FaceDetectorConfig,
) -> list[FaceDetection]:
    """Turn the four CenterFace outputs of a single image into frame-coordinate detections."""
    heat, scale, offset, lm = (o[0] for o in outputs)
    boxes, scores, lms = decode(heat, scale, offset, lm, config.score_threshold)
    if not len(scores):
        return []
    keep = nms(boxes, scores, config.nms_iou)
    h, w = frame_shape[:2]
    found = []
    for i in keep:
        b = boxes[i] * factor
        x1, y1 = float(np.clip(b[0], 0, w)), float(np.clip(b[1], 0, h))
        x2, y2 = float(np.clip(b[2], 0, w)), float(np.clip(b[3], 0, h))
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        found.append(FaceDetection((x1, y1, x2, y2), float(scores[i]), (lms[i] * factor).astype(np.float32)))
    return found


class FaceDetector:
    """CenterFace on a frame, or on the frames of several cameras at once. Thread-safe (onnxruntime
    sessions are)."""

    def __init__(
        self,
        config: FaceDetectorConfig | None = None,
        *,
        model: OnnxModel | None = None,
        runtime: RuntimeConfig | None = None,
    ) -> None:
        self.config = config or FaceDetectorConfig()
        self.model = model if model is not None else OnnxModel(MODEL_ID, config=runtime)
        if self.model.model_id != MODEL_ID:
            raise ModelLoadError(
                f"FaceDetector needs the {MODEL_ID} model, got {self.model.model_id}",
                code="model_signature",
                model_id=self.model.model_id,
            )

    def detect(self, frame: npt.NDArray[Any]) -> list[FaceDetection]:
        """Faces in ``frame`` (HxWx3 uint8 BGR), best score first.

        Raises :class:`vision.runtime.InvalidImageError` for a frame of the wrong dtype or shape.
        """
        return self.detect_many([frame])[0]

    def detect_many(self, frames: Sequence[npt.NDArray[Any]]) -> list[list[FaceDetection]]:
        """Faces in each of ``frames``, in their order: frames whose network input has the same size
        (cameras of one resolution) go through the model in batches of up to ``config.max_batch``
        (the graph's batch axis is dynamic), the others one size at a time.

        Raises :class:`vision.runtime.InvalidImageError` if any frame has the wrong dtype or shape
        (check frames first where one bad frame must not cost the others).
        """
        checked = [as_bgr_frame(frame) for frame in frames]
        prepared = [preprocess(frame, self.config.max_side) for frame in checked]
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, (blob, _) in enumerate(prepared):
            by_size.setdefault(blob.shape, []).append(i)
        found: list[list[FaceDetection]] = [[] for _ in checked]
        step = self.config.max_batch
        for same_size in by_size.values():
            for start in range(0, len(same_size), step):
                members = same_size[start : start + step]
                batch = np.concatenate([prepared[i][0] for i in members])
                outputs = self.model.run({self.model.input_names[0]: batch})
                for row, i in enumerate(members):
                    mine = [o[row : row + 1] for o in outputs]
                    found[i] = postprocess(mine, prepared[i][1], checked[i].shape, self.config)
        return found

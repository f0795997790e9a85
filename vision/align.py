"""5-point face alignment to dlib's 150x150 face-chip template (similarity transform).

The template comes from ``docs/MODELS.md``: it was fitted so that CenterFace landmarks warped
onto it reproduce dlib's own ``get_face_chip`` crops, which is what ``dlib_resnet_v1`` was trained on.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vision.errors import VisionError

CHIP_SIZE = 150
# Left eye, right eye, nose, left mouth corner, right mouth corner (image left/right), in chip pixels.
TEMPLATE_150: npt.NDArray[np.float32] = np.array(
    [[47.16, 45.77], [100.86, 45.25], [73.31, 78.45], [52.64, 103.36], [99.15, 101.50]], dtype=np.float32
)


class AlignmentError(VisionError):
    """The landmarks do not define a usable similarity transform (code ``alignment_failed``)."""

    def __init__(self, message: str, *, code: str = "alignment_failed") -> None:
        super().__init__(message, code=code)


def similarity_transform(landmarks: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """The 2x3 similarity matrix (rotation, uniform scale, shift) taking ``landmarks`` to the template.

    LMEDS rather than RANSAC: with five points there is no sensible pixel threshold to tune, and the
    least-median fit still shrugs off one bad landmark.
    """
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise AlignmentError(f"need 5 finite (x, y) landmarks, got shape {pts.shape}")
    matrix, _ = cv2.estimateAffinePartial2D(pts, TEMPLATE_150, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:, :2])) < 1e-9:
        raise AlignmentError("landmarks are degenerate (no similarity transform to the template)")
    return np.asarray(matrix, dtype=np.float64)


def align_face(frame_bgr: npt.NDArray[Any], landmarks: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """Warp the face with these landmarks to a 150x150 BGR chip (borders replicated, not black,
    so a face at the frame edge does not get a hard black edge the embedder never saw in training)."""
    matrix = similarity_transform(landmarks)
    chip = cv2.warpAffine(
        frame_bgr, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(chip, dtype=np.uint8)


def align_faces(frame_bgr: npt.NDArray[Any], landmarks: list[npt.NDArray[Any]]) -> npt.NDArray[np.uint8]:
    """Chips for several faces of one frame, stacked (N, 150, 150, 3) for one batched embedding run."""
    if not landmarks:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    return np.stack([align_face(frame_bgr, lm) for lm in landmarks])

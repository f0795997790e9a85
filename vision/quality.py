"""Face quality gate: size, blur, pose (from the five landmarks) and exposure, with reasons.

Only faces that pass are embedded and matched; the reasons are recorded so an operator can see why a
camera recognises nobody (too far away, motion blur, backlight...). The same measures weight the votes
of the identity tracker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from vision.config import QualityConfig

# Every face crop is resampled to this size before the blur and exposure measures, so that the Laplacian
# variance of a 40 px face and of a 400 px face are comparable numbers.
_PROBE_SIZE = 96
_PROBE_STD = 40.0

TOO_SMALL = "too_small"
TOO_BLURRED = "too_blurred"
TURNED_AWAY = "turned_away"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
ALIGNMENT_FAILED = "alignment_failed"  # set by the pipeline when the landmarks cannot be aligned


ENROLLMENT_QUALITY = QualityConfig(min_face_px=80.0, min_sharpness=40.0, max_yaw_deg=25.0, max_roll_deg=30.0)
"""Stricter limits for enrollment photos: a template must be better than what it will be compared with."""


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Measures of one face and the verdict. ``reasons`` is empty when ``ok``.

    ``score`` in 0..1 grows with size, sharpness and frontality; the tracker weights votes with it.
    """

    ok: bool
    reasons: tuple[str, ...]
    size_px: float
    sharpness: float
    yaw_deg: float
    roll_deg: float
    pitch: float
    brightness: float
    score: float


def pose_from_landmarks(landmarks: npt.NDArray[Any]) -> tuple[float, float, float]:
    """Rough (yaw degrees, roll degrees, pitch index) from the five CenterFace landmarks.

    Roll is the angle of the eye line. Yaw comes from where the nose sits between the eyes once roll is
    undone: centred is 0°, over one eye is 90° (arcsin of the offset, a weak-perspective approximation).
    Pitch is an index, not an angle: how far the nose sits from halfway between eye line and mouth line.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    dx, dy = right_eye - left_eye
    roll = math.degrees(math.atan2(dy, dx))
    eye_dist = math.hypot(dx, dy)
    if eye_dist < 1e-6:
        return 90.0, roll, 1.0
    # Rotate into the eye-line frame so a tilted head does not read as a turned one.
    c, s = dx / eye_dist, dy / eye_dist
    rot = np.array([[c, s], [-s, c]])
    eyes_mid = (left_eye + right_eye) / 2
    nose_r = rot @ (nose - eyes_mid)
    mouth_r_ = rot @ ((mouth_l + mouth_r) / 2 - eyes_mid)
    offset = float(np.clip(nose_r[0] / (eye_dist / 2), -1.0, 1.0))
    yaw = math.degrees(math.asin(offset))
    up, down = nose_r[1], mouth_r_[1] - nose_r[1]
    pitch = float((up - down) / (up + down)) if up + down > 1e-6 else 1.0
    return yaw, roll, pitch


def _crop(frame_bgr: npt.NDArray[Any], box: tuple[float, float, float, float]) -> npt.NDArray[np.uint8]:
    """The grey inner 80% of the face box, so hair and background at the box edge do not dominate
    the blur and exposure measures (empty when the box has no inside)."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * 0.1, (y2 - y1) * 0.1
    h, w = frame_bgr.shape[:2]
    ix1, iy1 = int(max(0, math.floor(x1 + mx))), int(max(0, math.floor(y1 + my)))
    ix2, iy2 = int(min(w, math.ceil(x2 - mx))), int(min(h, math.ceil(y2 - my)))
    if ix2 - ix1 < 2 or iy2 - iy1 < 2:
        return np.zeros((0, 0), dtype=np.uint8)
    return np.asarray(cv2.cvtColor(frame_bgr[iy1:iy2, ix1:ix2], cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def _probe(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``crop`` at most _PROBE_SIZE square: a big face is shrunk (so one threshold fits all sizes),
    a small one is measured as it is. Enlarging a small face would smooth its pixels into a blur it
    does not have: a sharp 30 px face in a classroom's back row would read as out of focus."""
    if crop.size == 0:
        return np.zeros((_PROBE_SIZE, _PROBE_SIZE), dtype=np.uint8)
    if crop.shape[0] <= _PROBE_SIZE and crop.shape[1] <= _PROBE_SIZE:
        return crop
    size = (min(_PROBE_SIZE, crop.shape[1]), min(_PROBE_SIZE, crop.shape[0]))
    return np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def assess_face(
    frame_bgr: npt.NDArray[Any],
    box: tuple[float, float, float, float],
    landmarks: npt.NDArray[Any],
    config: QualityConfig | None = None,
) -> FaceQuality:
    """Measure one detected face and decide whether it is good enough to recognise."""
    cfg = config or QualityConfig()
    size = math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))
    probe = _probe(_crop(frame_bgr, box))
    brightness = float(probe.mean())
    # Contrast-normalised (grey levels scaled to a standard deviation of _PROBE_STD) so a dim or flat
    # face is reported as dark, not also as blurred: raw Laplacian variance falls with contrast squared.
    std = float(probe.std())
    norm = (
        (probe.astype(np.float64) - brightness) * (_PROBE_STD / std) if std > 1e-3 else np.zeros(probe.shape)
    )
    sharpness = float(cv2.Laplacian(norm, cv2.CV_64F).var())
    yaw, roll, pitch = pose_from_landmarks(landmarks)
    reasons = []
    if size < cfg.min_face_px:
        reasons.append(TOO_SMALL)
    if sharpness < cfg.min_sharpness:
        reasons.append(TOO_BLURRED)
    if abs(yaw) > cfg.max_yaw_deg or abs(roll) > cfg.max_roll_deg or abs(pitch) > cfg.max_pitch:
        reasons.append(TURNED_AWAY)
    if brightness < cfg.min_brightness:
        reasons.append(TOO_DARK)
    elif brightness > cfg.max_brightness:
        reasons.append(TOO_BRIGHT)
    # Each factor saturates at 1 a comfortable way past its limit, so a big sharp frontal face weighs 1
    # and a face just passing the gate weighs about 1/8.
    size_f = min(1.0, size / (2 * cfg.min_face_px))
    sharp_f = min(1.0, sharpness / (2 * cfg.min_sharpness)) if cfg.min_sharpness > 0 else 1.0
    pose_f = max(0.0, math.cos(math.radians(yaw)))
    score = size_f * sharp_f * pose_f
    return FaceQuality(
        ok=not reasons,
        reasons=tuple(reasons),
        size_px=size,
        sharpness=sharpness,
        yaw_deg=yaw,
        roll_deg=roll,
        pitch=pitch,
        brightness=brightness,
        score=score,
    )

"""Quality gate: pose from synthetic landmarks; size, blur and exposure on a real face."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.face_detect import FaceDetection, FaceDetector
from vision.quality import (
    ENROLLMENT_QUALITY,
    TOO_BLURRED,
    TOO_BRIGHT,
    TOO_DARK,
    TOO_SMALL,
    TURNED_AWAY,
    QualityConfig,
    assess_face,
    pose_from_landmarks,
)
from vision.runtime import OnnxModel

FRONTAL = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float64)


def _rotate(points: npt.NDArray[np.float64], degrees: float) -> npt.NDArray[np.float64]:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = points.mean(axis=0)
    return np.asarray((points - centre) @ rot.T + centre)


def test_pose_frontal_rolled_and_turned() -> None:
    yaw, roll, pitch = pose_from_landmarks(FRONTAL)
    assert abs(yaw) < 1 and abs(roll) < 1 and abs(pitch) < 0.05
    yaw, roll, _ = pose_from_landmarks(_rotate(FRONTAL, 30))
    assert roll == pytest.approx(30, abs=0.5)
    assert abs(yaw) < 1  # a tilted head is not a turned one
    turned = FRONTAL.copy()
    turned[2, 0] = 75  # nose almost over the right eye
    yaw, _, _ = pose_from_landmarks(turned)
    assert yaw > 45
    yaw_rolled, _, _ = pose_from_landmarks(_rotate(turned, -20))
    assert yaw_rolled == pytest.approx(yaw, abs=0.5)
    down = FRONTAL.copy()
    down[2, 1] = 86  # nose near the mouth: head tipped forward
    assert pose_from_landmarks(down)[2] > 0.6


@pytest.fixture(scope="module")
def face(
    onnx_model: Callable[[str], OnnxModel], load_scene: Callable[[str], npt.NDArray[np.uint8]]
) -> tuple[npt.NDArray[np.uint8], FaceDetection]:
    frame = load_scene("sample6.jpg")
    faces = FaceDetector(model=onnx_model("centerface")).detect(frame)
    # The most frontal face of the photo, so only the changes made below can fail it.
    best = min(faces, key=lambda f: abs(pose_from_landmarks(f.landmarks)[0]))
    return frame, best


def test_good_face_passes_with_high_score(face: tuple[npt.NDArray[np.uint8], FaceDetection]) -> None:
    frame, det = face
    q = assess_face(frame, det.box, det.landmarks)
    assert q.ok and q.reasons == ()
    assert q.score > 0.5
    assert assess_face(frame, det.box, det.landmarks, ENROLLMENT_QUALITY).ok


def test_each_reason(face: tuple[npt.NDArray[np.uint8], FaceDetection]) -> None:
    frame, det = face
    blurred = cv2.GaussianBlur(frame, (0, 0), 6)
    assert TOO_BLURRED in assess_face(blurred, det.box, det.landmarks).reasons
    dark = cv2.convertScaleAbs(frame, alpha=0.25)
    assert assess_face(dark, det.box, det.landmarks).reasons == (TOO_DARK,)
    bright = cv2.convertScaleAbs(frame, alpha=1.0, beta=140)
    assert TOO_BRIGHT in assess_face(bright, det.box, det.landmarks).reasons
    # 0.08 of the photo's face is about 19 px, under the 24 px default.
    small = cv2.resize(frame, None, fx=0.08, fy=0.08, interpolation=cv2.INTER_AREA)
    q = assess_face(small, tuple(v * 0.08 for v in det.box), det.landmarks * 0.08)  # type: ignore[arg-type]
    assert TOO_SMALL in q.reasons
    turned = det.landmarks.copy()
    turned[2] = turned[1]  # nose over the eye
    assert TURNED_AWAY in assess_face(frame, det.box, turned).reasons
    # Scores order faces by usefulness: the blurred copy weighs less than the original.
    assert (
        assess_face(blurred, det.box, det.landmarks).score < assess_face(frame, det.box, det.landmarks).score
    )


def test_config_is_strict() -> None:
    with pytest.raises(ValueError):
        QualityConfig(min_face_px=40, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        QualityConfig(max_yaw_deg=-5)

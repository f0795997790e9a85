"""Test-only scenario helpers: tamper effects (cover, darken, defocus, shift, JPEG noise) applied to
whole frames, and one person detector shared by the session.

The photos and the clip composition (sprites, paths, walkers, ``write_video``) are in
:mod:`vision.scenes`, which the demo uses too; import them from there.

Import with ``from scene_clips import ...`` (pytest puts ``tests/vision`` on ``sys.path``) or
``from tests.vision.scene_clips import ...``.
"""

from __future__ import annotations

import cv2
import numpy as np

from vision.person import PersonDetector
from vision.scenes import Frame

# Tamper effects. Each returns a new frame.


def cover(frame: Frame, level: int = 12, seed: int = 0) -> Frame:
    """A hand or a cloth over the lens: nearly uniform dark frame with a little sensor noise."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 2, frame.shape)
    return np.clip(level + noise, 0, 255).astype(np.uint8)


def darken(frame: Frame, factor: float = 0.08) -> Frame:
    """Lights off / lens painted: the picture scaled towards black."""
    out: Frame = np.clip(frame.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    return out


def defocus(frame: Frame, sigma: float = 6.0) -> Frame:
    """Lens turned out of focus (or smeared): a strong Gaussian blur."""
    return np.asarray(cv2.GaussianBlur(frame, (0, 0), sigma), dtype=np.uint8)


def shift_view(frame: Frame, dx: int, dy: int = 0, angle_deg: float = 0.0) -> Frame:
    """Camera knocked: the picture translated (and rotated), borders filled by replication."""
    h, w = frame.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, 1.0)
    m[0, 2] += dx
    m[1, 2] += dy
    return np.asarray(cv2.warpAffine(frame, m, (w, h), borderMode=cv2.BORDER_REPLICATE), dtype=np.uint8)


def jpeg_noise(frame: Frame, quality: int = 70) -> Frame:
    """A JPEG round trip, like a camera's compressed stream."""
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), dtype=np.uint8)


_DETECTOR: PersonDetector | None = None


def shared_person_detector() -> PersonDetector:
    """One NanoDet detector per test session (loading and warming it up costs about a second)."""
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = PersonDetector()
    return _DETECTOR

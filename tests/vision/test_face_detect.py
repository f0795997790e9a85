"""CenterFace pre/post-processing on synthetic arrays, and the real model on the scene photos."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.face_detect import (
    FaceDetector,
    FaceDetectorConfig,
    decode,
    iou_matrix,
    nms,
    postprocess,
    preprocess,
)
from vision.runtime import InvalidImageError, OnnxModel

Loader = Callable[[str], npt.NDArray[np.uint8]]


@pytest.fixture(scope="module")
def detector(onnx_model: Callable[[str], OnnxModel]) -> FaceDetector:
    return FaceDetector(model=onnx_model("centerface"))


def test_preprocess_pads_to_32_keeps_aspect_and_swaps_channels() -> None:
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[..., 0] = 10  # B
    frame[..., 2] = 200  # R
    blob, factor = preprocess(frame, 640)
    assert blob.shape == (1, 3, 384, 640)  # 360 rounded up to 384
    assert factor == pytest.approx(2.0)
    assert blob[0, 0, 0, 0] == 200 and blob[0, 2, 0, 0] == 10  # RGB order, raw 0..255
    assert (blob[0, :, 360:, :] == 0).all()  # padding below, not a stretch
    small = np.zeros((100, 50, 3), np.uint8)
    blob, factor = preprocess(small, 640)
    assert blob.shape == (1, 3, 128, 64) and factor == 1.0  # never upscaled


def _maps(h: int, w: int) -> tuple[Any, Any, Any, Any]:
    return (
        np.zeros((1, h, w), np.float32),
        np.zeros((2, h, w), np.float32),
        np.zeros((2, h, w), np.float32),
        np.zeros((10, h, w), np.float32),
    )


def test_decode_follows_models_md_formulas() -> None:
    heat, scale, off, lm = _maps(20, 30)
    y, x = 7, 11
    heat[0, y, x] = 0.9
    scale[:, y, x] = [np.log(10.0), np.log(8.0)]  # height 40 px, width 32 px after *4
    off[:, y, x] = [0.25, -0.5]  # (dy, dx)
    lm[:, y, x] = [0.3, 0.2, 0.3, 0.8, 0.55, 0.5, 0.8, 0.25, 0.8, 0.75]  # (ly, lx) pairs
    boxes, scores, lms = decode(heat, scale, off, lm, 0.5)
    x1 = (x - 0.5 + 0.5) * 4 - 32 / 2
    y1 = (y + 0.25 + 0.5) * 4 - 40 / 2
    np.testing.assert_allclose(boxes[0], [x1, y1, x1 + 32, y1 + 40], rtol=1e-5)
    assert scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(lms[0, 0], [0.2 * 32 + x1, 0.3 * 40 + y1], rtol=1e-5)  # left eye
    np.testing.assert_allclose(lms[0, 2], [0.5 * 32 + x1, 0.55 * 40 + y1], rtol=1e-5)  # nose
    # below threshold: nothing
    assert len(decode(heat * 0.5, scale, off, lm, 0.5)[1]) == 0


def test_nms_and_iou() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.6, 0.9, 0.7, 0.5], np.float32)
    keep = nms(boxes, scores, 0.3)
    assert list(keep) == [1, 2]
    iou = iou_matrix(boxes[:1], boxes)
    assert iou[0, 0] == pytest.approx(1.0) and iou[0, 2] == 0.0


def test_postprocess_scales_back_and_clips() -> None:
    heat, scale, off, lm = _maps(16, 16)
    heat[0, 1, 1] = 0.8
    scale[:, 1, 1] = np.log(6.0)
    outputs = [m[None] for m in (heat, scale, off, lm)]
    faces = postprocess(outputs, 2.0, (100, 100, 3), FaceDetectorConfig())
    assert len(faces) == 1
    x1, y1, x2, _ = faces[0].box
    assert x1 == 0.0 and y1 == 0.0  # clipped at the frame edge
    assert x2 == pytest.approx((1.5 * 4 + 12) * 2)


def test_real_faces_in_every_scene(
    detector: FaceDetector, scene_paths: list[Any], load_scene: Loader
) -> None:
    for path in scene_paths:
        frame = load_scene(path.name)
        faces = detector.detect(frame)
        assert len(faces) >= 3, path.name
        for f in faces:
            x1, y1, x2, y2 = f.box
            assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
            lm = f.landmarks
            margin = 0.25 * f.width
            assert (lm[:, 0] > x1 - margin).all() and (lm[:, 0] < x2 + margin).all()
            # Eyes above the nose, nose above the mouth (no face in these photos is upside down).
            assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_no_face_in_faceless_picture(detector: FaceDetector, load_scene: Loader) -> None:
    background = load_scene("sample1.jpg")[800:, :]  # tables and clothes, no heads
    assert detector.detect(background) == []
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_bad_frames(detector: FaceDetector) -> None:
    for bad in (np.zeros((100, 100), np.float32), np.zeros((100, 100, 2), np.uint8), "not an array"):
        with pytest.raises(InvalidImageError):
            detector.detect(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(720, 1280), (1440, 2560), (427, 640), (33, 47), (700, 9)])
def test_preprocess_is_the_plain_rgb_planar_blob(shape: tuple[int, int]) -> None:
    """The blob is built channel by channel (no float HxWx3 temporary): it must be exactly the
    plain formulation, RGB, planar, zero padding to a multiple of 32."""
    frame = np.random.default_rng(shape[0]).integers(0, 256, (*shape, 3), dtype=np.uint8)
    blob, factor = preprocess(frame, 640)
    h, w = shape
    scale = min(1.0, 640 / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = frame if (nh, nw) == (h, w) else cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    reference = np.zeros((1, 3, -(-nh // 32) * 32, -(-nw // 32) * 32), np.float32)
    reference[0, :, :nh, :nw] = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
    assert np.array_equal(blob, reference)
    assert factor == pytest.approx((w / nw + h / nh) / 2)

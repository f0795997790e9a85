"""Alignment to the dlib template, the embedder's input checks, and model-kind checks."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.align import CHIP_SIZE, TEMPLATE_150, AlignmentError, align_face, similarity_transform
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.runtime import InvalidImageError, ModelLoadError, OnnxModel


def test_transform_maps_landmarks_onto_template() -> None:
    # The template itself, rotated by 20 degrees, scaled by 2.5 and shifted: the fit must undo all three.
    a = np.radians(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * 2.5
    pts = TEMPLATE_150 @ rot.T + [300, 120]
    m = similarity_transform(pts)
    back = pts @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(back, TEMPLATE_150, atol=0.05)


def test_degenerate_landmarks_are_an_alignment_error() -> None:
    for bad in (np.full((5, 2), 10.0), np.full((5, 2), np.nan), np.zeros((4, 2))):
        with pytest.raises(AlignmentError) as info:
            similarity_transform(bad)
        assert info.value.code == "alignment_failed"


def test_real_face_chip(
    onnx_model: Callable[[str], OnnxModel], load_scene: Callable[[str], npt.NDArray[np.uint8]]
) -> None:
    frame = load_scene("sample3.jpg")
    face = FaceDetector(model=onnx_model("centerface")).detect(frame)[0]
    chip = align_face(frame, face.landmarks)
    assert chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and chip.dtype == np.uint8
    # The detector run on the chip puts the eyes where the template says (within a few pixels).
    padded = cv2.copyMakeBorder(chip, 75, 75, 75, 75, cv2.BORDER_CONSTANT, value=(127, 127, 127))
    again = FaceDetector(model=onnx_model("centerface")).detect(padded)
    assert again
    np.testing.assert_allclose(again[0].landmarks[:2] - 75, TEMPLATE_150[:2], atol=6)


def test_wrong_models_and_inputs(onnx_model: Callable[[str], OnnxModel]) -> None:
    with pytest.raises(ModelLoadError) as info:
        FaceDetector(model=onnx_model("dlib_resnet_v1"))
    assert info.value.code == "model_signature"
    with pytest.raises(ModelLoadError):
        FaceEmbedder(model=onnx_model("centerface"))
    embedder = FaceEmbedder(model=onnx_model("dlib_resnet_v1"))
    with pytest.raises(InvalidImageError):
        embedder.embed(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(InvalidImageError):
        embedder.embed(np.zeros((150, 150, 3), np.float32))
    # Batches larger than max_batch are split, with the same result as one by one.
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 255, (11, 150, 150, 3), dtype=np.uint8)
    batched = embedder.embed(chips)
    single = np.vstack([embedder.embed(c) for c in chips[:3]])
    assert batched.shape == (11, 128)
    np.testing.assert_allclose(batched[:3], single, atol=1e-4)

"""Motion gate on real scene photos: static scene is quiet, a moving patch or a cut is motion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.motion import MotionConfig, MotionGate
from vision.runtime import InvalidImageError


def _noisy(img: npt.NDArray[Any], rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    # Sensor noise of a real camera: the gate must not fire on it.
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def test_first_frame_is_motion_then_static_is_quiet(
    load_scene: Callable[[str], npt.NDArray[np.uint8]],
) -> None:
    scene = cv2.resize(load_scene("sample1.jpg"), (1280, 720))
    gate = MotionGate()
    rng = np.random.default_rng(1)
    first = gate.update(scene)
    assert first.motion and first.changed_fraction == 1.0
    for _ in range(10):
        result = gate.update(_noisy(scene, rng))
        assert not result.motion, result


def test_moving_patch_is_motion(load_scene: Callable[[str], npt.NDArray[np.uint8]]) -> None:
    background = cv2.resize(load_scene("sample2.jpg"), (1280, 720))
    patch = cv2.resize(load_scene("sample3.jpg"), (120, 160))
    gate = MotionGate()
    gate.update(background)
    fractions = []
    for step in range(5):
        frame = background.copy()
        x = 100 + step * 150
        frame[300:460, x : x + 120] = patch
        fractions.append(gate.update(frame).changed_fraction)
    assert all(f > MotionConfig().min_changed_fraction for f in fractions)
    # The patch covers about 2% of the picture; the gate must not report the whole picture changed.
    assert max(fractions) < 0.2


def test_cut_to_other_scene_and_resolution_change(load_scene: Callable[[str], npt.NDArray[np.uint8]]) -> None:
    gate = MotionGate()
    a = cv2.resize(load_scene("sample4.jpg"), (640, 360))
    gate.update(a)
    assert not gate.update(a).motion
    assert gate.update(cv2.resize(load_scene("sample5.jpg"), (640, 360))).motion
    assert gate.update(cv2.resize(a, (320, 180))).motion  # new resolution: treated as a first frame
    gate.reset()
    assert gate.update(a).changed_fraction == 1.0


def test_slow_lighting_drift_is_absorbed(load_scene: Callable[[str], npt.NDArray[np.uint8]]) -> None:
    scene = cv2.resize(load_scene("sample6.jpg"), (640, 360)).astype(np.int16)
    gate = MotionGate()
    results = [gate.update(np.clip(scene + i // 2, 0, 255).astype(np.uint8)) for i in range(40)]
    assert not any(r.motion for r in results[1:])


def test_bad_frames() -> None:
    gate = MotionGate()
    with pytest.raises(InvalidImageError):
        gate.update(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(ValueError):
        MotionGate(MotionConfig(blur_kernel=4))

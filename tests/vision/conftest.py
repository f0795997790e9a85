"""Fixtures for vision tests: real models, loaded once per session (the machine has 2 cores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.runtime import OnnxModel


@pytest.fixture(scope="session")
def onnx_model() -> Callable[[str], OnnxModel]:
    """``onnx_model("centerface")``: the shipped model, verified and warmed up once per session."""
    cache: dict[str, OnnxModel] = {}

    def get(model_id: str) -> OnnxModel:
        if model_id not in cache:
            cache[model_id] = OnnxModel(model_id)
        return cache[model_id]

    return get


@pytest.fixture(scope="session")
def scene_paths(shared_dir: Path) -> list[Path]:
    """The shared scene photos (several people and faces each)."""
    paths = sorted((shared_dir / "testdata" / "scenes").glob("*.jpg"))
    assert paths, "no scene photos in shared/testdata/scenes"
    return paths


@pytest.fixture(scope="session")
def load_scene(shared_dir: Path) -> Callable[[str], npt.NDArray[np.uint8]]:
    """``load_scene("sample1.jpg")``: a scene photo as a BGR uint8 array."""

    def load(name: str) -> npt.NDArray[np.uint8]:
        img = cv2.imread(str(shared_dir / "testdata" / "scenes" / name), cv2.IMREAD_COLOR)
        assert img is not None, name
        return np.asarray(img, dtype=np.uint8)

    return load

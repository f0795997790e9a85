"""Fixtures for vision tests: real models, loaded once per session (the machine has 2 cores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from vision import scenes
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
def scene_paths() -> list[Path]:
    """The scene photos the project ships (several people and faces each), see :mod:`vision.scenes`."""
    paths = scenes.scene_paths()
    assert paths, f"no scene photos in {scenes.SCENES_DIR}"
    return paths


@pytest.fixture(scope="session")
def load_scene() -> Callable[[str], npt.NDArray[np.uint8]]:
    """``load_scene("sample1.jpg")``: a shipped scene photo as a BGR uint8 array."""
    return scenes.load_photo

"""OnnxModel: checksum, signature and warm-up at load; bad feeds rejected with codes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vision.manifest import MANIFEST_PATH, MODELS_DIR, Manifest, ManifestError, load_manifest
from vision.runtime import (
    InferenceError,
    InvalidImageError,
    ModelLoadError,
    OnnxModel,
    RuntimeConfig,
    as_bgr_frame,
)


def test_manifest_matches_shipped_files() -> None:
    manifest = load_manifest()
    assert {m.id for m in manifest.models} >= {"centerface", "dlib_resnet_v1", "nanodet_m_416"}
    for entry in manifest.models:
        assert (MODELS_DIR / entry.file).stat().st_size == entry.size_bytes
    assert (MODELS_DIR / "LICENSES.md").read_text().count("sha256") >= len(manifest.models)


def test_unknown_model_and_bad_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest().get("no_such_model")
    assert info.value.code == "unknown_model"
    bad = tmp_path / "manifest.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError) as info:
        load_manifest(bad)
    assert info.value.code == "manifest_invalid"
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "absent.json")
    assert info.value.code == "manifest_missing"


@pytest.mark.parametrize("model_id", ["centerface", "dlib_resnet_v1", "nanodet_m_416"])
def test_shipped_models_load_and_run(onnx_model: Callable[[str], OnnxModel], model_id: str) -> None:
    model = onnx_model(model_id)
    feeds = {
        s.name: np.random.default_rng(0).uniform(0, 255, s.warmup_shape).astype(np.float32)
        for s in model.entry.inputs
    }
    runs_before = model.runs
    out = model.run(feeds)
    assert len(out) == len(model.entry.outputs)
    assert all(np.isfinite(o).all() for o in out)
    assert model.runs == runs_before + 1
    assert model.last_latency_s > 0


def _copy_model(tmp_path: Path, model_id: str = "dlib_resnet_v1") -> Path:
    entry = load_manifest().get(model_id)
    target = tmp_path / entry.file
    shutil.copyfile(MODELS_DIR / entry.file, target)
    return target


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        OnnxModel("dlib_resnet_v1", models_dir=tmp_path)
    assert info.value.code == "model_missing"
    assert info.value.model_id == "dlib_resnet_v1"


def test_truncated_model_file(tmp_path: Path) -> None:
    path = _copy_model(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as info:
        OnnxModel("dlib_resnet_v1", models_dir=tmp_path)
    assert info.value.code == "model_truncated"
    # Even with the checksum switched off a truncated file is a load error, not a crash later.
    with pytest.raises(ModelLoadError) as info:
        OnnxModel("dlib_resnet_v1", models_dir=tmp_path, config=RuntimeConfig(verify_checksum=False))
    assert info.value.code == "model_invalid"


def test_same_size_wrong_content(tmp_path: Path) -> None:
    path = _copy_model(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as info:
        OnnxModel("dlib_resnet_v1", models_dir=tmp_path)
    assert info.value.code == "model_checksum"


def test_signature_mismatch(tmp_path: Path) -> None:
    raw = json.loads(MANIFEST_PATH.read_text())
    for m in raw["models"]:
        if m["id"] == "dlib_resnet_v1":
            m["outputs"] = ["embedding"]
    manifest = Manifest.model_validate(raw)
    with pytest.raises(ModelLoadError) as info:
        OnnxModel("dlib_resnet_v1", manifest=manifest, config=RuntimeConfig(warmup_runs=0))
    assert info.value.code == "model_signature"


def test_bad_feeds(onnx_model: Callable[[str], OnnxModel]) -> None:
    model = onnx_model("dlib_resnet_v1")
    with pytest.raises(InferenceError) as info:
        model.run({"wrong": np.zeros((1, 3, 150, 150), np.float32)})
    assert info.value.code == "bad_input"
    with pytest.raises(InferenceError) as info:
        model.run({"input": np.zeros((1, 3, 150, 150), np.float64)})
    assert info.value.code == "bad_input"
    with pytest.raises(InferenceError) as info:
        model.run({"input": np.zeros((1, 3, 112, 112), np.float32)})
    assert info.value.code == "bad_input"


def test_session_options_applied() -> None:
    model = OnnxModel("dlib_resnet_v1", config=RuntimeConfig(intra_op_threads=2, graph_optimization="basic"))
    opts = model.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert "2" in repr(model)


def test_as_bgr_frame_rejects_garbage() -> None:
    for bad, code in [
        (np.zeros((10, 10, 3), np.float32), "bad_frame"),
        (np.zeros((0, 10, 3), np.uint8), "empty_image"),
        (np.zeros((10, 10, 4), np.uint8), "bad_frame"),
        (b"\xff\xd8", "bad_frame"),
    ]:
        with pytest.raises(InvalidImageError) as info:
            as_bgr_frame(bad)
        assert info.value.code == code
    assert as_bgr_frame(np.zeros((10, 12), np.uint8)).shape == (10, 12, 3)

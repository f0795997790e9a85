"""The OpenVINO execution provider for real: our three models on PyPI's onnxruntime-openvino.

That package replaces the ``onnxruntime`` module, so it lives in a venv of its own
(``bash bench/openvino_env.sh`` makes ``.venv-openvino``; ``EDGE_OPENVINO_PYTHON`` names another
interpreter). The models run there in a subprocess (``openvino_child.py``) with
``execution_providers: [openvino, cpu]``; this process runs the same inputs on the CPU provider of
the project's own onnxruntime, and the outputs must agree. Skipped, saying why, where that venv is
missing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vision.align import align_faces
from vision.face_detect import FaceDetector, iou_matrix
from vision.face_embed import FaceEmbedder
from vision.person import PersonDetector
from vision.scenes import corridor_background, load_photo, paste_person, person_sprite

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PYTHON = REPO / ".venv-openvino" / "bin" / "python"
CHILD = Path(__file__).with_name("openvino_child.py")

# How close the OpenVINO provider must come to the CPU one. On this machine (onnxruntime-openvino
# 1.24.1) the outputs differ only in float rounding: descriptors 1e-6 apart, scores 1e-7, landmarks
# 1e-4 px. The limits leave about a thousand times that for other CPUs' kernels (AVX-512, AMX), and
# still fail a provider that computes anything different: a distance of 1e-3 is 1/500 of the 0.50
# recognition threshold.
MIN_BOX_IOU = 0.99
MAX_SCORE_DIFF = 1e-3
MAX_LANDMARK_DIFF_PX = 0.1
MAX_EMBEDDING_DISTANCE = 1e-3


@pytest.fixture(scope="module")
def openvino_python() -> Path:
    configured = os.environ.get("EDGE_OPENVINO_PYTHON")
    python = Path(configured) if configured else DEFAULT_PYTHON
    if not python.is_file():
        origin = "EDGE_OPENVINO_PYTHON" if configured else "the default path"
        pytest.skip(f"no OpenVINO venv at {python} ({origin}); make it with `bash bench/openvino_env.sh`")
    return python


def _matched_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each box of ``a``, its best IoU with a box of ``b`` (same count already checked)."""
    return np.asarray(iou_matrix(a.astype(np.float32), b.astype(np.float32)).max(axis=1))


def test_openvino_provider_runs_our_models_and_matches_cpu(openvino_python: Path, tmp_path: Path) -> None:
    faces_frame = load_photo("sample1.jpg")
    people_frame = corridor_background()
    paste_person(people_frame, person_sprite("figure"), (400.0, 600.0), 250.0)
    paste_person(people_frame, person_sprite("diner"), (900.0, 560.0), 200.0)

    detector, embedder, people = FaceDetector(), FaceEmbedder(), PersonDetector()
    faces = detector.detect(faces_frame)
    assert len(faces) >= 3, "the photo should show several faces"
    chips = align_faces(faces_frame, [f.landmarks for f in faces])
    persons = people.detect(people_frame)
    assert len(persons) == 2, "both pasted people should be found on the CPU provider"

    inputs, output = tmp_path / "inputs.npz", tmp_path / "openvino.npz"
    np.savez(inputs, faces_frame=faces_frame, people_frame=people_frame, chips=chips)
    run = subprocess.run(
        [str(openvino_python), str(CHILD), str(inputs), str(output)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, f"the OpenVINO child failed:\n{run.stderr[-3000:]}"
    got = np.load(output)

    # Each model really ran on OpenVINO, not on the CPU fallback.
    assert got["providers"].tolist() == ["openvino", "openvino", "openvino"], run.stderr[-2000:]

    cpu_boxes = np.array([f.box for f in faces], np.float32)
    assert len(got["face_boxes"]) == len(faces)
    assert _matched_iou(cpu_boxes, got["face_boxes"]).min() >= MIN_BOX_IOU
    order = iou_matrix(cpu_boxes, got["face_boxes"]).argmax(axis=1)
    assert np.abs(got["face_scores"][order] - [f.score for f in faces]).max() <= MAX_SCORE_DIFF
    cpu_landmarks = np.array([f.landmarks for f in faces], np.float32)
    assert np.abs(got["face_landmarks"][order] - cpu_landmarks).max() <= MAX_LANDMARK_DIFF_PX

    distances = np.linalg.norm(got["embeddings"] - embedder.embed(chips), axis=1)
    assert distances.max() <= MAX_EMBEDDING_DISTANCE, distances

    cpu_person_boxes = np.array([p.box for p in persons], np.float32)
    assert len(got["person_boxes"]) == len(persons)
    assert _matched_iou(cpu_person_boxes, got["person_boxes"]).min() >= MIN_BOX_IOU
    order = iou_matrix(cpu_person_boxes, got["person_boxes"]).argmax(axis=1)
    assert np.abs(got["person_scores"][order] - [p.score for p in persons]).max() <= MAX_SCORE_DIFF

"""Run inside the OpenVINO venv by ``test_openvino.py`` (not a test module: that venv has no pytest).

    <openvino venv>/bin/python tests/vision/openvino_child.py INPUT.npz OUTPUT.npz

Loads each of our three models through the production classes with ``execution_providers:
[openvino, cpu]`` and runs them on the inputs the parent test wrote (a real photo for the face and
person detectors, aligned face chips for the embedder), so the parent can compare with the CPU
provider of its own onnxruntime on exactly the same inputs. Writes the providers the models ended
up on and every output to OUTPUT.npz.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from any working directory

from vision.config import PersonDetectorConfig, RuntimeConfig  # noqa: E402
from vision.face_detect import FaceDetector  # noqa: E402
from vision.face_embed import FaceEmbedder  # noqa: E402
from vision.person import PersonDetector  # noqa: E402

OPENVINO_FIRST = RuntimeConfig(execution_providers=("openvino", "cpu"))


def main(inputs: Path, output: Path) -> None:
    given = np.load(inputs)
    faces_frame, people_frame, chips = given["faces_frame"], given["people_frame"], given["chips"]
    detector = FaceDetector(runtime=OPENVINO_FIRST)
    embedder = FaceEmbedder(runtime=OPENVINO_FIRST)
    people = PersonDetector(PersonDetectorConfig(runtime=OPENVINO_FIRST))
    faces = detector.detect(faces_frame)
    persons = people.detect(people_frame)
    np.savez(
        output,
        providers=np.array([detector.model.provider, embedder.model.provider, people.model.provider]),
        face_boxes=np.array([f.box for f in faces], np.float32).reshape(-1, 4),
        face_scores=np.array([f.score for f in faces], np.float32),
        face_landmarks=np.array([f.landmarks for f in faces], np.float32).reshape(-1, 5, 2),
        embeddings=embedder.embed(chips),
        person_boxes=np.array([p.box for p in persons], np.float32).reshape(-1, 4),
        person_scores=np.array([p.score for p in persons], np.float32),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""Latency of our three models on the CPU provider and on OpenVINO: same tensors, same run.

    bash bench/openvino_env.sh          # once: .venv-openvino with PyPI's onnxruntime-openvino
    flock /tmp/bench.lock .venv/bin/python bench/bench_providers.py [--runs 60] [--rounds 3]

The tensors are made once, here, by the production preprocessing on the project's own images: a
1280x720 camera frame for CenterFace (shrunk to the detector's ``max_side`` and padded, as
``FaceDetector`` feeds it), one aligned face chip for dlib_resnet_v1 (the per-face cost; the
pipeline batches the faces of a frame), a 1280x720 corridor frame with two people, letterboxed to
416x416, for NanoDet. Every configuration then runs exactly those tensors through
:class:`vision.runtime.OnnxModel` (production session options: one intra-op thread, all graph
optimisations) in a subprocess of its own venv:

- ``cpu``: the project's onnxruntime (``.venv``), the production default;
- ``openvino``: onnxruntime-openvino's OpenVINO provider (``execution_providers: [openvino, cpu]``;
  the bench checks the model really landed on OpenVINO);
- ``openvino, 1 core``: the same, pinned to one core with ``taskset`` (the OpenVINO CPU plugin
  sizes its own thread pool from the cores it may use, ignoring the one-thread session option);
- ``cpu (ov pkg)``: the CPU provider of the onnxruntime-openvino package, to tell the provider
  apart from the onnxruntime version.

Configurations take turns (``--rounds``), so load from other work on the machine falls on all of
them alike; each worker warms up first (OpenVINO compiles per input shape) and then times
``--runs`` runs. Reported per model: median and p95 wall latency, CPU seconds per run (more than
the wall time when a provider uses several cores), each one's ratio to ``cpu``, and the time to
load the model (checksum, session creation, where OpenVINO compiles the graph, one warm-up run).
Prints Markdown for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from common import REPO, percentile

from vision.align import align_faces
from vision.config import FaceDetectorConfig, RuntimeConfig
from vision.face_detect import FaceDetector
from vision.face_detect import preprocess as face_preprocess
from vision.person import preprocess as person_preprocess
from vision.runtime import OnnxModel
from vision.scenes import corridor_background, load_photo, paste_person, person_sprite

MODELS = ("centerface", "dlib_resnet_v1", "nanodet_m_416")
FRAME_SIZE = (1280, 720)
WARMUP_RUNS = 5
DEFAULT_OPENVINO_PYTHON = REPO / ".venv-openvino" / "bin" / "python"


def make_tensors() -> dict[str, np.ndarray]:
    """The one input tensor of each model (see the module docstring)."""
    frame = np.asarray(
        cv2.resize(load_photo("sample1.jpg"), FRAME_SIZE, interpolation=cv2.INTER_AREA), np.uint8
    )
    blob, _ = face_preprocess(frame, FaceDetectorConfig().max_side)
    photo = load_photo("sample1.jpg")
    face = FaceDetector().detect(photo)[0]
    chip = align_faces(photo, [face.landmarks])
    corridor = corridor_background(*FRAME_SIZE)
    paste_person(corridor, person_sprite("figure"), (400.0, 600.0), 250.0)
    paste_person(corridor, person_sprite("diner"), (900.0, 560.0), 200.0)
    people, _ = person_preprocess(corridor)
    return {
        "centerface": blob,
        # FaceEmbedder's own layout: BGR -> RGB, HWC -> CHW, 0..255 floats.
        "dlib_resnet_v1": np.ascontiguousarray(chip[:, :, :, ::-1].transpose(0, 3, 1, 2), np.float32),
        "nanodet_m_416": people,
    }


def worker(model_id: str, providers: tuple[str, ...], want: str, tensors: Path, runs: int) -> None:
    """Time ``runs`` runs of ``model_id`` on the saved tensor; print one JSON line."""
    started = time.perf_counter()
    model = OnnxModel(model_id, config=RuntimeConfig(execution_providers=providers))  # type: ignore[arg-type]
    load_s = time.perf_counter() - started  # checksum, session (OpenVINO compiles here), one warm-up run
    if model.provider != want:
        raise SystemExit(f"{model_id} landed on {model.provider}, not {want} ({model.fallback_reason})")
    feeds = {model.input_names[0]: np.load(tensors)[model_id]}
    for _ in range(WARMUP_RUNS):
        model.run(feeds)
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        model.run(feeds)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    print(json.dumps({"wall": wall, "cpu": cpu, "load": load_s, "ort": ort.__version__}))


def configurations(openvino_python: Path) -> dict[str, tuple[list[str], tuple[str, ...], str]]:
    """name -> (command prefix, execution_providers, the provider the model must land on)."""
    pin = [shutil.which("taskset") or "taskset", "-c", "0"]
    ov = [str(openvino_python)]
    return {
        "cpu": ([sys.executable], ("cpu",), "cpu"),
        "openvino": (ov, ("openvino", "cpu"), "openvino"),
        "openvino, 1 core": (pin + ov, ("openvino", "cpu"), "openvino"),
        "cpu (ov pkg)": (ov, ("cpu",), "cpu"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=60, help="timed runs per worker (default %(default)s)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="turns of every configuration (default %(default)s)"
    )
    parser.add_argument(
        "--openvino-python",
        type=Path,
        default=Path(os.environ.get("EDGE_OPENVINO_PYTHON", DEFAULT_OPENVINO_PYTHON)),
        help="interpreter of the OpenVINO venv (default: $EDGE_OPENVINO_PYTHON or %(default)s)",
    )
    parser.add_argument(
        "--worker", nargs=4, metavar=("MODEL", "PROVIDERS", "WANT", "TENSORS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        model_id, providers, want, tensors = args.worker
        worker(model_id, tuple(providers.split(",")), want, Path(tensors), args.runs)
        return
    if not args.openvino_python.is_file():
        raise SystemExit(
            f"no OpenVINO venv at {args.openvino_python}: run `bash bench/openvino_env.sh` first"
        )

    configs = configurations(args.openvino_python)
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    load: dict[tuple[str, str], list[float]] = {}
    versions: dict[str, str] = {}
    inputs = make_tensors()
    with tempfile.TemporaryDirectory() as tmp:
        tensors = Path(tmp) / "tensors.npz"
        np.savez(tensors, **inputs)
        for _ in range(args.rounds):
            for model_id in MODELS:
                for name, (prefix, providers, want) in configs.items():
                    command = [
                        *prefix,
                        str(Path(__file__).resolve()),
                        "--runs",
                        str(args.runs),
                        "--worker",
                        model_id,
                        ",".join(providers),
                        want,
                        str(tensors),
                    ]
                    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} / {model_id} failed:\n{done.stderr[-2000:]}")
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                    wall.setdefault((model_id, name), []).extend(result["wall"])
                    cpu.setdefault((model_id, name), []).extend(result["cpu"])
                    load.setdefault((model_id, name), []).append(result["load"])
                    versions[name] = result["ort"]

    print(
        f"{args.rounds} rounds x {args.runs} timed runs per model and configuration, after "
        f"{WARMUP_RUNS} warm-up runs each; onnxruntime "
        + ", ".join(f"{v} ({n})" for n, v in versions.items())
        + f"; {os.cpu_count()} cores.\n"
    )
    print(
        "| model | input | provider | median ms | p95 ms | CPU ms per run | median vs cpu | load s (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    shapes = {k: "x".join(map(str, v.shape)) for k, v in inputs.items()}
    for model_id in MODELS:
        base = float(np.median(wall[(model_id, "cpu")]))
        for name in configs:
            w = wall[(model_id, name)]
            median = float(np.median(w))
            print(
                f"| {model_id} | {shapes[model_id]} | {name} | {median * 1e3:.1f} | "
                f"{percentile(w, 0.95) * 1e3:.1f} | {np.median(cpu[(model_id, name)]) * 1e3:.1f} | "
                f"{median / base:.2f}x | {np.median(load[(model_id, name)]):.2f} |"
            )


if __name__ == "__main__":
    main()

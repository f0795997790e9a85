"""Face pipeline throughput per core, per stage, next to bare onnxruntime; gallery matching; motion gating.

    taskset -c 0 .venv/bin/python bench/bench_face.py [--repeats 15] [--clip-frames 300]

Everything runs with one onnxruntime intra-op thread (the RuntimeConfig default), pinned to one core by
taskset, so frames/s are per core. Absolute times drift on a shared machine, so each figure comes with
a baseline measured in the same run. The faces and the room come from the scene photos the project
ships (``vision.scenes``):

- stages: ``FacePipeline.analyse`` split into detect / quality / align / embed / match, next to
  ``InferenceSession.run`` on the same tensors (no pre/post-processing): overhead = pipeline / bare;
- gallery: ``Gallery.match`` for 1,000 / 10,000 / 100,000 people next to a plain numpy
  ``argmin(norm(E - q))`` on the same data;
- motion gating: a synthetic classroom clip (seated people who shift now and then, one walking in)
  through ``FacePipeline.process`` with and without the gate.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np

from vision.align import align_faces
from vision.config import FacePipelineConfig
from vision.face_detect import FaceDetector, preprocess
from vision.face_embed import FaceEmbedder
from vision.face_eval import composite, crop_around
from vision.face_pipeline import FacePipeline
from vision.gallery import Gallery
from vision.scenes import load_photo

MODEL = "dlib_resnet_v1"


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # one untimed run: caches, lazy allocations
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _nearest_plain(embeddings: np.ndarray, query: np.ndarray) -> int:
    """The baseline for ``Gallery.match``: plain numpy nearest neighbour."""
    return int(np.argmin(np.linalg.norm(embeddings - query, axis=1)))


def _patches(detector: FaceDetector) -> list[np.ndarray]:
    """Head-and-shoulders crops of five different people, faces about 110 px tall at 720p."""
    out = []
    for name in ("sample6.jpg", "sample3.jpg", "sample4.jpg", "sample2.jpg", "sample5.jpg"):
        img = load_photo(name)
        face = max(detector.detect(img), key=lambda f: f.score)
        crop = crop_around(img, face.box, 0.6)
        scale = 110 / face.height
        out.append(
            np.asarray(cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
        )
    return out


def _frame(room: np.ndarray, patches: list[np.ndarray], n: int, size: tuple[int, int]) -> np.ndarray:
    frame = cv2.resize(room, size)
    w, h = size
    for i in range(n):
        frame = composite(frame, patches[i], (w * (0.12 + 0.19 * i), h * (0.35 + 0.08 * (i % 2))))
    return np.asarray(frame, np.uint8)


def bench_stages(pipeline: FacePipeline, frames: dict[str, np.ndarray], repeats: int) -> None:
    det_sess = pipeline.detector.model.session
    emb_sess = pipeline.embedder.model.session
    print(
        "| frame | faces | detect ms | quality ms | align ms | embed ms | match ms | pipeline ms "
        "| frames/s/core | bare ORT ms (detect + embed) | overhead ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, frame in frames.items():
        stage_samples: dict[str, list[float]] = {}
        totals, bares = [], []
        faces = 0
        blob, _ = preprocess(frame, pipeline.detector.config.max_side)
        dets = pipeline.detector.detect(frame)
        chips = align_faces(frame, [d.landmarks for d in dets])
        emb_blob = np.ascontiguousarray(chips[:, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
        pipeline.analyse(frame)
        # Pipeline and bare runtime interleaved, so both see the same load from the rest of the machine.
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = pipeline.analyse(frame)
            t1 = time.perf_counter()
            det_sess.run(None, {"input.1": blob})
            if len(emb_blob):
                emb_sess.run(None, {"input": emb_blob})
            bares.append(time.perf_counter() - t1)
            totals.append(t1 - t0)
            faces = sum(o.matched for o in result.faces)
            for k, v in result.timings.items():
                stage_samples.setdefault(k, []).append(v)
        total, bare = statistics.median(totals), statistics.median(bares)

        def ms(stage: str, samples: dict[str, list[float]] = stage_samples) -> str:
            vals = samples.get(stage)
            return f"{statistics.median(vals) * 1e3:.1f}" if vals else "–"

        print(
            f"| {label} | {faces} | {ms('detect')} | {ms('quality')} | {ms('align')} | {ms('embed')} | "
            f"{ms('match')} | {total * 1e3:.1f} | {1 / total:.1f} | {bare * 1e3:.1f} | {total / bare:.2f} |"
        )


def bench_gallery(repeats: int) -> None:
    rng = np.random.default_rng(0)
    print(
        "\n| people | Gallery.match 1 face ms | 5 faces ms | plain numpy argmin(norm) 1 face ms "
        "| ratio (1 face) |"
    )
    print("|---|---|---|---|---|")
    for n in (1_000, 10_000, 100_000):
        # dlib descriptors have norms around 0.8-1.0 and distances 0.1-1.0; random vectors of that norm
        # cost the same arithmetic.
        emb = rng.normal(size=(n, 128)).astype(np.float32)
        emb *= 0.9 / np.linalg.norm(emb, axis=1, keepdims=True)
        g = _bulk_gallery(emb)
        q1 = emb[rng.integers(n)][None] + 0.01
        q5 = emb[rng.integers(n, size=5)] + 0.01
        t1 = _median_s(partial(g.match, q1), repeats * 4)
        t5 = _median_s(partial(g.match, q5), repeats * 4)
        base = _median_s(partial(_nearest_plain, emb, q1[0]), repeats * 4)
        print(f"| {n:,} | {t1 * 1e3:.3f} | {t5 * 1e3:.3f} | {base * 1e3:.3f} | {t1 / base:.2f} |")


def _bulk_gallery(emb: np.ndarray) -> Gallery:
    g = Gallery(MODEL)
    ids = [f"p{i}" for i in range(len(emb))]
    g.add_many(ids, emb, model_id=MODEL)
    return g


def bench_motion(pipeline: FacePipeline, room: np.ndarray, patches: list[np.ndarray], frames: int) -> None:
    """A 720p classroom: four seated people, each shifting a little now and then; a fifth walks in."""
    rng = np.random.default_rng(1)
    size = (1280, 720)
    base = cv2.resize(room, size)
    seats = [(200.0 + 280 * i, 330.0 + 40 * (i % 2)) for i in range(4)]
    walk_from, walk_to = frames // 3, frames // 3 + frames // 5
    clip = []
    for k in range(frames):
        for i in range(4):
            if rng.random() < 0.03:  # someone shifts in their seat
                seats[i] = (seats[i][0] + rng.normal(0, 6), seats[i][1] + rng.normal(0, 3))
        frame = base
        for i, pos in enumerate(seats):
            frame = composite(frame, patches[i], pos)
        if walk_from <= k < walk_to:
            t = (k - walk_from) / (walk_to - walk_from)
            frame = composite(frame, patches[4], (1250 - 1100 * t, 500.0))
        noise = rng.normal(0, 2.0, frame.shape)
        clip.append(np.clip(frame + noise, 0, 255).astype(np.uint8))

    def run(gate: bool) -> tuple[float, int]:
        pipe = FacePipeline(
            pipeline.gallery,
            detector=pipeline.detector,
            embedder=pipeline.embedder,
            config=FacePipelineConfig(motion_gate=gate),
        )
        t0 = time.perf_counter()
        analysed = sum(pipe.process(f, k / 10).analysed for k, f in enumerate(clip))  # a 10 fps camera
        return time.perf_counter() - t0, analysed

    gated_s, analysed = run(True)
    ungated_s, _ = run(False)
    print("\n| 720p classroom clip | frames | analysed | seconds | frames/s/core |\n|---|---|---|---|---|")
    print(f"| with motion gate | {frames} | {analysed} | {gated_s:.2f} | {frames / gated_s:.1f} |")
    print(f"| without (every frame) | {frames} | {frames} | {ungated_s:.2f} | {frames / ungated_s:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clip-frames", type=int, default=300)
    args = parser.parse_args()
    detector, embedder = FaceDetector(), FaceEmbedder()
    patches = _patches(detector)
    room = load_photo("sample1.jpg")[760:, :]  # no faces in it
    gallery = _bulk_gallery(np.random.default_rng(2).normal(size=(1000, 128)).astype(np.float32) * 0.08)
    pipeline = FacePipeline(
        gallery, detector=detector, embedder=embedder, config=FacePipelineConfig(motion_gate=False)
    )
    frames = {}
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        for n in (0, 1, 5):
            frames[f"{label} {n} faces"] = _frame(room, patches, n, size)
    print(
        "command: taskset -c 0 .venv/bin/python bench/bench_face.py "
        f"--repeats {args.repeats} --clip-frames {args.clip_frames}"
    )
    print(f"onnxruntime intra-op threads: {detector.model.config.intra_op_threads}; gallery: 1,000 people\n")
    bench_stages(pipeline, frames, args.repeats)
    bench_gallery(args.repeats)
    bench_motion(pipeline, room, patches, args.clip_frames)


if __name__ == "__main__":
    main()

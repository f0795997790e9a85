"""Person detection throughput per core next to bare onnxruntime; tracker, zone and tamper cost per frame.

    taskset -c 0 .venv/bin/python bench/bench_person.py [--repeats 30]

NanoDet runs with one onnxruntime intra-op thread (the RuntimeConfig default) and taskset pins the
process to one core, so frames/s are per core. Absolute times drift on a shared machine, so every
figure has a baseline measured in the same run:

- detection: ``PersonDetector.detect`` on 720p and 1080p scenes with 0, 1 and 3 people (photo crops
  composited on a corridor by ``vision.scenes``, as in the tests), split into pre-processing / model /
  post-processing, next to ``InferenceSession.run`` on the same tensor (no pre/post):
  overhead = detect / bare;
- tracker, zones and tamper: cost per frame with 5 and 20 people, as a fraction of the bare model time;
- the whole per-camera ``PersonPipeline`` (motion gate, detector, tracker, zones, tamper) on a 720p
  clip where people walk in, stand a while and leave, with and without motion gating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.config import PersonPipelineConfig
from vision.person import (
    Letterbox,
    PersonDetection,
    PersonDetector,
    PersonPipeline,
    postprocess,
    preprocess,
    split_outputs,
)
from vision.scenes import (
    SPRITE_HEIGHT,
    WalkerPath,
    corridor_background,
    linear_path,
    paste_person,
    person_sprite,
    stand_path,
    walk_clip,
)
from vision.tamper import TamperDetector
from vision.tracking import Tracker
from vision.zones import CameraZones, LineZone, PolygonZone, ZoneJudge


def _median_s(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # one untimed run: caches, lazy allocations
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def scene(size: tuple[int, int], people: int) -> np.ndarray:
    w, h = size
    frame = np.ascontiguousarray(cv2.resize(corridor_background(), (w, h)), dtype=np.uint8)
    who = ["figure", "diner", "figure"]
    for i in range(people):
        sprite = person_sprite(who[i])
        paste_person(frame, sprite, (w * (0.2 + 0.3 * i), h * 0.9), SPRITE_HEIGHT[who[i]] * h / 720)
    return frame


def _decode(outputs: list[NDArray[np.float32]], lb: Letterbox) -> list[PersonDetection]:
    """The post-processing stage as ``PersonDetector.detect`` runs it (threshold 0.6, NMS 0.5)."""
    return postprocess(split_outputs(outputs), lb, 0.6, 0.5)


class _Det:
    def __init__(self, box: tuple[float, float, float, float]) -> None:
        self.box = box
        self.score = 0.8


def bench_detection(detector: PersonDetector, repeats: int) -> float:
    session = detector.model.session
    name = detector.model.input_names[0]
    print(
        "| frame | people | found | pre ms | model ms | post ms | detect ms | frames/s/core "
        "| bare ORT ms | overhead ratio (median of paired runs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    bare_all = []
    for label, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        for people in (0, 1, 3):
            frame = scene(size, people)
            x, lb = preprocess(frame)
            outputs = detector.model.run({name: x})
            pre = _median_s(partial(preprocess, frame), repeats)
            model = _median_s(partial(detector.model.run, {name: x}), repeats)
            post = _median_s(partial(_decode, outputs, lb), repeats)
            # Interleaved, so the load of a shared machine hits both sides of the ratio alike.
            full_s, bare_s = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                detector.detect(frame)
                t1 = time.perf_counter()
                session.run(None, {name: x})
                t2 = time.perf_counter()
                full_s.append(t1 - t0)
                bare_s.append(t2 - t1)
            full, bare = statistics.median(full_s), statistics.median(bare_s)
            ratio = statistics.median(f / b for f, b in zip(full_s, bare_s, strict=True))
            bare_all.append(bare)
            found = len(detector.detect(frame))
            print(
                f"| {label} | {people} | {found} | {pre * 1e3:.2f} | {model * 1e3:.1f} | {post * 1e3:.2f} "
                f"| {full * 1e3:.1f} | {1 / full:.1f} | {bare * 1e3:.1f} | {ratio:.2f} |"
            )
    return statistics.median(bare_all)


def bench_per_frame_costs(bare_s: float, repeats: int) -> None:
    zones = CameraZones(
        camera_id="c",
        zones=[
            PolygonZone(
                id=f"z{i}",
                points=[
                    (100.0 * i, 300.0),
                    (100.0 * i + 300, 300.0),
                    (100.0 * i + 300, 700.0),
                    (100.0 * i, 700.0),
                ],
            )
            for i in range(4)
        ],
        lines=[LineZone(id="l", start=(640.0, 300.0), end=(640.0, 720.0))],
    )
    print()
    print("| stage | people | ms/frame | share of bare model time |")
    print("|---|---|---|---|")
    for people in (5, 20):
        frames = []
        for k in range(200):
            frames.append(
                [
                    _Det(
                        (
                            40.0 + 60 * i + 4 * k % 600,
                            300.0 + 10 * i,
                            100.0 + 60 * i + 4 * k % 600,
                            500.0 + 10 * i,
                        )
                    )
                    for i in range(people)
                ]
            )
        tracker = Tracker()
        judge = ZoneJudge(zones)
        t_track = []
        t_zone = []
        for k, dets in enumerate(frames):
            t0 = time.perf_counter()
            up = tracker.update(dets, k * 0.2)
            t1 = time.perf_counter()
            judge.update({t.track_id: t.bottom_centre for t in up.visible}, k * 0.2)
            t2 = time.perf_counter()
            t_track.append(t1 - t0)
            t_zone.append(t2 - t1)
        tr, zn = statistics.median(t_track), statistics.median(t_zone)
        print(f"| tracker update | {people} | {tr * 1e3:.3f} | {tr / bare_s:.1%} |")
        print(f"| zones (4 polygons + 1 line) | {people} | {zn * 1e3:.3f} | {zn / bare_s:.1%} |")
    frame = corridor_background()
    tamper = TamperDetector("c")
    for k in range(10):
        tamper.update(frame, k * 0.2)
    t = [0.0]

    def step() -> None:
        t[0] += 0.2
        tamper.update(frame, 10 + t[0])

    tm = _median_s(step, repeats)
    print(f"| tamper checks (720p) | - | {tm * 1e3:.2f} | {tm / bare_s:.1%} |")


def bench_pipeline(detector: PersonDetector, bare_s: float) -> None:
    arrive = linear_path((200.0, 600.0), (1000.0, 600.0), 15)
    stand = stand_path((1000.0, 600.0), 50, sway_px=0.0)
    leave = linear_path((1000.0, 600.0), (200.0, 600.0), 15)
    other = linear_path((1200.0, 560.0), (150.0, 560.0), 30)
    walkers = [
        WalkerPath(person_sprite("figure"), arrive + stand + leave, SPRITE_HEIGHT["figure"]),
        WalkerPath(person_sprite("diner"), other, SPRITE_HEIGHT["diner"]),
    ]
    frames = [cf.frame for cf in walk_clip(corridor_background(), walkers, 80)]
    print()
    print(
        "| PersonPipeline on an 80-frame 720p clip | detector runs | ms/frame | frames/s/core "
        "| ms/frame / bare model ms |"
    )
    print("|---|---|---|---|---|")
    for gating in (False, True):
        pipeline = PersonPipeline(
            "bench", None, PersonPipelineConfig(motion_gating=gating), detector=detector
        )
        t0 = time.perf_counter()
        for k, f in enumerate(frames):
            pipeline.process(f, k * 0.2)
        per = (time.perf_counter() - t0) / len(frames)
        label = "motion gating on" if gating else "motion gating off"
        print(
            f"| {label} | {pipeline.detector_runs}/{len(frames)} | {per * 1e3:.1f} | {1 / per:.1f} "
            f"| {per / bare_s:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # per-core figures: OpenCV's resize must not borrow other cores either
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"# bench_person: cores allowed {affinity}, onnxruntime intra-op threads 1, repeats {args.repeats}")
    detector = PersonDetector()
    bare = bench_detection(detector, args.repeats)
    bench_per_frame_costs(bare, args.repeats)
    bench_pipeline(detector, bare)


if __name__ == "__main__":
    main()

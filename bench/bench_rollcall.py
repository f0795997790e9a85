"""Roll-call accuracy on a classroom clip built from the project's photos, and the minimum face size.

    .venv/bin/python bench/bench_rollcall.py [--scenes DIR] [--seatings N] [--min-face-px 16,20,...]
        [--max-side PX] [--frame-size WxH] [--seconds S]

The clip is :mod:`vision.classroom_clip`'s: every person of the scene photos who passes the
enrollment gate is enrolled with all three templates, a fixed seeded quarter of them stays out of the
picture, the others sit in rows of a 1280x720 classroom with faces from 24 px (back row) to 120 px
(front desk), moving a little, 10 s at 5 fps. ``--seatings`` clips, each with another seating (so
every student is seen at several sizes) and the same absent quarter, go through the production
:class:`vision.face_camera.FaceCamera` (motion gate, quality gate, gallery, tracker votes) once per
candidate ``QualityConfig.min_face_px``, everything else at its default.

Reported per candidate: is the absent list (enrolled minus marked present) exactly the left-out
quarter; false presents (an absent student marked present: must be 0); wrong names (a present
student marked present from someone else's seat); false matches in single frames (a face matched to
another person, before any vote); and the recall of present students per face-size bucket. The
recommended minimum is the one with no false present, no wrong name and no false frame match that
recalls the most students (the larger on a tie: more margin). Prints Markdown for
docs/PERFORMANCE.md and docs/FACE_ACCURACY.md.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vision.classroom_clip import FRAME_SIZE, RollCallClip, enrol_scene_people, face_sizes, rollcall_clip
from vision.config import FaceDetectorConfig, FacePipelineConfig, QualityConfig
from vision.face_camera import FaceCamera
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.gallery import Gallery
from vision.scenes import SCENES_DIR

DEFAULT_CANDIDATES = (16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0, 48.0)
BUCKETS = (24.0, 32.0, 48.0, 64.0, 96.0, math.inf)
"""Face-size buckets (px, lower bounds) of the recall table."""
SAME_SEAT = 0.6
"""A face belongs to a seat when its centre is within this many face sizes of the seat's (the head
moves up to 0.12 face sizes; the nearest neighbour is several face sizes away)."""


def bucket_name(face_px: float) -> str:
    for low, high in itertools.pairwise(BUCKETS):
        if low <= face_px < high:
            return f"{low:.0f}–{high:.0f} px" if math.isfinite(high) else f"≥ {low:.0f} px"
    return f"< {BUCKETS[0]:.0f} px"


@dataclass
class RunResult:
    """One clip through one FaceCamera."""

    marked_present: set[str] = field(default_factory=set)
    recognised: dict[str, float] = field(default_factory=dict)  # person at own seat -> seconds taken
    wrong_names: int = 0
    frame_false_matches: int = 0
    frames_analysed: int = 0
    seen: Counter[str] = field(default_factory=Counter)  # face-size bucket -> faces found at a seat
    passed: Counter[str] = field(default_factory=Counter)  # ... of which passed the quality gate
    refused: dict[str, Counter[str]] = field(default_factory=dict)  # bucket -> quality reasons


def run_clip(clip: RollCallClip, gallery: Gallery, camera: FaceCamera) -> RunResult:
    out = RunResult()
    for frame, at in zip(clip.frames, clip.times, strict=True):
        result = camera.process(frame, at)
        out.frames_analysed += result.analysed
        for face in result.faces:
            centre = ((face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2)
            seat = clip.seat_at(centre)
            if math.dist(centre, seat.centre) > SAME_SEAT * seat.face_px:
                # Not at any seat (a fragment of a crop, a false detection): wrong if it names anyone.
                out.frame_false_matches += face.person_id is not None
                continue
            out.seen[bucket_name(seat.face_px)] += 1
            out.passed[bucket_name(seat.face_px)] += face.matched
            out.refused.setdefault(bucket_name(seat.face_px), Counter()).update(face.quality.reasons)
            if face.person_id is not None and face.person_id != seat.person_id:
                out.frame_false_matches += 1
        for decision in result.decisions:
            if decision.person_id is None:
                continue
            out.marked_present.add(decision.person_id)
            box = decision.box
            seat = clip.seat_at(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2))
            if decision.person_id == seat.person_id:
                out.recognised.setdefault(seat.person_id, at)
            elif decision.person_id in gallery and decision.person_id not in clip.absent:
                out.wrong_names += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenes", type=Path, default=SCENES_DIR, help="folder of sample*.jpg photos")
    parser.add_argument("--seatings", type=int, default=8, help="clips with different seatings (default 8)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="length of each clip (default %(default)s s; a roll-call is closed minutes into a lesson)",
    )
    parser.add_argument(
        "--min-face-px",
        default=",".join(f"{v:g}" for v in DEFAULT_CANDIDATES),
        help="candidate QualityConfig.min_face_px values, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--frame-size",
        default=f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
        help="the classroom camera's resolution, WxH (default %(default)s; 2560x1440: a 4 MP camera "
        "behind the same lens, every face larger by the ratio of the widths)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=FaceDetectorConfig().max_side,
        help="FaceDetectorConfig.max_side: the detector's input size (default %(default)s, production)",
    )
    args = parser.parse_args()
    candidates = sorted(float(v) for v in args.min_face_px.split(","))
    frame_size = tuple(int(v) for v in args.frame_size.lower().split("x"))
    if len(frame_size) != 2:
        raise SystemExit(f"--frame-size {args.frame_size!r}: expected WxH, like 2560x1440")
    smallest, largest = face_sizes(frame_size)
    started = time.perf_counter()
    detector, embedder = FaceDetector(), FaceEmbedder()
    # Enrollment photos are detected as `edge-agent enroll` does; only the camera's input size varies.
    camera_detector = FaceDetector(FaceDetectorConfig(max_side=args.max_side), model=detector.model)
    enrollment = enrol_scene_people(detector, embedder, args.scenes)
    people = enrollment.people
    if len(people) < 4:
        raise SystemExit(f"only {len(people)} people pass the enrollment gate in {args.scenes}")
    clips = [
        rollcall_clip(people, seconds=args.seconds, seating_seed=seed, frame_size=frame_size)
        for seed in range(args.seatings)
    ]
    absent = clips[0].absent
    enrolled = {p.person_id for p in people}
    refused = ", ".join(f"{r} {n}" for r, n in enrollment.refused.most_common())
    print(
        f"{len(people)} people enrolled (3 templates each; faces refused by the enrollment gate: "
        f"{refused}); absent (left out of every clip): {', '.join(absent)}; {len(clips)} seatings of "
        f"{len(clips[0].seats)} present students in a {frame_size[0]}x{frame_size[1]} picture, faces "
        f"{smallest:g}–{largest:g} px, "
        f"{len(clips[0].frames)} frames each ({clips[0].times[-1] + clips[0].times[1]:g} s); face "
        f"detector input {args.max_side} px on the long side.\n"
    )

    results: dict[float, list[RunResult]] = {}
    for min_px in candidates:
        config = FacePipelineConfig(quality=QualityConfig(min_face_px=min_px))
        results[min_px] = [
            run_clip(
                clip,
                enrollment.gallery,
                FaceCamera(
                    "rollcall", enrollment.gallery, detector=camera_detector, embedder=embedder, config=config
                ),
            )
            for clip in clips
        ]

    occupied = {bucket_name(s.face_px) for s in clips[0].seats}
    buckets = [b for b in map(bucket_name, BUCKETS[:-1]) if b in occupied]
    head = " | ".join(f"recall {b}" for b in buckets)
    print(
        "| min_face_px | absent list exact | false presents | wrong names | false frame matches "
        f"| {head} | recall (all) | median time to recognition | frames analysed |"
    )
    print("|" + "---|" * (8 + len(buckets)))
    scores: dict[float, tuple[bool, int]] = {}
    for min_px, runs in results.items():
        exact = sum(enrolled - r.marked_present == set(absent) for r in runs)
        false_presents = sum(len(r.marked_present & set(absent)) for r in runs)
        wrong = sum(r.wrong_names for r in runs)
        frame_false = sum(r.frame_false_matches for r in runs)
        cells = []
        for b in buckets:
            total = sum(1 for c in clips for s in c.seats if bucket_name(s.face_px) == b)
            got = sum(
                1
                for c, r in zip(clips, runs, strict=True)
                for s in c.seats
                if bucket_name(s.face_px) == b and s.person_id in r.recognised
            )
            cells.append(f"{got}/{total}")
        recognised = sum(len(r.recognised) for r in runs)
        seats = sum(len(c.seats) for c in clips)
        times = [t for r in runs for t in r.recognised.values()]
        median_t = f"{np.median(times):.1f} s" if times else "–"
        analysed = "/".join(str(r.frames_analysed) for r in runs)
        print(
            f"| {min_px:g} | {exact}/{len(runs)} | {false_presents} | {wrong} | {frame_false} | "
            + " | ".join(cells)
            + f" | {recognised}/{seats} ({100 * recognised / seats:.0f}%) | {median_t} | {analysed} |"
        )
        scores[min_px] = (false_presents == wrong == frame_false == 0, recognised)

    print("\nFaces found at a seat in analysed frames, and how many passed the quality gate:\n")
    print("| min_face_px | " + " | ".join(buckets) + " |")
    print("|" + "---|" * (1 + len(buckets)))
    for min_px, runs in results.items():
        seen, passed = Counter[str](), Counter[str]()
        for r in runs:
            seen.update(r.seen)
            passed.update(r.passed)
        print(f"| {min_px:g} | " + " | ".join(f"{passed[b]}/{seen[b]}" for b in buckets) + " |")

    print("\nWhy the quality gate refused faces found at a seat (a face can fail on several counts):\n")
    for min_px, runs in results.items():
        reasons = {b: sum((r.refused.get(b, Counter()) for r in runs), Counter[str]()) for b in buckets}
        cells = [
            f"{b}: " + (", ".join(f"{k} {n}" for k, n in reasons[b].most_common()) or "none") for b in buckets
        ]
        print(f"- min_face_px {min_px:g}: " + "; ".join(cells))

    safe = [v for v, (clean, _) in scores.items() if clean]
    if safe:
        best = max(safe, key=lambda v: (scores[v][1], v))
        print(
            f"\nRecommended min_face_px: {best:g} (no false present, wrong name or false frame match; "
            f"recalls {scores[best][1]} of {sum(len(c.seats) for c in clips)} present students; today's "
            f"default {QualityConfig().min_face_px:g})."
        )
    else:
        print("\nNo candidate is free of false matches: do not lower the quality gate on this evidence.")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

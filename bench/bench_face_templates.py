"""Does enrolling several photos per person recognise better than one? Same run, same probes.

    .venv/bin/python bench/bench_face_templates.py

Each usable face of the scene photos the project ships (``vision/scenes/``; as in
bench_face_accuracy.py) becomes a person. Baseline: one template per person, from the
head-and-shoulders crop. Compared: three templates, from the crop and two other "photos" of the same
face (``ENROLL_EXTRA`` variants of ``vision.face_eval.realistic_variants``: we ship one photo per
person, so the other photos are camera-like changes of it). Every template passes the enrollment
quality gate, as ``edge-agent enroll`` demands.

Probes, never used for enrollment: the remaining realistic variants of each crop, and the frames of a
walking clip (``vision.face_eval.walking_clip``: the face at half size, JPEG 40, walking across a
classroom background) where the recognition quality gate lets the face through. Each probe is matched
open-set against every person's templates at the production threshold: a true accept names the
right person, a false accept names someone else. Prints Markdown for docs/FACE_ACCURACY.md.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import numpy.typing as npt

from vision.align import align_faces
from vision.config import FacePipelineConfig
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import crop_around, realistic_variants, walking_clip
from vision.face_pipeline import EnrollmentError, FacePipeline, embed_enrollment_photo
from vision.gallery import DEFAULT_THRESHOLDS, Gallery
from vision.scenes import SCENES_DIR, load_photo

MODEL = "dlib_resnet_v1"
ENROLL_EXTRA = ("rotate_6", "exposure_brighter")
"""The two extra enrollment "photos" of each person; the other variants are probes only."""
CLIP_FRAMES = 12
THRESHOLDS = (0.35, 0.40, 0.45, DEFAULT_THRESHOLDS[MODEL])


def _probe_embedding(
    pipeline: FacePipeline, embedder: FaceEmbedder, image: npt.NDArray[np.uint8]
) -> npt.NDArray[np.float32] | None:
    """The embedding of the largest face that passes the recognition gate, as a camera matches it."""
    obs = [o for o in pipeline.analyse(image).faces if o.matched]
    if not obs:
        return None
    main = max(obs, key=lambda o: o.quality.size_px)
    return np.asarray(embedder.embed(align_faces(image, [main.landmarks]))[0], np.float32)


def main() -> None:
    started = time.perf_counter()
    detector, embedder = FaceDetector(), FaceEmbedder()
    pipeline = FacePipeline(
        Gallery(MODEL), detector=detector, embedder=embedder, config=FacePipelineConfig(motion_gate=False)
    )
    one, three = Gallery(MODEL), Gallery(MODEL)
    crops: dict[str, npt.NDArray[np.uint8]] = {}
    for path in sorted(SCENES_DIR.glob("sample*.jpg")):
        image = load_photo(path.name)
        for k, face in enumerate(sorted(detector.detect(image), key=lambda f: f.box[0] + f.box[2])):
            label = f"{path.name}#{k}"
            crop = crop_around(image, face.box)
            tight = crop_around(image, face.box, 0.6)  # rotated, a wide crop can show a neighbour
            variants = realistic_variants(tight)
            try:
                base = embed_enrollment_photo(crop, detector=detector, embedder=embedder).embedding
                extra = [
                    embed_enrollment_photo(variants[v], detector=detector, embedder=embedder).embedding
                    for v in ENROLL_EXTRA
                ]
            except EnrollmentError:
                continue  # refused at enrollment (turned away, blurred, several faces): not a person here
            one.add(label, base, model_id=MODEL)
            three.add(label, np.stack([base, *extra]), model_id=MODEL)
            crops[label] = tight

    probes: dict[str, list[tuple[str, npt.NDArray[np.float32]]]] = {
        "variants": [],
        "far and blurred": [],
        "walking clip": [],
    }
    room = cv2.resize(load_photo("sample1.jpg")[760:, :], (1280, 720))
    for label, tight in crops.items():
        for name, image in realistic_variants(tight).items():
            if name in ENROLL_EXTRA:
                continue
            emb = _probe_embedding(pipeline, embedder, image)
            if emb is not None:
                probes["variants"].append((label, emb))
            # The same change on a face across the room: a third of the size, slightly out of focus.
            far = cv2.GaussianBlur(
                cv2.resize(image, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA), (0, 0), 0.8
            )
            emb = _probe_embedding(pipeline, embedder, np.asarray(far, np.uint8))
            if emb is not None:
                probes["far and blurred"].append((label, emb))
        patch = cv2.resize(realistic_variants(tight)["jpeg_40"], None, fx=0.5, fy=0.5)
        for frame in walking_clip(room, [patch], frames=CLIP_FRAMES, paths=[((150, 300), (1100, 380))]):
            emb = _probe_embedding(pipeline, embedder, np.asarray(frame, np.uint8))
            if emb is not None:
                probes["walking clip"].append((label, emb))

    print(
        f"{len(one)} people enrolled (1 template each, or 3: the crop + {', '.join(ENROLL_EXTRA)}); "
        "probes passing the recognition gate: "
        + ", ".join(f"{len(items)} {name}" for name, items in probes.items())
        + "\n"
    )
    print(
        "| probes | templates | threshold | true accepts | false rejects | false accepts | "
        "mean distance to own | mean distance to nearest other |\n|---|---|---|---|---|---|---|---|"
    )
    for set_name, items in probes.items():
        if not items:
            continue
        truth = [label for label, _ in items]
        queries = np.stack([emb for _, emb in items])
        for n, gallery in (("1 (baseline)", one), ("3", three)):
            pairs = [gallery.own_and_nearest_other(q, label) for label, q in items]
            mean_own = float(np.mean([own for own, _ in pairs if own is not None]))
            mean_other = float(np.mean([other[1] for _, other in pairs if other is not None]))
            for thr in THRESHOLDS:
                matches = gallery.match(queries, threshold=thr)
                ta = sum(m.person_id == t for m, t in zip(matches, truth, strict=True))
                fa = sum(
                    m.person_id is not None and m.person_id != t for m, t in zip(matches, truth, strict=True)
                )
                fr = len(items) - ta - fa
                chosen = " (production)" if thr == DEFAULT_THRESHOLDS[MODEL] else ""
                rate = f"{ta}/{len(items)} ({100 * ta / len(items):.1f}%)"
                print(
                    f"| {set_name} | {n} | {thr:.2f}{chosen} | {rate} | {fr} | {fa} | {mean_own:.3f} "
                    f"| {mean_other:.3f} |"
                )
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

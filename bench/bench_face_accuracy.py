"""Genuine / impostor distance distributions of the face pipeline on the scene photos the project ships.

    .venv/bin/python bench/bench_face_accuracy.py [--scenes DIR]

The photos are by default those the project ships in ``vision/scenes/`` (``vision.scenes.SCENES_DIR``,
licence in its NOTICE.md); ``--scenes`` points at a folder of a site's own consented photos (*.jpg)
instead, to re-check the threshold on its population before going live.

Genuine pairs: each usable face, enrolled from a head-and-shoulders crop of its photo, against
(a) itself inside the full scene and (b) realistic variants of the crop (scale, blur, JPEG, exposure,
rotation) that pass the recognition quality gate. Impostor pairs: every two different faces of one
photo (certainly different people), and faces of different photos (different people as far as we can
tell; one pair that may be the same woman is reported on its own). Prints Markdown for
docs/FACE_ACCURACY.md.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np

from vision.align import align_faces
from vision.config import FacePipelineConfig
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import crop_around, distance_summary, realistic_variants
from vision.face_pipeline import EnrollmentError, FacePipeline, embed_enrollment_photo
from vision.gallery import DEFAULT_THRESHOLDS, Gallery
from vision.scenes import SCENES_DIR

MODEL = "dlib_resnet_v1"
POSSIBLY_SAME = frozenset({"sample1.jpg#2", "sample3.jpg#1"})
# The collage's faces are covered by a demo's annotation text and it repeats some people in
# thumbnails: its faces serve as negatives against the portraits, not as certain pairs among themselves.
COLLAGE = "human_samples.jpg"


def _read_photo(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"{path} is not a readable image")
    return np.asarray(img, np.uint8)


def _row(name: str, values: list[float]) -> str:
    s = distance_summary(values)
    if not s["n"]:
        return f"| {name} | 0 | | | | | |"
    cells = " | ".join(f"{s[k]:.3f}" for k in ("min", "p5", "median", "p95", "max"))
    return f"| {name} | {s['n']} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenes", type=Path, default=SCENES_DIR, help="folder of *.jpg photos (default: %(default)s)"
    )
    args = parser.parse_args()
    detector, embedder = FaceDetector(), FaceEmbedder()
    pipeline = FacePipeline(
        Gallery(MODEL), detector=detector, embedder=embedder, config=FacePipelineConfig(motion_gate=False)
    )

    photos = {p.name: _read_photo(p) for p in sorted(args.scenes.glob("*.jpg"))}
    if not photos:
        raise SystemExit(f"no *.jpg photos in {args.scenes}")
    scene_emb: dict[
        str, np.ndarray
    ] = {}  # label -> embedding of the face in its scene (if it passed quality)
    boxes = {}
    for name, img in photos.items():
        faces = sorted(detector.detect(img), key=lambda f: f.box[0] + f.box[2])
        for k, f in enumerate(faces):
            boxes[f"{name}#{k}"] = (f, img)
        obs = pipeline.analyse(img).faces
        for k, f in enumerate(faces):
            match = next(o for o in obs if o.box == f.box)  # same detector, same frame: same boxes
            if match.matched:
                chip_emb = embedder.embed(align_faces(img, [f.landmarks]))[0]
                scene_emb[f"{name}#{k}"] = chip_emb

    templates: dict[str, np.ndarray] = {}
    rejected: dict[str, str] = {}
    for label, (f, img) in boxes.items():
        if not label.startswith("sample"):
            continue
        try:
            templates[label] = embed_enrollment_photo(
                crop_around(img, f.box), detector=detector, embedder=embedder
            ).embedding
        except EnrollmentError as err:
            rejected[label] = err.code

    genuine_scene, genuine_variant = [], []
    per_variant: dict[str, list[float]] = {}
    gate_refused: dict[str, int] = {}
    impostor_variant = []
    for label, tmpl in templates.items():
        if label in scene_emb:
            genuine_scene.append(float(np.linalg.norm(scene_emb[label] - tmpl)))
        f, img = boxes[label]
        for vname, vimg in realistic_variants(crop_around(img, f.box)).items():
            obs = pipeline.analyse(vimg).faces
            if not obs:
                gate_refused[vname] = gate_refused.get(vname, 0) + 1
                continue
            main = max(obs, key=lambda o: o.quality.size_px)
            if not main.matched:
                gate_refused[vname] = gate_refused.get(vname, 0) + 1
                continue
            chip = align_faces(vimg, [main.landmarks])
            emb = embedder.embed(chip)[0]
            d = float(np.linalg.norm(emb - tmpl))
            genuine_variant.append(d)
            per_variant.setdefault(vname, []).append(d)
            for other, otmpl in templates.items():
                if other != label and {other, label} != POSSIBLY_SAME:
                    impostor_variant.append(float(np.linalg.norm(emb - otmpl)))

    same_photo, cross_photo, maybe_same, overlaid = [], [], [], []
    for a, b in itertools.combinations(sorted(scene_emb), 2):
        d = float(np.linalg.norm(scene_emb[a] - scene_emb[b]))
        if a.split("#")[0] == b.split("#")[0] == COLLAGE:
            overlaid.append(d)
        elif a.split("#")[0] == b.split("#")[0]:
            same_photo.append(d)
        elif {a, b} == POSSIBLY_SAME:
            maybe_same.append(d)
        else:
            cross_photo.append(d)

    thr = DEFAULT_THRESHOLDS[MODEL]
    print(
        f"faces detected: {len(boxes)}; passing the recognition gate in their scene: {len(scene_emb)}; "
        f"enrolled from a crop: {len(templates)}; enrollment refused: {rejected}\n"
    )
    print("| set | n | min | p5 | median | p95 | max |\n|---|---|---|---|---|---|---|")
    print(_row("genuine: variant vs own template", genuine_variant))
    print(_row("genuine: face in its scene vs own template", genuine_scene))
    print(_row("impostor: two faces of one photo", same_photo))
    print(_row("impostor: faces of different photos", cross_photo))
    print(_row("impostor: variant vs other people's templates", impostor_variant))
    print(_row("unlabelled look-alike pair (excluded above)", maybe_same))
    print(_row("collage faces under overlay text, among themselves (excluded)", overlaid))
    print("\nPer variant (genuine, passing the gate):\n")
    print("| variant | n | max distance | refused by the gate |\n|---|---|---|---|")
    for vname in sorted(set(per_variant) | set(gate_refused)):
        vals = per_variant.get(vname, [])
        worst = max(vals) if vals else float("nan")
        print(f"| {vname} | {len(vals)} | {worst:.3f} | {gate_refused.get(vname, 0)} |")
    genuine = np.array(genuine_variant + genuine_scene)
    impostor = np.array(same_photo + cross_photo + impostor_variant)
    print("\n| threshold | false rejects (genuine >= thr) | false accepts (impostor < thr) |\n|---|---|---|")
    for t in (0.40, 0.45, thr, 0.55, 0.60):
        fr, fa = int((genuine >= t).sum()), int((impostor < t).sum())
        chosen = " (chosen)" if t == thr else ""
        print(
            f"| {t:.2f}{chosen} | {fr}/{len(genuine)} ({100 * fr / len(genuine):.1f}%) "
            f"| {fa}/{len(impostor)} ({100 * fa / len(impostor):.2f}%) |"
        )


if __name__ == "__main__":
    main()

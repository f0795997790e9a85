"""Does enrolling three photos per person recognise better than one? Same run, same probes.

    .venv/bin/python bench/bench_face_templates.py

People: each face of the scene photos the project ships (``vision/scenes/``, as in
bench_face_accuracy.py) whose three enrollment photos all pass the enrollment quality gate of
``vision.face_pipeline.embed_enrollment_photo``, as ``edge-agent enroll`` demands. Both galleries
hold the same people.

Enrollment. Baseline: one template per person, from the head-and-shoulders crop. Compared: three
templates, from three "photos" a school could plausibly collect (we ship one photo per person, so
the other two are made from it, and each is chosen to be *unlike every probe*, see ``PROBE_POSE``):

1. the crop: the ID photo the school already has;
2. ``warm light, tilted 4°``: a photo taken another day in another room, under warm indoor light
   (a colour cast, not the grey-level exposure changes the probes use) with the head tilted 4°
   (the probes tilt by ±6° and ±12°);
3. ``from further away``: the crop at 0.6 of its size and saved as JPEG 80, as a photo taken from
   further back on a phone. 0.6 keeps the face at 100 px or more, above the enrollment gate's 80 px,
   so the gallery holds one template from a smaller, softer face, but nothing like the probes'
   classroom sizes, defocus or JPEG 40.

Probes, never enrolled, each matched open-set against every person at the production threshold and
the stricter ones of ``THRESHOLDS`` (a true accept names the right person, a false accept someone
else), with the same probes for both galleries:

- ``pose/lighting``: the rotations (±6°, ±12°) and exposures (darker, brighter, flat) of
  ``vision.face_eval.realistic_variants``, first as a full-size photo, then at classroom sizes: the
  variant downscaled to 0.5, 0.35 and 0.25 (faces of about 40-60 px at 0.25, interocular about
  15-25 px) pasted into a classroom frame, defocused (Gaussian sigma ``DEFOCUS_SIGMA``) and encoded
  at JPEG ``JPEG_QUALITY``, as a ceiling camera delivers it;
- ``walking clip``: the crop at the same three sizes, with a mild horizontal motion blur
  (``MOTION_BLUR_PX``), walking across the classroom frame (``vision.face_eval.walking_clip``), every
  frame encoded at JPEG ``JPEG_QUALITY``.

A probe counts only where the recognition quality gate lets its face through, as the camera
pipeline matches only those; the table says how many passed. Prints Markdown for
docs/FACE_ACCURACY.md.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from bench_face_accuracy import POSSIBLY_SAME

from vision.align import align_faces
from vision.config import FacePipelineConfig
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import composite, crop_around, realistic_variants, walking_clip
from vision.face_pipeline import EnrollmentError, FacePipeline, embed_enrollment_photo
from vision.gallery import DEFAULT_THRESHOLDS, Gallery
from vision.scenes import SCENES_DIR, load_photo

Image = npt.NDArray[np.uint8]

MODEL = "dlib_resnet_v1"
THRESHOLDS = (DEFAULT_THRESHOLDS[MODEL], 0.45, 0.40, 0.35)
PROBE_POSE = (
    "rotate_-12",
    "rotate_-6",
    "rotate_6",
    "rotate_12",
    "exposure_darker",
    "exposure_brighter",
    "exposure_flat",
)
"""The pose and lighting variants used as probes; no enrollment photo is one of them."""
CLASSROOM_SCALES = (0.5, 0.35, 0.25)
"""Probe face sizes relative to the scene photo (its faces are 150-230 px wide)."""
JPEG_QUALITY = 40
DEFOCUS_SIGMA = 0.7
MOTION_BLUR_PX = 3
CLIP_FRAMES = 10
FRAME_SIZE = (1280, 720)


def _rotate(image: Image, degrees: float) -> Image:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.asarray(cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT), np.uint8)


def _jpeg(image: Image, quality: int) -> Image:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return np.asarray(cv2.imdecode(buf, cv2.IMREAD_COLOR), np.uint8)


def _shrink(image: Image, scale: float) -> Image:
    return np.asarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)


def enrollment_photos(crop: Image, tight: Image) -> dict[str, Image]:
    """The three enrollment "photos" of one face (see the module docstring for why these)."""
    warm = np.clip(tight.astype(np.float32) * np.array([0.85, 1.0, 1.1], np.float32), 0, 255)  # BGR
    return {
        "crop": crop,
        "warm light, tilted 4°": _rotate(warm.astype(np.uint8), 4),
        "from further away": _jpeg(_shrink(tight, 0.6), 80),
    }


def classroom_still(room: Image, photo: Image, scale: float) -> Image:
    """``photo`` at ``scale`` in the middle of a classroom frame, defocused, as the camera encodes it."""
    frame = composite(room, _shrink(photo, scale), (FRAME_SIZE[0] / 2, FRAME_SIZE[1] / 2))
    return _jpeg(np.asarray(cv2.GaussianBlur(frame, (0, 0), DEFOCUS_SIGMA), np.uint8), JPEG_QUALITY)


def classroom_walk(room: Image, crop: Image, scale: float) -> list[Image]:
    """``crop`` at ``scale`` walking across a classroom frame, slightly motion-blurred, each frame JPEG."""
    kernel = np.full((1, MOTION_BLUR_PX), 1 / MOTION_BLUR_PX, np.float32)
    patch = np.asarray(cv2.filter2D(_shrink(crop, scale), -1, kernel), np.uint8)
    clip = walking_clip(room, [patch], frames=CLIP_FRAMES, paths=[((200, 330), (1080, 400))])
    return [_jpeg(np.asarray(frame, np.uint8), JPEG_QUALITY) for frame in clip]


@dataclass
class ProbeSet:
    """The probes of one set at one face size that passed the recognition gate, and the others' fate."""

    made: int = 0
    truth: list[str] = field(default_factory=list)
    embeddings: list[npt.NDArray[np.float32]] = field(default_factory=list)
    face_width: list[float] = field(default_factory=list)
    eye_px: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)

    def add(self, pipeline: FacePipeline, embedder: FaceEmbedder, label: str, image: Image) -> None:
        """Analyse ``image`` as a camera does and keep the largest face that passes the gate."""
        self.made += 1
        faces = pipeline.analyse(image).faces
        passed = [f for f in faces if f.matched]
        if not passed:
            if not faces:
                self.refused["no face found"] += 1
            else:
                self.refused.update(max(faces, key=lambda f: f.quality.size_px).quality.reasons)
            return
        main = max(passed, key=lambda f: f.quality.size_px)
        chip = align_faces(image, [main.landmarks])
        self.truth.append(label)
        self.embeddings.append(np.asarray(embedder.embed(chip)[0], np.float32))
        self.face_width.append(main.box[2] - main.box[0])
        self.eye_px.append(float(np.linalg.norm(main.landmarks[0] - main.landmarks[1])))


def report_row(set_name: str, size: str, probes: ProbeSet, one: Gallery, three: Gallery) -> str:
    """One Markdown row: every figure as "1 template / 3 templates", true-accept rate (%) and
    false-accept count per threshold, mean distances. A stranger's probe (its label enrolled in
    neither gallery) can only be a false accept or rightly unknown."""
    n = len(probes.truth)
    gate = f"{n}/{probes.made}"
    if not n:
        return f"| {set_name} | {size} | – | {gate} |" + " – |" * (2 * len(THRESHOLDS) + 2)
    enrolled = probes.truth[0] in one
    queries = np.stack(probes.embeddings)
    cells = []
    for thr in THRESHOLDS:
        rates, false = [], []
        for gallery in (one, three):
            names = [m.person_id for m in gallery.match(queries, threshold=thr)]
            ta = sum(name == t for name, t in zip(names, probes.truth, strict=True))
            false.append(
                str(sum(name is not None and name != t for name, t in zip(names, probes.truth, strict=True)))
            )
            rates.append(f"{100 * ta / n:.1f}")
        cells += [" / ".join(rates) if enrolled else "–", " / ".join(false)]
    own, other = [], []
    for gallery in (one, three):
        pairs = [gallery.own_and_nearest_other(q, t) for q, t in zip(queries, probes.truth, strict=True)]
        own.append(f"{np.mean([o for o, _ in pairs if o is not None]):.3f}" if enrolled else "–")
        other.append(f"{np.mean([x[1] for _, x in pairs if x is not None]):.3f}")
    shown = f"{np.median(probes.face_width):.0f} / {np.median(probes.eye_px):.0f} px"
    return (
        f"| {set_name} | {size} | {shown} | {gate} | "
        + " | ".join(cells)
        + f" | {' / '.join(own) if enrolled else '–'} | {' / '.join(other)} |"
    )


def add_probes(
    sets: dict[tuple[str, str], ProbeSet],
    names: tuple[str, str],
    label: str,
    crop: Image,
    tight: Image,
    room: Image,
    pipeline: FacePipeline,
) -> None:
    """Every probe of one face: the pose/lighting variants at each size, the walking clip at the
    classroom sizes, into ``sets`` keyed by (set name, size); ``names`` are the two sets' names."""
    variants = realistic_variants(tight)
    for size, scale in [("photo (1.0)", 1.0)] + [(f"classroom ({s:g})", s) for s in CLASSROOM_SCALES]:
        pose = sets.setdefault((names[0], size), ProbeSet())
        for name in PROBE_POSE:
            probe = variants[name] if scale == 1.0 else classroom_still(room, variants[name], scale)
            pose.add(pipeline, pipeline.embedder, label, probe)
        if scale < 1.0:
            walk = sets.setdefault((names[1], size), ProbeSet())
            for frame in classroom_walk(room, crop, scale):
                walk.add(pipeline, pipeline.embedder, label, frame)


def main() -> None:
    started = time.perf_counter()
    detector, embedder = FaceDetector(), FaceEmbedder()
    pipeline = FacePipeline(
        Gallery(MODEL), detector=detector, embedder=embedder, config=FacePipelineConfig(motion_gate=False)
    )
    room = np.asarray(cv2.resize(load_photo("sample1.jpg")[760:, :], FRAME_SIZE), np.uint8)
    if detector.detect(room):
        raise SystemExit("the classroom background shows a face: the probes' largest face could be it")

    one, three = Gallery(MODEL), Gallery(MODEL)
    people: dict[str, tuple[Image, Image]] = {}
    strangers: dict[str, tuple[Image, Image]] = {}
    not_enrolled: Counter[str] = Counter()
    for path in sorted(SCENES_DIR.glob("sample*.jpg")):
        image = load_photo(path.name)
        for k, face in enumerate(sorted(detector.detect(image), key=lambda f: f.box[0] + f.box[2])):
            label = f"{path.name}#{k}"
            crop = crop_around(image, face.box)
            tight = crop_around(image, face.box, 0.6)  # rotated, a wide crop can show a neighbour
            try:
                embeddings = [
                    embed_enrollment_photo(photo, detector=detector, embedder=embedder).embedding
                    for photo in enrollment_photos(crop, tight).values()
                ]
            except EnrollmentError as err:
                # Refused as `edge-agent enroll` would refuse it: a stranger to the galleries.
                not_enrolled[err.code] += 1
                strangers[label] = (crop, tight)
                continue
            one.add(label, embeddings[0], model_id=MODEL)
            three.add(label, np.stack(embeddings), model_id=MODEL)
            people[label] = (crop, tight)

    sets: dict[tuple[str, str], ProbeSet] = {}
    for label, (crop, tight) in people.items():
        add_probes(sets, ("pose/lighting", "walking clip"), label, crop, tight, room, pipeline)
    for label, (crop, tight) in strangers.items():
        # The look-alike may be an enrolled person in another photo: its names are not certain errors.
        name = "look-alike stranger" if label in POSSIBLY_SAME else "strangers"
        add_probes(sets, (name, name), label, crop, tight, room, pipeline)

    photos = ", ".join(enrollment_photos(*next(iter(people.values()))))
    print(
        f"{len(one)} people enrolled, 1 template each or 3 ({photos}); {len(strangers)} faces refused "
        f"by the enrollment gate ({', '.join(f'{r} {c}' for r, c in not_enrolled.most_common())}) "
        "are strangers: any name given to them is a false accept.\n"
    )
    head = " | ".join(
        f"TA % {t:.2f}{' (production)' if t == DEFAULT_THRESHOLDS[MODEL] else ''} | FA {t:.2f}"
        for t in THRESHOLDS
    )
    print("Every figure: 1 template (baseline) / 3 templates. TA: true accepts, FA: false accepts.\n")
    print(
        f"| probes | face size | median face width / eyes | passed gate | {head} "
        "| mean distance to own | mean distance to nearest other |"
    )
    print("|" + "---|" * (6 + 2 * len(THRESHOLDS)))
    for (set_name, size), probes in sets.items():
        print(report_row(set_name, size, probes, one, three))
    print("\nProbes refused by the recognition gate (reasons of the largest face):\n")
    for (set_name, size), probes in sets.items():
        if probes.refused:
            print(f"- {set_name}, {size}: " + ", ".join(f"{r} {c}" for r, c in probes.refused.most_common()))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""The roll-call clip: the enrolled people of the scene photos seated in a classroom, a quarter left out.

What ``bench/bench_rollcall.py`` measures roll-call on, and ``tests/vision/test_rollcall_clip.py``
checks. Kept in the library, beside :mod:`vision.face_eval`, so a site can build the same clip from
its own consented photos (``scenes_dir``).

- **People**: every face of the scene photos (``sample*.jpg``; the collage's faces are covered by
  annotation text) whose three enrollment photos (:func:`vision.face_eval.enrollment_photos`) all
  pass the enrollment gate, as ``edge-agent enroll`` demands. The gallery holds all three templates of
  each, as attendance uses every enrolled photo of a person.
- **Who is absent**: a fixed seeded choice of a quarter of them (rounded up), never pasted.
- **The room**: a 1280x720 camera at the front, above the board, looking at rows of desks. Back rows
  are further away, so faces grow row by row towards the camera: the present students get face sizes
  spread evenly (geometrically) over ``FACE_PX`` and sit in rows by size, a seeded seating deciding
  who gets which size. ``frame_size`` puts a camera with more pixels behind the same lens (a 4 MP
  2560x1440 classroom camera): the same room, every face larger by the ratio of the widths.
- **Each frame**: every student's head-and-shoulders crop (tight, margin ``TIGHT_MARGIN``) scaled so
  the detected face has its seat's size, with a small random walk of the head (a few pixels, a couple
  of degrees of tilt: people shift and look around), the desks in front, sensor noise and the
  camera's JPEG. ~10 s at 5 fps by default.

Everything is seeded: the same arguments give the same frames, bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import (
    Image,
    composite,
    crop_around,
    enrollment_photos,
    jpeg_roundtrip,
    rotated,
    subject_centre,
)
from vision.face_pipeline import EnrollmentError, embed_enrollment_photo
from vision.gallery import Gallery
from vision.scenes import SCENES_DIR

Point = tuple[float, float]

log = logging.getLogger(__name__)

UNREADABLE_PHOTO = "unreadable_photo"
"""``Enrollment.refused`` key of a scene file that does not decode as an image."""

FRAME_SIZE = (1280, 720)
FACE_PX = (24.0, 120.0)
"""Face sizes of the present students (geometric mean of the face box, as ``min_face_px`` measures
it): a 1280x720 camera with a ~70° lens at the front of a classroom sees a 15 cm face at about 24 px
from the back row (~8 m) and 120 px from the front desk (~1.5 m)."""
ABSENT_FRACTION = 0.25
TIGHT_MARGIN = 0.6
"""Margin of the pasted crop: a wider one shows neighbours of the original photo at its edges."""
SEATS_PER_ROW = 4
BACK_ROW_Y = 0.25
"""Height of the back row's faces, as a fraction of the frame's (the wall and windows above it)."""
HEAD_STEP_PX = 0.03
"""Standard deviation of one frame's head movement, in face sizes (a 60 px face moves ~2 px)."""
HEAD_RANGE = 0.12
"""Largest head offset from the seat, in face sizes."""
TILT_STEP_DEG, TILT_RANGE_DEG = 0.8, 4.0
NOISE_SIGMA = 3.0
JPEG_QUALITY = 60


@dataclass(frozen=True)
class ScenePerson:
    """One enrolled person: ``photo`` is their tight head-and-shoulders crop, their face centred at
    ``face_centre`` in it and ``face_px`` in size; ``templates`` their enrolled embeddings (N, D)."""

    person_id: str
    photo: Image
    face_centre: Point
    face_px: float
    templates: np.ndarray


@dataclass(frozen=True)
class Enrollment:
    """The people of the scene photos and the gallery they are enrolled in; ``refused`` counts the
    faces the enrollment gate refused, by reason (they are in no clip), and unreadable photos."""

    people: list[ScenePerson]
    gallery: Gallery
    refused: Counter[str]


def enrol_scene_people(
    detector: FaceDetector, embedder: FaceEmbedder, scenes_dir: Path = SCENES_DIR
) -> Enrollment:
    """Enrol every face of ``scenes_dir``'s ``sample*.jpg`` whose three enrollment photos pass the
    gate (person ids ``"sample1.jpg#2"``: photo, then the face's rank from the left)."""
    gallery = Gallery(embedder.model_id)
    people: list[ScenePerson] = []
    refused: Counter[str] = Counter()
    for path in sorted(scenes_dir.glob("sample*.jpg")):
        read = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if read is None:
            # A site's folder may hold a damaged or mislabelled file: the others still count.
            log.warning("%s is not a readable image; its faces are not enrolled", path)
            refused[UNREADABLE_PHOTO] += 1
            continue
        image = np.asarray(read, np.uint8)
        for k, face in enumerate(sorted(detector.detect(image), key=lambda f: f.box[0] + f.box[2])):
            tight = crop_around(image, face.box, TIGHT_MARGIN)
            try:
                templates = np.stack(
                    [
                        embed_enrollment_photo(photo, detector=detector, embedder=embedder).embedding
                        for photo in enrollment_photos(crop_around(image, face.box), tight).values()
                    ]
                )
            except EnrollmentError as err:
                refused[err.code] += 1
                continue
            person = ScenePerson(
                person_id=f"{path.name}#{k}",
                photo=tight,
                face_centre=subject_centre(image, face.box, TIGHT_MARGIN),
                face_px=face.size,
                templates=templates,
            )
            gallery.add(person.person_id, templates, model_id=embedder.model_id)
            people.append(person)
    return Enrollment(people, gallery, refused)


def choose_absent(person_ids: Sequence[str], seed: int = 0) -> tuple[str, ...]:
    """The seeded quarter (rounded up) of ``person_ids`` left out of the picture, sorted."""
    n = math.ceil(len(person_ids) * ABSENT_FRACTION)
    rng = np.random.default_rng(seed)
    return tuple(sorted(rng.choice(sorted(person_ids), size=n, replace=False).tolist()))


@dataclass(frozen=True)
class Seat:
    """Where a present student sits: their face's centre at rest and its size, in frame pixels."""

    person_id: str
    centre: Point
    face_px: float


def face_sizes(frame_size: tuple[int, int] = FRAME_SIZE) -> tuple[float, float]:
    """``FACE_PX`` as a camera of ``frame_size`` behind the same lens sees them."""
    scale = frame_size[0] / FRAME_SIZE[0]
    return FACE_PX[0] * scale, FACE_PX[1] * scale


def seating(person_ids: Sequence[str], seed: int = 0, frame_size: tuple[int, int] = FRAME_SIZE) -> list[Seat]:
    """Seats for ``person_ids``, back row first: sizes spread geometrically over
    :func:`face_sizes`, the smallest at the back (top of the frame), a seeded shuffle deciding who
    sits where."""
    rng = np.random.default_rng(seed)
    order = [person_ids[i] for i in rng.permutation(len(person_ids))]
    sizes = np.geomspace(*face_sizes(frame_size), len(order)).tolist()
    width = frame_size[0]
    seats: list[Seat] = []
    y, previous_size = BACK_ROW_Y * frame_size[1], 0.0
    for row, first in enumerate(range(0, len(order), SEATS_PER_ROW)):
        row_ids, row_sizes = order[first : first + SEATS_PER_ROW], sizes[first : first + SEATS_PER_ROW]
        if row:
            # The head-and-shoulders crop reaches about 1.1 face sizes above its face's centre: the
            # row in front starts below the chins of the row behind, so no face hides another.
            y += 0.5 * previous_size + 1.3 * max(row_sizes)
        # Staggered between rows, as in a lecture room, so no face is straight behind another.
        stagger = (0.25 if row % 2 else -0.25) * width / len(row_ids)
        for col, (person_id, size) in enumerate(zip(row_ids, row_sizes, strict=True)):
            x = float(np.clip(width * (col + 0.5) / len(row_ids) + stagger, 1.5 * size, width - 1.5 * size))
            seats.append(Seat(person_id, (x, y), size))
        previous_size = max(row_sizes)
    return seats


def classroom_background(seed: int = 0, frame_size: tuple[int, int] = FRAME_SIZE) -> Image:
    """The empty room as the front camera sees it: back wall with a window band, a floor, noise.
    The desks are drawn with the students (in front of them), in :func:`render_frame`."""
    width, height = frame_size
    rng = np.random.default_rng(seed)
    room = np.zeros((height, width, 3), np.float32)
    wall = int(height * 0.45)
    room[:wall] = (175, 185, 180)
    ramp = np.linspace(0, 1, height - wall, dtype=np.float32)[:, None, None]
    room[wall:] = np.array((80, 95, 110), np.float32) + 50 * ramp
    for x in range(width // 16, width - width // 8, width // 5):
        cv2.rectangle(
            room, (x, int(height * 0.06)), (x + width // 8, int(height * 0.22)), (215, 200, 170), -1
        )
        cv2.rectangle(room, (x, int(height * 0.06)), (x + width // 8, int(height * 0.22)), (90, 90, 90), 3)
    room += rng.normal(0, 5, room.shape).astype(np.float32)
    return np.clip(room, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class RollCallClip:
    """The frames (capture times ``times`` in seconds), who sits where, and who is absent."""

    frames: list[Image]
    times: list[float]
    seats: list[Seat]
    absent: tuple[str, ...]

    @property
    def present(self) -> tuple[str, ...]:
        return tuple(sorted(s.person_id for s in self.seats))

    def seat_at(self, point: Point) -> Seat:
        """The seat whose face is nearest ``point`` in units of its face size (for ground truth)."""
        return min(
            self.seats, key=lambda s: math.hypot(point[0] - s.centre[0], point[1] - s.centre[1]) / s.face_px
        )


def _scaled(person: ScenePerson, face_px: float) -> tuple[Image, Point]:
    """``person``'s crop scaled so the face is ``face_px``, and where its face centre then is."""
    scale = face_px / person.face_px
    patch = np.asarray(
        cv2.resize(person.photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8
    )
    return patch, (person.face_centre[0] * scale, person.face_centre[1] * scale)


def render_frame(
    room: Image,
    students: Sequence[tuple[Seat, Image, Point]],
    offsets: np.ndarray,
    rng: np.random.Generator,
) -> Image:
    """One frame: each (seat, scaled crop, face centre in it) moved by its row of ``offsets``
    (dx px, dy px, tilt degrees), back row first, each row's desks in front of it; then sensor noise
    and the camera's JPEG."""
    frame = room
    rows = sorted({s.centre[1] for s, _, _ in students})
    for row_y in rows:
        row_size = 0.0
        for (seat, patch, face), (dx, dy, tilt) in zip(students, offsets.tolist(), strict=True):
            if seat.centre[1] != row_y:
                continue
            row_size = max(row_size, seat.face_px)
            turned = rotated(patch, tilt) if tilt else patch
            centre = (
                seat.centre[0] + dx + patch.shape[1] / 2 - face[0],
                seat.centre[1] + dy + patch.shape[0] / 2 - face[1],
            )
            frame = composite(frame, turned, centre)
        # The desk top sits at chest height, half a face below the chin of the row's largest face.
        top = int(row_y + 1.0 * row_size)
        cv2.rectangle(frame, (0, top), (room.shape[1] - 1, top + int(0.5 * row_size)), (45, 70, 105), -1)
    noisy = frame.astype(np.float32) + rng.normal(0, NOISE_SIGMA, frame.shape).astype(np.float32)
    return jpeg_roundtrip(np.clip(noisy, 0, 255).astype(np.uint8), JPEG_QUALITY)


def rollcall_clip(
    people: Sequence[ScenePerson],
    *,
    seconds: float = 10.0,
    fps: float = 5.0,
    absent_seed: int = 0,
    seating_seed: int = 0,
    frame_size: tuple[int, int] = FRAME_SIZE,
) -> RollCallClip:
    """The roll-call clip of ``people`` (see the module docstring). ``absent_seed`` fixes who is left
    out, ``seating_seed`` who sits where (and the head movements and noise), ``frame_size`` the
    camera's resolution (same lens: faces scale with the width)."""
    by_id = {p.person_id: p for p in people}
    absent = choose_absent(list(by_id), absent_seed)
    seats = seating([pid for pid in sorted(by_id) if pid not in absent], seating_seed, frame_size)
    students = [(seat, *_scaled(by_id[seat.person_id], seat.face_px)) for seat in seats]
    room = classroom_background(seating_seed, frame_size)
    rng = np.random.default_rng(seating_seed)
    offsets = np.zeros((len(seats), 3))
    step = np.array([[HEAD_STEP_PX * s.face_px, HEAD_STEP_PX * s.face_px, TILT_STEP_DEG] for s in seats])
    limit = np.array([[HEAD_RANGE * s.face_px, HEAD_RANGE * s.face_px, TILT_RANGE_DEG] for s in seats])
    frames, times = [], []
    for k in range(round(seconds * fps)):
        offsets = np.clip(offsets + rng.normal(0, 1, offsets.shape) * step, -limit, limit)
        frames.append(render_frame(room, students, offsets, rng))
        times.append(k / fps)
    return RollCallClip(frames, times, seats, absent)


__all__ = [
    "ABSENT_FRACTION",
    "FACE_PX",
    "FRAME_SIZE",
    "UNREADABLE_PHOTO",
    "Enrollment",
    "RollCallClip",
    "ScenePerson",
    "Seat",
    "choose_absent",
    "classroom_background",
    "enrol_scene_people",
    "face_sizes",
    "render_frame",
    "rollcall_clip",
    "seating",
]

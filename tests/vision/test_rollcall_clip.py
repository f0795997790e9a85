"""The roll-call clip (vision.classroom_clip): deterministic, the seeded quarter left out, and the
production FaceCamera marks no absent student present on a short version of it (real models)."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from vision.classroom_clip import (
    ABSENT_FRACTION,
    FACE_PX,
    UNREADABLE_PHOTO,
    Enrollment,
    choose_absent,
    enrol_scene_people,
    face_sizes,
    rollcall_clip,
)
from vision.config import FaceTrackerConfig
from vision.face_camera import FaceCamera
from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.scenes import SCENES_DIR

SHORT_S = 3.0
"""Long enough for the tracker's votes (3 matched frames) at 5 fps, short enough for a fast test."""


@pytest.fixture(scope="module")
def models() -> tuple[FaceDetector, FaceEmbedder]:
    return FaceDetector(), FaceEmbedder()


@pytest.fixture(scope="module")
def enrollment(models: tuple[FaceDetector, FaceEmbedder]) -> Enrollment:
    return enrol_scene_people(*models)


def test_enrols_at_least_twelve_people_with_three_templates(enrollment: Enrollment) -> None:
    assert len(enrollment.people) >= 12
    assert all(p.templates.shape[0] == 3 for p in enrollment.people)
    assert len(enrollment.gallery) == len(enrollment.people)


def test_clip_is_deterministic(enrollment: Enrollment) -> None:
    a = rollcall_clip(enrollment.people, seconds=1.0, seating_seed=3)
    b = rollcall_clip(enrollment.people, seconds=1.0, seating_seed=3)
    assert a.seats == b.seats and a.absent == b.absent and a.times == b.times
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
    # Another seating moves people, not the absent quarter.
    c = rollcall_clip(enrollment.people, seconds=1.0, seating_seed=4)
    assert c.absent == a.absent
    assert [s.person_id for s in c.seats] != [s.person_id for s in a.seats]
    # Heads move between frames.
    assert not np.array_equal(a.frames[0], a.frames[1])


def test_a_quarter_is_left_out_and_everyone_else_is_seated(enrollment: Enrollment) -> None:
    ids = [p.person_id for p in enrollment.people]
    clip = rollcall_clip(enrollment.people, seconds=0.4)
    assert len(clip.absent) == math.ceil(len(ids) * ABSENT_FRACTION)
    assert set(clip.absent) | set(clip.present) == set(ids)
    assert not set(clip.absent) & set(clip.present)
    assert clip.absent == choose_absent(ids)  # the fixed seeded choice
    assert choose_absent(ids, seed=1) != clip.absent
    sizes = sorted(s.face_px for s in clip.seats)
    assert sizes[0] == pytest.approx(FACE_PX[0]) and sizes[-1] == pytest.approx(FACE_PX[1])
    # Back rows (higher in the frame) hold the smaller faces.
    by_row = sorted(clip.seats, key=lambda s: s.centre[1])
    assert [s.face_px for s in by_row] == sorted(s.face_px for s in by_row)


def test_a_camera_with_more_pixels_sees_the_same_room_with_larger_faces(enrollment: Enrollment) -> None:
    small = rollcall_clip(enrollment.people, seconds=0.2)
    large = rollcall_clip(enrollment.people, seconds=0.2, frame_size=(2560, 1440))
    assert small.frames[0].shape == (720, 1280, 3) and large.frames[0].shape == (1440, 2560, 3)
    assert face_sizes((2560, 1440)) == (2 * FACE_PX[0], 2 * FACE_PX[1])
    # Same seats, same people, every position and size doubled.
    assert [s.person_id for s in large.seats] == [s.person_id for s in small.seats]
    for a, b in zip(small.seats, large.seats, strict=True):
        assert b.face_px == pytest.approx(2 * a.face_px)
        assert b.centre == pytest.approx((2 * a.centre[0], 2 * a.centre[1]))


def test_no_absent_student_is_marked_present(
    enrollment: Enrollment, models: tuple[FaceDetector, FaceEmbedder]
) -> None:
    clip = rollcall_clip(enrollment.people, seconds=SHORT_S)
    camera = FaceCamera("rollcall", enrollment.gallery, detector=models[0], embedder=models[1])
    marked: set[str] = set()
    for frame, at in zip(clip.frames, clip.times, strict=True):
        marked |= {d.person_id for d in camera.process(frame, at).decisions if d.person_id}
    assert not marked & set(clip.absent)
    # Not vacuous: the students at the front (faces of 64 px and more, all recalled by the bench)
    # are recognised within the short clip.
    front = {s.person_id for s in clip.seats if s.face_px >= 64}
    assert front and front <= marked


def test_a_seated_class_is_not_embedded_again_once_recognised(
    enrollment: Enrollment, models: tuple[FaceDetector, FaceEmbedder]
) -> None:
    """The same clip with carried identities and without (reverify_s 0): the same students marked,
    and far fewer faces through the embedder with them."""
    clip = rollcall_clip(enrollment.people, seconds=SHORT_S)
    marked: dict[float, set[str]] = {}
    embedded: dict[float, int] = {}
    for reverify_s in (0.0, FaceTrackerConfig().reverify_s):
        camera = FaceCamera(
            "rollcall",
            enrollment.gallery,
            detector=models[0],
            embedder=models[1],
            tracker=FaceTrackerConfig(reverify_s=reverify_s),
        )
        marked[reverify_s] = set()
        for frame, at in zip(clip.frames, clip.times, strict=True):
            result = camera.process(frame, at)
            marked[reverify_s] |= {d.person_id for d in result.decisions if d.person_id}
        c = camera.counters
        embedded[reverify_s] = c["faces_named"] + c["faces_unknown"] - c["faces_carried"]
        assert (c["faces_carried"] > 0) == (reverify_s > 0), c
    without, carried = marked
    assert marked[carried] == marked[without] and marked[without]
    # Once recognised (3 frames of 15 in this short clip), a student is carried: at least half the
    # embedder's work is gone.
    assert embedded[carried] <= 0.5 * embedded[without], embedded


def test_a_student_taken_out_of_the_gallery_is_not_carried_a_frame_longer(
    enrollment: Enrollment, models: tuple[FaceDetector, FaceEmbedder]
) -> None:
    """Consent withdrawn mid-lesson: from the next frame on, no face is named that student, though
    their track was confirmed and carried. Their templates are deleted from the gallery in place,
    as edge_agent.faces does."""
    clip = rollcall_clip(enrollment.people, seconds=SHORT_S)
    gallery = enrollment.gallery.subset(lambda person_id: True)  # this test's own copy
    camera = FaceCamera("rollcall", lambda: gallery, detector=models[0], embedder=models[1])
    frames = iter(zip(clip.frames, clip.times, strict=True))
    carried: set[str | None] = set()
    for frame, at in frames:
        carried = {f.person_id for f in camera.process(frame, at).faces if f.carried}
        if carried:
            break
    assert carried, "nobody carried in the clip: the test would prove nothing"
    gone = sorted(p for p in carried if p)[0]
    assert gallery.remove(gone) > 0
    rest = [camera.process(frame, at) for frame, at in frames]
    assert sum(len(r.faces) for r in rest) > 0  # the class was looked at after the change
    assert all(f.person_id != gone for r in rest for f in r.faces)


def test_an_unreadable_photo_is_logged_counted_and_skipped(
    models: tuple[FaceDetector, FaceEmbedder], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copy(SCENES_DIR / "sample2.jpg", tmp_path / "sample2.jpg")
    (tmp_path / "sample9.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING, logger="vision.classroom_clip"):
        enrollment = enrol_scene_people(*models, tmp_path)
    assert enrollment.refused[UNREADABLE_PHOTO] == 1
    assert any("sample9.jpg is not a readable image" in r.getMessage() for r in caplog.records)
    assert enrollment.people and all(p.person_id.startswith("sample2.jpg#") for p in enrollment.people)

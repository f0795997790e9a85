"""Identity over time: weighted voting on synthetic observations, then a composited clip with real models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from vision.face_detect import FaceDetector
from vision.face_embed import FaceEmbedder
from vision.face_eval import crop_around, realistic_variants, walking_clip
from vision.face_pipeline import FaceObservation, FacePipeline, embed_enrollment_photo
from vision.face_track import FaceTracker, FaceTrackerConfig, IdentityDecision
from vision.gallery import Gallery
from vision.quality import FaceQuality
from vision.runtime import OnnxModel

MODEL = "dlib_resnet_v1"
Box = tuple[float, float, float, float]


def _obs(
    box: Box, person: str | None, *, distance: float = 0.2, ok: bool = True, score: float = 0.9
) -> FaceObservation:
    quality = FaceQuality(
        ok=ok,
        reasons=() if ok else ("too_blurred",),
        size_px=box[2] - box[0],
        sharpness=100.0 if ok else 5.0,
        yaw_deg=0.0,
        roll_deg=0.0,
        pitch=0.0,
        brightness=120.0,
        score=score if ok else 0.05,
    )
    return FaceObservation(
        box=box,
        landmarks=np.zeros((5, 2), np.float32),
        detection_score=0.9,
        quality=quality,
        matched=ok,
        person_id=person if ok else None,
        distance=distance if ok else None,
        model_id=MODEL,
    )


def _box(x: float, y: float = 100.0, size: float = 80.0) -> Box:
    return (x, y, x + size, y + size)


def _run(
    tracker: FaceTracker, frames: list[list[FaceObservation]], dt: float = 0.1
) -> list[IdentityDecision]:
    out = []
    for k, faces in enumerate(frames):
        out.extend(tracker.update(faces, k * dt))
    return out


def test_confirmed_once_after_enough_votes() -> None:
    frames = [[_obs(_box(100 + 5 * k), "alice")] for k in range(10)]
    tracker = FaceTracker()
    decisions = [tracker.update(f, k * 0.1) for k, f in enumerate(frames)]
    first = next(k for k, d in enumerate(decisions) if d)
    assert first == FaceTrackerConfig().min_votes - 1  # not on the first frame
    flat = [d for ds in decisions for d in ds]
    assert [d.person_id for d in flat] == ["alice"]
    assert flat[0].model_id == MODEL and flat[0].distance == pytest.approx(0.2)


def test_a_fast_walker_seen_at_a_low_rate_is_followed_by_who_they_are() -> None:
    # 2 analysed frames/s (a saturated box) of a face 80 px wide crossing 140 px between frames: no
    # overlap from one frame to the next, yet one track (the same person each time) and one decision.
    frames = [[_obs(_box(100 + 140 * k), "alice")] for k in range(4)]
    tracker = FaceTracker()
    decisions = _run(tracker, frames, dt=0.5)
    assert [d.person_id for d in decisions] == ["alice"] and decisions[0].votes == 3
    assert len(tracker.tracks) == 1
    # Not by IoU alone (identity_reach 0): four tracks of one vote, nobody decided.
    iou_only = FaceTracker(FaceTrackerConfig(identity_reach=0))
    assert _run(iou_only, frames, dt=0.5) == [] and len(iou_only.tracks) == 4
    # Another person's match, or one too far away, starts a track of its own.
    mixed = FaceTracker()
    _run(mixed, [[_obs(_box(100), "alice")], [_obs(_box(240), "bob")], [_obs(_box(1000), "alice")]], 0.5)
    assert len(mixed.tracks) == 3


def test_two_walkers_one_behind_the_other_at_a_low_rate_keep_their_own_tracks() -> None:
    """At 2 frames/s two people walking one behind the other each move more than a face width
    between frames: the one behind (alice) lands on the box the one ahead (a stranger) just left.
    Her face goes to her own track (within identity_reach) rather than to the stranger's by overlap,
    so her votes add up and she is decided; the stranger's face, which failed the quality gate in
    the second frame, leaves a track without a vote that must not catch her either."""
    step = 115.0  # a face 80 px wide: no overlap with its own box one frame later
    frames = []
    for k in range(4):
        ahead = _box(210 + step * k)
        stranger = _obs(ahead, None, distance=0.7, ok=k != 1)
        frames.append([stranger, _obs(_box(100 + step * k), "alice")])
    tracker = FaceTracker()
    decisions = _run(tracker, frames, dt=0.5)
    named = [d for d in decisions if d.person_id is not None]
    assert [d.person_id for d in named] == ["alice"] and named[0].votes == 3
    alice_tracks = [t for t in tracker.tracks if "alice" in t.weights]
    assert len(alice_tracks) == 1 and set(alice_tracks[0].weights) == {"alice"}  # no stranger vote mixed in
    # By overlap first (the rule before): her votes were spread over the stranger's boxes.
    overlap_first = FaceTracker(FaceTrackerConfig(identity_reach=0))
    assert [d for d in _run(overlap_first, frames, dt=0.5) if d.person_id] == []


def test_one_blurry_frame_neither_adds_nor_loses() -> None:
    # A blurry frame in the middle of a walk: not a vote, and the track continues through it.
    frames = [[_obs(_box(100 + 5 * k), "alice", ok=(k != 2))] for k in range(6)]
    tracker = FaceTracker()
    decisions = _run(tracker, frames)
    assert [d.person_id for d in decisions] == ["alice"]
    assert len(tracker.tracks) == 1 and tracker.tracks[0].frames == 6 and tracker.tracks[0].votes == 5
    # Only blurry frames: a face was seen, nobody is decided.
    tracker = FaceTracker()
    assert _run(tracker, [[_obs(_box(100 + 5 * k), None, ok=False)] for k in range(10)]) == []


def test_one_wrong_match_does_not_add_a_person() -> None:
    names = ["alice", "alice", "bob", "alice", "alice", "alice"]
    # Bob's single vote even comes from the biggest, sharpest face of the walk.
    frames = [[_obs(_box(100 + 5 * k), n, score=1.0 if n == "bob" else 0.6)] for k, n in enumerate(names)]
    decisions = _run(FaceTracker(), frames)
    assert [d.person_id for d in decisions] == ["alice"]


def test_stranger_reported_once_then_recognised_later() -> None:
    names = [None] * 4 + ["alice"] * 10
    frames = [[_obs(_box(100 + 3 * k), n, distance=0.7 if n is None else 0.3)] for k, n in enumerate(names)]
    decisions = _run(FaceTracker(), frames)
    assert [d.person_id for d in decisions] == [None, "alice"]
    assert decisions[0].track_id == decisions[1].track_id


def test_two_people_two_tracks_and_track_expiry() -> None:
    frames = [[_obs(_box(100 + 10 * k), "alice"), _obs(_box(600 - 10 * k), "bob")] for k in range(5)]
    tracker = FaceTracker(FaceTrackerConfig(max_age_s=1.0, repeat_window_s=0.0))
    decisions = _run(tracker, frames)
    assert sorted(d.person_id or "" for d in decisions) == ["alice", "bob"]
    assert len(tracker.tracks) == 2
    assert tracker.update([], 5.0) == [] and tracker.tracks == []
    # alice comes back much later: a new track, a new decision (repeat window disabled here).
    later = [tracker.update([_obs(_box(100), "alice")], 6.0 + k * 0.1) for k in range(4)]
    assert [d.person_id for ds in later for d in ds] == ["alice"]


def test_repeat_window_suppresses_broken_track() -> None:
    tracker = FaceTracker(FaceTrackerConfig(repeat_window_s=10.0, max_age_s=0.5))
    first = _run(tracker, [[_obs(_box(100), "alice")] for _ in range(4)])
    # The track breaks (occlusion for a second) and a new one forms on the same person.
    again = [tracker.update([_obs(_box(400), "alice")], 2.0 + k * 0.1) for k in range(4)]
    assert [d.person_id for d in first] == ["alice"]
    assert [d for ds in again for d in ds] == []


def test_a_confirmed_track_carries_its_identity_only_where_it_is_plain() -> None:
    tracker = FaceTracker()
    cfg = tracker.config
    _run(tracker, [[_obs(_box(100), "alice")] for _ in range(cfg.min_votes)])  # confirmed at t=0.2
    now = 0.3
    # The same place: carried, no need to embed it again.
    assert tracker.carried([_box(102)], now) == ["alice"]
    # Not carried: a box that overlaps the track only a little, or a second face on the track.
    assert tracker.carried([_box(160)], now) == [None]
    assert tracker.carried([_box(100), _box(115)], now) == [None, None]
    # Nor a face of a track not confirmed yet, nor on a tracker that has no confirmed track.
    other = FaceTracker()
    other.update([_obs(_box(100), "alice")], 0.0)
    assert other.carried([_box(100)], 0.1) == [None]
    # Carried observations keep the track alive without verifying it: after reverify_s the face
    # is matched again, and carried once more only when that match names the same person.
    t = now
    while t < 0.2 + cfg.reverify_s - 0.1:
        assert tracker.carried([_box(100)], t) == ["alice"]
        carried = replace(_obs(_box(100), "alice"), distance=None, carried=True)
        tracker.update([carried], t)
        t += 0.5
    t = 0.2 + cfg.reverify_s + 0.05
    assert tracker.carried([_box(100)], t) == [None]
    tracker.update([_obs(_box(100), "bob")], t)  # someone else on the track: not verified
    assert tracker.carried([_box(100)], t + 0.1) == [None]
    tracker.update([_obs(_box(100), "alice")], t + 0.1)
    assert tracker.carried([_box(100)], t + 0.2) == ["alice"]
    # A changed gallery: nothing carried until matched again.
    tracker.reverify()
    assert tracker.carried([_box(100)], t + 0.2) == [None]
    # Off altogether with reverify_s 0.
    off = FaceTracker(FaceTrackerConfig(reverify_s=0))
    _run(off, [[_obs(_box(100), "alice")] for _ in range(cfg.min_votes)])
    assert off.carried([_box(100)], 0.3) == [None]


def test_clip_with_enrolled_and_unknown_walkers(
    onnx_model: Callable[[str], OnnxModel], load_scene: Callable[[str], npt.NDArray[np.uint8]]
) -> None:
    """Two people walk across a room, crossing paths, with motion-blurred frames: one confirmed
    identity for the enrolled one, none for the other, none for an enrolled person who is absent."""
    detector = FaceDetector(model=onnx_model("centerface"))
    embedder = FaceEmbedder(model=onnx_model(MODEL))

    def subject(
        photo: str, index_from_left: int
    ) -> tuple[npt.NDArray[np.uint8], tuple[float, float, float, float]]:
        img = load_scene(photo)
        faces = sorted(detector.detect(img), key=lambda f: f.box[0])
        return img, faces[index_from_left].box

    gallery = Gallery(MODEL)
    alice_img, alice_box = subject("sample6.jpg", 3)
    carol_img, carol_box = subject("sample3.jpg", 0)
    bob_img, bob_box = subject("sample5.jpg", 1)
    for pid, img, box in (("alice", alice_img, alice_box), ("carol", carol_img, carol_box)):
        r = embed_enrollment_photo(crop_around(img, box), detector=detector, embedder=embedder)
        gallery.add(pid, r.embedding, model_id=r.model_id)

    # The walkers are other renderings than the enrollment crops: tilted and re-encoded, half size.
    alice = cv2.resize(
        realistic_variants(crop_around(alice_img, alice_box, 0.6))["rotate_6"], None, fx=0.5, fy=0.5
    )
    bob = cv2.resize(realistic_variants(crop_around(bob_img, bob_box, 0.6))["jpeg_40"], None, fx=0.5, fy=0.5)
    room = cv2.resize(load_scene("sample1.jpg")[760:, :], (1280, 720))  # tables, chairs, no faces
    clip = walking_clip(
        room,
        [alice, bob],
        frames=30,
        paths=[((150, 300), (1100, 380)), ((1150, 420), (250, 330))],
        blur_frames=(10, 11, 20),
        still_frames=8,
    )
    pipeline = FacePipeline(gallery, detector=detector, embedder=embedder)
    tracker = FaceTracker()
    decisions: list[IdentityDecision] = []
    analysed = 0
    for k, frame in enumerate(clip):
        result = pipeline.process(frame, k * 0.1)
        analysed += result.analysed
        decisions.extend(tracker.update(result.faces, k * 0.1))
    named = [d.person_id for d in decisions if d.person_id is not None]
    assert named == ["alice"]
    assert sum(d.person_id is None for d in decisions) == 1  # bob: one stranger report, not a name
    assert analysed < 38  # the empty room before they walk in is skipped by the motion gate


def test_student_who_sits_still_is_still_confirmed(
    onnx_model: Callable[[str], OnnxModel], load_scene: Callable[[str], npt.NDArray[np.uint8]]
) -> None:
    """Walks in, then sits still: the motion gate skips most frames, and the periodic analysis
    (max_skip_s) keeps collecting votes until the identity is confirmed. The camera here asks for 8
    votes, more than the walk-in and the gate's settling frames provide on their own."""
    detector = FaceDetector(model=onnx_model("centerface"))
    embedder = FaceEmbedder(model=onnx_model(MODEL))
    img = load_scene("sample4.jpg")
    box = sorted(detector.detect(img), key=lambda f: f.box[0])[1].box
    gallery = Gallery(MODEL)
    r = embed_enrollment_photo(crop_around(img, box), detector=detector, embedder=embedder)
    gallery.add("dana", r.embedding, model_id=MODEL)
    patch = cv2.resize(crop_around(img, box, 0.6), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    room = cv2.resize(load_scene("sample1.jpg")[760:, :], (1280, 720))
    frames = list(walking_clip(room, [patch], frames=2, paths=[((500, 300), (560, 320))], still_frames=5))
    frames += [frames[-1]] * 80  # seated, perfectly still, for 8 s at 10 frames/s
    pipeline = FacePipeline(gallery, detector=detector, embedder=embedder)
    tracker = FaceTracker(FaceTrackerConfig(min_votes=8))
    decisions: list[IdentityDecision] = []
    analysed = 0
    for k, frame in enumerate(frames):
        result = pipeline.process(frame, k * 0.1)
        analysed += result.analysed
        decisions.extend(tracker.update(result.faces, k * 0.1))
    assert [d.person_id for d in decisions] == ["dana"]
    assert analysed < len(frames) // 3  # most still frames were skipped

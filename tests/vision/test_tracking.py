"""Tracker behaviour on synthetic box sequences: stable ids, crossing paths, occlusion gaps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vision.tracking import (
    Box,
    Tracker,
    TrackerConfig,
    TrackingError,
    TrackState,
    greedy_assign,
    iou_matrix,
)

FPS = 5.0


@dataclass(frozen=True)
class Det:
    box: Box
    score: float = 0.9


def person(cx: float, feet_y: float, height: float = 200.0) -> Det:
    """A standing person's box: width 0.4 × height, feet at ``feet_y``."""
    w = 0.4 * height
    return Det((cx - w / 2, feet_y - height, cx + w / 2, feet_y))


def test_iou_matrix_known_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float64)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=np.float64)
    got = iou_matrix(a, b)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got[0], [1.0, 50 / 150, 0.0])


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(0, 6), st.integers(0, 6)), elements=st.floats(-1, 1)))
def test_greedy_assign_is_a_maximal_matching(score: np.ndarray) -> None:
    score = np.where(score < -0.5, -np.inf, score)  # some pairs forbidden
    pairs = greedy_assign(score)
    rows = [r for r, _ in pairs]
    cols = [c for _, c in pairs]
    assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
    assert all(np.isfinite(score[r, c]) for r, c in pairs)
    # Maximal: no allowed pair is left with both its row and its column free.
    free_r = set(range(score.shape[0])) - set(rows)
    free_c = set(range(score.shape[1])) - set(cols)
    assert not any(np.isfinite(score[r, c]) for r in free_r for c in free_c)
    # Greedy order: the first pair taken is a global best.
    if pairs:
        assert score[pairs[0]] == np.max(score[np.isfinite(score)])


def test_one_person_walking_keeps_one_id_and_gets_confirmed() -> None:
    tracker = Tracker(TrackerConfig(min_hits=3))
    states = []
    ids = set()
    for k in range(20):
        up = tracker.update([person(100 + 15 * k, 400)], k / FPS)
        assert len(up.tracks) == 1
        states.append(up.tracks[0].state)
        ids.add(up.tracks[0].track_id)
    assert ids == {1}
    assert states[:2] == [TrackState.TENTATIVE, TrackState.TENTATIVE]
    assert set(states[2:]) == {TrackState.CONFIRMED}
    track = tracker.tracks[0]
    assert track.first_seen == 0.0 and track.last_seen == pytest.approx(19 / FPS)
    assert len(track.history) == 20
    assert track.history[-1][1:] == pytest.approx((100 + 15 * 19, 400))
    assert track.bottom_centre == pytest.approx((385.0, 400.0))


def _ids_by_position(tracker: Tracker, frames: list[list[Det]]) -> list[dict[int, tuple[float, float]]]:
    out = []
    for k, dets in enumerate(frames):
        up = tracker.update(dets, k / FPS)
        out.append({t.track_id: t.bottom_centre for t in up.visible})
    return out


def test_crossing_paths_keep_their_ids() -> None:
    # Two people walk towards each other along almost the same line and pass; boxes overlap
    # heavily for several frames in the middle.
    frames = []
    for k in range(30):
        a = person(100 + 20 * k, 400)  # left → right
        b = person(680 - 20 * k, 410)  # right → left, slightly nearer the camera
        frames.append([a, b] if k % 2 else [b, a])  # detector order must not matter
    seen = _ids_by_position(Tracker(), frames)
    first, last = seen[3], seen[-1]
    assert len(first) == 2 and len(last) == 2
    left_id = min(first, key=lambda i: first[i][0])
    right_id = max(first, key=lambda i: first[i][0])
    # At the end the walker who started on the left is on the right, under the same id.
    assert last[left_id][0] > last[right_id][0]
    assert last[left_id][0] == pytest.approx(100 + 20 * 29)


def test_short_occlusion_keeps_the_id_and_long_one_does_not() -> None:
    cfg = TrackerConfig(max_lost_s=2.0)
    tracker = Tracker(cfg)
    t = 0.0
    ids = []
    for k in range(10):
        t = k / FPS
        ids.append({x.track_id for x in tracker.update([person(100 + 12 * k, 400)], t).visible})
    # Hidden behind a pillar for 1 s (5 frames) while walking on.
    for k in range(10, 15):
        t = k / FPS
        up = tracker.update([], t)
        assert up.visible == [] and [x.state for x in up.tracks] == [TrackState.LOST]
    for k in range(15, 20):
        t = k / FPS
        ids.append({x.track_id for x in tracker.update([person(100 + 12 * k, 400)], t).visible})
    assert set().union(*ids) == {1}
    # Now gone for 3 s: the track is removed, and the next person gets a new id.
    removed = []
    for k in range(20, 36):
        removed += tracker.update([], k / FPS).removed
    assert [r.track_id for r in removed] == [1]
    assert tracker.tracks == []
    for k in range(36, 40):
        up = tracker.update([person(400, 400)], k / FPS)
    assert [x.track_id for x in up.visible] == [2]


def test_single_frame_flicker_is_never_confirmed() -> None:
    tracker = Tracker()
    tracker.update([person(300, 400)], 0.0)
    up = tracker.update([], 0.2)
    assert [r.state for r in up.removed] == [TrackState.TENTATIVE]
    assert up.visible == [] and up.tracks == []


def test_far_away_detection_starts_a_new_track_instead_of_teleporting() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update([person(100, 400)], 0.0)
    up = tracker.update([person(900, 400)], 0.2)
    ids = {t.track_id for t in up.tracks}
    assert ids == {1, 2}
    assert {t.track_id for t in up.visible} == {2}


def test_size_jump_is_not_associated() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1, max_size_ratio=1.5))
    tracker.update([person(300, 400, height=200)], 0.0)
    up = tracker.update([person(300, 400, height=400)], 0.2)
    assert {t.track_id for t in up.visible} == {2}


def test_bad_boxes_are_counted_and_dropped() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    up = tracker.update(
        [Det((10, 10, 5, 50)), Det((float("nan"), 0, 10, 10)), Det((0, 0, 0, 10)), person(300, 400)], 0.0
    )
    assert tracker.dropped_detections == 3
    assert len(up.tracks) == 1


def test_time_must_not_go_backwards() -> None:
    tracker = Tracker()
    tracker.update([], 5.0)
    with pytest.raises(TrackingError) as err:
        tracker.update([], 4.0)
    assert err.value.code == "time_backwards"
    with pytest.raises(TrackingError):
        tracker.update([], float("nan"))


def test_history_is_bounded() -> None:
    tracker = Tracker(TrackerConfig(history_len=5, min_hits=1))
    for k in range(12):
        tracker.update([person(100 + 5 * k, 400)], float(k))
    hist = tracker.tracks[0].history
    assert len(hist) == 5 and hist[0][0] == 7.0 and hist[-1][0] == 11.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 2), min_size=5, max_size=40),
    st.floats(min_value=2.0, max_value=20.0),
)
def test_well_separated_walkers_never_swap(gaps: list[int], speed: float) -> None:
    # Three people in separate lanes, each detection randomly missing (0 = missed frame).
    # Whatever the pattern of misses, a confirmed id never jumps from one lane to another.
    tracker = Tracker(TrackerConfig(max_lost_s=1.0))
    lane_of: dict[int, int] = {}
    for k, g in enumerate(gaps):
        dets = [person(100 + speed * k, 300 + 250 * lane) for lane in range(3) if not (g and lane == k % 3)]
        for t in tracker.update(dets, k / FPS).visible:
            lane = round((t.bottom_centre[1] - 300) / 250)
            assert lane_of.setdefault(t.track_id, lane) == lane


def test_reset_ends_all_tracks_and_never_reuses_ids() -> None:
    tracker = Tracker(TrackerConfig(min_hits=1))
    tracker.update([person(100, 400), person(500, 400)], 0.0)
    ended = tracker.reset()
    assert sorted(t.track_id for t in ended) == [1, 2] and tracker.tracks == []
    up = tracker.update([person(100, 400)], 0.2)
    assert [t.track_id for t in up.visible] == [3]

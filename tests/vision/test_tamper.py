"""Camera tamper checks: effects applied to real photos (cover, darken, blur, shift, rotate)."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from scene_clips import cover, darken, defocus, jpeg_noise, shift_view

from vision.config import TamperConfig
from vision.scenes import Frame, corridor_background, load_photo, paste_person, person_sprite
from vision.tamper import (
    StreamWatch,
    TamperChange,
    TamperDetector,
    TamperError,
    edge_map,
    edge_overlap,
    sharpness,
)

# Every frame checked: these tests are about the checks and their states, not the cadence.
CFG = TamperConfig(
    reference_frames=3, trigger_frames=4, clear_frames=3, stream_timeout_s=5.0, check_every_s=0
)
VIEWS = ["sample2.jpg", "sample6.jpg", "corridor"]


def view(name: str) -> Frame:
    if name == "corridor":
        return corridor_background()
    photo = load_photo(name)
    return np.asarray(cv2.resize(photo, (1280, 800), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def learned(base: Frame) -> tuple[TamperDetector, float]:
    det = TamperDetector("cam1", CFG)
    t = 0.0
    for k in range(CFG.reference_frames):
        t = k * 0.2
        assert det.update(jpeg_noise(base, 70 + k), t) == []
    assert det.learned
    return det, t


def feed(det: TamperDetector, frames: list[Frame], t0: float) -> tuple[list[tuple[int, TamperChange]], float]:
    out = []
    t = t0
    for i, f in enumerate(frames):
        t += 0.2
        out += [(i, c) for c in det.update(f, t)]
    return out, t


def test_sharpness_ignores_brightness_but_not_blur() -> None:
    gray = np.asarray(cv2.cvtColor(view("sample2.jpg"), cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    s = sharpness(gray)
    dim = (gray * 0.5).astype(np.uint8)
    assert sharpness(dim) == pytest.approx(s, rel=0.1)
    assert sharpness(np.asarray(cv2.GaussianBlur(gray, (0, 0), 3), dtype=np.uint8)) < 0.5 * s


def test_edge_overlap_identity_and_shift() -> None:
    gray = np.asarray(cv2.cvtColor(view("sample6.jpg"), cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    edges = edge_map(gray)
    assert edge_overlap(edges, edges) == 1.0
    shifted = np.roll(edges, 12, axis=1)
    assert edge_overlap(edges, shifted) < 0.5
    assert edge_overlap(np.zeros_like(edges), edges) == 1.0


@pytest.mark.parametrize("name", VIEWS)
def test_ordinary_changes_raise_nothing(name: str) -> None:
    # JPEG noise, lights dimmed and brightened, people walking through (one big, close to the camera).
    base = view(name)
    det, t = learned(base)
    h, w = base.shape[:2]
    frames = []
    for k in range(30):
        f = jpeg_noise(base, 60 + k % 30)
        gain = [1.0, 0.6, 1.3][k // 10]
        f = np.clip(f.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        paste_person(f, person_sprite("figure"), (w * (0.1 + 0.03 * k), h - 20), h * 0.35)
        if 10 <= k < 20:
            paste_person(f, person_sprite("diner"), (w * 0.6, h - 10), h * 0.6)
        frames.append(f)
    changes, _ = feed(det, frames, t)
    assert changes == [], det.last_metrics
    assert det.active == {}


EFFECTS: dict[str, tuple[Callable[[Frame], Frame], str]] = {
    "cover_dark": (lambda f: cover(f, 12), "covered"),
    "cover_bright": (lambda f: cover(f, 200), "covered"),
    "lights_off": (lambda f: darken(f, 0.06), "covered"),
    "defocus": (lambda f: defocus(f, 4.0), "defocused"),
    "shift": (lambda f: shift_view(f, 70, 10), "moved"),
    "rotate": (lambda f: shift_view(f, 0, 0, 6.0), "moved"),
    "tilt_down": (lambda f: shift_view(f, 0, 90), "moved"),
}


@pytest.mark.parametrize("name", VIEWS)
@pytest.mark.parametrize("effect", sorted(EFFECTS))
def test_effect_turns_on_after_n_frames_and_off_after_m(name: str, effect: str) -> None:
    base = view(name)
    det, t = learned(base)
    apply, kind = EFFECTS[effect]
    tampered = [jpeg_noise(apply(base), 70 + k) for k in range(CFG.trigger_frames + 3)]
    changes, t = feed(det, tampered, t)
    # Exactly one change: the right state turns on at the N-th tampered frame, nothing else.
    assert [(i, c.kind, c.active) for i, c in changes] == [(CFG.trigger_frames - 1, kind, True)], (
        det.last_metrics
    )
    assert set(det.active) == {kind}
    assert changes[0][1].reason
    # The camera is put right: it turns off after M good frames.
    changes, _ = feed(det, [jpeg_noise(base, 75)] * (CFG.clear_frames + 2), t)
    assert [(i, c.kind, c.active) for i, c in changes] == [(CFG.clear_frames - 1, kind, False)]
    assert det.active == {}


def test_a_different_view_counts_as_moved() -> None:
    det, t = learned(view("sample2.jpg"))
    changes, _ = feed(det, [view("sample3.jpg")] * CFG.trigger_frames, t)
    assert [(c.kind, c.active) for _, c in changes] == [("moved", True)]


def test_single_odd_frames_change_nothing() -> None:
    base = view("sample6.jpg")
    det, t = learned(base)
    frames = []
    for k in range(24):
        odd = [cover(base), defocus(base, 5), shift_view(base, 80)]
        frames.append(odd[k % 3] if k % 4 == 3 else jpeg_noise(base, 80))
    changes, _ = feed(det, frames, t)
    assert changes == []


def test_moved_then_relearn_accepts_the_new_view() -> None:
    base = view("sample2.jpg")
    det, t = learned(base)
    moved = shift_view(base, 100)
    changes, t = feed(det, [moved] * CFG.trigger_frames, t)
    assert [c.kind for _, c in changes] == ["moved"]
    det.relearn()  # e.g. the operator acknowledged an intended re-aim
    changes, t = feed(det, [jpeg_noise(moved, 80)] * (CFG.reference_frames + CFG.clear_frames), t)
    assert [(c.kind, c.active) for _, c in changes] == [("moved", False)]


def test_stream_lost_and_back() -> None:
    watch = StreamWatch("cam1", CFG.stream_timeout_s)
    assert watch.check(100.0) == []  # never had a frame: nothing to lose (the driver reports offline)
    assert watch.seen(101.0) == []
    assert watch.check(105.9) == []
    lost = watch.check(106.5)
    assert [(c.kind, c.active) for c in lost] == [("stream_lost", True)]
    assert "5.5 s" in lost[0].reason
    assert watch.check(120.0) == []  # reported once
    back = watch.seen(121.0)
    assert [(c.kind, c.active) for c in back] == [("stream_lost", False)]


def test_a_periodic_check_never_moves_the_time_frames_are_judged_by() -> None:
    # The defect: a check at "now" made every frame captured earlier but analysed later "go back".
    det = TamperDetector("cam1", CFG)
    watch = StreamWatch("cam1", CFG.stream_timeout_s)
    base = corridor_background()
    for k in range(20):
        captured = 10.0 + 0.2 * k
        watch.seen(captured)
        assert watch.check(captured + 0.5) == []  # the check runs ahead of the frame's analysis
        assert det.update(jpeg_noise(base, 70 + k % 20), captured) == []
    assert det.bad_frames == 0
    # A late frame (captured before the newest one seen) is alive all the same, and moves nothing back.
    assert watch.seen(10.0) == [] and watch.last_frame_at == 10.0 + 0.2 * 19
    assert watch.check(math.inf) == [] and watch.check(math.nan) == []
    with pytest.raises(TamperError) as err:
        StreamWatch("cam1", 0.0)
    assert err.value.code == "bad_config"


def test_bad_frames_are_counted_not_raised() -> None:
    det = TamperDetector("cam1", CFG)
    assert det.update(np.zeros((10, 10), np.float64), 0.0) == []
    assert det.update(np.zeros((100, 100, 4), np.uint8), 0.1) == []
    assert det.update(None, 0.2) == []  # type: ignore[arg-type]
    assert det.bad_frames == 3
    with pytest.raises(TamperError) as err:
        det.update(corridor_background(), -1.0)
    assert err.value.code == "time_backwards"
    assert err.value.camera_id == "cam1"  # structured: which camera, not only the message


def test_resolution_change_relearns_without_alarm() -> None:
    base = view("sample6.jpg")
    det, t = learned(base)
    smaller = np.asarray(cv2.resize(base, (640, 480)), dtype=np.uint8)
    changes, _ = feed(det, [jpeg_noise(smaller, 80)] * 10, t)
    assert changes == []
    assert det.learned


def test_the_checks_run_once_per_check_every_s_and_a_covered_lens_is_still_reported() -> None:
    """At the default cadence (one checked frame per second of capture time) a camera analysed at
    5 frames/s has every fifth frame checked, jitter or not; the states count checked frames, so a
    covered lens is reported trigger_frames seconds after it was covered and cleared as late after
    it is uncovered. Every frame's time is still checked."""
    cfg = CFG.model_copy(update={"check_every_s": 1.0})
    det = TamperDetector("cam1", cfg)
    base = view("sample2.jpg")
    rng = np.random.default_rng(7)
    covered_from, uncovered_from = 10.0, 20.0
    changes: list[tuple[float, TamperChange]] = []
    for k in range(150):  # 30 s at 5 frames/s, capture times jittered by up to ±20 ms
        at = k * 0.2 + float(rng.uniform(-0.02, 0.02)) + 0.05
        picture = (
            cover(base, seed=k) if covered_from <= at < uncovered_from else jpeg_noise(base, 70 + k % 20)
        )
        changes += [(at, c) for c in det.update(picture, at)]
    assert 29 <= det.checks <= 31  # one a second, not 150
    covered = [(at, c.active) for at, c in changes if c.kind == "covered"]
    assert [active for _, active in covered] == [True, False]
    # On at the 4th covered check (about 3 s after covering), off at the 3rd clear one.
    assert covered_from + 2.5 <= covered[0][0] <= covered_from + 4.5, covered
    assert uncovered_from + 1.5 <= covered[1][0] <= uncovered_from + 3.5, covered
    with pytest.raises(TamperError) as err:  # a frame that is not checked still has its time checked
        det.update(base, 1.0)
    assert err.value.code == "time_backwards"

    every_frame = TamperDetector("cam1", CFG)
    for k in range(10):
        every_frame.update(jpeg_noise(base, 70 + k), k * 0.2)
    assert every_frame.checks == 10


def test_a_still_picture_that_passed_is_rechecked_every_still_check_every_s_and_slow_changes_are_caught() -> (
    None
):
    """A still picture (the motion gate saw no change) whose last check found nothing gets the same
    verdict: it is checked once per still_check_every_s (10 s) instead of every second. A change
    the motion gate misses (focus drifting) is found at the next recheck, then judged every second
    until it is reported; a change it sees (a hand over the lens) is judged at once."""
    cfg = CFG.model_copy(update={"check_every_s": 1.0})
    base = view("sample6.jpg")
    det = TamperDetector("cam1", cfg)
    for k in range(60):  # a minute at the idle rate, 1 frame/s, nothing moving
        assert det.update(jpeg_noise(base, 70 + k % 20), float(k), still=True) == []
    # The reference (3 checks), the first clean check, then one per 10 s.
    assert det.checks == cfg.reference_frames + 6 and det.still_skips == 60 - det.checks
    unskipped = TamperDetector("cam1", cfg)
    for k in range(60):
        unskipped.update(jpeg_noise(base, 70 + k % 20), float(k), still=False)
    assert unskipped.checks == 60 and unskipped.still_skips == 0

    # The focus drifts at 60 s; the motion gate sees nothing (still=True throughout).
    changes: list[tuple[float, TamperChange]] = []
    for k in range(60, 90):
        changes += [(float(k), c) for c in det.update(defocus(base), float(k), still=True)]
    defocused = [(at, c.active) for at, c in changes if c.kind == "defocused"]
    # Found at the next recheck (by 69 s), on after trigger_frames (4) checks a second apart.
    assert defocused and defocused[0][1] is True and defocused[0][0] <= 69 + cfg.trigger_frames, changes

    # A hand over the lens of a camera still for a minute: the gate sees it, it is judged at once.
    det = TamperDetector("cam1", cfg)
    for k in range(60):
        det.update(jpeg_noise(base, 70 + k % 20), float(k), still=True)
    covered_changes = []
    for k in range(60, 70):
        covered_changes += [(float(k), c) for c in det.update(cover(base, seed=k), float(k), still=False)]
    covered = [at for at, c in covered_changes if c.kind == "covered" and c.active]
    assert covered == [60.0 + cfg.trigger_frames - 1]  # the 4th covered frame, as without the skip

    # After a relearn (a camera moved on purpose) the next frames build the reference, still or not.
    det = TamperDetector("cam1", cfg)
    for k in range(20):
        det.update(jpeg_noise(base, 70 + k % 20), float(k), still=True)
    det.relearn()
    checks = det.checks
    for k in range(20, 20 + cfg.reference_frames):
        det.update(jpeg_noise(base, 70 + k % 20), float(k), still=True)
    assert det.checks == checks + cfg.reference_frames and det.learned

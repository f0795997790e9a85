"""Camera tamper checks without a model: covered/dark, defocused, view moved, stream lost.

Each frame is reduced to a small grey image and a few measurements:

* **covered** — the picture is (nearly) uniform: a hand, a cloth, spray paint, or the lights off.
  Judged on the grey mean and standard deviation, with no reference needed.
* **defocused** — sharpness (variance of the Laplacian) fell below a fraction of the sharpness
  learned from the first good frames. The learned value follows slow changes (lighting over the day)
  only while nothing is wrong, so a lens turned out of focus cannot become the new normal.
* **moved** — the background no longer sits where it did in the reference: ORB features matched
  against the reference and fitted with RANSAC to one similarity transform (people in front of the
  camera are outliers and do not bias it) move a frame corner by more than ``moved_shift_frac`` of
  the width. When too few features match to trust that, most of the reference's edges being gone
  (median over picture cells, so a few people hiding some cells do not count) means a different view.
  Limitation: a plain scene almost entirely hidden by people standing still for ``trigger_frames``
  frames looks the same as a different view; give such cameras a longer ``trigger_frames``.
* **stream lost** — no frame for ``stream_timeout_s`` seconds: judged by :class:`StreamWatch`, which
  keeps its own state, apart from the frame checks. A periodic check of a silent camera must never
  move the clock the frames are judged by (a frame captured before the check but analysed after it
  is still a good frame), so :class:`TamperDetector` sees only frames and their capture times.

The checks run on one analysed frame per ``check_every_s`` (1 s by default; 0: every frame), and
on a still picture that passed its last check once per ``still_check_every_s`` (10 s).
Every state is stable: it turns on after ``trigger_frames`` consecutive checked frames that show it
and off after ``clear_frames`` consecutive checked frames that do not, so a single odd frame
changes nothing.
The detector reports :class:`TamperChange` transitions; the agent turns them into events.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.config import TAMPER_KINDS, Box, TamperConfig, TamperKind
from vision.errors import VisionError
from vision.runtime import InvalidImageError, as_bgr_frame

log = logging.getLogger(__name__)

KINDS: tuple[TamperKind, ...] = TAMPER_KINDS
_FRAME_KINDS: tuple[TamperKind, ...] = ("covered", "defocused", "moved")


class TamperError(VisionError):
    """Misuse of the tamper detector (e.g. time going backwards)."""

    def __init__(self, message: str, *, code: str = "tamper_error", camera_id: str = "") -> None:
        super().__init__(message, code=code, camera_id=camera_id)


@dataclass(frozen=True, slots=True)
class TamperChange:
    """A tamper state turned on (``active``) or off, with a human-readable ``reason``."""

    kind: TamperKind
    active: bool
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class TamperMetrics:
    """What the last frame measured (exposed for logs, metrics and threshold tuning)."""

    mean: float
    std: float
    sharpness: float
    reference_sharpness: float | None
    shift_px: float | None
    angle_deg: float | None
    inliers: int | None
    edge_overlap: float | None


@dataclass(slots=True)
class _Hysteresis:
    active: bool = False
    streak: int = 0
    reason: str = ""

    def step(self, raw: bool, reason: str, trigger: int, clear: int) -> bool:
        """Feed one frame's raw verdict; True when the stable state flips."""
        if raw == self.active:
            self.streak = 0
            if raw:
                self.reason = reason
            return False
        self.streak += 1
        if self.streak < (trigger if raw else clear):
            return False
        self.active = raw
        self.streak = 0
        self.reason = reason
        return True


def grey_small(frame_bgr: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    """The frame in grey, shrunk to ``width`` (area averaging; keeps the aspect ratio)."""
    h, w = frame_bgr.shape[:2]
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    if w <= width:
        return np.asarray(gray, dtype=np.uint8)
    height = max(8, round(h * width / w))
    return np.asarray(cv2.resize(gray, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def sharpness(gray: NDArray[np.uint8]) -> float:
    """Energy of the Laplacian relative to the energy of the gradient: high for crisp edges, low for blur.

    Blur removes the fine detail (Laplacian) faster than the coarse slopes (gradient). Dividing by the
    gradient energy makes the measure independent of brightness and contrast, so dimmed lights or a
    person in a dark coat do not look like a defocused lens.
    """
    g = gray.astype(np.float32)
    lap = cv2.Laplacian(g, cv2.CV_32F)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1)
    grad_energy = float(np.mean(gx * gx + gy * gy))
    return float(np.mean(lap * lap)) / max(grad_energy, 1e-6)


def edge_map(gray: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Canny edges, thresholds from the image's own median (robust to exposure)."""
    med = float(np.median(gray))
    lo, hi = max(0.0, 0.66 * med), min(255.0, 1.33 * med)
    return np.asarray(cv2.Canny(gray, lo, hi), dtype=np.uint8) > 0


def edge_overlap(
    reference: NDArray[np.bool_],
    current: NDArray[np.bool_],
    tolerance_px: int = 1,
    grid: int = 4,
    visible: NDArray[np.bool_] | None = None,
) -> float:
    """Median over a ``grid`` × ``grid`` split of the picture of the fraction of reference edge pixels
    with a current edge within ``tolerance_px`` (1.0 when the reference has no edges).

    The median over cells, not the overall fraction: people standing in front of the camera hide
    the edges of a few cells, while a moved camera changes every cell.
    """
    k = 2 * tolerance_px + 1
    grown = cv2.dilate(current.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    if visible is not None:
        reference = reference & visible  # hidden by someone in front: no evidence either way
    h, w = reference.shape
    min_edges = max(10, reference.size // (grid * grid * 200))
    fractions = []
    for i in range(grid):
        for j in range(grid):
            ys = slice(i * h // grid, (i + 1) * h // grid)
            xs = slice(j * w // grid, (j + 1) * w // grid)
            ref = reference[ys, xs]
            total = int(ref.sum())
            if total >= min_edges:  # cells of plain wall say nothing either way
                fractions.append(float((ref & grown[ys, xs]).sum()) / total)
    return float(np.median(fractions)) if fractions else 1.0


PERSON_MARGIN = 0.1
"""Each person's box is widened by this fraction of its size on every side before it is left out
(detector boxes are tight, and an arm or a shadow reaches past them)."""


def _background_mask(
    shape: tuple[int, ...], frame_width: int, people: Sequence[Box]
) -> NDArray[np.uint8] | None:
    """255 where the picture (at ``shape``, shrunk from ``frame_width``) shows background, 0 under
    ``people``; None when nobody is in it (the whole picture counts)."""
    if not people:
        return None
    scale = shape[1] / frame_width
    mask = np.full(shape[:2], 255, np.uint8)
    for x1, y1, x2, y2 in people:
        dx, dy = PERSON_MARGIN * (x2 - x1), PERSON_MARGIN * (y2 - y1)
        left, top = math.floor((x1 - dx) * scale), math.floor((y1 - dy) * scale)
        right, bottom = math.ceil((x2 + dx) * scale), math.ceil((y2 + dy) * scale)
        mask[max(0, top) : max(0, bottom), max(0, left) : max(0, right)] = 0
    return mask


@dataclass(frozen=True, slots=True)
class ViewMotion:
    """How the background moved against the reference: the largest displacement of a frame corner
    (or the centre) under the fitted similarity transform, its rotation, and the evidence behind it."""

    displacement_px: float
    angle_deg: float
    matches: int
    inliers: int
    keypoints: int


class _Features:
    """ORB keypoints of the reference and the matcher; fitted with RANSAC so people in front of the
    camera (outliers) do not bias the estimate of how the background moved."""

    def __init__(self, n_features: int) -> None:
        self._orb = cv2.ORB.create(nfeatures=n_features, fastThreshold=10)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self._ref_pts: NDArray[np.float32] | None = None
        self._ref_desc: NDArray[np.uint8] | None = None

    def set_reference(self, gray: NDArray[np.uint8], visible: NDArray[np.uint8] | None = None) -> int:
        kps, desc = self._orb.detectAndCompute(gray, visible)
        self._ref_pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        self._ref_desc = None if desc is None else np.asarray(desc, dtype=np.uint8)
        return len(kps)

    @property
    def reference_keypoints(self) -> int:
        return 0 if self._ref_pts is None else len(self._ref_pts)

    def motion(self, gray: NDArray[np.uint8], visible: NDArray[np.uint8] | None = None) -> ViewMotion:
        """How the view moved, from the keypoints where ``visible`` (a mask, 255 = background) is
        set: the people's keypoints move with them, and a crowd of them outvotes the background."""
        if self._ref_desc is None or self._ref_pts is None:
            return ViewMotion(0.0, 0.0, 0, 0, 0)
        kps, desc = self._orb.detectAndCompute(gray, visible)
        if desc is None or len(kps) < 3:
            return ViewMotion(0.0, 0.0, 0, 0, len(kps))
        matches = self._matcher.match(self._ref_desc, desc)
        if len(matches) < 3:
            return ViewMotion(0.0, 0.0, len(matches), 0, len(kps))
        src = self._ref_pts[[m.queryIdx for m in matches]]
        dst = np.array([kps[m.trainIdx].pt for m in matches], dtype=np.float32).reshape(-1, 2)
        m, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if m is None or inliers is None:
            return ViewMotion(0.0, 0.0, len(matches), 0, len(kps))
        h, w = gray.shape
        probes = np.array([[0, 0], [w, 0], [0, h], [w, h], [w / 2, h / 2]], dtype=np.float32)
        moved = probes @ m[:, :2].T + m[:, 2]
        disp = float(np.linalg.norm(moved - probes, axis=1).max())
        angle = math.degrees(math.atan2(float(m[1, 0]), float(m[0, 0])))
        return ViewMotion(disp, angle, len(matches), int(inliers.sum()), len(kps))


class TamperDetector:
    """Frame tamper checks (covered, defocused, moved) for one camera: feed every analysed frame to
    :meth:`update` with its capture time; one frame per ``check_every_s`` is checked. A lost
    stream is :class:`StreamWatch`'s job."""

    def __init__(self, camera_id: str, config: TamperConfig | None = None) -> None:
        self.camera_id = camera_id
        self.config = config or TamperConfig()
        self._states: dict[TamperKind, _Hysteresis] = {k: _Hysteresis() for k in _FRAME_KINDS}
        self._last_time: float | None = None
        self._next_check_at = -math.inf
        self._clean_check_at: float | None = None  # the last check, if it found nothing at all
        self.checks = 0
        """Frames checked (one per ``check_every_s``; the others only had their time checked)."""
        self.still_skips = 0
        """Checks left out because the picture was still and the last check found nothing."""
        self.bad_frames = 0
        """Frames rejected as unusable images (wrong type/shape); counted, never raised to the caller."""
        self.last_metrics: TamperMetrics | None = None
        self._features = _Features(self.config.orb_features)
        self.relearn()

    def relearn(self) -> None:
        """Forget the reference (after an intended camera move); the next good frames become it."""
        self._ref_count = 0
        self._ref_sum: NDArray[np.float64] | None = None
        self._ref_background_sum: NDArray[np.float64] | None = None
        self._ref_background_count: NDArray[np.float64] | None = None
        self._ref_sharp_sum = 0.0
        self._ref_gray: NDArray[np.float32] | None = None
        self._ref_edges: NDArray[np.bool_] | None = None
        self._ref_sharpness: float | None = None
        self._clean_check_at = None  # the next frame is checked, still or not: it starts the reference
        for kind in ("defocused", "moved"):
            st = self._states[kind]
            st.streak = 0

    @property
    def learned(self) -> bool:
        """Whether the reference has been learned (defocus and move checks need it)."""
        return self._ref_gray is not None

    @property
    def active(self) -> dict[TamperKind, str]:
        """States currently on, with their reason."""
        return {k: s.reason for k, s in self._states.items() if s.active}

    def _check_time(self, at: float) -> None:
        if not math.isfinite(at):
            raise TamperError(f"time {at!r} is not finite", code="bad_time", camera_id=self.camera_id)
        if self._last_time is not None and at < self._last_time:
            raise TamperError(
                f"time went backwards ({at} < {self._last_time})",
                code="time_backwards",
                camera_id=self.camera_id,
            )
        self._last_time = at

    def _due(self, at: float) -> bool:
        """Whether the frame captured at ``at`` is checked (one per ``check_every_s``)."""
        every = self.config.check_every_s
        # A fifth of the interval early still counts: capture times jitter, and a camera analysed
        # at 5 frames/s should be checked on every fifth frame, not on an irregular pattern.
        if at < self._next_check_at - every / 5:
            return False
        behind = at - self._next_check_at >= every
        self._next_check_at = at + every if behind else self._next_check_at + every
        return True

    def _unchanged(self, at: float, still: bool) -> bool:
        """Whether a check of a still frame at ``at`` can be left out: the last check found nothing
        (no state on, none on its way, every verdict clear) less than ``still_check_every_s`` ago,
        and the picture has not changed since, so this one would find the same."""
        clean_at = self._clean_check_at
        return still and clean_at is not None and at - clean_at < self.config.still_check_every_s

    def update(
        self, frame_bgr: NDArray[np.uint8], at: float, people: Sequence[Box] = (), *, still: bool = False
    ) -> list[TamperChange]:
        """Judge one frame captured at ``at`` (seconds; capture times of one camera never go back:
        an earlier one raises :class:`TamperError` ``time_backwards``). ``people``: boxes (frame
        pixels) of people detected in it, left out of the "moved" checks: walkers close to the lens
        hide the background and bring keypoints and edges of their own, and a courtyard with two
        of them crossing it otherwise looks like another view. ``still``: the motion gate saw no
        change in this frame (see ``still_check_every_s``). A garbage frame is counted in
        ``bad_frames``, logged, and otherwise ignored."""
        self._check_time(at)
        if not self._due(at):
            return []
        if self._unchanged(at, still):
            self.still_skips += 1
            return []
        self.checks += 1
        try:
            frame = as_bgr_frame(frame_bgr)
        except InvalidImageError as err:
            self.bad_frames += 1
            log.warning("camera %s: tamper check skipped a bad frame: %s", self.camera_id, err)
            return []
        cfg = self.config
        changes: list[TamperChange] = []
        gray = grey_small(frame, cfg.analysis_width)
        mean, std = float(gray.mean()), float(gray.std())
        sharp = sharpness(gray)

        covered = std < cfg.uniform_std_max or (mean < cfg.dark_mean_max and std < cfg.dark_std_max)
        covered_reason = (
            f"picture nearly uniform (brightness {mean:.0f}, contrast {std:.1f}): lens covered or no light"
        )
        changes += self._step("covered", covered, covered_reason, at)

        shift_px: float | None = None
        angle: float | None = None
        inliers: int | None = None
        overlap: float | None = None
        defocused = moved = False
        judged = False  # covered or still learning: no evidence either way, states are held
        defocus_reason = moved_reason = ""
        visible = _background_mask(gray.shape, frame.shape[1], people)
        if not covered and self._ref_gray is None:
            self._learn(gray, sharp, visible)
        elif not covered and self._ref_gray is not None and self._ref_sharpness is not None:
            if gray.shape != self._ref_gray.shape:
                # Resolution changed (camera reconfigured): a new view, judged from scratch.
                log.info("camera %s: frame size changed, relearning the tamper reference", self.camera_id)
                self.relearn()
                self._learn(gray, sharp, visible)
            else:
                judged = True
                ref_sharp = self._ref_sharpness
                defocused = sharp < cfg.defocus_ratio * ref_sharp
                rel = sharp / max(ref_sharp, 1e-9)
                defocus_reason = f"sharpness {sharp:.3f} is {rel:.0%} of the usual {ref_sharp:.3f}"
                motion = self._features.motion(gray, visible)
                shift_px, angle, inliers = motion.displacement_px, motion.angle_deg, motion.inliers
                width = gray.shape[1]
                trusted = motion.inliers >= cfg.min_inliers
                shifted = trusted and shift_px > cfg.moved_shift_frac * width
                overlap = (
                    edge_overlap(
                        self._ref_edges,
                        edge_map(gray),
                        visible=None if visible is None else visible > 0,
                    )
                    if self._ref_edges is not None
                    else 1.0
                )
                # Without a trusted match: a picture full of features of which almost none match the
                # reference is another view; in a plain scene (few features) the edges tell. A blurred
                # picture loses both, so neither is used while it is defocused. But a few matches
                # that agree on an unmoved view, with the edges in place, are the same view partly
                # hidden (people in front of the camera): chance matches of another view agree on
                # no motion at all.
                plenty = 3 * cfg.min_inliers
                lost_edges = overlap < cfg.edge_overlap_min
                held = (
                    motion.inliers >= cfg.min_inliers // 2
                    and shift_px <= cfg.moved_shift_frac * width
                    and not lost_edges
                )
                unrecognised = (
                    motion.keypoints >= plenty and self._features.reference_keypoints >= plenty and not held
                )
                moved = shifted or (not trusted and not defocused and (unrecognised or lost_edges))
                if shifted:
                    moved_reason = (
                        f"view moved by {shift_px / width:.0%} of the width (rotation {angle:+.1f}°, "
                        f"{motion.inliers} matching points)"
                    )
                elif unrecognised:
                    moved_reason = (
                        f"view not recognised: {motion.inliers} of {motion.keypoints} points "
                        "match the reference"
                    )
                else:
                    moved_reason = f"only {overlap:.0%} of the reference edges are still in place"
                if not (defocused or moved or any(s.active for s in self._states.values())):
                    # Follow slow lighting changes, but only while everything looks right.
                    a = cfg.sharpness_adapt
                    self._ref_sharpness = (1 - a) * ref_sharp + a * sharp
        if judged:
            changes += self._step("defocused", defocused, defocus_reason, at)
            changes += self._step("moved", moved, moved_reason, at)
        quiet = not any(s.active or s.streak for s in self._states.values())
        self._clean_check_at = at if judged and quiet and not (covered or defocused or moved) else None
        self.last_metrics = TamperMetrics(
            mean, std, sharp, self._ref_sharpness, shift_px, angle, inliers, overlap
        )
        return changes

    def _learn(self, gray: NDArray[np.uint8], sharp: float, visible: NDArray[np.uint8] | None) -> None:
        """Fold one good frame into the reference. The people in it are left out: the reference is
        the background wherever any learning frame showed it (walkers averaged in would leave ghosts
        whose keypoints and edges no later frame has), and the picture's plain mean where none did."""
        g = gray.astype(np.float64)
        seen = np.ones(g.shape) if visible is None else (visible > 0).astype(np.float64)
        if self._ref_sum is None or self._ref_background_sum is None or self._ref_background_count is None:
            self._ref_sum, self._ref_background_sum, self._ref_background_count = g, g * seen, seen
        else:
            self._ref_sum = self._ref_sum + g
            self._ref_background_sum = self._ref_background_sum + g * seen
            self._ref_background_count = self._ref_background_count + seen
        self._ref_sharp_sum += sharp
        self._ref_count += 1
        if self._ref_count >= self.config.reference_frames:
            shown = self._ref_background_count > 0
            mean_gray = np.where(
                shown,
                self._ref_background_sum / np.maximum(self._ref_background_count, 1.0),
                self._ref_sum / self._ref_count,
            )
            reference = np.clip(mean_gray, 0, 255).astype(np.uint8)
            self._ref_gray = mean_gray.astype(np.float32)
            self._ref_edges = edge_map(reference) & shown
            self._ref_sharpness = self._ref_sharp_sum / self._ref_count
            self._features.set_reference(reference, None if shown.all() else shown.astype(np.uint8) * 255)
            self._ref_sum = self._ref_background_sum = self._ref_background_count = None
            log.info(
                "camera %s: tamper reference learned (sharpness %.3f)", self.camera_id, self._ref_sharpness
            )

    def _step(self, kind: TamperKind, raw: bool, reason: str, at: float) -> list[TamperChange]:
        st = self._states[kind]
        if not st.step(raw, reason, self.config.trigger_frames, self.config.clear_frames):
            return []
        msg = st.reason if st.active else f"{kind} cleared"
        log.warning("camera %s: tamper %s %s: %s", self.camera_id, kind, "ON" if st.active else "off", msg)
        return [TamperChange(kind, st.active, msg, at)]


class StreamWatch:
    """Whether one camera's frames still arrive: ``stream_lost`` when none was captured for
    ``timeout_s``, cleared by the next frame.

    Its state is its own and is never the clock frames are judged by: :meth:`check` may run at any
    time, before or after frames it has not been told about, and a check that lands between a
    frame's capture and its :meth:`seen` changes nothing for that frame.
    """

    def __init__(self, camera_id: str, timeout_s: float) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise TamperError(
                f"stream timeout {timeout_s!r} is not a positive time", code="bad_config", camera_id=camera_id
            )
        self.camera_id = camera_id
        self.timeout_s = timeout_s
        self._last_frame_at: float | None = None
        self._lost = False
        self.reason = ""

    @property
    def lost(self) -> bool:
        """Whether the stream is reported lost now."""
        return self._lost

    @property
    def last_frame_at(self) -> float | None:
        """Capture time of the newest frame seen (None before the first)."""
        return self._last_frame_at

    def seen(self, at: float) -> list[TamperChange]:
        """A frame captured at ``at`` arrived: the stream is alive (an older capture time than one
        already seen is a late frame, alive all the same, and never moves the watch back)."""
        if not math.isfinite(at):
            return []
        if self._last_frame_at is None or at > self._last_frame_at:
            self._last_frame_at = at
        if not self._lost:
            return []
        self._lost = False
        self.reason = ""
        log.info("camera %s: tamper stream_lost off: frames arrive again", self.camera_id)
        return [TamperChange("stream_lost", False, "frames arrive again", at)]

    def check(self, now: float) -> list[TamperChange]:
        """At ``now`` (the clock of the capture times): report the stream lost once when no frame
        came for ``timeout_s``. Before the first frame there is nothing to lose (the camera driver
        reports the camera offline)."""
        if self._lost or self._last_frame_at is None or not math.isfinite(now):
            return []
        silent = now - self._last_frame_at
        if silent < self.timeout_s:
            return []
        self._lost = True
        self.reason = f"no frame for {silent:.1f} s"
        log.warning("camera %s: tamper stream_lost ON: %s", self.camera_id, self.reason)
        return [TamperChange("stream_lost", True, self.reason, now)]

"""Multi-object tracking with stable ids: detections of one frame in, tracks with history out.

A small SORT-like tracker without a Kalman filter: every track keeps a constant-velocity estimate of
its box, detections are associated to the predicted boxes by a score that mixes IoU and centre
distance (so a person walking fast or reappearing after a short occlusion, when the boxes no longer
overlap, is still matched), and assignment is greedy on that score (best pair first). With the
handful of people a school camera sees, greedy gives the same answer as an optimal assignment in
all but contrived cases, and needs no scipy.

Track life: a new track is *tentative* until it has been matched ``min_hits`` frames in a row; then
*confirmed*; a confirmed track that misses detections is *lost* (kept, predicted forward, and
revived with the same id when matched again) until it has not been seen for ``max_lost_s`` seconds,
and then removed. Time comes from the caller (frame timestamps), never from the clock, so the tracker
is a pure function of its input sequence.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from vision.config import Box, TrackerConfig
from vision.errors import VisionError

log = logging.getLogger(__name__)


class TrackingError(VisionError):
    """Misuse of the tracker (time going backwards)."""

    def __init__(self, message: str, *, code: str = "tracking_error") -> None:
        super().__init__(message, code=code)


class BoxLike(Protocol):
    """Anything with a box and a score, e.g. :class:`vision.person.PersonDetection`."""

    @property
    def box(self) -> Box: ...

    @property
    def score(self) -> float: ...


class TrackState(StrEnum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Track:
    """A snapshot of one track after an update. ``history`` holds ``(at, x, y)`` bottom-centre points."""

    track_id: int
    state: TrackState
    box: Box
    score: float
    first_seen: float
    last_seen: float
    hits: int
    history: tuple[tuple[float, float, float], ...]

    @property
    def bottom_centre(self) -> tuple[float, float]:
        x1, _, x2, y2 = self.box
        return ((x1 + x2) / 2.0, y2)

    @property
    def seen_for_s(self) -> float:
        """Seconds from first to last sighting (dwell of the track, across its short gaps)."""
        return self.last_seen - self.first_seen


@dataclass(frozen=True, slots=True)
class TrackerUpdate:
    """Result of one :meth:`Tracker.update`.

    ``visible``: confirmed tracks matched in this frame (what rules should judge); ``tracks``: every
    live track including tentative and lost ones; ``removed``: tracks dropped in this update (their
    ids never come back).
    """

    visible: list[Track]
    tracks: list[Track]
    removed: list[Track]


@dataclass(slots=True)
class _State:
    track_id: int
    box: NDArray[np.float64]
    score: float
    first_seen: float
    last_seen: float
    state: TrackState = TrackState.TENTATIVE
    hits: int = 1
    streak: int = 1
    velocity: NDArray[np.float64] = field(default_factory=lambda: np.zeros(4))
    history: deque[tuple[float, float, float]] = field(default_factory=deque)

    def predicted(self, at: float, horizon_s: float) -> NDArray[np.float64]:
        # Capped horizon: a long-lost track should not be extrapolated across the whole picture.
        dt = min(max(at - self.last_seen, 0.0), horizon_s)
        out: NDArray[np.float64] = self.box + self.velocity * dt
        return out

    def snapshot(self) -> Track:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return Track(
            track_id=self.track_id,
            state=self.state,
            box=(x1, y1, x2, y2),
            score=self.score,
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            hits=self.hits,
            history=tuple(self.history),
        )


def iou_matrix(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4) as an (N, M) array."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out: NDArray[np.float64] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def greedy_assign(score: NDArray[np.float64]) -> list[tuple[int, int]]:
    """Pairs (row, col) taken best score first; entries that are -inf or NaN are never taken."""
    if score.size == 0:
        return []
    rows, cols = np.nonzero(np.isfinite(score))
    order = np.argsort(-score[rows, cols], kind="stable")
    used_r: set[int] = set()
    used_c: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class Tracker:
    """Assigns stable ids to per-frame detections of one camera. Not thread-safe: one per camera."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_State] = []
        self._next_id = 1
        self._last_at: float | None = None
        self.dropped_detections = 0
        """Detections ignored because their box was not finite or had no area (counted, logged)."""

    def update(self, detections: Sequence[BoxLike], at: float) -> TrackerUpdate:
        """Feed the detections of the frame taken at ``at`` (seconds, any monotonic origin)."""
        if not math.isfinite(at):
            raise TrackingError(f"frame time {at!r} is not finite", code="bad_time")
        if self._last_at is not None and at < self._last_at:
            raise TrackingError(f"frame time went backwards ({at} < {self._last_at})", code="time_backwards")
        self._last_at = at
        cfg = self.config

        boxes: list[NDArray[np.float64]] = []
        scores: list[float] = []
        for det in detections:
            box = np.asarray(det.box, dtype=np.float64)
            if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
                self.dropped_detections += 1
                log.warning("tracker: dropped a detection with an unusable box %r", det.box)
                continue
            boxes.append(box)
            scores.append(float(det.score))
        det_boxes = np.stack(boxes) if boxes else np.zeros((0, 4))

        unmatched = set(range(len(boxes)))
        matched_tracks: set[int] = set()
        # Established tracks choose first, so a new tentative track cannot steal their person.
        established = [i for i, t in enumerate(self._tracks) if t.state is not TrackState.TENTATIVE]
        tentative = [i for i, t in enumerate(self._tracks) if t.state is TrackState.TENTATIVE]
        for group in (established, tentative):
            cols = sorted(unmatched)
            if not group or not cols:
                continue
            sim = self._similarity([self._tracks[i] for i in group], det_boxes[cols], at)
            for r, c in greedy_assign(sim):
                ti, di = group[r], cols[c]
                self._apply_match(self._tracks[ti], det_boxes[di], scores[di], at)
                matched_tracks.add(ti)
                unmatched.discard(di)

        removed: list[Track] = []
        survivors: list[_State] = []
        for i, t in enumerate(self._tracks):
            if i in matched_tracks:
                survivors.append(t)
                continue
            t.streak = 0
            if t.state is TrackState.TENTATIVE:
                # Seen too briefly to be trusted: a flicker, not a person worth keeping.
                removed.append(t.snapshot())
                continue
            t.state = TrackState.LOST
            if at - t.last_seen > cfg.max_lost_s:
                removed.append(t.snapshot())
                continue
            survivors.append(t)

        for di in sorted(unmatched):
            survivors.append(self._new_track(det_boxes[di], scores[di], at))
        self._tracks = survivors

        snapshots = [t.snapshot() for t in survivors]
        visible = [s for s in snapshots if s.state is TrackState.CONFIRMED and s.last_seen == at]
        return TrackerUpdate(visible=visible, tracks=snapshots, removed=removed)

    def _similarity(self, tracks: list[_State], dets: NDArray[np.float64], at: float) -> NDArray[np.float64]:
        cfg = self.config
        pred = np.stack([t.predicted(at, cfg.max_lost_s) for t in tracks])
        iou = iou_matrix(pred, dets)
        pc = (pred[:, :2] + pred[:, 2:]) / 2.0
        dc = (dets[:, :2] + dets[:, 2:]) / 2.0
        dist = np.linalg.norm(pc[:, None, :] - dc[None, :, :], axis=2)
        p_h = np.maximum(pred[:, 3] - pred[:, 1], 1.0)
        d_h = np.maximum(dets[:, 3] - dets[:, 1], 1.0)
        # Lost tracks get a wider search radius: the longer unseen, the less sure the prediction.
        lost_for = np.array([max(at - t.last_seen, 0.0) for t in tracks])
        radius = cfg.max_centre_distance * (1.0 + np.minimum(lost_for / cfg.max_lost_s, 1.0))
        norm_dist = dist / p_h[:, None]
        closeness = np.clip(1.0 - norm_dist / radius[:, None], 0.0, 1.0)
        ratio = d_h[None, :] / p_h[:, None]
        ok_size = (ratio <= cfg.max_size_ratio) & (ratio >= 1.0 / cfg.max_size_ratio)
        ok = ok_size & ((iou >= cfg.min_iou) | (norm_dist <= radius[:, None])) & ((iou > 0) | (closeness > 0))
        sim = cfg.iou_weight * iou + (1.0 - cfg.iou_weight) * closeness
        out: NDArray[np.float64] = np.where(ok, sim, -np.inf)
        return out

    def _apply_match(self, t: _State, box: NDArray[np.float64], score: float, at: float) -> None:
        dt = at - t.last_seen
        if dt > 0:
            a = self.config.velocity_smoothing
            t.velocity = a * (box - t.box) / dt + (1.0 - a) * t.velocity
        t.box = box
        t.score = score
        t.last_seen = at
        t.hits += 1
        t.streak += 1
        if t.state is TrackState.LOST or (
            t.state is TrackState.TENTATIVE and t.streak >= self.config.min_hits
        ):
            t.state = TrackState.CONFIRMED
        self._push_history(t, at)

    def _new_track(self, box: NDArray[np.float64], score: float, at: float) -> _State:
        t = _State(
            track_id=self._next_id,
            box=box,
            score=score,
            first_seen=at,
            last_seen=at,
            history=deque(maxlen=self.config.history_len),
        )
        self._next_id += 1
        if self.config.min_hits <= 1:
            t.state = TrackState.CONFIRMED
        self._push_history(t, at)
        return t

    @staticmethod
    def _push_history(t: _State, at: float) -> None:
        t.history.append((at, float(t.box[0] + t.box[2]) / 2.0, float(t.box[3])))

    def reset(self) -> list[Track]:
        """End every track (e.g. the camera changed resolution) and return them. Ids keep counting
        up, so an ended track's id is never given to another person."""
        ended = [t.snapshot() for t in self._tracks]
        self._tracks = []
        return ended

    @property
    def tracks(self) -> list[Track]:
        """Snapshots of every live track."""
        return [t.snapshot() for t in self._tracks]

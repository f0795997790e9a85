"""Identity over time: faces tracked across frames by IoU (or, when a face moved further than its
own width, by the person it matched), identity decided by weighted voting.

A single frame never decides who someone is. Each matched observation votes for its person (or for
"unknown") with a weight that grows with face size, sharpness and frontality (the quality score);
faces that failed the quality gate do not vote at all. So one blurry frame neither adds a person nor
takes one away. A track emits its confirmed identity once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vision.config import FaceTrackerConfig
from vision.face_detect import iou_matrix
from vision.face_pipeline import FaceObservation

UNKNOWN = ""  # vote key of "matched nobody"; person ids are never empty (Gallery refuses them)


@dataclass(frozen=True, slots=True)
class IdentityDecision:
    """A track's confirmed identity. A named identity is emitted at most once per track.

    ``person_id`` None means the track was confirmed as unknown (a stranger; also at most once per
    track, and a later named decision on the same track can still follow). ``distance`` is the
    smallest distance among the winning votes, ``weight``/``share`` the vote that decided.
    """

    track_id: int
    person_id: str | None
    distance: float
    weight: float
    share: float
    votes: int
    box: tuple[float, float, float, float]
    model_id: str
    timestamp: float


@dataclass
class FaceTrack:
    """One face followed across frames."""

    track_id: int
    box: tuple[float, float, float, float]
    first_seen: float
    last_seen: float
    model_id: str = ""
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels per second
    frames: int = 0
    votes: int = 0
    weights: dict[str, float] = field(default_factory=dict)
    best_distance: dict[str, float] = field(default_factory=dict)
    decided: bool = False
    named: str | None = None
    """The person this track was confirmed as (set with ``decided``)."""
    verified_at: float = 0.0
    """When a face of this track last matched ``named`` in the gallery (or was confirmed)."""
    stranger_reported: bool = False
    decision: IdentityDecision | None = None

    def predicted_box(self, timestamp: float) -> tuple[float, float, float, float]:
        """Where the box should be now if the face kept its speed (constant-velocity guess)."""
        dt = timestamp - self.last_seen
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)

    def observe(self, box: tuple[float, float, float, float], timestamp: float) -> None:
        dt = timestamp - self.last_seen
        if dt > 0:
            vx = ((box[0] + box[2]) - (self.box[0] + self.box[2])) / 2 / dt
            vy = ((box[1] + box[3]) - (self.box[1] + self.box[3])) / 2 / dt
            # Smoothed, because single detections jitter by a few pixels.
            self.velocity = (0.5 * self.velocity[0] + 0.5 * vx, 0.5 * self.velocity[1] + 0.5 * vy)
        self.box = box
        self.last_seen = timestamp
        self.frames += 1

    def vote(self, obs: FaceObservation) -> None:
        if not obs.matched or obs.distance is None:
            return  # failed the quality gate: seen, but no say in who it is
        key = obs.person_id or UNKNOWN
        self.votes += 1
        self.model_id = obs.model_id
        self.weights[key] = self.weights.get(key, 0.0) + obs.quality.score
        self.best_distance[key] = min(self.best_distance.get(key, float("inf")), obs.distance)

    def leader(self) -> tuple[str, float, float] | None:
        """(key, weight, share) of the leading vote, or None before any vote."""
        if not self.weights:
            return None
        total = sum(self.weights.values())
        key, weight = max(self.weights.items(), key=lambda kv: kv[1])
        return key, weight, (weight / total if total > 0 else 0.0)


class FaceTracker:
    """Tracks of one camera. Feed it every analysed frame's observations, in time order."""

    def __init__(self, config: FaceTrackerConfig | None = None) -> None:
        self.config = config or FaceTrackerConfig()
        self._tracks: list[FaceTrack] = []
        self._ids = itertools.count(1)
        self._last_named: dict[str, float] = {}

    @property
    def tracks(self) -> list[FaceTrack]:
        return list(self._tracks)

    def reverify(self) -> None:
        """Carry no identity until it is matched again: the gallery changed (an enrolment, a
        withdrawn consent, an erasure), and what a track was confirmed as may no longer be."""
        for track in self._tracks:
            track.verified_at = float("-inf")

    def carried(
        self, boxes: Sequence[tuple[float, float, float, float]], timestamp: float
    ) -> list[str | None]:
        """Per face box of the frame at ``timestamp`` (before :meth:`update` with it), the person
        whose confirmed track it plainly continues, else None: its IoU with the track's predicted box
        is at least ``carry_iou``, no other face overlaps that track and no other track that face,
        and the track's identity was matched in the gallery less than ``reverify_s`` ago. Such a
        face need not be embedded: its identity is already decided, and its observation keeps the
        track alive."""
        cfg = self.config
        out: list[str | None] = [None] * len(boxes)
        tracks = [t for t in self._tracks if timestamp - t.last_seen <= cfg.max_age_s]
        if not boxes or cfg.reverify_s <= 0 or not any(t.named for t in tracks):
            return out
        a = np.array([t.predicted_box(timestamp) for t in tracks], dtype=np.float32)
        iou = iou_matrix(a, np.array(boxes, dtype=np.float32))
        overlapping = iou >= cfg.iou_threshold
        for fi in range(len(boxes)):
            ti = int(iou[:, fi].argmax())
            track = tracks[ti]
            if (
                track.named is not None
                and iou[ti, fi] >= cfg.carry_iou
                and overlapping[:, fi].sum() == 1
                and overlapping[ti, :].sum() == 1
                and timestamp - track.verified_at < cfg.reverify_s
            ):
                out[fi] = track.named
        return out

    def _associate(self, faces: Sequence[FaceObservation], timestamp: float) -> list[tuple[int, int]]:
        """Greedy one-to-one pairs (track index, face index), highest IoU with the predicted box first.

        Except where the overlap and the identity disagree: a face matched to a person whose best
        overlap is a track not led by that person (led by someone else, by "unknown", or by no vote yet)
        goes to a track of its own person within ``identity_reach`` when there is one. Two people
        walking one behind the other, seen at 2 frames/s, each move more than a face width between two
        frames: the one behind lands on the box of the one ahead, and by overlap alone their votes would
        be mixed on one track and scattered on new ones, so neither would ever be decided."""
        if not self._tracks or not faces:
            return []
        a = np.array([t.predicted_box(timestamp) for t in self._tracks], dtype=np.float32)
        b = np.array([f.box for f in faces], dtype=np.float32)
        iou = iou_matrix(a, b)
        used_t: set[int] = set()
        used_f: set[int] = set()
        pairs = self._associate_by_identity(faces, used_t, used_f, only=self._contested(faces, iou))
        for flat in np.argsort(-iou, axis=None):
            ti, fi = divmod(int(flat), len(faces))
            if iou[ti, fi] < self.config.iou_threshold:
                break
            if ti in used_t or fi in used_f:
                continue
            used_t.add(ti)
            used_f.add(fi)
            pairs.append((ti, fi))
        return pairs + self._associate_by_identity(faces, used_t, used_f)

    def _contested(self, faces: Sequence[FaceObservation], iou: np.ndarray) -> set[int]:
        """The faces matched to a person whose best-overlapping track is not led by that person
        (another vote leads it, or none yet: a face seen there that failed the quality gate)."""
        out = set()
        for fi, face in enumerate(faces):
            if not face.matched or face.person_id is None or iou[:, fi].max() < self.config.iou_threshold:
                continue
            lead = self._tracks[int(iou[:, fi].argmax())].leader()
            if lead is None or lead[0] != face.person_id:
                out.add(fi)
        return out

    def _associate_by_identity(
        self,
        faces: Sequence[FaceObservation],
        used_t: set[int],
        used_f: set[int],
        only: set[int] | None = None,
    ) -> list[tuple[int, int]]:
        """Pairs of a face not yet paired (of ``only``, when given) with the nearest free track
        whose leading vote is the person the face was matched to, within ``identity_reach`` face
        widths. The face still only votes: it joins the votes of its own person, it never decides
        alone."""
        reach = self.config.identity_reach
        pairs: list[tuple[int, int]] = []
        if reach <= 0:
            return pairs
        for fi, face in enumerate(faces):
            if fi in used_f or not face.matched or face.person_id is None:
                continue
            if only is not None and fi not in only:
                continue
            width = max(face.box[2] - face.box[0], 1.0)
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            best: tuple[float, int] | None = None
            for ti, track in enumerate(self._tracks):
                lead = track.leader()
                if ti in used_t or lead is None or lead[0] != face.person_id:
                    continue
                tx, ty = (track.box[0] + track.box[2]) / 2, (track.box[1] + track.box[3]) / 2
                gap = float(np.hypot(cx - tx, cy - ty)) / width
                if gap <= reach and (best is None or gap < best[0]):
                    best = (gap, ti)
            if best is not None:
                used_t.add(best[1])
                used_f.add(fi)
                pairs.append((best[1], fi))
        return pairs

    def update(self, faces: Sequence[FaceObservation], timestamp: float) -> list[IdentityDecision]:
        """Fold one frame's faces into the tracks; return identities confirmed by this frame."""
        cfg = self.config
        self._tracks = [t for t in self._tracks if timestamp - t.last_seen <= cfg.max_age_s]
        self._last_named = {p: t for p, t in self._last_named.items() if timestamp - t < cfg.repeat_window_s}
        pairs = self._associate(faces, timestamp)
        matched_faces = {fi for _, fi in pairs}
        for ti, fi in pairs:
            track, face = self._tracks[ti], faces[fi]
            track.observe(face.box, timestamp)
            track.vote(face)
            if track.named is not None and face.distance is not None and face.person_id == track.named:
                track.verified_at = timestamp  # matched in the gallery as what it was confirmed as
        for fi, face in enumerate(faces):
            if fi in matched_faces:
                continue
            track = FaceTrack(next(self._ids), face.box, timestamp, timestamp, frames=1)
            track.vote(face)
            self._tracks.append(track)
        decided = []
        for track in self._tracks:
            if track.decided or track.votes < cfg.min_votes:
                continue
            lead = track.leader()
            if lead is None:
                continue
            key, weight, share = lead
            if weight < cfg.min_weight or share < cfg.min_share:
                continue
            if key == UNKNOWN and track.stranger_reported:
                continue
            decision = IdentityDecision(
                track_id=track.track_id,
                person_id=key or None,
                distance=track.best_distance[key],
                weight=weight,
                share=share,
                votes=track.votes,
                box=track.box,
                model_id=track.model_id,
                timestamp=timestamp,
            )
            # A named decision is final. An unknown one is reported once but voting goes on, so a
            # student first seen from a bad angle can still be recognised later on the same track.
            if key == UNKNOWN:
                track.stranger_reported = True
            else:
                track.decided = True
                track.named, track.verified_at = key, timestamp
                last = self._last_named.get(key)
                self._last_named[key] = timestamp
                if last is not None and timestamp - last < cfg.repeat_window_s:
                    continue
            track.decision = decision
            decided.append(decision)
        return decided

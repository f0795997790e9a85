"""Zone geometry per camera: polygon zones and directed lines, judged on the bottom-centre of a box.

The configuration models (:mod:`vision.config`, re-exported here) validate at load time (a polygon
that crosses itself, fewer than three points, a zero-length line: clear errors) with the pure
geometry functions that live beside them and are re-exported here too. :class:`ZoneJudge`
adds the state over frames: a tracked point must stay inside a zone for ``inertia_frames`` frames
before it counts as in (and outside as long before it counts as out), and one physical crossing of a
line gives exactly one :class:`LineCrossing`, however much the point jitters on the line.

Coordinates are image pixels (x right, y down) unless a zone says ``coords: normalized`` (0..1 of the
frame width/height); :func:`in_pixels` resolves them for one frame size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from vision.config import (
    Box,
    CameraZones,
    LineZone,
    Point,
    PolygonZone,
    bottom_centre,
    point_in_polygon,
    polygon_area,
    polygon_problem,
    segments_intersect,
    side_of_line,
)
from vision.errors import ZoneConfigError


def points_in_polygon(points: NDArray[np.float64], polygon: Sequence[Point]) -> NDArray[np.bool_]:
    """Vectorised :func:`point_in_polygon` for an ``(N, 2)`` array (edge points not special-cased)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64)
    x = pts[:, 0][:, None]
    y = pts[:, 1][:, None]
    ax, ay = poly[:, 0][None, :], poly[:, 1][None, :]
    bx, by = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    straddles = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at_y = ax + (y - ay) * (bx - ax) / (by - ay)
    hits = straddles & (x < x_at_y)
    result: NDArray[np.bool_] = (np.count_nonzero(hits, axis=1) % 2) == 1
    return result


def in_pixels(zones: CameraZones, width: int, height: int) -> CameraZones:
    """The same zones with every coordinate in pixels of a ``width`` × ``height`` frame (normalized
    zones scaled to it, pixel zones scaled from their ``reference_size`` when they have one)."""
    if width <= 0 or height <= 0:
        raise ZoneConfigError(f"frame size {width}x{height} is not positive", code="bad_frame_size")
    sx, sy = (1.0, 1.0)
    if zones.reference_size is not None:
        sx, sy = width / zones.reference_size[0], height / zones.reference_size[1]

    def scale(p: Point, normalized: bool) -> Point:
        return (p[0] * width, p[1] * height) if normalized else (p[0] * sx, p[1] * sy)

    polygons = [
        z.model_copy(
            update={"points": [scale(p, z.coords == "normalized") for p in z.points], "coords": "pixel"}
        )
        for z in zones.zones
    ]
    lines = [
        ln.model_copy(
            update={
                "start": scale(ln.start, ln.coords == "normalized"),
                "end": scale(ln.end, ln.coords == "normalized"),
                "coords": "pixel",
            }
        )
        for ln in zones.lines
    ]
    # No reference size on the result: its coordinates are this frame's pixels, used as they are.
    return CameraZones(camera_id=zones.camera_id, zones=polygons, lines=lines)


@dataclass(frozen=True, slots=True)
class ZoneEntered:
    """Track ``track_id`` has been inside ``zone_id`` for the zone's inertia; ``at`` is that frame's time."""

    camera_id: str
    zone_id: str
    track_id: int
    at: float
    point: Point


@dataclass(frozen=True, slots=True)
class ZoneLeft:
    """Track ``track_id`` is out of ``zone_id`` (or gone); ``dwell_s`` is how long it was counted in."""

    camera_id: str
    zone_id: str
    track_id: int
    at: float
    dwell_s: float
    reason: Literal["left", "track_lost"]


@dataclass(frozen=True, slots=True)
class LineCrossing:
    """One crossing of ``line_id``; ``direction`` is +1 for A→B and -1 for B→A, ``label`` its name."""

    camera_id: str
    line_id: str
    track_id: int
    at: float
    direction: int
    label: str


ZoneObservation = ZoneEntered | ZoneLeft | LineCrossing


@dataclass(slots=True)
class _Membership:
    inside: bool = False
    streak: int = 0  # consecutive frames disagreeing with ``inside``
    entered_at: float = 0.0


@dataclass(slots=True)
class _LineState:
    side: int = 0  # committed side, 0 = not known yet
    candidate: int = 0
    streak: int = 0
    crossed_segment: bool = False  # the move onto the candidate side passed through the finite line
    last_point: Point | None = None


@dataclass(slots=True)
class _TrackZoneState:
    zones: dict[str, _Membership] = field(default_factory=dict)
    lines: dict[str, _LineState] = field(default_factory=dict)


class ZoneJudge:
    """Stateful zone and line judgement for one camera, fed one frame of track points at a time.

    ``zones`` must be in pixels already (see :func:`in_pixels`) or in the same units as
    the points given to :meth:`update`.
    """

    def __init__(self, zones: CameraZones) -> None:
        if any(z.coords == "normalized" for z in zones.zones) or any(
            ln.coords == "normalized" for ln in zones.lines
        ):
            raise ZoneConfigError(
                f"camera {zones.camera_id!r}: resolve normalized zones with in_pixels() first",
                code="zone_not_resolved",
                camera_id=zones.camera_id,
            )
        self.config = zones
        self._tracks: dict[int, _TrackZoneState] = {}

    def reconfigure(self, zones: CameraZones) -> None:
        """Judge by ``zones`` from now on (an operator redrew them), keeping each track's state in
        every zone and line that keeps its id: someone standing in a zone that was only reshaped is
        not reported entering it again (the new shape decides from the next frame, with the usual
        inertia), and a line's committed side is corrected without a crossing by the next frames
        when the line moved, as it is for a point that changes side round a line's end. A new zone
        starts empty (whoever stands in it enters it); a removed zone or line is forgotten without
        events (no rule can name it: the configuration is checked first)."""
        checked = ZoneJudge(zones)  # the same checks as a new judge: pixels only
        kept = {z.id for z in checked.config.zones} | {ln.id for ln in checked.config.lines}
        for state in self._tracks.values():
            state.zones = {zid: m for zid, m in state.zones.items() if zid in kept}
            state.lines = {lid: ls for lid, ls in state.lines.items() if lid in kept}
        self.config = checked.config

    def update(self, points: Mapping[int, Point], at: float) -> list[ZoneObservation]:
        """Judge the bottom-centre ``points`` of this frame's visible tracks (track id → point).

        Tracks missing from ``points`` keep their state (a short occlusion is not an exit); call
        :meth:`forget` when the tracker drops a track.
        """
        out: list[ZoneObservation] = []
        cam = self.config.camera_id
        for track_id, point in points.items():
            if not (math.isfinite(point[0]) and math.isfinite(point[1])):
                raise ZoneConfigError(
                    f"track {track_id}: point {point} is not finite", code="bad_point", camera_id=cam
                )
            state = self._tracks.setdefault(track_id, _TrackZoneState())
            for zone in self.config.zones:
                m = state.zones.setdefault(zone.id, _Membership())
                now_in = point_in_polygon(point, zone.points)
                if now_in == m.inside:
                    m.streak = 0
                    continue
                m.streak += 1
                if m.streak < zone.inertia_frames:
                    continue
                m.inside = now_in
                m.streak = 0
                if now_in:
                    m.entered_at = at
                    out.append(ZoneEntered(cam, zone.id, track_id, at, point))
                else:
                    out.append(ZoneLeft(cam, zone.id, track_id, at, at - m.entered_at, "left"))
            for line in self.config.lines:
                crossing = self._judge_line(state.lines.setdefault(line.id, _LineState()), line, point)
                if crossing:
                    label = line.label_a_to_b if crossing > 0 else line.label_b_to_a
                    out.append(LineCrossing(cam, line.id, track_id, at, crossing, label))
        return out

    @staticmethod
    def _judge_line(ls: _LineState, line: LineZone, point: Point) -> int:
        side = side_of_line(point, line.start, line.end)
        prev = ls.last_point
        ls.last_point = point
        if side == 0:
            # On the line itself: no evidence either way; wait for the next frame.
            return 0
        if ls.side == 0:
            ls.side = side
            return 0
        if side == ls.side:
            ls.candidate = 0
            ls.streak = 0
            ls.crossed_segment = False
            return 0
        if side != ls.candidate:
            ls.candidate = side
            ls.streak = 0
            ls.crossed_segment = False
        ls.streak += 1
        if prev is not None and segments_intersect(prev, point, line.start, line.end):
            ls.crossed_segment = True
        if ls.streak < line.inertia_frames:
            return 0
        crossed = ls.crossed_segment
        ls.side = side
        ls.candidate = 0
        ls.streak = 0
        ls.crossed_segment = False
        # Changing side round the end of the line (not through it) is not a crossing.
        return side if crossed else 0

    def forget(self, track_id: int, at: float) -> list[ZoneLeft]:
        """Drop a track the tracker removed; it leaves every zone it was counted in."""
        state = self._tracks.pop(track_id, None)
        if state is None:
            return []
        cam = self.config.camera_id
        return [
            ZoneLeft(cam, zone_id, track_id, at, at - m.entered_at, "track_lost")
            for zone_id, m in state.zones.items()
            if m.inside
        ]

    def occupants(self, zone_id: str) -> dict[int, float]:
        """Tracks counted inside ``zone_id`` now, with the time each was counted in."""
        return {
            tid: st.zones[zone_id].entered_at
            for tid, st in self._tracks.items()
            if zone_id in st.zones and st.zones[zone_id].inside
        }

    def is_inside(self, track_id: int, zone_id: str) -> bool:
        """Whether the track is counted inside the zone (after inertia)."""
        st = self._tracks.get(track_id)
        return bool(st and zone_id in st.zones and st.zones[zone_id].inside)


__all__ = [
    "Box",
    "CameraZones",
    "LineCrossing",
    "LineZone",
    "Point",
    "PolygonZone",
    "ZoneConfigError",
    "ZoneEntered",
    "ZoneJudge",
    "ZoneLeft",
    "ZoneObservation",
    "bottom_centre",
    "in_pixels",
    "point_in_polygon",
    "points_in_polygon",
    "polygon_area",
    "polygon_problem",
    "segments_intersect",
    "side_of_line",
]

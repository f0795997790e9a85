"""Zone geometry per camera: polygon zones and directed lines, judged on the bottom-centre of a box.

Configuration models validate at load time (a polygon that crosses itself, fewer than three points,
a zero-length line: clear errors), and the pure functions below do the geometry. :class:`ZoneJudge`
adds the state over frames: a tracked point must stay inside a zone for ``inertia_frames`` frames
before it counts as in (and outside as long before it counts as out), and one physical crossing of a
line gives exactly one :class:`LineCrossing`, however much the point jitters on the line.

Coordinates are image pixels (x right, y down) unless a zone says ``coords: normalized`` (0..1 of the
frame width/height); :meth:`CameraZones.in_pixels` resolves them for one frame size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Self

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vision.errors import VisionError

Point = tuple[float, float]
Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels, x1 <= x2, y1 <= y2."""

# Geometry tolerance in pixels (or normalised units): below this two points are the same point.
_EPS = 1e-9


class ZoneConfigError(VisionError):
    """A zone or line definition that cannot be used (raised where it is resolved, not by pydantic)."""

    def __init__(self, message: str, *, code: str = "bad_zone") -> None:
        super().__init__(message, code=code)


def bottom_centre(box: Box) -> Point:
    """The point where a person stands: the middle of the bottom edge of the box."""
    x1, _, x2, y2 = box
    return ((x1 + x2) / 2.0, y2)


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) × (b - o): > 0 counter-clockwise in maths axes (clockwise on screen, y down)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, a: Point, b: Point) -> bool:
    """p is collinear with a-b (caller checked) and within its bounding box."""
    return (
        min(a[0], b[0]) - _EPS <= p[0] <= max(a[0], b[0]) + _EPS
        and min(a[1], b[1]) - _EPS <= p[1] <= max(a[1], b[1]) + _EPS
    )


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True if the closed segments p1-p2 and q1-q2 share at least one point (touching counts)."""
    d1 = _cross(q1, q2, p1)
    d2 = _cross(q1, q2, p2)
    d3 = _cross(p1, p2, q1)
    d4 = _cross(p1, p2, q2)
    if ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    ):
        return True
    return (
        (abs(d1) <= _EPS and _on_segment(p1, q1, q2))
        or (abs(d2) <= _EPS and _on_segment(p2, q1, q2))
        or (abs(d3) <= _EPS and _on_segment(q1, p1, p2))
        or (abs(d4) <= _EPS and _on_segment(q2, p1, p2))
    )


def polygon_problem(points: Sequence[Point]) -> str | None:
    """Why ``points`` is not a simple polygon, or None if it is one.

    Simple: at least three distinct vertices, non-zero area, and no two edges meet except
    neighbours at their shared vertex. O(n²), fine for hand-drawn zones.
    """
    n = len(points)
    if n < 3:
        return f"a polygon needs at least 3 points, got {n}"
    for i in range(n):
        for j in range(i + 1, n):
            if math.dist(points[i], points[j]) <= _EPS:
                return f"points {i} and {j} are the same point {points[i]}"
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            if adjacent:
                # Neighbours share a vertex; they are bad only if they fold back over each other.
                shared = edges[i][1] if j == i + 1 else edges[i][0]
                other_i = edges[i][0] if j == i + 1 else edges[i][1]
                other_j = edges[j][1] if j == i + 1 else edges[j][0]
                if abs(_cross(shared, other_i, other_j)) <= _EPS and (
                    _on_segment(other_j, shared, other_i) or _on_segment(other_i, shared, other_j)
                ):
                    return f"edges {i} and {j} overlap"
                continue
            if segments_intersect(*edges[i], *edges[j]):
                return f"edges {i} and {j} cross (the polygon intersects itself)"
    # Checked after the crossings: a symmetric bow tie also has zero signed area.
    if abs(polygon_area(points)) <= _EPS:
        return "the polygon has zero area (all points on one line)"
    return None


def polygon_area(points: Sequence[Point]) -> float:
    """Signed area (shoelace formula)."""
    total = 0.0
    n = len(points)
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        total += x1 * y2 - x2 * y1
    return total / 2.0


def point_in_polygon(point: Point, polygon: Sequence[Point]) -> bool:
    """Even-odd ray casting. Points exactly on an edge count as inside (a foot on the tape is in)."""
    x, y = point
    n = len(polygon)
    inside = False
    for i in range(n):
        a = polygon[i]
        b = polygon[(i + 1) % n]
        if abs(_cross(a, b, point)) <= _EPS and _on_segment(point, a, b):
            return True
        # Half-open rule on y so a ray through a vertex is counted once.
        if (a[1] > y) != (b[1] > y):
            x_at_y = a[0] + (y - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if x < x_at_y:
                inside = not inside
    return inside


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


def side_of_line(point: Point, start: Point, end: Point) -> int:
    """Which side of the directed line start→end the point is on: -1 side A, +1 side B, 0 on it.

    Side A is the left-hand side when walking from ``start`` to ``end`` as drawn on screen: for a
    line drawn left to right, A is above it and B below it.
    """
    c = _cross(start, end, point)
    # Screen y points down, so the maths "left" (c > 0) is the screen's right-hand side (B).
    if c > _EPS:
        return 1
    if c < -_EPS:
        return -1
    return 0


class _ZoneBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Zone or line id, unique per camera; appears in events.")
    name: str = Field(default="", description="Human-readable name shown on the console.")
    coords: Literal["pixel", "normalized"] = Field(
        default="pixel",
        description="'pixel': image pixels of the analysed frame; 'normalized': 0..1 of width and height.",
    )
    inertia_frames: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Consecutive analysed frames a point must stay on one side before the change counts.",
    )

    def _check_range(self, points: Iterable[Point]) -> None:
        if self.coords == "normalized":
            for x, y in points:
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(f"normalized point ({x}, {y}) is outside 0..1")


FinitePoint = tuple[
    Annotated[float, Field(allow_inf_nan=False)], Annotated[float, Field(allow_inf_nan=False)]
]


class PolygonZone(_ZoneBase):
    """An area of the picture (a courtyard, a door recess). A box is in it when its bottom-centre is."""

    points: list[FinitePoint] = Field(
        description="Vertices in order (clockwise or not); the polygon must not cross itself."
    )

    @model_validator(mode="after")
    def _simple(self) -> Self:
        self._check_range(self.points)
        problem = polygon_problem(self.points)
        if problem is not None:
            raise ValueError(f"zone {self.id!r} is not a simple polygon: {problem}")
        return self


class LineZone(_ZoneBase):
    """A tripwire from ``start`` to ``end``; side A is on the left walking start→end as drawn on screen."""

    start: FinitePoint = Field(description="First end of the line.")
    end: FinitePoint = Field(description="Second end of the line.")
    label_a_to_b: str = Field(
        default="a_to_b", description="Name of the direction from side A to side B (e.g. 'in')."
    )
    label_b_to_a: str = Field(
        default="b_to_a", description="Name of the direction from side B to side A (e.g. 'out')."
    )

    @model_validator(mode="after")
    def _non_degenerate(self) -> Self:
        self._check_range((self.start, self.end))
        if math.dist(self.start, self.end) <= _EPS:
            raise ValueError(f"line {self.id!r} has zero length (start == end == {self.start})")
        return self


class CameraZones(BaseModel):
    """All zones and lines of one camera."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_id: str = Field(min_length=1, description="The camera (device id) these zones belong to.")
    zones: list[PolygonZone] = Field(default_factory=list, description="Polygon zones.")
    lines: list[LineZone] = Field(default_factory=list, description="Directed lines (tripwires).")
    reference_size: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        default=None,
        description="[width, height] of the picture the pixel coordinates were drawn on. When set, pixel "
        "zones are checked to lie inside it and are scaled to frames of another size (a camera switched "
        "to a lower resolution keeps its zones); when unset, pixel coordinates are used as they are.",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [z.id for z in self.zones] + [ln.id for ln in self.lines]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera {self.camera_id!r}: duplicate zone/line ids {dupes}")
        if self.reference_size is not None:
            rw, rh = self.reference_size
            for item_id, pts in [(z.id, z.points) for z in self.zones if z.coords == "pixel"] + [
                (ln.id, [ln.start, ln.end]) for ln in self.lines if ln.coords == "pixel"
            ]:
                for x, y in pts:
                    if not (0 <= x <= rw and 0 <= y <= rh):
                        raise ValueError(f"{item_id!r}: point ({x}, {y}) is outside the {rw}x{rh} picture")
        return self

    def in_pixels(self, width: int, height: int) -> CameraZones:
        """The same zones with every coordinate in pixels of a ``width`` × ``height`` frame."""
        if width <= 0 or height <= 0:
            raise ZoneConfigError(f"frame size {width}x{height} is not positive", code="bad_frame_size")
        sx, sy = (1.0, 1.0)
        if self.reference_size is not None:
            sx, sy = width / self.reference_size[0], height / self.reference_size[1]

        def scale(p: Point, normalized: bool) -> Point:
            return (p[0] * width, p[1] * height) if normalized else (p[0] * sx, p[1] * sy)

        zones = [
            z.model_copy(
                update={"points": [scale(p, z.coords == "normalized") for p in z.points], "coords": "pixel"}
            )
            for z in self.zones
        ]
        lines = [
            ln.model_copy(
                update={
                    "start": scale(ln.start, ln.coords == "normalized"),
                    "end": scale(ln.end, ln.coords == "normalized"),
                    "coords": "pixel",
                }
            )
            for ln in self.lines
        ]
        # No reference size on the result: its coordinates are this frame's pixels, used as they are.
        return CameraZones(camera_id=self.camera_id, zones=zones, lines=lines)


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

    ``zones`` must be in pixels already (see :meth:`CameraZones.in_pixels`) or in the same units as
    the points given to :meth:`update`.
    """

    def __init__(self, zones: CameraZones) -> None:
        if any(z.coords == "normalized" for z in zones.zones) or any(
            ln.coords == "normalized" for ln in zones.lines
        ):
            raise ZoneConfigError(
                f"camera {zones.camera_id!r}: resolve normalized zones with in_pixels() first",
                code="zone_not_resolved",
            )
        self.config = zones
        self._tracks: dict[int, _TrackZoneState] = {}

    def update(self, points: Mapping[int, Point], at: float) -> list[ZoneObservation]:
        """Judge the bottom-centre ``points`` of this frame's visible tracks (track id → point).

        Tracks missing from ``points`` keep their state (a short occlusion is not an exit); call
        :meth:`forget` when the tracker drops a track.
        """
        out: list[ZoneObservation] = []
        cam = self.config.camera_id
        for track_id, point in points.items():
            if not (math.isfinite(point[0]) and math.isfinite(point[1])):
                raise ZoneConfigError(f"track {track_id}: point {point} is not finite", code="bad_point")
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


def draw_zones(frame_bgr: NDArray[np.uint8], zones: CameraZones) -> NDArray[np.uint8]:
    """A copy of the frame with the zones (yellow outlines) and lines (cyan, with an arrow from side
    A to side B at the middle) drawn, for alert snapshots. Normalized zones are resolved first."""
    h, w = frame_bgr.shape[:2]
    px = zones.in_pixels(w, h)
    out = frame_bgr.copy()
    thick = max(1, round(min(h, w) / 300))
    for zone in px.zones:
        pts = np.round(np.array(zone.points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, (0, 255, 255), thick)
        x, y = pts[0, 0]
        cv2.putText(out, zone.id, (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1)
    for line in px.lines:
        a = (round(line.start[0]), round(line.start[1]))
        b = (round(line.end[0]), round(line.end[1]))
        cv2.line(out, a, b, (255, 255, 0), thick)
        # Arrow across the middle, pointing from side A to side B.
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length, dx / length  # towards side B (the right-hand side walking start→end)
        arrow = 0.1 * length
        tail = (round(mx - nx * arrow), round(my - ny * arrow))
        head = (round(mx + nx * arrow), round(my + ny * arrow))
        cv2.arrowedLine(out, tail, head, (255, 255, 0), thick, tipLength=0.3)
        cv2.putText(out, line.id, (b[0] + 4, b[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1)
    return out

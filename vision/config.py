"""Every settings model of the vision package, in one leaf module, with the plane geometry their
validators use (pure Python: zones are checked when the configuration loads).

It imports only pydantic and the standard library, so an application's configuration can compose
these models without loading ONNX Runtime or OpenCV, and without closing an import cycle. The
runtime modules (``vision.person``, ``vision.tamper``...) use the same classes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Point = tuple[float, float]
Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels, x1 <= x2, y1 <= y2."""

# Geometry tolerance in pixels (or normalised units): below this two points are the same point.
_EPS = 1e-9


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


TamperKind = Literal["covered", "defocused", "moved", "stream_lost"]
TAMPER_KINDS: tuple[TamperKind, ...] = ("covered", "defocused", "moved", "stream_lost")


ExecutionProvider = Literal["cpu", "openvino", "cuda", "tensorrt"]
"""ONNX Runtime execution providers by their config names (vision.runtime maps them to ORT's)."""


class RuntimeConfig(BaseModel):
    """ONNX Runtime session options for one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intra_op_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Threads inside one operator. 1 by default: edge boxes run several cameras and models, "
        "and per-core throughput is what we size for.",
    )
    inter_op_threads: int = Field(default=1, ge=1, le=64, description="Threads for independent operators.")
    concurrent_runs: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Runs of one model at the same time (the agent sets its inference threads). ONNX "
        "Runtime's memory arena keeps, for good, the activations of the most runs ever in flight at once, "
        "so this bounds the model's memory; further runs wait.",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        default="all", description="ONNX Runtime graph optimisation level."
    )
    warmup_runs: int = Field(default=1, ge=0, le=10, description="Inference runs at load, before any frame.")
    verify_checksum: bool = Field(
        default=True, description="Check the sha256 against the manifest at load (off only in benches)."
    )
    execution_providers: tuple[ExecutionProvider, ...] = Field(
        default=("cpu",),
        min_length=1,
        description="ONNX Runtime execution providers in order of preference. Ones this onnxruntime build "
        "lacks are skipped with a warning; CPU is always the last resort.",
    )

    @field_validator("execution_providers")
    @classmethod
    def _no_duplicate_providers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"execution_providers lists a provider twice: {value}")
        return value


class MotionConfig(BaseModel):
    """Motion gate settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(
        default=160, ge=16, le=1920, description="Frames are downscaled to this width before comparison."
    )
    blur_kernel: int = Field(
        default=5, ge=1, le=31, description="Odd Gaussian kernel size (after downscale) against sensor noise."
    )
    pixel_threshold: int = Field(
        default=20, ge=1, le=255, description="Grey-level difference from the background counted as change."
    )
    min_changed_fraction: float = Field(
        default=0.002,
        ge=0.0,
        le=1.0,
        description="Fraction of changed pixels at or above which the frame counts as motion.",
    )
    background_alpha: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Learning rate of the running-average background. High by default: after a student "
        "shifts in their seat the gate should settle within a few frames (a slow background would keep "
        "reporting the old position as motion for dozens of frames), while averaging still absorbs noise "
        "and slow lighting drift.",
    )


class QualityConfig(BaseModel):
    """Limits of the quality gate (per camera; enrollment uses stricter ones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_px: float = Field(
        default=32.0,
        ge=8.0,
        description="Minimum face size (geometric mean of box width and height, frame pixels). Measured "
        "on the roll-call clip (bench/bench_rollcall.py, docs/FACE_ACCURACY.md): at the detector's default "
        "input (640 px) 32 px is the smallest with no false match in any single frame; 24-32 px faces are "
        "not recognised there anyway. A face's vote weight grows with its size over twice this value.",
    )
    min_sharpness: float = Field(
        default=25.0,
        ge=0.0,
        description="Minimum variance of the Laplacian of the grey face crop, resampled to 96x96 and "
        "contrast-normalised to a standard deviation of 40 grey levels.",
    )
    max_yaw_deg: float = Field(default=35.0, gt=0.0, le=90.0, description="Largest |yaw| (left/right turn).")
    max_roll_deg: float = Field(
        default=45.0,
        gt=0.0,
        le=180.0,
        description="Largest |roll| (head tilt). Alignment undoes roll, so this is generous.",
    )
    max_pitch: float = Field(
        default=0.6,
        gt=0.0,
        le=1.0,
        description="Largest |pitch index|: (eyes-to-nose minus nose-to-mouth) over their sum, 0 when level.",
    )
    min_brightness: float = Field(
        default=50.0, ge=0.0, le=255.0, description="Lowest mean grey level of the face."
    )
    max_brightness: float = Field(
        default=215.0, ge=0.0, le=255.0, description="Highest mean grey level of the face."
    )


class TrackerConfig(BaseModel):
    """Tuning of :class:`Tracker`. Defaults suit people at 2-10 analysed frames per second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_hits: int = Field(
        default=3, ge=1, le=50, description="Consecutive matched frames before a new track is confirmed."
    )
    max_lost_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Seconds a confirmed track may go unseen (occlusion, missed detections) and keep its id.",
    )
    min_iou: float = Field(
        default=0.1, ge=0, le=1, description="Overlap with the predicted box that alone allows a match."
    )
    max_centre_distance: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="Largest centre distance allowed for a match, in units of the track box height.",
    )
    iou_weight: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Weight of IoU against centre closeness in the association score (0..1).",
    )
    max_size_ratio: float = Field(
        default=2.0,
        ge=1,
        description="A detection more than this many times larger or smaller (by height) never matches.",
    )
    velocity_smoothing: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Weight of the newest motion in the velocity estimate (1 = last step only).",
    )
    history_len: int = Field(
        default=300, ge=2, le=100_000, description="Bottom-centre points kept per track (oldest dropped)."
    )


class TamperConfig(BaseModel):
    """Thresholds of :class:`TamperDetector`. Defaults were tuned on the test photos with the effects
    in ``tests/vision/scene_clips.py``; grey levels are 0..255."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    analysis_width: int = Field(
        default=320, ge=64, le=1920, description="Frames are shrunk to this width before any check."
    )
    dark_mean_max: float = Field(
        default=40.0,
        ge=0,
        le=255,
        description="A frame darker than this (grey mean) with low contrast is covered.",
    )
    dark_std_max: float = Field(
        default=12.0,
        ge=0,
        le=128,
        description="Contrast (grey std) below which a dark frame counts as covered.",
    )
    uniform_std_max: float = Field(
        default=5.0,
        ge=0,
        le=128,
        description="Contrast below which a frame is covered whatever its brightness (a bright cloth).",
    )
    defocus_ratio: float = Field(
        default=0.35,
        gt=0,
        lt=1,
        description="Sharpness below this fraction of the learned sharpness is defocus.",
    )
    moved_shift_frac: float = Field(
        default=0.04,
        gt=0,
        lt=1,
        description="Background displacement (fraction of the width, at the frame corners, so rotations "
        "count too) that counts as a moved view.",
    )
    min_inliers: int = Field(
        default=12,
        ge=4,
        description="Feature matches agreeing on one background motion needed to trust the estimate; "
        "with fewer, only the edge check can call the view moved.",
    )
    orb_features: int = Field(default=400, ge=50, le=5000, description="ORB keypoints per analysed frame.")
    edge_overlap_min: float = Field(
        default=0.3,
        gt=0,
        lt=1,
        description="Median fraction of the reference edges still in place (per picture cell); below it "
        "the view is a different one. Used when the features cannot be matched.",
    )
    reference_frames: int = Field(
        default=5, ge=1, le=500, description="Good frames averaged into the reference at start (or relearn)."
    )
    sharpness_adapt: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="Rate at which the learned sharpness follows the scene while no tamper is active.",
    )
    check_every_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="The picture checks run on one analysed frame this often (capture time), the "
        "frames between are not checked: a lens covered or turned away is a state of seconds, and "
        "each check costs about an eighth of a person detector run. 0 checks every analysed frame. A state "
        "turns on after trigger_frames checks (5 s at the defaults).",
    )
    still_check_every_s: float = Field(
        default=10.0,
        ge=0,
        le=600,
        description="While the picture is still (the motion gate saw no change) and the last check "
        "found nothing, the checks run this often instead of every check_every_s: an unchanged "
        "picture gets the verdict it had. Changes too slow for the motion gate (focus drifting, "
        "lights fading) are still judged this often. 0: still pictures are checked like any other.",
    )
    trigger_frames: int = Field(
        default=5, ge=1, le=1000, description="Consecutive checked frames to turn a state on."
    )
    clear_frames: int = Field(
        default=5, ge=1, le=1000, description="Consecutive checked frames to turn a state off."
    )
    stream_timeout_s: float = Field(default=10.0, gt=0, description="No frame for this long: stream lost.")


class PersonDetectorConfig(BaseModel):
    """Settings of :class:`PersonDetector`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    score_threshold: float = Field(
        default=0.6,
        gt=0,
        le=1,
        description="Minimum person score. 0.6 removed the one false positive seen in validation "
        "(a cat close-up at 0.59); lower it for far, small people at the cost of false alarms.",
    )
    nms_iou: float = Field(default=0.5, gt=0, le=1, description="IoU above which the weaker box is dropped.")
    min_box_height: float = Field(
        default=0.0, ge=0, description="Boxes shorter than this (frame pixels) are ignored (0 = keep all)."
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="ONNX Runtime options (threads, graph optimisation)."
    )


class PersonPipelineConfig(BaseModel):
    """One camera's security analysis: motion gate → person detection → tracking → zones, plus tamper."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: PersonDetectorConfig = Field(
        default_factory=PersonDetectorConfig, description="NanoDet settings (threshold, NMS, threads)."
    )
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Tracker settings.")
    motion_gating: bool = Field(
        default=True, description="Skip the detector on frames where nothing moved (detections carry over)."
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gate settings.")
    refresh_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="Run the detector at least this often even without motion, so carried-over "
        "detections never go stale.",
    )
    tamper: TamperConfig | None = Field(
        default_factory=TamperConfig, description="Tamper checks on every frame; null turns them off."
    )


class FaceDetectorConfig(BaseModel):
    """CenterFace settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_side: int = Field(
        default=640,
        ge=64,
        le=4096,
        description="The frame's long side is scaled to at most this many pixels before detection "
        "(smaller frames are not upscaled). 640 finds faces down to about 20 px in a 1280-wide frame.",
    )
    score_threshold: float = Field(
        default=0.5, gt=0.0, lt=1.0, description="Minimum heatmap score of a face."
    )
    nms_iou: float = Field(
        default=0.3, gt=0.0, le=1.0, description="IoU above which the weaker box is dropped."
    )
    max_batch: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Equal-size frames of several cameras per detector run. On a CPU a batch saves "
        "little (CenterFace 640x384: 28.5 ms a frame alone, 27.2 in twos) and every frame in a run keeps "
        "its activations in ONNX Runtime's arena for good (about 47 MiB each, per run in flight); raise "
        "it where a GPU or NPU runs the model. The embedder always takes every face of the frames "
        "analysed together in one run.",
    )


class FaceEmbedderConfig(BaseModel):
    """Embedder settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Faces per inference run; larger batches amortise the call but grow the memory arena.",
    )


class FacePipelineConfig(BaseModel):
    """Per-camera face pipeline settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    motion_gate: bool = Field(default=True, description="Skip detection on frames without motion.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Motion gate settings.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality gate for recognition.")
    max_skip_s: float = Field(
        default=1.0,
        gt=0.0,
        description="Analyse at least this often even without motion: a student who sat down before "
        "being confirmed must still collect the tracker's votes while sitting still.",
    )
    threshold: float | None = Field(
        default=None,
        gt=0.0,
        description="Open-set distance threshold for this camera; None uses the gallery's (per model).",
    )


class FaceTrackerConfig(BaseModel):
    """Tracking and voting settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iou_threshold: float = Field(
        default=0.2, gt=0.0, lt=1.0, description="Minimum IoU between a track's last box and a new face."
    )
    identity_reach: float = Field(
        default=4.0,
        ge=0.0,
        description="A face that overlaps no track still joins the track whose leading vote names the "
        "same person, if its centre is within this many face widths of the track's last box (0: IoU "
        "only). A brisk walker seen at 2 frames/s (a saturated box) moves more than its own width "
        "between two analysed frames.",
    )
    max_age_s: float = Field(
        default=2.0,
        gt=0.0,
        description="A track not seen for this long is closed (the person left, or stood still long "
        "enough for the motion gate to stop looking).",
    )
    min_votes: int = Field(default=3, ge=1, description="Matched observations needed before deciding.")
    min_weight: float = Field(
        default=1.0, gt=0.0, description="Summed vote weight the winner needs (about 1 = one ideal face)."
    )
    repeat_window_s: float = Field(
        default=10.0,
        ge=0.0,
        description="A person already confirmed on this camera less than this long ago is not confirmed "
        "again by a new track (a track broken by occlusion must not count a student twice).",
    )
    min_share: float = Field(
        default=0.6,
        gt=0.5,
        le=1.0,
        description="Share of all vote weight the winner needs; above 0.5 so two names can never both win.",
    )
    carry_iou: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A good face whose box overlaps the predicted box of a track already confirmed as a "
        "named person by at least this IoU (and no other face or track overlaps them) keeps that "
        "identity without being embedded again: a seated class on a roll-call camera would otherwise "
        "cost one embedder run per student per frame. 1: always embed.",
    )
    reverify_s: float = Field(
        default=3.0,
        ge=0.0,
        description="A carried face is matched against the gallery again after this long (0: never "
        "carried), and carried again only once it matched the track's person: a track that drifted "
        "onto someone else is back to one embedder run per frame within seconds.",
    )


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


__all__ = [
    "TAMPER_KINDS",
    "Box",
    "CameraZones",
    "ExecutionProvider",
    "FaceDetectorConfig",
    "FaceEmbedderConfig",
    "FacePipelineConfig",
    "FaceTrackerConfig",
    "LineZone",
    "MotionConfig",
    "PersonDetectorConfig",
    "PersonPipelineConfig",
    "Point",
    "PolygonZone",
    "QualityConfig",
    "RuntimeConfig",
    "TamperConfig",
    "TamperKind",
    "TrackerConfig",
    "bottom_centre",
    "point_in_polygon",
    "polygon_area",
    "polygon_problem",
    "segments_intersect",
    "side_of_line",
]

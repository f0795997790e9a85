"""The scene photos the project ships (``NOTICE.md``: MIT, with provenance) and the clips built from them.

The tests, the benches and the demo build their scenario clips here: people are fixed crops of the
photos (chosen because NanoDet finds them at the sizes used), composited along paths over a
people-free synthetic corridor. Everything is deterministic (seeded), so a clip is the same every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]
Box = tuple[float, float, float, float]
Point = tuple[float, float]

SCENES_DIR = Path(__file__).resolve().parent
"""Where the photos are, in a checkout and in an installed wheel alike (package data)."""

# (photo, y1, y2, x1, x2) of people whose crops NanoDet-m detects when pasted at the heights of
# SPRITE_HEIGHT over the corridor (checked position by position across a 1280x720 frame; at other
# sizes NanoDet-m misses some positions, e.g. "figure" at 350 px):
# "figure": the full-body standing figure in the first thumbnail of human_samples.jpg;
# "diner": the man at a dinner table in its third thumbnail (upper body).
PERSON_CROPS: dict[str, tuple[str, int, int, int, int]] = {
    "figure": ("human_samples.jpg", 0, 150, 20, 120),
    "diner": ("human_samples.jpg", 0, 118, 378, 511),
}
SPRITE_HEIGHT: dict[str, float] = {"figure": 250.0, "diner": 200.0}


def scene_paths() -> list[Path]:
    """Every shipped scene photo, sorted by name."""
    return sorted(SCENES_DIR.glob("*.jpg"))


def load_photo(name: str) -> Frame:
    """A shipped scene photo (``"sample1.jpg"``) as a BGR uint8 array."""
    path = SCENES_DIR / name
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"no scene photo {path}")
    return np.asarray(img, dtype=np.uint8)


def person_sprite(name: str = "figure") -> Frame:
    """A person crop (BGR) from the scene photos; see :data:`PERSON_CROPS`."""
    photo, y1, y2, x1, x2 = PERSON_CROPS[name]
    return np.ascontiguousarray(load_photo(photo)[y1:y2, x1:x2])


def corridor_background(width: int = 1280, height: int = 720, seed: int = 0) -> Frame:
    """A people-free synthetic scene: wall with doors, a floor getting lighter towards the camera, noise.

    Textured enough for focus and view-moved checks to have something to measure.
    """
    rng = np.random.default_rng(seed)
    bg = np.zeros((height, width, 3), np.float32)
    horizon = height // 2
    bg[:horizon] = (170, 180, 190)
    ramp = np.linspace(0, 1, height - horizon, dtype=np.float32)[:, None, None]
    bg[horizon:] = np.array((90, 100, 110), np.float32) + 60 * ramp
    door_w, door_top = width // 10, int(height * 0.2)
    for x in range(width // 12, width - door_w, width // 4):
        cv2.rectangle(bg, (x, door_top), (x + door_w, horizon), (60, 80, 120), -1)
        cv2.rectangle(bg, (x, door_top), (x + door_w, horizon), (30, 40, 60), 3)
        cv2.circle(bg, (x + door_w - 12, (door_top + horizon) // 2), 5, (20, 180, 220), -1)
    for y in range(horizon, height, max(8, height // 24)):
        cv2.line(bg, (0, y), (width - 1, y), (70, 80, 90), 1)
    bg += rng.normal(0, 6, bg.shape).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def paste_person(frame: Frame, sprite: Frame, feet: Point, height: float) -> Box | None:
    """Paste ``sprite`` scaled to ``height`` px with its bottom-centre at ``feet`` (in place).

    Returns the visible box ``(x1, y1, x2, y2)`` of the sprite, or None if it is fully outside.
    """
    scale = height / sprite.shape[0]
    w = max(1, round(sprite.shape[1] * scale))
    h = max(1, round(height))
    resized = cv2.resize(sprite, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x1 = round(feet[0] - w / 2)
    y1 = round(feet[1] - h)
    fx1, fy1 = max(x1, 0), max(y1, 0)
    fx2, fy2 = min(x1 + w, frame.shape[1]), min(y1 + h, frame.shape[0])
    if fx2 <= fx1 or fy2 <= fy1:
        return None
    frame[fy1:fy2, fx1:fx2] = resized[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
    return (float(fx1), float(fy1), float(fx2), float(fy2))


def linear_path(start: Point, end: Point, n: int) -> list[Point]:
    """``n`` evenly spaced points from ``start`` to ``end`` inclusive."""
    return [
        (start[0] + (end[0] - start[0]) * k / (n - 1), start[1] + (end[1] - start[1]) * k / (n - 1))
        for k in range(n)
    ]


def stand_path(point: Point, n: int, sway_px: float = 6.0) -> list[Point]:
    """``n`` frames of someone standing at ``point``, shifting their weight a little."""
    return [(point[0] + sway_px * ((k % 4) - 1.5) / 1.5, point[1]) for k in range(n)]


def with_gap(path: Sequence[Point | None], start: int, length: int) -> list[Point | None]:
    """The path with frames ``start .. start+length-1`` missing (hidden behind something)."""
    return [None if start <= k < start + length else p for k, p in enumerate(path)]


@dataclass(frozen=True)
class WalkerPath:
    """One person in a clip: ``path[k]`` is where their feet are in frame k (None = not in the picture)."""

    sprite: Frame
    path: Sequence[Point | None]
    height: float = 300.0


@dataclass(frozen=True)
class ClipFrame:
    """A composited frame and the ground truth: the box of each walker (index as given) in it."""

    frame: Frame
    boxes: dict[int, Box]
    feet: dict[int, Point]


def walk_clip(background: Frame, walkers: Sequence[WalkerPath], n_frames: int) -> list[ClipFrame]:
    """Frames of ``walkers`` moving over ``background``; later walkers are drawn in front."""
    out = []
    for k in range(n_frames):
        frame = background.copy()
        boxes: dict[int, Box] = {}
        feet: dict[int, Point] = {}
        for i, w in enumerate(walkers):
            p = w.path[k] if k < len(w.path) else None
            if p is None:
                continue
            box = paste_person(frame, w.sprite, p, w.height)
            if box is not None:
                boxes[i] = box
                feet[i] = p
        out.append(ClipFrame(frame, boxes, feet))
    return out


def write_video(frames: Iterable[Frame], path: Path, fps: float = 10.0) -> Path:
    """Write frames to an MJPG .avi (the codec every OpenCV build can write and read back)."""
    writer: cv2.VideoWriter | None = None
    try:
        for f in frames:
            if writer is None:
                writer = cv2.VideoWriter(
                    str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (f.shape[1], f.shape[0])
                )
                if not writer.isOpened():
                    raise OSError(f"cv2.VideoWriter cannot open {path}")
            writer.write(f)
    finally:
        if writer is not None:
            writer.release()
    return path


__all__ = [
    "PERSON_CROPS",
    "SCENES_DIR",
    "SPRITE_HEIGHT",
    "Box",
    "ClipFrame",
    "Frame",
    "Point",
    "WalkerPath",
    "corridor_background",
    "linear_path",
    "load_photo",
    "paste_person",
    "person_sprite",
    "scene_paths",
    "stand_path",
    "walk_clip",
    "with_gap",
    "write_video",
]

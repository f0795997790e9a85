"""Evidence pictures: boxes and zones drawn on a copy of a frame, and the small JPEG sent with an alert.

The one place that draws on frames and encodes them; the pipelines never draw, and the agent only
calls :func:`evidence_jpeg` or :func:`snapshot_jpeg`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from vision.config import Box, CameraZones
from vision.zones import in_pixels

_RED = (0, 0, 255)
_YELLOW = (0, 255, 255)
_CYAN = (255, 255, 0)


def _thickness(frame: NDArray[np.uint8]) -> int:
    return max(1, round(int(min(frame.shape[:2])) / 300))


def draw_boxes(frame_bgr: NDArray[np.uint8], boxes: Sequence[tuple[Box, str]]) -> NDArray[np.uint8]:
    """A copy of the frame with labelled boxes drawn in red (an empty label draws the box alone)."""
    out = frame_bgr.copy()
    thick = _thickness(out)
    for (x1, y1, x2, y2), label in boxes:
        p1, p2 = (round(x1), round(y1)), (round(x2), round(y2))
        cv2.rectangle(out, p1, p2, _RED, thick)
        if label:
            cv2.putText(
                out, label, (p1[0], max(p1[1] - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick, _RED, thick
            )
    return out


def draw_zones(frame_bgr: NDArray[np.uint8], zones: CameraZones) -> NDArray[np.uint8]:
    """A copy of the frame with the zones (yellow outlines) and lines (cyan, with an arrow from side
    A to side B at the middle) drawn. Normalized zones are resolved for this frame's size first."""
    h, w = frame_bgr.shape[:2]
    px = in_pixels(zones, w, h)
    out = frame_bgr.copy()
    thick = _thickness(out)
    for zone in px.zones:
        pts = np.round(np.array(zone.points)).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, _YELLOW, thick)
        x, y = pts[0, 0]
        cv2.putText(out, zone.id, (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _YELLOW, 1)
    for line in px.lines:
        a = (round(line.start[0]), round(line.start[1]))
        b = (round(line.end[0]), round(line.end[1]))
        cv2.line(out, a, b, _CYAN, thick)
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / length, dx / length  # towards side B (the right-hand side walking start→end)
        arrow = 0.1 * length
        tail = (round(mx - nx * arrow), round(my - ny * arrow))
        head = (round(mx + nx * arrow), round(my + ny * arrow))
        cv2.arrowedLine(out, tail, head, _CYAN, thick, tipLength=0.3)
        cv2.putText(out, line.id, (b[0] + 4, b[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _CYAN, 1)
    return out


def encode_jpeg(frame_bgr: NDArray[np.uint8], *, max_width: int = 640, quality: int = 75) -> bytes:
    """The frame scaled down to at most ``max_width`` (aspect kept) as JPEG; ``b""`` if it cannot be
    encoded (evidence is best effort: an alert is never held back for its picture)."""
    small: NDArray[Any] = frame_bgr
    if frame_bgr.shape[1] > max_width:
        scale = max_width / frame_bgr.shape[1]
        size = (max_width, max(1, int(frame_bgr.shape[0] * scale)))
        small = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else b""


def snapshot_jpeg(frame_bgr: NDArray[np.uint8], box: Box | None = None, *, max_width: int = 640) -> bytes:
    """Small evidence, not an archive: the frame with ``box`` drawn (if any), as a JPEG of at most
    ``max_width`` pixels across."""
    drawn = draw_boxes(frame_bgr, [(box, "")]) if box is not None else frame_bgr
    return encode_jpeg(drawn, max_width=max_width)


def evidence_jpeg(
    frame_bgr: NDArray[np.uint8],
    *,
    zones: CameraZones | None = None,
    boxes: Sequence[tuple[Box, str]] = (),
    max_width: int = 640,
) -> bytes:
    """An alert snapshot: the camera's zones and the labelled boxes drawn, as a small JPEG."""
    drawn = draw_zones(frame_bgr, zones) if zones is not None else frame_bgr
    if boxes:
        drawn = draw_boxes(drawn, boxes)
    return encode_jpeg(drawn, max_width=max_width)


__all__ = ["draw_boxes", "draw_zones", "encode_jpeg", "evidence_jpeg", "snapshot_jpeg"]

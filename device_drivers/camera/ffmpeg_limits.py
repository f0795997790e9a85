"""A bound on every single allocation of the FFmpeg that OpenCV reads camera streams with.

A network camera decides how much FFmpeg buffers. An MJPEG-over-HTTP part that never ends (no
next boundary, or a ``Content-Length`` of 100 GB) is read by FFmpeg's demuxer as one packet growing
until the read times out: measured on localhost, 1.5 GB in the 5 s read timeout, in the process
that also runs the gates. FFmpeg's own ``av_max_alloc`` refuses any single block above a size
(process-wide: every block it allocates goes through ``av_malloc``/``av_realloc``); with it, the
read fails, the camera goes offline with its read counted as failed, and it is reconnected.

The bound is the largest one any camera's ``max_frame_pixels`` asks for (the limit is shared, so
it is raised, never lowered): room for its frames' largest plane at 16 bits a sample (an 8K H.265
10-bit luma plane is 66 MB) and for a compressed frame, never under :data:`FLOOR`.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FLOOR = 64 << 20
"""The least bound: 4K and smaller cameras' frames and packets are a few MB each."""

_PACKET_ROOM = 16 << 20
"""Beside the largest plane: one compressed frame (an 8K MJPEG frame is 10-20 MB)."""

_lock = threading.Lock()
_set_to = 0
_setters: list[Callable[[int], None]] | None = None


def allocation_bound(max_frame_pixels: int) -> int:
    """The bound for cameras of up to ``max_frame_pixels`` (bytes)."""
    return max(FLOOR, 2 * max_frame_pixels + _PACKET_ROOM)


def bound_allocations(max_frame_pixels: int) -> int | None:
    """Make FFmpeg refuse any single allocation over :func:`allocation_bound` (raised to it if
    lower, never lowered). Returns the bound in force, or None where the FFmpeg OpenCV uses cannot
    be reached (not Linux, an OpenCV with FFmpeg linked in statically): logged once, and streams
    then read unbounded as before."""
    global _set_to
    wanted = allocation_bound(max_frame_pixels)
    with _lock:
        setters = _find_setters()
        if not setters:
            return None
        if wanted > _set_to:
            for setter in setters:
                setter(wanted)
            _set_to = wanted
            log.debug("FFmpeg's single allocations are bounded at %d MiB", wanted >> 20)
        return _set_to


def _find_setters() -> list[Callable[[int], None]]:
    """``av_max_alloc`` of every libavutil loaded in this process (called with the lock held):
    OpenCV's, which opencv-python bundles under a hashed name, and any other copy a library
    brought, since each keeps its own bound. Never a copy found on the disk but not loaded."""
    global _setters
    if _setters is not None:
        return _setters
    import cv2  # noqa: F401  (loads OpenCV's FFmpeg, if it has a shared one)

    _setters, problems = [], []
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as err:
        problems.append(f"no /proc/self/maps ({err})")
        maps = ""
    for path in sorted({line.split()[-1] for line in maps.splitlines() if "/libavutil" in line}):
        try:
            function = ctypes.CDLL(path).av_max_alloc
        except (OSError, AttributeError) as err:
            problems.append(f"{path} without av_max_alloc ({err})")
            continue
        function.argtypes = [ctypes.c_size_t]
        function.restype = None
        _setters.append(function)
    if not _setters:
        log.warning(
            "FFmpeg's allocations cannot be bounded here (%s): a camera stream that never ends a frame "
            "is buffered until its read times out",
            "; ".join(problems) or "OpenCV's FFmpeg is not a shared libavutil in this process",
        )
    return _setters

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
from pathlib import Path

log = logging.getLogger(__name__)

FLOOR = 64 << 20
"""The least bound: 4K and smaller cameras' frames and packets are a few MB each."""

_PACKET_ROOM = 16 << 20
"""Beside the largest plane: one compressed frame (an 8K MJPEG frame is 10-20 MB)."""

_lock = threading.Lock()
_set_to = 0
_av_max_alloc: ctypes._NamedFuncPointer | None = None
_unavailable: str | None = None


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
        setter = _find_setter()
        if setter is None:
            return None
        if wanted > _set_to:
            setter(wanted)
            _set_to = wanted
            log.debug("FFmpeg's single allocations are bounded at %d MiB", wanted >> 20)
        return _set_to


def _find_setter() -> ctypes._NamedFuncPointer | None:
    """``av_max_alloc`` of the libavutil already loaded with OpenCV's FFmpeg (called with the
    lock held). The library is the one mapped into this process (opencv-python bundles its own,
    under a hashed name), never another copy found on the disk."""
    global _av_max_alloc, _unavailable
    if _av_max_alloc is not None or _unavailable is not None:
        return _av_max_alloc
    import cv2  # noqa: F401  (loads OpenCV's FFmpeg, if it has a shared one)

    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError as err:
        _unavailable = f"no /proc/self/maps ({err})"
    else:
        paths = {line.split()[-1] for line in maps.splitlines() if "/libavutil" in line}
        if not paths:
            _unavailable = "OpenCV's FFmpeg is not a shared libavutil in this process"
        else:
            try:
                function = ctypes.CDLL(sorted(paths)[0]).av_max_alloc
            except (OSError, AttributeError) as err:
                _unavailable = f"libavutil without av_max_alloc ({err})"
            else:
                function.argtypes = [ctypes.c_size_t]
                function.restype = None
                _av_max_alloc = function
    if _unavailable is not None:
        log.warning(
            "FFmpeg's allocations cannot be bounded here (%s): a camera stream that never ends a frame "
            "is buffered until its read times out",
            _unavailable,
        )
    return _av_max_alloc

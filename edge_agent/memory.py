"""The agent's process heap: fewer glibc malloc arenas, and freed memory handed back to the system.

Two glibc behaviours cost an agent with cameras more resident memory than it uses:

* every thread that allocates gets a malloc arena of its own, up to 8 per core: the capture threads,
  the analysis threads, ONNX Runtime's and OpenCV's. Each keeps the memory freed in it for reuse by
  that arena alone, so the same frames and tensors are held several times over.
  :func:`limit_malloc_arenas` caps them, at process start, before threads exist.
* memory freed inside the heap (model loading's temporaries, the buffers of a burst of analysis) stays
  resident until something asks glibc to return it: :func:`release_free_memory` does, and the camera
  workers call it when their scene turns still (:mod:`edge_agent.cameras`).

Both are no-ops, logged once, where the C library is not glibc (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena cap (``malloc.h``)."""

MALLOC_ARENAS = 2
"""Arenas for the whole agent. Two, not one: the two analysis threads that run side by side (faces
and persons) would otherwise contend for one arena's lock on every allocation."""

RELEASE_INTERVAL_S = 30.0
"""Release the freed heap at most this often, however many cameras turn still at once."""

_libc: ctypes.CDLL | None = None
_libc_looked_up = False
_release_lock = threading.Lock()
_last_release = -float("inf")


def _glibc() -> ctypes.CDLL | None:
    global _libc, _libc_looked_up
    if not _libc_looked_up:
        _libc_looked_up = True
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
        if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim"):
            _libc = libc
        else:
            log.info("the C library is not glibc: malloc arenas and heap trimming are left as they are")
    return _libc


def resident_bytes() -> int:
    """The process's resident memory now (``/proc/self/statm``), 0 where there is no /proc."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for the rest of the process; True when applied.

    Call it first thing at process start: arenas made before it (by threads that already allocated)
    stay. ``MALLOC_ARENA_MAX`` in the environment, when set, wins: whoever set it chose.
    """
    if arenas < 1:
        raise ValueError(f"arenas must be at least 1, got {arenas}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    applied = bool(libc.mallopt(M_ARENA_MAX, arenas))
    if not applied:
        log.warning("mallopt(M_ARENA_MAX, %d) was refused; malloc arenas are not capped", arenas)
    return applied


def release_free_memory(*, min_interval_s: float = RELEASE_INTERVAL_S) -> int:
    """Hand the heap memory freed so far back to the system (glibc ``malloc_trim``); returns the
    resident bytes that went, 0 when nothing did or when the last release was under
    ``min_interval_s`` ago. Blocking (a few milliseconds on a large heap): call it off the event loop.
    Safe from any thread."""
    global _last_release
    libc = _glibc()
    if libc is None:
        return 0
    with _release_lock:
        now = time.monotonic()
        if now - _last_release < min_interval_s:
            return 0
        _last_release = now
        before = resident_bytes()
        libc.malloc_trim(0)
        released = max(0, before - resident_bytes())
    log.debug("returned %.1f MiB of freed heap to the system", released / 2**20)
    return released


__all__ = [
    "MALLOC_ARENAS",
    "RELEASE_INTERVAL_S",
    "limit_malloc_arenas",
    "release_free_memory",
    "resident_bytes",
]

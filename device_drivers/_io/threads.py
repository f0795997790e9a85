"""OS priority for the threads that do bulk work (camera capture and decode, model inference), and
our threads' names in the OS.

On a two-core box those threads keep both cores busy; the card readers' threads and the event loop
wake for a few hundred microseconds per swipe and must not wait for a scheduler slice behind them.
Each bulk thread raises its own nice value (Linux schedules threads individually, so this leaves
the rest of the process at its priority); the gate path then preempts analysis on wake-up, and
analysis still gets every cycle the gates leave, so throughput is unchanged on an otherwise idle box.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

BULK_NICENESS = 10
"""Added to a bulk thread's nice value. Measured (docs/PERFORMANCE.md, swipe → open while 8 cameras
are analysed): 10 and 19 gave the same gate latency; 10 leaves room below for a niced agent."""


OS_NAME_CHARS = 15
"""What Linux keeps of a thread's name (``comm``)."""


def show_thread_name(name: str | None = None) -> bool:
    """Name the calling thread in the OS as well (``name``, else its Python name; cut to
    :data:`OS_NAME_CHARS`): ``top -H``, ``ps -L`` and ``/proc`` then tell the inference, capture and
    serial threads apart (Python 3.11 leaves every thread named ``python``). False where there is
    no ``/proc`` to write it to."""
    name = (name or threading.current_thread().name)[:OS_NAME_CHARS]
    try:
        Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name)
    except OSError as err:
        log.debug("thread %s keeps its OS name: %s", name, err)
        return False
    return True


def lower_thread_priority(niceness: int = BULK_NICENESS) -> bool:
    """Raise the calling thread's nice value by ``niceness`` (never needs privileges); False (logged at
    debug) where the OS or a seccomp filter refuses it: the thread then runs as it was."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (OSError, AttributeError) as err:  # AttributeError: no setpriority on this platform
        log.debug("thread %s keeps its priority: %s", threading.current_thread().name, err)
        return False
    return True

"""The agent's heap controls (edge_agent.memory), in real subprocesses so the test process's own heap
is left alone, and the camera workers' release of the freed heap when their scene turns still."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from datetime import UTC

import numpy as np
import pytest

from device_drivers import CameraFrame
from edge_agent.cameras import SecurityWorker
from edge_agent.config.cameras import CameraSetup
from edge_agent.memory import limit_malloc_arenas
from tests.support.clock import FakeClock
from tests.vision.scene_clips import shared_person_detector
from vision.scenes import corridor_background, paste_person, person_sprite

THREADS = 8

ARENAS_AFTER_THREADS = textwrap.dedent(
    f"""
    import ctypes, sys, threading
    import numpy as np
    from edge_agent.memory import limit_malloc_arenas
    if sys.argv[1] == "capped":
        assert limit_malloc_arenas(2)
    # Each thread allocates while all of them are alive, as the capture and analysis threads do.
    barrier = threading.Barrier({THREADS})
    held = []
    def allocate():
        held.append(np.ones(50_000))
        barrier.wait()
    threads = [threading.Thread(target=allocate) for _ in range({THREADS})]
    for t in threads: t.start()
    for t in threads: t.join()
    ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
    """
)


def arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS, mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_capped_arenas_stay_at_the_cap_however_many_threads_allocate() -> None:
    uncapped = arenas("uncapped")
    assert uncapped > 2, "glibc gives each new thread an arena of its own (the cost being removed)"
    assert arenas("capped") <= 2


def test_the_environment_wins_and_a_cap_below_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False  # whoever set MALLOC_ARENA_MAX chose
    with pytest.raises(ValueError, match="at least 1"):
        limit_malloc_arenas(0)


FREED_BUT_RESIDENT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from edge_agent.memory import release_free_memory, resident_bytes
    # Blocks below glibc's mmap threshold come from the heap; freeing all but the last leaves the
    # memory freed but resident (the last block pins the heap's top, so glibc cannot shrink it).
    block = 64 * 1024
    blocks = [np.ones(block // 8) for _ in range(int(sys.argv[1]) // block)]
    del blocks[:-1]
    before = resident_bytes()
    released = release_free_memory(min_interval_s=0)
    after = resident_bytes()
    again = release_free_memory(min_interval_s=3600)
    print(before, released, after, again)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_heap_goes_back_to_the_system_at_most_once_per_interval() -> None:
    freed = 128 * 2**20
    done = subprocess.run(
        [sys.executable, "-c", FREED_BUT_RESIDENT, str(freed)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, released, after, again = (int(v) for v in done.stdout.split())
    assert released >= freed // 2, f"only {released} of {freed} freed bytes went back"
    assert after <= before - freed // 2  # measured apart from the function's own figure
    assert again == 0  # within the interval: not walked again


def setup_still_after(seconds: float) -> CameraSetup:
    return CameraSetup.model_validate(
        {
            "device": {"kind": "camera_sim", "id": "cam-still"},
            "idle_after_s": seconds,
            "security": {
                "zones": [{"id": "z", "points": [[0, 400], [1280, 400], [1280, 720], [0, 720]]}],
                "rules": [{"kind": "intrusion", "id": "into", "zone": "z"}],
                "pipeline": {"tamper": None},
            },
        }
    )


def test_a_worker_hands_the_heap_back_once_per_still_spell() -> None:
    still_after_s, frame_s = 3.0, 0.5
    clock = FakeClock()
    worker = SecurityWorker(
        setup_still_after(still_after_s),
        detector=shared_person_detector(),
        grants=lambda gate, window_s: 0,
        emit=lambda event, attachment=None: None,
        source=lambda device: f"campus/s/g/{device}",
        timezone=UTC,
        monotonic=clock.monotonic,
        now=clock.now,
        sleep=clock.sleep,
    )
    empty = corridor_background()
    visitor = empty.copy()
    paste_person(visitor, person_sprite("figure"), (640, 650), 250.0)
    seq = 0

    async def show(picture: np.ndarray, seconds: float) -> None:
        nonlocal seq
        for _ in range(round(seconds / frame_s)):
            seq += 1
            frame = CameraFrame("cam-still", picture, clock.now(), seq, round(clock.monotonic() * 1e9))
            await worker.on_frame(frame)
            await clock.advance_and_settle(frame_s)

    async def scenario() -> None:
        await show(empty, still_after_s - frame_s)  # the first frame counts as motion
        assert worker.counters["heap_releases"] == 0
        await show(empty, 3 * still_after_s)
        assert worker.counters["heap_releases"] == 1  # once, however long the stillness lasts
        await show(visitor, 1.0)  # someone comes in, and goes: activity
        assert worker.counters["heap_releases"] == 1
        await show(empty, 2 * still_after_s)
        assert worker.counters["heap_releases"] == 2  # the next still spell
        worker.close()

    asyncio.run(scenario())

"""One inference service for every camera: a fixed pool of threads, a lane per (camera, analysis).

Eight cameras with a thread each are eight threads contending for two cores, with no say in who
goes first. Here the models run on ``workers`` threads (one per core by default) and the cameras
queue for them:

- **A lane per (camera, analysis)** holds the camera's newest frame not yet taken: a newer frame
  replaces it (the older one is *replaced*, counted per lane), so a camera that cannot be served
  in time skips frames instead of building a backlog, and a frame taken is always the newest.
  A lane is analysed by one thread at a time (its pipeline keeps per-camera state).
- **Security before attendance.** A free thread takes a security lane first; an attendance frame
  that has waited ``attendance_max_wait_s`` is taken next regardless, so attendance is slowed under
  overload, never starved, but only while attendance has had less than ``attendance_max_share`` of
  the frames analysed lately: under deep overload every face camera has waited that long all the
  time, and without the cap "waited long enough" would turn the priority into plain round-robin.
  Within a class, lanes are served round-robin (least recently served first): every camera gets
  its share. No thread ever idles while a frame is ready: the order is all the priority changes.
- **Batching.** A lane may name a *batch group* and a function that analyses several lanes' frames
  at once (faces: the embedder runs once for all their faces, the detector once per
  ``vision.detector_batch`` equal-size frames). A free thread then takes up to ``max_batch`` ready
  lanes of that group, but no more than its share of the ready ones while other threads are idle,
  so batching never leaves a core idle.
- **Off the event loop.** :meth:`Lane.offer` is called from the event loop and never blocks (a
  lock held for a few microseconds); results come back to the loop as the offer's future.

Threads, not processes: ONNX Runtime, OpenCV and numpy release the GIL for the heavy work, the
models are loaded once and shared (a process per core would hold each model and its arena twice),
and frames are handed over without a copy. ``bench/bench_cameras.py`` measures the result against
the bare models on both cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from device_drivers import lower_thread_priority, show_thread_name
from edge_agent.metrics import INFERENCE_LAG_SECONDS

if TYPE_CHECKING:
    from device_drivers import CameraFrame

log = logging.getLogger(__name__)

Analysis = Literal["security", "faces"]
"""What a lane runs: security (person detection, zones, tamper) is served before faces (attendance)."""

ANALYSES: tuple[Analysis, ...] = ("security", "faces")

R = TypeVar("R")

SHARE_MEMORY_S = 2.0
"""How far back the service looks when it weighs attendance's share of the frames analysed (the
time constant of the decay): a few frames of every camera, so the cap follows a change of load
within seconds and one batch does not swing it."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A frame that was not analysed: ``replaced`` by a newer one before a thread took it, or
    ``closed`` (the lane or the service closed first)."""

    reason: Literal["replaced", "closed"]


Outcome = Any
"""What a lane's ``analyse`` returned for the frame, the exception it raised, or :class:`Skipped`."""


class _Job:
    __slots__ = ("frame", "future", "loop")

    def __init__(self, frame: CameraFrame, loop: asyncio.AbstractEventLoop) -> None:
        self.frame = frame
        self.loop = loop
        self.future: asyncio.Future[Outcome] = loop.create_future()


class Lane(Generic[R]):
    """One camera's one analysis in ``service`` (it joins the service when made): ``analyse(frame)``
    runs one frame (blocking, in a service thread); with ``analyse_batch``, lanes of the same
    ``batch_group`` may be analysed together (it returns one result or exception per lane, in
    order). ``counters``: ``offered``, ``replaced``, ``analysed``, ``failed`` (the analysis raised),
    ``closed`` (dropped by :meth:`close`)."""

    def __init__(
        self,
        service: InferenceService,
        camera_id: str,
        analysis: Analysis,
        analyse: Callable[[CameraFrame], R],
        *,
        batch_group: str | None = None,
        analyse_batch: Callable[[Sequence[tuple[Lane[R], CameraFrame]]], Sequence[R | BaseException]]
        | None = None,
        owner: Any = None,
    ) -> None:
        self.service = service
        self.owner = owner
        """Who offers to this lane (a batch function reaches each lane's pipeline through it)."""
        self.camera_id = camera_id
        self.analysis: Analysis = analysis
        self.analyse = analyse
        self.batch_group = batch_group if analyse_batch is not None else None
        self.analyse_batch = analyse_batch
        self.counters: Counter[str] = Counter()
        self.last_lag_s = 0.0
        """Capture → analysed, of the newest analysed frame (seconds of the service's clock)."""
        self._job: _Job | None = None
        self._waiting_since = 0.0
        """When the lane last went from empty to holding a frame: a newer frame replacing the one
        waiting does not restart the wait (else a camera sending 5 frames/s would never wait long)."""
        self._busy = False
        self._served = 0  # the service's serve count when this lane was last taken (round-robin)
        service._join(self)

    def offer(self, frame: CameraFrame) -> asyncio.Future[Outcome]:
        """Leave ``frame`` for analysis (from the event loop; never blocks). The future gets the
        outcome; a frame still waiting when a newer one is offered resolves as ``Skipped("replaced")``."""
        return self.service._offer(self, frame)

    def close(self) -> None:
        """Drop the waiting frame (its future resolves as ``Skipped("closed")``) and leave the
        service; an analysis under way finishes in the background. Offering again re-joins."""
        self.service._leave(self)


class InferenceService:
    """The shared pool; see the module docstring. Threads start with the first offer and stop at
    :meth:`close` (the service may be used again after it: new threads start with the next offer).

    ``monotonic`` is the clock frames' capture times (``CameraFrame.monotonic_s``) are on, for the
    lag; the attendance wait is measured on the same clock.
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        max_batch: int = 2,
        attendance_max_wait_s: float = 0.3,  # the config's defaults (VisionSettings)
        attendance_max_share: float = 0.4,
        monotonic: Callable[[], float] = time.monotonic,
        name: str = "inference",
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError("an inference service needs at least one worker and batches of at least one")
        self.workers = workers
        self.max_batch = max_batch
        self.attendance_max_wait_s = attendance_max_wait_s
        self.attendance_max_share = attendance_max_share
        self._monotonic = monotonic
        self._name = name
        self._lanes: list[Lane[Any]] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._serves = 0
        self._closing = False
        self._recent = {analysis: 0.0 for analysis in ANALYSES}
        """Frames analysed lately per analysis, each weighted by exp(-age / SHARE_MEMORY_S)."""
        self._recent_at = 0.0
        self.counters: Counter[str] = Counter()
        """``batches`` (runs of a batch function), ``batched_frames`` (frames in them)."""

    @property
    def lanes(self) -> list[Lane[Any]]:
        with self._cond:
            return list(self._lanes)

    def attendance_share(self) -> float:
        """Attendance's share of the frames analysed over the last few seconds (status: at
        ``attendance_max_share`` while security frames wait, attendance is being held back)."""
        with self._cond:
            return self._attendance_share(self._monotonic())

    # -- the event loop's side ---------------------------------------------------------------

    def _join(self, lane: Lane[Any]) -> None:
        with self._cond:
            if lane not in self._lanes:
                self._lanes.append(lane)

    def _offer(self, lane: Lane[Any], frame: CameraFrame) -> asyncio.Future[Outcome]:
        job, now = _Job(frame, asyncio.get_running_loop()), self._monotonic()
        self._join(lane)  # again after a close
        with self._cond:
            replaced, lane._job = lane._job, job
            if replaced is None:
                lane._waiting_since = now
            lane.counters["offered"] += 1
            if replaced is not None:
                lane.counters["replaced"] += 1
            self._closing = False
            self._start_threads()
            self._cond.notify()
        if replaced is not None:
            _settle(replaced, Skipped("replaced"))
        return job.future

    def _leave(self, lane: Lane[Any]) -> None:
        with self._cond:
            job, lane._job = lane._job, None
            if lane in self._lanes:
                self._lanes.remove(lane)
            if job is not None:
                lane.counters["closed"] += 1
        if job is not None:
            _settle(job, Skipped("closed"))

    def close(self, wait_s: float = 0.0) -> bool:
        """Stop the threads once their current analysis ends; frames still waiting resolve as
        ``Skipped("closed")``. ``wait_s``: how long to wait for the analyses under way (blocking);
        returns whether every thread has ended. The agent waits at its exit: a thread still inside
        ONNX Runtime or OpenCV while the process tears their libraries down aborts it ("terminate
        called without an active exception", exit code -6 instead of 0)."""
        with self._cond:
            self._closing = True
            dropped = [(lane, lane._job) for lane in self._lanes if lane._job is not None]
            for lane, _ in dropped:
                lane._job = None
                lane.counters["closed"] += 1
            threads, self._threads = self._threads, []
            self._cond.notify_all()
        for _, job in dropped:
            assert job is not None
            _settle(job, Skipped("closed"))
        # Daemon threads: each exits at its next look at the queue, waited for or not.
        deadline = time.monotonic() + wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) if wait_s > 0 else 0.0)
        return not any(thread.is_alive() for thread in threads)

    # -- the threads' side -------------------------------------------------------------------

    def _start_threads(self) -> None:
        # Called with the lock held.
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        lower_thread_priority()  # analysis yields the CPU to the gates and the loop (see the function)
        show_thread_name()
        me = threading.current_thread()
        while True:
            with self._cond:
                taken = self._take(me)
                if taken is None:
                    return
            self._run(taken)

    def _take(self, me: threading.Thread) -> list[tuple[Lane[Any], _Job]] | None:
        """Wait for work and take it: the first lane by priority, and the batch it leads. None when
        this thread should exit. Called with the lock held."""
        while True:
            if self._closing or me not in self._threads:
                return None
            ready = [lane for lane in self._lanes if lane._job is not None and not lane._busy]
            if ready:
                break
            self._idle += 1
            try:
                self._cond.wait()
            finally:
                self._idle -= 1
        now = self._monotonic()
        promote = self._attendance_share(now) < self.attendance_max_share
        ready.sort(key=lambda lane: (self._class_of(lane, now, promote), lane._served))
        first = ready[0]
        chosen = [first]
        if first.batch_group is not None:
            peers = [lane for lane in ready[1:] if lane.batch_group == first.batch_group]
            # Its share of the ready lanes of the group, while other threads are idle to take theirs.
            share = math.ceil((len(peers) + 1) / (self._idle + 1))
            chosen += peers[: min(self.max_batch, share) - 1]
        taken = []
        for lane in chosen:
            self._serves += 1
            lane._served = self._serves
            lane._busy = True
            job, lane._job = lane._job, None
            assert job is not None
            taken.append((lane, job))
            self._recent[lane.analysis] += 1.0
        return taken

    def _attendance_share(self, now: float) -> float:
        """Attendance's share of the frames analysed lately (0 before any). Decays the tallies to
        ``now`` first. Called with the lock held."""
        decay = math.exp(-max(0.0, now - self._recent_at) / SHARE_MEMORY_S)
        self._recent_at = now
        for analysis in self._recent:
            self._recent[analysis] *= decay
        total = sum(self._recent.values())
        return self._recent["faces"] / total if total > 0 else 0.0

    def _class_of(self, lane: Lane[Any], now: float, promote: bool) -> int:
        if lane.analysis == "security":
            return 0
        return 0 if promote and now - lane._waiting_since >= self.attendance_max_wait_s else 1

    def _run(self, taken: list[tuple[Lane[Any], _Job]]) -> None:
        try:
            outcomes = self._analyse(taken)
        finally:
            with self._cond:
                for lane, _ in taken:
                    lane._busy = False
                self._cond.notify()
        now = self._monotonic()
        for (lane, job), outcome in zip(taken, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                lane.counters["failed"] += 1
            else:
                lane.counters["analysed"] += 1
                lane.last_lag_s = max(0.0, now - job.frame.monotonic_s)
                INFERENCE_LAG_SECONDS.labels(lane.analysis).observe(lane.last_lag_s)
            _settle(job, outcome)

    def _analyse(self, taken: list[tuple[Lane[Any], _Job]]) -> Sequence[Outcome]:
        lead = taken[0][0]
        if len(taken) > 1 and lead.analyse_batch is not None:
            self.counters["batches"] += 1
            self.counters["batched_frames"] += len(taken)
            try:
                outcomes = lead.analyse_batch([(lane, job.frame) for lane, job in taken])
            except Exception as err:  # every frame of the batch gets the error
                return [err] * len(taken)
            if len(outcomes) != len(taken):
                wrong = RuntimeError(f"batch analysis gave {len(outcomes)} results for {len(taken)} frames")
                return [wrong] * len(taken)
            return outcomes
        results: list[Outcome] = []
        for lane, job in taken:
            try:
                results.append(lane.analyse(job.frame))
            except Exception as err:  # handed to the lane's owner, who logs it
                results.append(err)
        return results


def _settle(job: _Job, outcome: Outcome) -> None:
    """Resolve ``job``'s future on its event loop (from any thread); nothing if the loop is gone
    or the awaiting side cancelled it."""

    def resolve() -> None:
        if not job.future.done():
            job.future.set_result(outcome)

    # A closed loop (the agent is gone) raises RuntimeError: nobody waits for the result then.
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(resolve)


__all__ = ["ANALYSES", "Analysis", "InferenceService", "Lane", "Outcome", "Skipped"]

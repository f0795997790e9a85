"""The component model: start order, reverse stop order, and the failure policies, on a fake clock."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from device_drivers import BackoffConfig
from edge_agent.components import ComponentSpec, FatalComponentError, OnFailure, Supervisor
from edge_agent.services import Counters
from tests.support.clock import FakeClock
from tests.support.wait import async_wait_until


class Recorder:
    """A component that logs its calls; ``fail_run`` / ``fail_start`` make it fail that many times."""

    def __init__(self, name: str, log: list[str], *, fail_run: int = 0, fail_start: int = 0) -> None:
        self.name, self.log = name, log
        self.fail_run, self.fail_start = fail_run, fail_start
        self.running = asyncio.Event()

    async def start(self) -> None:
        self.log.append(f"start {self.name}")
        if self.fail_start:
            self.fail_start -= 1
            raise RuntimeError(f"{self.name} cannot start")

    async def run(self) -> None:
        self.log.append(f"run {self.name}")
        if self.fail_run:
            self.fail_run -= 1
            raise RuntimeError(f"{self.name} broke")
        self.running.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (the suite runs without an asyncio plugin)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), 30))

    return wrapper


def supervisor(specs: list[ComponentSpec], clock: FakeClock) -> Supervisor:
    # No jitter: the test advances the clock by exactly the delay the backoff asks for.
    backoff = BackoffConfig(initial_s=1.0, max_s=8.0, multiplier=2.0, jitter=0.0)
    return Supervisor(specs, clock=clock, counters=Counters(), backoff=backoff)


@in_loop
async def test_start_in_table_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    parts = [Recorder(n, log) for n in ("outbox", "link", "device")]
    sup = supervisor([ComponentSpec(p.name, p, OnFailure.RESTART) for p in parts], FakeClock())
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run(stop))
        await async_wait_until(lambda: all(p.running.is_set() for p in parts), what="all running")
        stop.set()
    assert [e for e in log if e.startswith("start")] == ["start outbox", "start link", "start device"]
    assert [e for e in log if e.startswith("stop")] == ["stop device", "stop link", "stop outbox"]
    assert all(s["state"] == "stopped" for s in sup.snapshot().values())


@in_loop
async def test_a_failing_component_is_restarted_after_the_backoff_and_the_rest_keeps_running() -> None:
    clock = FakeClock()
    log: list[str] = []
    steady = Recorder("gate", log)
    flaky = Recorder("device", log, fail_run=2)
    sup = supervisor(
        [ComponentSpec("gate", steady, OnFailure.RESTART), ComponentSpec("device", flaky, OnFailure.RESTART)],
        clock,
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run(stop))
        await async_wait_until(lambda: clock.sleepers == 1, what="the first backoff")
        assert log.count("run device") == 1 and not flaky.running.is_set()
        await clock.advance_and_settle(0.999)  # not yet: the first delay is 1 s
        assert log.count("run device") == 1
        await clock.advance_and_settle(0.001)
        await async_wait_until(
            lambda: clock.sleepers == 1 and log.count("run device") == 2, what="2nd backoff"
        )
        await clock.advance_and_settle(2.0)  # the second delay doubled
        await async_wait_until(flaky.running.is_set, what="the device running again")
        assert sup.healthy() and steady.running.is_set()
        assert sup.states["device"].restarts == 2
        assert sup.counters.get("component_restarted_device") == 2
        stop.set()
    # Each restart stopped the failed instance before starting it again.
    assert log.count("stop device") == 3 and log.count("start device") == 3


@in_loop
async def test_a_fatal_component_failing_stops_the_gateway_unhealthy() -> None:
    log: list[str] = []
    outbox = Recorder("outbox", log, fail_run=1)
    other = Recorder("api", log)
    sup = supervisor(
        [ComponentSpec("outbox", outbox, OnFailure.FATAL), ComponentSpec("api", other, OnFailure.RESTART)],
        FakeClock(),
    )
    with pytest.raises(FatalComponentError, match="outbox"):
        await sup.run(asyncio.Event())
    assert not sup.healthy()
    assert sup.snapshot()["outbox"]["state"] == "failed"
    assert log[-2:] == ["stop api", "stop outbox"]


@in_loop
async def test_leave_off_keeps_the_rest_running_and_a_fatal_start_failure_starts_nothing_after() -> None:
    log: list[str] = []
    api = Recorder("api", log, fail_start=1)
    gate = Recorder("gate", log)
    sup = supervisor(
        [ComponentSpec("api", api, OnFailure.LEAVE_OFF), ComponentSpec("gate", gate, OnFailure.RESTART)],
        FakeClock(),
    )
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sup.run(stop))
        await async_wait_until(gate.running.is_set, what="the gate running")
        assert sup.snapshot()["api"]["state"] == "off" and sup.healthy()
        stop.set()
    assert "stop api" not in log  # never started, never stopped

    log2: list[str] = []
    broken = Recorder("stores", log2, fail_start=1)
    later = Recorder("gate", log2)
    sup2 = supervisor(
        [ComponentSpec("stores", broken, OnFailure.FATAL), ComponentSpec("gate", later, OnFailure.RESTART)],
        FakeClock(),
    )
    with pytest.raises(FatalComponentError, match="stores"):
        await sup2.run(asyncio.Event())
    assert log2 == ["start stores"]


@in_loop
async def test_a_component_that_keeps_failing_is_escalated() -> None:
    clock = FakeClock()
    log: list[str] = []
    hopeless = Recorder("camera", log, fail_run=100)
    sup = supervisor([ComponentSpec("camera", hopeless, OnFailure.RESTART, max_restarts=3)], clock)
    task = asyncio.create_task(sup.run(asyncio.Event()))
    for _ in range(10):
        await async_wait_until(lambda: clock.sleepers >= 1 or task.done(), what="a backoff or the end")
        if task.done():
            break
        await clock.advance_and_settle(8.0)
    with pytest.raises(FatalComponentError, match="camera failed 4 times"):
        await task
    assert not sup.healthy()

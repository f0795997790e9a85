"""The component model: the gateway is one ``asyncio.TaskGroup`` of components.

A component has a small contract — ``start()`` acquires what it needs (and may fail), ``run()`` is
its life (it returns or is cancelled at stop), ``stop()`` releases (idempotent, bounded by its
``stop_timeout_s``). The :class:`Supervisor` starts components in the order given, runs each in one
task of one TaskGroup, and stops them in reverse order within the shutdown bound. What happens when
a component fails is its :class:`OnFailure` policy, declared beside it in the gateway's table:

- ``RESTART``: stop it, wait the shared backoff, start and run it again; the gateway stays healthy
  while restarts succeed, and a component that keeps failing (``max_restarts`` in
  ``restart_window_s``) is escalated to FATAL.
- ``FATAL``: the gateway is unhealthy from then on (the systemd watchdog ping is withheld, so systemd
  restarts the process) and stops with exit code 1.
- ``LEAVE_OFF``: log it, count it, leave it off; the rest runs (the local API on a port in use must
  not close the gates).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from dataclasses import dataclass, field
from typing import Protocol

from device_drivers import Backoff, BackoffConfig
from edge_agent.clock import Clock
from edge_agent.services import Counters

log = logging.getLogger(__name__)


class Component(Protocol):
    """What the supervisor asks of a component."""

    async def start(self) -> None: ...

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class OnFailure(enum.Enum):
    RESTART = "restart"
    FATAL = "fatal"
    LEAVE_OFF = "leave_off"


@dataclass(frozen=True)
class ComponentSpec:
    """One row of the gateway's component table."""

    name: str
    component: Component
    on_failure: OnFailure
    stop_timeout_s: float = 5.0
    stop_first: bool = False
    """At stop, call ``stop()`` while ``run()`` still runs and let ``run()`` end on its own (the
    link publishes the backlog until then); otherwise ``run()`` is cancelled first."""
    max_restarts: int = 5
    restart_window_s: float = 60.0


@dataclass
class ComponentState:
    state: str = "pending"  # pending, starting, running, restarting, stopped, off, failed
    restarts: int = 0
    last_error: str = ""
    restart_times: list[float] = field(default_factory=list)


class FatalComponentError(Exception):
    """A FATAL component failed; the gateway stops with exit code 1."""


class Supervisor:
    """Runs a table of components as one TaskGroup; see the module docstring for the policies."""

    def __init__(
        self,
        specs: list[ComponentSpec],
        *,
        clock: Clock,
        counters: Counters,
        backoff: BackoffConfig | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(names) != len(set(names)):
            raise ValueError(f"component names must be unique: {names}")
        self.specs = specs
        self.clock = clock
        self.counters = counters
        self._backoff_config = backoff or BackoffConfig()
        self.states: dict[str, ComponentState] = {s.name: ComponentState() for s in specs}
        self._fatal: str | None = None
        self._started: list[ComponentSpec] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    # -- health ---------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """False once a FATAL component failed (or one that keeps failing was escalated)."""
        return self._fatal is None

    @property
    def fatal_reason(self) -> str | None:
        return self._fatal

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Each component's state, restarts and last error, for status and metrics."""
        by_name = {s.name: s for s in self.specs}
        return {
            name: {
                "state": st.state,
                "restarts": st.restarts,
                "last_error": st.last_error,
                "on_failure": by_name[name].on_failure.value,
            }
            for name, st in self.states.items()
        }

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start every component in order, run them until ``stop`` is set (or a FATAL component
        fails), then stop them in reverse order. Raises :class:`FatalComponentError` for the latter."""
        try:
            async with asyncio.TaskGroup() as group:
                relay = group.create_task(self._relay_stop(stop), name="stop-request")
                for spec in self.specs:
                    if await self._start(spec):
                        self._tasks[spec.name] = group.create_task(
                            self._supervise(spec), name=f"component-{spec.name}"
                        )
                    elif self._fatal is not None:
                        break
                if self._fatal is None:
                    await self._stopping.wait()
                self._stopping.set()
                relay.cancel()
                await self._stop_all()
        finally:
            # Only when the group itself was torn down (cancelled from outside): stop what started.
            await self._stop_all()
        if self._fatal is not None:
            raise FatalComponentError(self._fatal)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def _start(self, spec: ComponentSpec) -> bool:
        state = self.states[spec.name]
        state.state = "starting"
        try:
            await spec.component.start()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            state.last_error = f"{type(err).__name__}: {err}"
            self.counters.count(f"component_start_failed_{spec.name}")
            if spec.on_failure is OnFailure.FATAL:
                log.critical("component %s could not start: %s", spec.name, err)
                state.state = "failed"
                self._fatal = f"{spec.name}: {err}"
                return False
            if spec.on_failure is OnFailure.LEAVE_OFF:
                log.error("component %s could not start and stays off: %s", spec.name, err)
                state.state = "off"
                return False
            log.error("component %s could not start, retrying with backoff: %s", spec.name, err)
            state.state = "restarting"
            self._started.append(spec)
            return True  # _supervise retries the start
        self._started.append(spec)
        state.state = "running"
        return True

    async def _supervise(self, spec: ComponentSpec) -> None:
        state = self.states[spec.name]
        backoff = Backoff(self._backoff_config)
        while not self._stopping.is_set():
            if state.state == "restarting":
                await self.clock.sleep(backoff.next_delay())
                try:
                    await spec.component.start()
                except Exception as err:
                    state.last_error = f"{type(err).__name__}: {err}"
                    self.counters.count(f"component_start_failed_{spec.name}")
                    log.error("component %s could not start again: %s", spec.name, err)
                    if self._escalate(spec, state):
                        return
                    continue
                state.state = "running"
            try:
                await spec.component.run()
            except Exception as err:
                state.last_error = f"{type(err).__name__}: {err}"
                self.counters.count(f"component_failed_{spec.name}")
                log.error("component %s failed: %s", spec.name, err, exc_info=err)
            else:
                if self._stopping.is_set():
                    return
                if spec.on_failure is not OnFailure.RESTART:
                    state.state = "finished"
                    return
                state.last_error = "run() returned"
                log.error("component %s ended on its own", spec.name)
            if spec.on_failure is OnFailure.LEAVE_OFF:
                state.state = "off"
                return
            if spec.on_failure is OnFailure.FATAL:
                state.state = "failed"
                self._fatal = f"{spec.name}: {state.last_error}"
                self._stopping.set()
                return
            with contextlib.suppress(Exception):
                await asyncio.wait_for(spec.component.stop(), spec.stop_timeout_s)
            state.state = "restarting"
            state.restarts += 1
            self.counters.count(f"component_restarted_{spec.name}")
            if self._escalate(spec, state):
                return

    def _escalate(self, spec: ComponentSpec, state: ComponentState) -> bool:
        """A component restarted ``max_restarts`` times within its window is failing for good."""
        now = self.clock.monotonic()
        state.restart_times = [t for t in state.restart_times if now - t <= spec.restart_window_s]
        state.restart_times.append(now)
        if len(state.restart_times) <= spec.max_restarts:
            return False
        state.state = "failed"
        self._fatal = f"{spec.name} failed {len(state.restart_times)} times in {spec.restart_window_s:.0f} s"
        log.critical("component %s keeps failing; the gateway is unhealthy", spec.name)
        self._stopping.set()
        return True

    async def _stop_all(self) -> None:
        """Stop the started components in reverse start order, each within its ``stop_timeout_s``."""
        while self._started:
            spec = self._started.pop()
            state = self.states[spec.name]
            task = self._tasks.pop(spec.name, None)
            try:
                if spec.stop_first:
                    await asyncio.wait_for(spec.component.stop(), spec.stop_timeout_s)
                    if task is not None:
                        await self._finish(task, spec.stop_timeout_s)
                else:
                    if task is not None:
                        await self._finish(task, 0)
                    await asyncio.wait_for(spec.component.stop(), spec.stop_timeout_s)
            except TimeoutError:
                self.counters.count(f"component_stop_timeout_{spec.name}")
                log.warning("component %s did not stop within %.1f s", spec.name, spec.stop_timeout_s)
            except Exception:
                log.exception("component %s did not stop cleanly", spec.name)
            if task is not None:
                await self._finish(task, 0)
            if state.state != "failed":
                state.state = "stopped"

    @staticmethod
    async def _finish(task: asyncio.Task[None], grace_s: float) -> None:
        """Let ``task`` end within ``grace_s``, else cancel it and wait for it to unwind."""
        if grace_s > 0:
            await asyncio.wait({task}, timeout=grace_s)
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


__all__ = ["Component", "ComponentSpec", "FatalComponentError", "OnFailure", "Supervisor"]

"""Device components: one per configured device, and the router that takes their readings to gates.

A :class:`DeviceComponent` opens its driver through the device registry (a simulated device is
resolved there too, never here), pumps the driver's readings into the :class:`ReadingRouter`, and
closes the driver on stop. Drivers reconnect on their own; a driver that fails outright is
restarted by the supervisor with the shared backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

from device_drivers import (
    CardRead,
    DeviceConfig,
    DeviceOffline,
    DeviceOnline,
    DeviceTamper,
    DigitalInput,
    Driver,
    MotionDetected,
    OsdpBusConfig,
    Reading,
    TerminalAccess,
    TerminalAttendance,
    TurnstileEvent,
    open_driver,
)
from edge_agent.gates import GateController
from edge_agent.services import Counters, DeviceDirectory, Emitter
from sync import Event, Severity

log = logging.getLogger(__name__)

Committed = Awaitable[object]
"""What a handler returns for a reading whose event must be committed before the device is told
(a terminal's record): the outbox commit of that event."""


class TerminalHandler(Protocol):
    """Turns a vendor terminal's records into events (edge_agent.terminals)."""

    def on_record(self, reading: TerminalAttendance | TerminalAccess) -> Committed | None: ...


class InputHandler(Protocol):
    """Acts on an I/O module's inputs: door contacts, fire alarms (edge_agent.doors)."""

    async def on_input(self, reading: DigitalInput) -> None: ...


class ReadingRouter:
    """Routes one device reading: cards to their gate, turnstile events to theirs, terminal records
    and I/O inputs to their handlers, health to events."""

    def __init__(self, devices: DeviceDirectory, emitter: Emitter, counters: Counters) -> None:
        self.devices = devices
        self.emitter = emitter
        self.counters = counters
        self.reader_gate: dict[str, GateController] = {}
        self.opener_gate: dict[str, GateController] = {}
        self.terminals: TerminalHandler | None = None
        self.inputs: InputHandler | None = None

    def add_gate(self, gate: GateController) -> None:
        for reader in gate.config.readers:
            self.reader_gate[reader.device] = gate
        if gate.config.turnstile:
            self.opener_gate[gate.config.turnstile] = gate

    async def on_reading(self, reading: Reading) -> Committed | None:
        """Handle ``reading``; for a terminal record, return the commit of its event (the driver is
        told only once it is durable: see :meth:`DeviceComponent.run`)."""
        if isinstance(reading, TerminalAttendance | TerminalAccess):
            if self.terminals is None:
                self.counters.count("terminal_record_unhandled")
                log.warning(
                    "a record from %s arrived before the terminal handler was set up", reading.device_id
                )
                return None
            return self.terminals.on_record(reading)
        if isinstance(reading, DigitalInput):
            if self.inputs is None:
                self.counters.count("input_unhandled")
                log.warning("input %s of %s changed with no input handler", reading.name, reading.device_id)
                return None
            await self.inputs.on_input(reading)
            return None
        if isinstance(reading, MotionDetected):
            self.emitter.emit(
                Event(
                    "edu.campus.device.motion.v1",
                    self.emitter.source(reading.device_id),
                    {"device": reading.device_id, "active": reading.active, "topic": reading.topic},
                    time=reading.at,
                )
            )
            return None
        if isinstance(reading, CardRead):
            gate = self.reader_gate.get(reading.device_id)
            if gate is None:
                self.counters.count("card_at_unassigned_reader")
                log.warning(
                    "card %s read at %s, which feeds no gate; ignored", reading.credential, reading.device_id
                )
                return None
            await gate.on_card(reading)
        elif isinstance(reading, TurnstileEvent):
            opener = self.opener_gate.get(reading.device_id)
            if opener is None:
                self.counters.count("turnstile_event_without_gate")
                log.warning("%s from %s, which belongs to no gate", reading.kind, reading.device_id)
                return None
            opener.on_turnstile(reading)
        elif isinstance(reading, DeviceOnline | DeviceOffline):
            online = isinstance(reading, DeviceOnline)
            self.devices.set_online(reading.device_id, online)
            data: dict[str, Any] = {
                "device": reading.device_id,
                "kind": self.devices.kind(reading.device_id),
                "reason": reading.reason,
            }
            event_type = "edu.campus.device.online.v1" if online else "edu.campus.device.offline.v1"
            self.emitter.emit(
                Event(event_type, self.emitter.source(reading.device_id), data, time=reading.at)
            )
        elif isinstance(reading, DeviceTamper):
            self.emitter.emit(
                Event(
                    "edu.campus.device.tamper.v1",
                    self.emitter.source(reading.device_id),
                    {
                        "device": reading.device_id,
                        "kind": self.devices.kind(reading.device_id),
                        "tampered": reading.tampered,
                        "power_failure": reading.power_failure,
                    },
                    time=reading.at,
                    severity=Severity.WARNING if reading.tampered or reading.power_failure else Severity.INFO,
                )
            )
        return None


class DeviceComponent:
    """One configured device: open its driver, pump its readings, close it."""

    def __init__(
        self,
        config: DeviceConfig,
        devices: DeviceDirectory,
        router: ReadingRouter,
        *,
        state_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.devices = devices
        self.router = router
        self.state_dir = state_dir
        """The device's own directory for what its driver keeps across restarts (a high-water mark)."""
        self._stack: AsyncExitStack | None = None
        self._driver: Driver | None = None
        devices.known(config.id, config.kind)
        if isinstance(config, OsdpBusConfig):
            for reader in config.readers:
                devices.known(reader.id, "osdp_reader")
        # A push listener's terminals are devices of their own (each its own source and state).
        for terminal in getattr(config, "terminals", None) or ():
            devices.known(terminal.id, f"{config.kind}_terminal")

    async def start(self) -> None:
        stack = AsyncExitStack()
        if self.state_dir is not None:
            await asyncio.to_thread(self.state_dir.mkdir, parents=True, exist_ok=True)
        driver = open_driver(self.config, state_dir=self.state_dir)
        try:
            await stack.enter_async_context(driver)
        except BaseException:
            await stack.aclose()
            self.devices.set_online(self.config.id, False)
            raise
        self._stack = stack
        self._driver = driver
        self.devices.drivers[self.config.id] = driver

    async def run(self) -> None:
        assert self._driver is not None
        acknowledge: Callable[[Reading], None] | None = getattr(self._driver, "acknowledge", None)
        acks = _InOrderAcks(self.config.id, acknowledge, self.router.counters)
        try:
            async for reading in self._driver.readings():
                try:
                    committed = await self.router.on_reading(reading)
                except Exception as err:
                    # A bug in handling one reading must not stop the device's stream...
                    self.router.counters.count("reading_handler_failed")
                    log.exception("handling %r failed", reading)
                    if acknowledge is not None and isinstance(reading, TerminalAttendance | TerminalAccess):
                        # ...but a terminal's record must not be skipped: nothing after it is
                        # acknowledged, and the supervisor restarts the device (with its backoff),
                        # whose driver delivers the record again from its mark.
                        raise DeviceRecordNotHandled(self.config.id, reading) from err
                    continue
                if committed is not None:
                    acks.after(committed, reading)
        finally:
            acks.close()

    async def stop(self) -> None:
        self.devices.drivers.pop(self.config.id, None)
        self._driver = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


class DeviceRecordNotHandled(Exception):
    """A terminal's record could not be turned into an event: the device is restarted rather than
    the record skipped."""

    def __init__(self, device_id: str, reading: Reading) -> None:
        super().__init__(f"{device_id}: a record could not be handled ({reading!r}); restarting the device")


class _InOrderAcks:
    """Tells the driver each reading is safe, in reading order, once its event is committed.

    A driver that keeps a high-water mark (a terminal's log position, records the terminal marks as
    sent) moves it only here, so a record is never given up before it is durable. After a failed
    commit nothing more is acknowledged: the driver delivers those records again at its next start,
    and the same record gives the same event id, so the centre de-duplicates them."""

    def __init__(
        self, device_id: str, acknowledge: Callable[[Reading], None] | None, counters: Counters
    ) -> None:
        self.device_id = device_id
        self.acknowledge = acknowledge
        self.counters = counters
        self._queue: asyncio.Queue[tuple[Committed, Reading]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def stop(self, why: str) -> None:
        if not self._stopped and self.acknowledge is not None:
            log.error("%s: %s; its records are no longer acknowledged until it restarts", self.device_id, why)
        self._stopped = True

    def after(self, committed: Committed, reading: Reading) -> None:
        if self.acknowledge is None or self._stopped:
            return
        self._queue.put_nowait((committed, reading))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"acks-{self.device_id}")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        assert self.acknowledge is not None
        while not self._stopped:
            committed, reading = await self._queue.get()
            try:
                await committed
            except Exception as err:
                self.counters.count("terminal_record_commit_failed")
                self.stop(f"an event could not be committed ({err})")
                return
            try:
                self.acknowledge(reading)
            except Exception:
                self.counters.count("terminal_ack_failed")
                log.exception("%s: acknowledging a record failed", self.device_id)
                self.stop("acknowledging a record failed")


__all__ = [
    "Committed",
    "DeviceComponent",
    "DeviceRecordNotHandled",
    "InputHandler",
    "ReadingRouter",
    "TerminalHandler",
]

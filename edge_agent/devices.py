"""Device components: one per configured device, and the router that takes their readings to gates.

A :class:`DeviceComponent` opens its driver through the device registry (a simulated device is
resolved there too, never here), pumps the driver's readings into the :class:`ReadingRouter`, and
closes the driver on stop. Drivers reconnect on their own; a driver that fails outright is
restarted by the supervisor with the shared backoff.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

from device_drivers import (
    CardRead,
    DeviceConfig,
    DeviceOffline,
    DeviceOnline,
    DeviceTamper,
    Driver,
    OsdpBusConfig,
    Reading,
    TurnstileEvent,
    open_driver,
)
from edge_agent.gates import GateController
from edge_agent.services import Counters, DeviceDirectory, Emitter
from sync import Event, Severity

log = logging.getLogger(__name__)


class ReadingRouter:
    """Routes one device reading: cards to their gate, turnstile events to theirs, health to events."""

    def __init__(self, devices: DeviceDirectory, emitter: Emitter, counters: Counters) -> None:
        self.devices = devices
        self.emitter = emitter
        self.counters = counters
        self.reader_gate: dict[str, GateController] = {}
        self.opener_gate: dict[str, GateController] = {}

    def add_gate(self, gate: GateController) -> None:
        for reader in gate.config.readers:
            self.reader_gate[reader.device] = gate
        if gate.config.turnstile:
            self.opener_gate[gate.config.turnstile] = gate

    async def on_reading(self, reading: Reading) -> None:
        if isinstance(reading, CardRead):
            gate = self.reader_gate.get(reading.device_id)
            if gate is None:
                self.counters.count("card_at_unassigned_reader")
                log.warning(
                    "card %s read at %s, which feeds no gate; ignored", reading.credential, reading.device_id
                )
                return
            await gate.on_card(reading)
        elif isinstance(reading, TurnstileEvent):
            opener = self.opener_gate.get(reading.device_id)
            if opener is None:
                self.counters.count("turnstile_event_without_gate")
                log.warning("%s from %s, which belongs to no gate", reading.kind, reading.device_id)
                return
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


class DeviceComponent:
    """One configured device: open its driver, pump its readings, close it."""

    def __init__(self, config: DeviceConfig, devices: DeviceDirectory, router: ReadingRouter) -> None:
        self.config = config
        self.devices = devices
        self.router = router
        self._stack: AsyncExitStack | None = None
        self._driver: Driver | None = None
        devices.known(config.id, config.kind)
        if isinstance(config, OsdpBusConfig):
            for reader in config.readers:
                devices.known(reader.id, "osdp_reader")

    async def start(self) -> None:
        stack = AsyncExitStack()
        driver = open_driver(self.config)
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
        async for reading in self._driver.readings():
            try:
                await self.router.on_reading(reading)
            except Exception:
                # A bug in handling one reading must not stop the device's stream.
                self.router.counters.count("reading_handler_failed")
                log.exception("handling %r failed", reading)

    async def stop(self) -> None:
        self.devices.drivers.pop(self.config.id, None)
        self._driver = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


__all__ = ["DeviceComponent", "ReadingRouter"]

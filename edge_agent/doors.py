"""Doors and fire alarms from I/O-module inputs, and relays as door openers.

:class:`Doors` is the router's input handler (``router.inputs``): a door contact's
:class:`~device_drivers.DigitalInput` goes to the gate whose door it watches
(:meth:`GateController.on_door_contact`: door state, forced, held open); a fire-alarm input puts every
gate of its zone into free passage while any alarm input of the zone is active
(:meth:`GateController.set_free_passage`) and raises ``security.fire_alarm``. It also makes the
openers and holders of gates whose door is a Modbus relay (``gates[].door`` naming an output's
``door``), looking the driver up at the moment of use so a restarted device is used again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from device_drivers import DeviceError, DigitalInput
from device_drivers.modbus.config import ModbusIoConfig
from edge_agent.config import GateConfig, GatewayConfig
from edge_agent.gates import GateController, Holder, Opener
from edge_agent.services import Counters, DeviceDirectory, Emitter
from sync import Event, Severity

log = logging.getLogger(__name__)


class ModbusDoor:
    """A door opened by a Modbus relay, with the command surface of a turnstile or relay door
    (``open``, ``hold_open``, ``lock``, ``normal``), for remote commands on a gate with ``door:``."""

    def __init__(self, doors: Doors, device_id: str, output: str) -> None:
        self.doors = doors
        self.device_id = device_id
        self.output = output

    async def open(self, direction: Any = "entry") -> None:
        """Pulse the relay for its ``pulse_ms``."""
        await self.doors._driver(self.device_id).pulse(self.output)

    async def hold_open(self, direction: Any = "entry") -> None:
        """Keep the relay closed until :meth:`normal` or :meth:`lock`."""
        await self.doors._driver(self.device_id).set_coil(self.output, True)

    async def lock(self) -> None:
        """Release the relay (a strike cannot do more than not open)."""
        await self.normal()

    async def normal(self) -> None:
        """Release the relay."""
        await self.doors._driver(self.device_id).set_coil(self.output, False)


class Doors:
    """Door contacts, fire-alarm zones and Modbus door relays of one gateway."""

    def __init__(
        self, config: GatewayConfig, *, devices: DeviceDirectory, emitter: Emitter, counters: Counters
    ) -> None:
        self.devices = devices
        self.emitter = emitter
        self.counters = counters
        self.gates: dict[str, GateController] = {}
        self.relays: dict[str, tuple[str, str]] = {}
        """Door id → (Modbus device id, output name) of the relay that opens it."""
        for device in config.devices:
            if isinstance(device, ModbusIoConfig):
                for output in device.outputs:
                    if output.door:
                        self.relays[output.door] = (device.id, output.name)
        self.alarms: dict[tuple[str, str], bool] = {}
        """(device, input) → active, for every fire-alarm input heard from."""
        self.zone_of: dict[tuple[str, str], str] = {}

    def add_gate(self, gate: GateController) -> None:
        self.gates[gate.config.id] = gate
        if gate.config.door is not None:
            gate.door_device = self.door_device(gate.config.door)

    # -- openers -----------------------------------------------------------------------------

    def _driver(self, device_id: str) -> Any:
        driver = self.devices.drivers.get(device_id)
        if driver is None:
            raise DeviceError(f"device {device_id} is not running", device_id=device_id, code="offline")
        return driver

    def door_device(self, door_id: str) -> ModbusDoor | None:
        """The Modbus relay door ``door_id`` (what a remote command drives), if one opens it."""
        if door_id not in self.relays:
            return None
        return ModbusDoor(self, *self.relays[door_id])

    def opener(self, gate: GateConfig) -> Opener | None:
        """Pulses the Modbus relay of ``gate.door``; None for a gate without one."""
        door = self.door_device(gate.door) if gate.door is not None else None
        return door.open if door is not None else None

    def holder(self, gate: GateConfig) -> Holder | None:
        """Holds the gate's opener open for free passage: its Modbus relay, or the turnstile or relay
        door device (``hold_open`` / ``normal``)."""
        door = self.door_device(gate.door) if gate.door is not None else None
        if door is not None:
            modbus_door = door

            async def hold_relay(active: bool) -> None:
                await (modbus_door.hold_open() if active else modbus_door.normal())

            return hold_relay
        if gate.turnstile is not None:
            turnstile = gate.turnstile

            async def hold_device(active: bool) -> None:
                driver = self._driver(turnstile)
                call: Callable[[], Awaitable[None]] = (
                    (lambda: driver.hold_open("entry")) if active else driver.normal
                )
                await call()

            return hold_device
        return None

    # -- inputs ------------------------------------------------------------------------------

    async def on_input(self, reading: DigitalInput) -> None:
        self.counters.count(f"input_{reading.role}")
        if reading.role == "door_contact":
            self._door_contact(reading)
        elif reading.role == "fire_alarm":
            await self._fire_alarm(reading)
        else:
            log.info("input %s of %s: %s", reading.name, reading.device_id, "on" if reading.active else "off")

    def _door_contact(self, reading: DigitalInput) -> None:
        door = reading.target
        gates = [
            g for g in self.gates.values() if door is not None and door in (g.config.door, g.config.turnstile)
        ]
        if not gates:
            self.counters.count("door_contact_without_gate")
            log.warning(
                "door contact %s of %s watches door %s, which no gate has",
                reading.name,
                reading.device_id,
                door,
            )
            return
        for gate in gates:
            gate.on_door_contact(reading.device_id, door, reading.active, reading.at)

    async def _fire_alarm(self, reading: DigitalInput) -> None:
        key = (reading.device_id, reading.name)
        zone = reading.target
        if zone is None:
            self.counters.count("fire_alarm_without_zone")
            return
        previous = self.alarms.get(key)
        self.alarms[key] = reading.active
        self.zone_of[key] = zone
        if previous == reading.active or (previous is None and not reading.active):
            return  # the state again after a reconnect, or quiet at start
        zone_active = any(active for k, active in self.alarms.items() if self.zone_of[k] == zone)
        gates = sorted(g.config.id for g in self.gates.values() if g.config.zone == zone)
        for gate_id in gates:
            await self.gates[gate_id].set_free_passage(zone_active, reading.device_id, reading.at)
        self.counters.count("fire_alarm_active" if reading.active else "fire_alarm_cleared")
        if reading.active:
            log.critical(
                "fire alarm %s of %s in zone %s: gates %s in free passage",
                reading.name,
                reading.device_id,
                zone,
                gates,
            )
        else:
            log.warning(
                "fire alarm %s of %s in zone %s cleared (zone still active: %s)",
                reading.name,
                reading.device_id,
                zone,
                zone_active,
            )
        self.emitter.emit(
            Event(
                "edu.campus.security.fire_alarm.v1",
                self.emitter.source(reading.device_id),
                {
                    "zone": zone,
                    "device": reading.device_id,
                    "input": reading.name,
                    "active": reading.active,
                    "gates": gates,
                },
                time=reading.at,
                severity=Severity.CRITICAL if reading.active else Severity.INFO,
            )
        )


__all__ = ["Doors", "ModbusDoor"]

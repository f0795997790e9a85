"""A Modbus I/O module for tests and the demo: a real pymodbus server on 127.0.0.1 (a free port)
with a profile's register map, inputs set by :meth:`ModbusIoSimulator.set_input`, relays (coils)
written by the driver and read back by tests, and fault switches: stop answering (requests time
out), answer with an exception code, corrupt the CRC of RTU answers, cut the link and come back.

``framer="rtu"`` serves Modbus RTU frames (with their CRC) over TCP, as a serial-to-Ethernet
converter in front of an RS-485 module does; the driver reaches it as an RTU device through the
pyserial URL ``socket://127.0.0.1:<port>``, so the RTU path runs with no serial hardware.

Demo traffic, from the config's ``sim_*`` fields, while the module serves: a door whose relay
closes is opened (its contacts) a moment later; now and then a door contact opens with no relay
before it (forced); the fire-alarm inputs become active now and then and clear again."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer

from device_drivers.modbus.config import ModbusIoConfig
from device_drivers.modbus.profile import ModbusProfile, load_modbus_profile

_TABLES = {1: "coils", 5: "coils", 15: "coils", 2: "discrete_inputs", 4: "input_registers"}
_TABLES.update({code: "holding_registers" for code in (3, 6, 16, 22, 23)})
_SIZE = 65536


class _Store(ModbusServerContext):
    """The module's four tables for one unit id, answering as the fault switches say.

    Stands in for pymodbus' datastore (which 3.x is replacing by SimDevice) through the interface its
    request handler calls: ``async_getValues`` / ``async_setValues`` / ``device_ids``."""

    def __init__(self, unit: int) -> None:  # no super().__init__: it only builds the deprecated store
        self.unit = unit
        self.old_simulator = True  # "call me directly" to pymodbus' server
        self.simdevices = []
        self.tables: dict[str, dict[int, int]] = {
            "coils": {},
            "discrete_inputs": {},
            "input_registers": {},
            "holding_registers": {},
        }
        self.coil_writes: list[tuple[int, bool]] = []
        self.on_coil: Callable[[int, bool], None] | None = None
        """Told of every coil write (address, level): how the demo's doors follow their relays."""
        self.silent = False
        self.exception: ExcCodes | None = None
        self.requests = 0

    def _check(self, device_id: int) -> None:
        self.requests += 1
        if self.silent or device_id != self.unit:
            # Raised into pymodbus' handler with ignore_missing_devices: no answer, the client times out.
            raise NoSuchIdException(f"unit {device_id}")

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        self._check(device_id)
        if self.exception is not None:
            return self.exception
        table = self.tables[_TABLES[func_code]]
        if address + count > _SIZE:
            return ExcCodes.ILLEGAL_ADDRESS
        values = [table.get(a, 0) for a in range(address, address + count)]
        if func_code in (1, 2, 5, 15):
            return [bool(v) for v in values]
        return values

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        self._check(device_id)
        if self.exception is not None:
            return self.exception
        table = self.tables[_TABLES[func_code]]
        for offset, value in enumerate(values):
            table[address + offset] = int(value)
            if func_code in (5, 15):
                self.coil_writes.append((address + offset, bool(value)))
                if self.on_coil is not None:
                    self.on_coil(address + offset, bool(value))
        return None

    def device_ids(self) -> list[int]:
        return [self.unit]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModbusIoSimulator:
    """An I/O module speaking Modbus TCP; an async context manager (serves while entered)."""

    def __init__(
        self,
        profile: ModbusProfile | str = "generic_8di_8do",
        *,
        unit: int = 1,
        config: ModbusIoConfig | None = None,
        port: int | None = None,
        framer: Literal["tcp", "rtu"] = "tcp",
    ) -> None:
        self.profile = load_modbus_profile(profile) if isinstance(profile, str) else profile
        self.config = config
        self.store = _Store(unit)
        self.port = port or _free_port()
        self.framer = framer
        self.corrupt_crc = False
        """Fault (RTU): flip a bit of the CRC of every answer."""
        self.corrupted = 0
        self._server: ModbusTcpServer | None = None
        self._demo: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._relay_closed_at: dict[str, float] = {}
        """Door id → loop time its relay last closed (demo traffic: a forced door is not one just opened)."""
        self.demo_openings: dict[str, int] = {"relay": 0, "forced": 0, "fire_alarm": 0}
        """Demo traffic so far: doors opened after their relay, forced doors, fire alarms raised."""

    @classmethod
    def from_config(cls, config: ModbusIoConfig) -> Self:
        sim = cls(config.profile, unit=config.unit, config=config, framer=config.transport)
        # Inputs start inactive whatever their polarity (a closed door, no fire alarm).
        for item in config.inputs:
            sim.set_input(item.address, False)
        return sim

    @property
    def url(self) -> str:
        if self.framer == "rtu":
            return f"rtu:socket://127.0.0.1:{self.port}"
        return f"tcp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (again, on the same port after :meth:`stop`)."""
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self.store,
            framer=FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET,
            address=("127.0.0.1", self.port),
            ignore_missing_devices=True,
            trace_packet=self._trace_packet,
        )
        for _attempt in range(50):
            try:
                await server.serve_forever(background=True)
                break
            except RuntimeError:
                # The port of the previous run may linger a moment after a restart.
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"Modbus simulator: cannot listen on 127.0.0.1:{self.port}")
        self._server = server
        self._start_demo()

    async def stop(self) -> None:
        """Stop listening and drop every connection (the link is cut)."""
        demo, self._demo = self._demo, []
        for task in demo:
            task.cancel()
        for task in demo:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        if timers:
            # A demo opening cut short: the door closes (else it would come back held open).
            for name in self._contacts():
                self.set_input(name, False)
        if demo and self.config is not None and self.config.sim_fire_alarm_every_s is not None:
            # Likewise a demo fire alarm: the module comes back with the panel quiet.
            for item in self.config.inputs:
                if item.role == "fire_alarm":
                    self.set_input(item.name, False)
        self.store.on_coil = None
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]

    # -- demo traffic ----------------------------------------------------------------------

    def _contacts(self, door: str | None = None) -> list[str]:
        """Names of the door-contact inputs (of ``door``)."""
        if self.config is None:
            return []
        return [
            i.name
            for i in self.config.inputs
            if i.role == "door_contact" and (door is None or i.door == door)
        ]

    def _start_demo(self) -> None:
        config = self.config
        if config is None or self._demo:
            return
        if config.sim_door_follows_relay:
            self.store.on_coil = self._relay_written
        if config.sim_forced_every_s is not None and self._contacts():
            self._demo.append(
                asyncio.create_task(self._force_doors(config.sim_forced_every_s), name="demo-forced")
            )
        if config.sim_fire_alarm_every_s is not None and any(i.role == "fire_alarm" for i in config.inputs):
            self._demo.append(
                asyncio.create_task(self._fire_alarms(config.sim_fire_alarm_every_s), name="demo-fire-alarm")
            )

    def _relay_written(self, address: int, level: bool) -> None:
        assert self.config is not None
        start = self.profile.outputs.start if self.profile.outputs is not None else 0
        output = next((o for o in self.config.outputs if o.coil == address - start), None)
        if not level or output is None or output.door is None:
            return
        loop = asyncio.get_running_loop()
        self._relay_closed_at[output.door] = loop.time()
        contacts = self._contacts(output.door)
        if contacts:
            self.demo_openings["relay"] += 1
            self._open_for_a_while(contacts, after_s=0.5)

    def _open_for_a_while(self, contacts: list[str], *, after_s: float) -> None:
        assert self.config is not None
        loop = asyncio.get_running_loop()
        self._timers = [t for t in self._timers if not t.cancelled() and t.when() > loop.time()]
        for name in contacts:
            self._timers.append(loop.call_later(after_s, self.set_input, name, True))
            self._timers.append(
                loop.call_later(after_s + self.config.sim_door_open_s, self.set_input, name, False)
            )

    async def _force_doors(self, every_s: float) -> None:
        assert self.config is not None
        loop = asyncio.get_running_loop()
        turn = 0
        while True:
            await asyncio.sleep(every_s)
            contacts = self._contacts()
            name = contacts[turn % len(contacts)]
            turn += 1
            door = next(i.door for i in self.config.inputs if i.name == name)
            # Not while a relay's opening is under way (that one is the passage), nor an open door:
            # wait for a quiet moment, a few seconds at most, else skip this turn.
            for _try in range(40):
                since = loop.time() - self._relay_closed_at.get(door or "", float("-inf"))
                if since > self.config.sim_door_open_s + 1.0 and not self._is_active(name):
                    self.demo_openings["forced"] += 1
                    self._open_for_a_while([name], after_s=0.0)
                    break
                await asyncio.sleep(0.25)

    async def _fire_alarms(self, every_s: float) -> None:
        assert self.config is not None
        alarms = [i.name for i in self.config.inputs if i.role == "fire_alarm"]
        loop = asyncio.get_running_loop()
        raised_at = loop.time() + every_s
        while True:
            await asyncio.sleep(max(raised_at - loop.time(), 0.0))
            self.demo_openings["fire_alarm"] += 1
            for name in alarms:
                self.set_input(name, True)
            await asyncio.sleep(min(self.config.sim_fire_alarm_s, every_s / 2))
            for name in alarms:
                self.set_input(name, False)
            raised_at += every_s

    def _is_active(self, name: str) -> bool:
        channel = self._channel(name)
        cfg = self._config_of(channel)
        address, bit = self.profile.input_location(channel)
        raw = self.store.tables[self.profile.inputs.table].get(address, 0)
        level = bool(raw & (1 << bit)) if bit is not None else bool(raw)
        return level != (cfg.active_low if cfg is not None else False)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and self.corrupt_crc and self.framer == "rtu" and data:
            self.corrupted += 1
            return data[:-1] + bytes([data[-1] ^ 0x01])
        return data

    # -- what tests and the demo do ---------------------------------------------------------

    def _channel(self, name_or_channel: str | int) -> int:
        if isinstance(name_or_channel, int):
            return name_or_channel
        if self.config is not None:
            for item in self.config.inputs:
                if item.name == name_or_channel:
                    return item.address
        raise KeyError(f"no input {name_or_channel!r}")

    def _config_of(self, channel: int) -> Any:
        if self.config is None:
            return None
        return next((i for i in self.config.inputs if i.address == channel), None)

    def set_input(self, name_or_channel: str | int, active: bool) -> None:
        """Set an input by name (with a config) or channel; ``active`` is the logical state, turned
        into the wire level by the input's ``active_low``."""
        channel = self._channel(name_or_channel)
        cfg = self._config_of(channel)
        level = active != (cfg.active_low if cfg is not None else False)
        self.set_level(channel, level)

    def set_level(self, channel: int, level: bool) -> None:
        """Set input ``channel``'s raw level as the module's terminal sees it."""
        address, bit = self.profile.input_location(channel)
        table = self.store.tables[self.profile.inputs.table]
        if bit is None:
            table[address] = int(level)
        else:
            current = table.get(address, 0)
            table[address] = current | (1 << bit) if level else current & ~(1 << bit)

    def coil(self, channel_or_name: int | str) -> bool:
        """The relay's current level."""
        channel = channel_or_name
        if isinstance(channel_or_name, str):
            assert self.config is not None
            channel = next(o.coil for o in self.config.outputs if o.name == channel_or_name)
        assert isinstance(channel, int)
        return bool(self.store.tables["coils"].get(self.profile.coil_address(channel), 0))

    @property
    def coil_writes(self) -> list[tuple[int, bool]]:
        """Every coil write the module took, in order: ``(relay channel, level)``."""
        start = self.profile.outputs.start if self.profile.outputs is not None else 0
        return [(address - start, on) for address, on in self.store.coil_writes]

    def pulses(self, channel: int) -> int:
        """How many times the relay was closed."""
        return sum(1 for c, on in self.coil_writes if c == channel and on)

    def stop_answering(self, silent: bool = True) -> None:
        """Fault: take requests and never answer (the driver sees timeouts)."""
        self.store.silent = silent

    def answer_with_exception(self, code: ExcCodes | int | None = ExcCodes.DEVICE_BUSY) -> None:
        """Fault: answer every request with this exception code (None: answer normally again)."""
        self.store.exception = None if code is None else ExcCodes(code)

    @property
    def requests(self) -> int:
        """Requests received so far."""
        return self.store.requests


__all__ = ["ModbusIoSimulator"]

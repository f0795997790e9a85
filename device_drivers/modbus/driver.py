"""Modbus TCP/RTU digital I/O modules through pymodbus' asyncio clients.

:class:`ModbusIoDriver` polls the module's inputs every ``poll_interval_s`` with one request (the
profile says which table and addresses), debounces each input, and yields a
:class:`~device_drivers.readings.DigitalInput` on every change, and for every input once after each
(re)connect, so a consumer that missed changes while the link was down is back in step. Relays are
coils: :meth:`ModbusIoDriver.pulse` closes one for its ``pulse_ms``, :meth:`ModbusIoDriver.set_coil`
holds it (fire-alarm free passage) or releases it.

Errors: an exception response (the module answered "illegal address", "busy"...) is counted and
logged, and polling goes on; a timeout (no answer, or on RTU a frame with a bad CRC, which pymodbus
drops) is counted, and ``failures_before_offline`` of them in a row drop the link: offline, then
reconnect with the shared :class:`~device_drivers._io.backoff.Backoff`. pymodbus' own reconnect
and retries are switched off so that this driver alone decides, and counts every failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from device_drivers._io.backoff import Backoff
from device_drivers._io.probe import ProbeResult
from device_drivers._io.source import AttachedSimulator, ReadingSource
from device_drivers.errors import DeviceError
from device_drivers.modbus.config import ModbusInputConfig, ModbusIoConfig, ModbusOutputConfig
from device_drivers.modbus.profile import ModbusProfile, check_config, load_modbus_profile
from device_drivers.readings import DigitalInput, Reading, utc_now

logger = logging.getLogger(__name__)


class _PymodbusNoise(logging.Filter):
    """pymodbus logs an ERROR line per unanswered request; this driver counts those and logs them
    rate-limited (``noise_log_interval_s``), so pymodbus' own line would only flood the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No response received")


logging.getLogger("pymodbus.logging").addFilter(_PymodbusNoise())

MODBUS_TCP_PORT = 502

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class _LinkLost(Exception):
    """The connection is gone or the module stopped answering: reconnect."""


class _Input:
    """One input's debounce state."""

    __slots__ = ("candidate", "config", "since", "state")

    def __init__(self, config: ModbusInputConfig) -> None:
        self.config = config
        self.state: bool | None = None
        self.candidate: bool | None = None
        self.since = 0.0


class ModbusIoDriver(ReadingSource):
    """One Modbus I/O module; a reusable async context manager with ``readings()``."""

    def __init__(
        self,
        config: ModbusIoConfig,
        *,
        simulator: AttachedSimulator | None = None,
        state_dir: Path | None = None,
        profile: ModbusProfile | None = None,
    ) -> None:
        super().__init__(config.id, noise_log_interval_s=config.noise_log_interval_s)
        self.config = config
        self.simulator = simulator
        self.state_dir = state_dir
        """Unused: a module's inputs are read afresh after every connect, nothing is kept."""
        self.profile = profile or load_modbus_profile(config.profile)
        problems = check_config(config, self.profile)
        if problems:
            raise DeviceError(
                f"{config.id}: " + "; ".join(p.message for p in problems),
                device_id=config.id,
                code="bad_config",
            )
        self.backoff = Backoff(config.backoff)
        self.outputs = {o.name: o for o in config.outputs}
        self.coils: dict[str, bool] = {o.name: False for o in config.outputs}
        """The level last written to each relay."""
        self._inputs = [_Input(i) for i in config.inputs]
        self._client: Client | None = None
        self._release_at: dict[str, float] = {}
        self._held: set[str] = set()
        self._failures = 0

    @classmethod
    def from_config(
        cls, config: ModbusIoConfig, *, simulator: Any = None, state_dir: Path | None = None
    ) -> Self:
        return cls(config, simulator=simulator, state_dir=state_dir)

    async def __aenter__(self) -> Self:
        if self.simulator is not None:
            await self.simulator.__aenter__()
        self._start(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()
        client, self._client = self._client, None
        if client is not None:
            # Leave no relay closed behind us (a pulse cut short, a free passage at shutdown).
            for name in [n for n, on in self.coils.items() if on]:
                with contextlib.suppress(ModbusException, DeviceError, OSError, TimeoutError):
                    await asyncio.wait_for(self._write(client, self.outputs[name], False), 1.0)
            client.close()
        self._close_readings()
        self._release_at.clear()
        self._held.clear()
        if self.simulator is not None:
            await self.simulator.__aexit__(exc_type, exc, tb)

    # -- the link ------------------------------------------------------------------------------

    def _endpoint(self) -> str:
        if self.simulator is not None:
            return self.simulator.url
        if self.config.transport == "rtu":
            return f"rtu:{self.config.serial_port}"
        return f"tcp://{self.config.host}:{self.config.port or MODBUS_TCP_PORT}"

    def _make_client(self) -> Client:
        cfg = self.config
        endpoint = self._endpoint()
        # retries=0 and reconnect_delay=0: every timeout reaches us, and we reconnect with our backoff.
        if endpoint.startswith("rtu:"):
            return AsyncModbusSerialClient(
                endpoint[4:],
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=0,
                name=cfg.id,
            )
        url = urlsplit(endpoint)
        return AsyncModbusTcpClient(
            url.hostname or "127.0.0.1",
            port=url.port or MODBUS_TCP_PORT,
            timeout=cfg.timeout_s,
            retries=0,
            reconnect_delay=0,
            name=cfg.id,
        )

    async def _run(self) -> None:
        while True:
            client = self._make_client()
            self._client = None
            try:
                connected = await client.connect()
            except (ModbusException, OSError) as err:
                connected = False
                logger.debug("%s: connect failed: %s", self.device_id, err)
            if not connected:
                client.close()
                self._count("connect_failed")
                self._went_offline(f"cannot connect to {self._endpoint()}")
                await asyncio.sleep(self.backoff.next_delay())
                continue
            self._count("connects")
            self._client = client
            try:
                await self._poll(client)
            except _LinkLost as err:
                self._count("disconnects")
                self._went_offline(str(err))
            finally:
                self._client = None
                client.close()
            await asyncio.sleep(self.backoff.next_delay())

    async def _poll(self, client: Client) -> None:
        """Poll until the link is lost; the first good read reports every input (resync)."""
        self._failures = 0
        fresh = True
        loop = asyncio.get_running_loop()
        while True:
            if not client.connected:
                raise _LinkLost("connection closed by the module")
            bits = await self._read_inputs(client)
            # It answered (values or an exception response): the module is there.
            if (bits is not None or self._failures == 0) and not self.online:
                self._went_online(f"Modbus {self.config.transport} unit {self.config.unit} answers")
                self.backoff.reset()
                await self._reassert_coils(client)
            if bits is not None:
                self._update(bits, loop.time(), resync=fresh)
                fresh = False
            await self._release_due(client, loop.time())
            await asyncio.sleep(self._next_wait(loop.time()))

    def _next_wait(self, now: float) -> float:
        wait = self.config.poll_interval_s
        if self._release_at:
            wait = min(wait, max(0.0, min(self._release_at.values()) - now))
        return wait

    async def _read_inputs(self, client: Client) -> list[bool] | None:
        address, count = self.profile.read_span()
        read: Callable[..., Awaitable[ModbusPDU]] = {
            "discrete_inputs": client.read_discrete_inputs,
            "coils": client.read_coils,
            "input_registers": client.read_input_registers,
            "holding_registers": client.read_holding_registers,
        }[self.profile.inputs.table]
        self._count("polls")
        try:
            response = await read(address, count=count, device_id=self.config.unit)
        except ConnectionException as err:
            raise _LinkLost(f"connection lost: {err}") from err
        except ModbusIOException as err:
            self._failures += 1
            self._count("timeouts")
            self._noise("timeout", f"no answer to reading {count} inputs at {address}: {err}")
            if self._failures >= self.config.failures_before_offline:
                raise _LinkLost(f"no answer to {self._failures} requests in a row") from err
            return None
        except ModbusException as err:
            self._failures = 0
            self._count("bad_responses")
            self._noise("bad_response", f"undecodable answer: {err}")
            return None
        self._failures = 0
        if response.isError():
            code = getattr(response, "exception_code", 0)
            self._count("exception_responses")
            self._count(f"exception_code_{code}")
            self._noise("exception", f"exception response {code} to reading {count} inputs at {address}")
            return None
        values: list[int] | list[bool] = (
            list(response.registers) if self.profile.packed else list(response.bits)
        )
        if len(values) < count:
            self._count("bad_responses")
            self._noise("bad_response", f"asked for {count} values, got {len(values)}")
            return None
        self.drops.good()
        return self.profile.bits_of(values)

    def _noise(self, code: str, detail: str) -> None:
        self.drops.dropped(code, 0, f"{self.device_id}: {detail}")

    def _update(self, bits: list[bool], now: float, *, resync: bool) -> None:
        for item in self._inputs:
            cfg = item.config
            active = bits[cfg.address] != cfg.active_low
            if resync:
                item.state, item.candidate = active, None
                self._emit_input(cfg)
                continue
            if active == item.state:
                item.candidate = None
                continue
            if item.candidate != active:
                item.candidate, item.since = active, now
            if now - item.since >= cfg.debounce_ms / 1000:
                item.state, item.candidate = active, None
                self._count("input_changes")
                self._emit_input(cfg)

    def _emit_input(self, cfg: ModbusInputConfig) -> None:
        state = next(i.state for i in self._inputs if i.config is cfg)
        assert state is not None
        self._emit(DigitalInput(self.device_id, cfg.name, state, cfg.role, utc_now(), cfg.target))

    def input_states(self) -> dict[str, bool | None]:
        """Each input's debounced state (None before the first read)."""
        return {i.config.name: i.state for i in self._inputs}

    # -- relays --------------------------------------------------------------------------------

    async def _write(self, client: Client, output: ModbusOutputConfig, on: bool) -> None:
        address = self.profile.coil_address(output.coil)
        try:
            response = await client.write_coil(address, on, device_id=self.config.unit)
        except ModbusException as err:
            self._count("write_failed")
            raise DeviceError(
                f"{self.device_id}: writing relay {output.name} failed: {err}",
                device_id=self.device_id,
                code="timeout" if isinstance(err, ModbusIOException) else "offline",
            ) from err
        if response.isError():
            code = getattr(response, "exception_code", 0)
            self._count("write_failed")
            self._count(f"exception_code_{code}")
            raise DeviceError(
                f"{self.device_id}: relay {output.name}: exception response {code}",
                device_id=self.device_id,
                code="exception_response",
            )
        self.coils[output.name] = on
        self._count("coil_writes")

    def _connected_client(self) -> Client:
        client = self._client
        if client is None or not client.connected:
            raise DeviceError(f"{self.device_id}: not connected", device_id=self.device_id, code="offline")
        return client

    def _output(self, name: str) -> ModbusOutputConfig:
        try:
            return self.outputs[name]
        except KeyError:
            raise DeviceError(
                f"{self.device_id}: no output {name!r}", device_id=self.device_id, code="unknown_output"
            ) from None

    async def pulse(self, output_name: str) -> None:
        """Close relay ``output_name`` for its ``pulse_ms``; a pulse during a pulse extends it, and a
        held relay stays held."""
        output = self._output(output_name)
        if output_name in self._held:
            return
        await self._write(self._connected_client(), output, True)
        self._count("pulses")
        release = asyncio.get_running_loop().time() + output.pulse_ms / 1000
        self._release_at[output_name] = max(release, self._release_at.get(output_name, 0.0))

    async def set_coil(self, output_name: str, on: bool) -> None:
        """Hold relay ``output_name`` closed (``on``) until released, or release it now."""
        output = self._output(output_name)
        self._release_at.pop(output_name, None)
        if on:
            self._held.add(output_name)
        else:
            self._held.discard(output_name)
        await self._write(self._connected_client(), output, on)

    async def _release_due(self, client: Client, now: float) -> None:
        for name in [n for n, at in self._release_at.items() if at <= now]:
            try:
                await self._write(client, self.outputs[name], False)
            except DeviceError as err:
                # Kept pending: tried again next round, and after a reconnect.
                self._noise("release_failed", str(err))
                continue
            self._release_at.pop(name, None)

    async def _reassert_coils(self, client: Client) -> None:
        """After a reconnect: held relays closed again, pulses that ended meanwhile released."""
        for name in sorted(self._held):
            with contextlib.suppress(DeviceError):
                await self._write(client, self.outputs[name], True)

    def outputs_of_door(self, door: str) -> list[str]:
        """Names of the relays that open ``door``."""
        return [o.name for o in self.config.outputs if o.door == door]

    def acknowledge(self, reading: Reading) -> None:
        """Nothing to acknowledge: inputs are states, re-read after every connect."""


async def probe_modbus_io(config: ModbusIoConfig) -> list[ProbeResult]:
    """``doctor``'s checks: the module answers a read of its inputs at its unit id. Modbus has no
    login and these modules no clock, so those checks are reported as not applicable."""
    try:
        driver = ModbusIoDriver(config)
    except DeviceError as err:
        return [ProbeResult("reachable", "fail", str(err))]
    client = driver._make_client()
    results: list[ProbeResult] = []
    try:
        if not await client.connect():
            return [ProbeResult("reachable", "fail", f"cannot connect to {driver._endpoint()}")]
        bits = await driver._read_inputs(client)
        if bits is not None:
            active = sum(1 for b in bits if b)
            results.append(
                ProbeResult(
                    "reachable", "ok", f"unit {config.unit} answers: {len(bits)} inputs, {active} set"
                )
            )
        elif driver.counters.get("exception_responses"):
            results.append(
                ProbeResult(
                    "reachable",
                    "warn",
                    f"unit {config.unit} answers with an exception: check the profile {driver.profile.id}",
                )
            )
        else:
            results.append(ProbeResult("reachable", "fail", f"unit {config.unit} does not answer"))
    except _LinkLost as err:
        results.append(ProbeResult("reachable", "fail", str(err)))
    finally:
        client.close()
    results.append(ProbeResult("authenticated", "ok", "Modbus has no authentication"))
    return results


__all__ = ["MODBUS_TCP_PORT", "ModbusIoDriver", "probe_modbus_io"]

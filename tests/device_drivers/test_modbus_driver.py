"""Modbus I/O: profiles, config, and the driver against the pymodbus simulator on a real socket.

The simulator is a real pymodbus TCP server (pymodbus' own request handler and framer); a plain
pymodbus client reading it shows it speaks Modbus, so the driver is tested against the protocol,
not against itself."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pymodbus.client import AsyncModbusTcpClient

from device_drivers import DeviceError, DeviceOffline, DeviceOnline, DigitalInput, Reading
from device_drivers.modbus.config import ModbusIoConfig
from device_drivers.modbus.driver import ModbusIoDriver, probe_modbus_io
from device_drivers.modbus.profile import (
    ModbusProfile,
    check_modbus_io,
    load_modbus_profile,
    profile_paths,
)
from device_drivers.modbus.sim import ModbusIoSimulator
from tests.support.wait import async_wait_until

TIMEOUT_S = 10


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def io_config(**extra: Any) -> ModbusIoConfig:
    fields: dict[str, Any] = {
        "kind": "modbus_io",
        "id": "io-1",
        "simulated": True,
        "profile": "generic_8di_8do",
        "timeout_s": 0.3,
        "poll_interval_s": 0.05,
        "backoff": {"initial_s": 0.05, "max_s": 0.2},
        "inputs": [
            {"name": "door1", "address": 0, "role": "door_contact", "door": "door-1", "active_low": True},
            {"name": "fire", "address": 5, "role": "fire_alarm", "zone": "A", "debounce_ms": 0},
        ],
        "outputs": [{"name": "relay1", "coil": 2, "door": "door-1", "pulse_ms": 200}],
    }
    fields.update(extra)
    return ModbusIoConfig.model_validate(fields)


async def next_of(readings: AsyncIterator[Reading], kind: type, timeout: float = TIMEOUT_S) -> Any:
    """The next reading of ``kind`` (others skipped)."""

    async def find() -> Any:
        async for reading in readings:
            if isinstance(reading, kind):
                return reading
        raise AssertionError("readings ended")

    return await asyncio.wait_for(find(), timeout)


@pytest.mark.parametrize("path", profile_paths(), ids=lambda p: p.stem)
def test_every_shipped_profile_validates_and_maps_its_channels(path: Path) -> None:
    profile = load_modbus_profile(path.stem)
    assert profile.id == path.stem
    _address, count = profile.read_span()
    assert count >= 1
    # Each channel has its own place: no two inputs read the same bit.
    places = {profile.input_location(c) for c in range(profile.inputs.count)}
    assert len(places) == profile.inputs.count


def test_packed_register_bits_follow_the_bit_order() -> None:
    raw = {
        "id": "x",
        "family": "modbus_io",
        "inputs": {"table": "input_registers", "start": 10, "count": 20, "bit_order": "msb_first"},
    }
    profile = ModbusProfile.model_validate(raw)
    assert profile.read_span() == (10, 2) and len(profile.bits_of([0, 0])) == 20
    raw["inputs"]["count"] = 32  # type: ignore[index]
    profile = ModbusProfile.model_validate(raw)
    bits = profile.bits_of([0x8000, 0x0001])
    assert bits[0] is True and bits[1] is False
    assert bits[16] is False and bits[16 + 15] is True and len(bits) == 32
    assert profile.input_location(17) == (11, 14)
    assert profile.bits_of([0, 1 << 14])[17] is True


def test_config_errors_are_specific() -> None:
    with pytest.raises(ValidationError, match="door_contact needs `door`"):
        io_config(inputs=[{"name": "d", "address": 0, "role": "door_contact"}])
    with pytest.raises(ValidationError, match="fire_alarm needs `zone`"):
        io_config(inputs=[{"name": "f", "address": 0, "role": "fire_alarm"}])
    with pytest.raises(ValidationError, match="input channels must be unique"):
        io_config(inputs=[{"name": "a", "address": 1}, {"name": "b", "address": 1}])
    with pytest.raises(ValidationError, match="serial_port"):
        ModbusIoConfig.model_validate({"kind": "modbus_io", "id": "x", "transport": "rtu", "profile": "p"})
    with pytest.raises(ValidationError, match="give a host"):
        ModbusIoConfig.model_validate({"kind": "modbus_io", "id": "x", "profile": "p"})
    # RTU needs no host: the base config's host check is replaced.
    rtu = ModbusIoConfig.model_validate(
        {"kind": "modbus_io", "id": "x", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "profile": "p"}
    )
    assert rtu.host is None
    with pytest.raises(ValueError, match="unknown Modbus I/O profile 'nope'"):
        check_modbus_io(io_config(profile="nope"))
    with pytest.raises(ValueError, match="channel 9 is beyond the 8 inputs"):
        check_modbus_io(io_config(inputs=[{"name": "a", "address": 9}]))
    with pytest.raises(DeviceError, match="relay 8 is beyond"):
        ModbusIoDriver(io_config(outputs=[{"name": "r", "coil": 8}]))


@in_loop
async def test_a_plain_pymodbus_client_reads_and_writes_the_simulator() -> None:
    sim = ModbusIoSimulator.from_config(io_config())
    async with sim:
        sim.set_input("door1", True)  # active_low: the wire reads 0
        sim.set_input("fire", True)
        client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=2)
        assert await client.connect()
        try:
            bits = (await client.read_discrete_inputs(0, count=8, device_id=1)).bits[:8]
            assert bits == [False] * 5 + [True] + [False] * 2
            assert not (await client.write_coil(3, True, device_id=1)).isError()
            assert sim.coil(3) is True and sim.coil_writes == [(3, True)]
            sim.answer_with_exception(2)
            response = await client.read_coils(0, count=8, device_id=1)
            assert response.isError() and response.exception_code == 2
        finally:
            client.close()


@in_loop
async def test_inputs_are_reported_once_after_connect_then_on_each_change() -> None:
    config = io_config()
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        assert isinstance(await next_of(readings, DeviceOnline), DeviceOnline)
        first = [await next_of(readings, DigitalInput) for _ in range(2)]
        assert {(r.name, r.active, r.role, r.target) for r in first} == {
            ("door1", False, "door_contact", "door-1"),
            ("fire", False, "fire_alarm", "A"),
        }
        sim.set_input("door1", True)
        opened = await next_of(readings, DigitalInput)
        assert (opened.name, opened.active) == ("door1", True)
        assert driver.counters["input_changes"] == 1


@in_loop
async def test_debounce_hides_a_blip_and_passes_a_steady_change() -> None:
    config = io_config(inputs=[{"name": "d", "address": 1, "debounce_ms": 400}], poll_interval_s=0.05)
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        await next_of(readings, DigitalInput)
        polls = driver.counters["polls"]
        sim.set_input("d", True)
        await async_wait_until(lambda: driver.counters["polls"] >= polls + 3, TIMEOUT_S, what="polls")
        sim.set_input("d", False)  # back before the debounce time: no change
        sim.set_input("d", True)
        change = await next_of(readings, DigitalInput)
        assert change.active is True and driver.counters["input_changes"] == 1


@in_loop
async def test_a_pulse_closes_the_relay_for_its_time_and_set_coil_holds_it() -> None:
    config = io_config()
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        await next_of(driver.readings(), DeviceOnline)
        await driver.pulse("relay1")
        assert sim.coil("relay1") is True
        await async_wait_until(lambda: not sim.coil("relay1"), TIMEOUT_S, what="relay released")
        assert sim.coil_writes == [(2, True), (2, False)]
        await driver.set_coil("relay1", True)
        await driver.pulse("relay1")  # held: a grant does not end the hold
        polls = driver.counters["polls"]
        await async_wait_until(lambda: driver.counters["polls"] >= polls + 6, TIMEOUT_S, what="polls")
        assert sim.coil("relay1") is True
        await driver.set_coil("relay1", False)
        assert sim.coil("relay1") is False
        with pytest.raises(DeviceError, match="no output 'nope'"):
            await driver.pulse("nope")


@in_loop
async def test_exception_responses_are_counted_and_polling_goes_on() -> None:
    config = io_config()
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        await next_of(readings, DeviceOnline)
        sim.answer_with_exception(6)
        await async_wait_until(
            lambda: driver.counters.get("exception_responses", 0) >= 3, TIMEOUT_S, what="exceptions"
        )
        assert driver.counters["exception_code_6"] >= 3 and driver.online
        with pytest.raises(DeviceError, match="exception response 6"):
            await driver.pulse("relay1")
        sim.answer_with_exception(None)
        sim.set_input("fire", True)
        change = await next_of(readings, DigitalInput)
        while not (change.name == "fire" and change.active):  # after the states read at connect
            change = await next_of(readings, DigitalInput)
        assert "timeouts" not in driver.counters and driver.counters["connects"] == 1


@in_loop
async def test_silence_goes_offline_and_the_inputs_are_resynced_after_reconnect() -> None:
    config = io_config(failures_before_offline=2)
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        await next_of(readings, DeviceOnline)
        sim.stop_answering()
        offline = await next_of(readings, DeviceOffline)
        assert "no answer to 2 requests" in offline.reason
        assert driver.counters["timeouts"] >= 2
        sim.stop_answering(False)
        await next_of(readings, DeviceOnline)
        # The link is cut outright; a change while it is down is seen at the resync.
        await sim.stop()
        await next_of(readings, DeviceOffline)
        sim.set_input("door1", True)
        await sim.start()
        await next_of(readings, DeviceOnline)
        states = {}
        for _ in range(2):
            reading = await next_of(readings, DigitalInput)
            states[reading.name] = reading.active
        assert states == {"door1": True, "fire": False}
        assert driver.counters["disconnects"] >= 2 and driver.counters["connects"] >= 3


@in_loop
async def test_an_unreachable_module_is_offline_and_retried_with_backoff() -> None:
    config = io_config(simulated=False, host="127.0.0.1", port=1)
    async with ModbusIoDriver.from_config(config) as driver:
        offline = await next_of(driver.readings(), DeviceOffline)
        assert "cannot connect to tcp://127.0.0.1:1" in offline.reason
        await async_wait_until(
            lambda: driver.counters.get("connect_failed", 0) >= 2, TIMEOUT_S, what="retries"
        )


@in_loop
async def test_probe_reports_reachable_or_not() -> None:
    sim = ModbusIoSimulator("generic_8di_8do")
    async with sim:
        sim.set_level(4, True)
        config = io_config(simulated=False, host="127.0.0.1", port=sim.port)
        results = {r.check: r for r in await probe_modbus_io(config)}
        assert results["reachable"].status == "ok" and "8 inputs, 1 set" in results["reachable"].detail
        sim.answer_with_exception(2)
        assert (await probe_modbus_io(config))[0].status == "warn"
    gone = await probe_modbus_io(io_config(simulated=False, host="127.0.0.1", port=sim.port))
    assert gone[0].status == "fail"


@in_loop
async def test_rtu_frames_with_crc_through_a_pyserial_url_and_bad_crcs_are_dropped() -> None:
    config = io_config(transport="rtu", unit=7, failures_before_offline=2)
    sim = ModbusIoSimulator.from_config(config)
    assert sim.url.startswith("rtu:socket://127.0.0.1:")
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        await next_of(readings, DeviceOnline)
        sim.set_input("fire", True)
        change = await next_of(readings, DigitalInput)
        while not (change.name == "fire" and change.active):
            change = await next_of(readings, DigitalInput)
        await driver.pulse("relay1")
        assert sim.coil("relay1") is True
        # Answers with a broken CRC are dropped by the RTU framer: timeouts, then offline.
        sim.corrupt_crc = True
        offline = await next_of(readings, DeviceOffline)
        assert "no answer" in offline.reason and sim.corrupted >= 2
        assert driver.counters["timeouts"] >= 2
        sim.corrupt_crc = False
        await next_of(readings, DeviceOnline)


@in_loop
async def test_a_module_with_inputs_packed_in_a_register() -> None:
    config = io_config(
        profile="packed_register_16di_8do",
        inputs=[
            {"name": "door1", "address": 12, "role": "door_contact", "door": "door-1", "active_low": True},
            {"name": "fire", "address": 3, "role": "fire_alarm", "zone": "A", "debounce_ms": 0},
        ],
    )
    sim = ModbusIoSimulator.from_config(config)
    async with ModbusIoDriver.from_config(config, simulator=sim) as driver:
        readings = driver.readings()
        first = {r.name: r.active for r in [await next_of(readings, DigitalInput) for _ in range(2)]}
        assert first == {"door1": False, "fire": False}
        assert sim.store.tables["input_registers"][0] == 1 << 12  # the closed NC contact reads 1
        sim.set_input("fire", True)
        change = await next_of(readings, DigitalInput)
        assert (change.name, change.active) == ("fire", True)
        assert sim.store.tables["input_registers"][0] == (1 << 12) | (1 << 3)

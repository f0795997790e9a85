"""Relay door (GPIO pins replaced by in-memory pins: no GPIO chip here), device configs and the
simulator entry point."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial
import yaml
from pydantic import TypeAdapter, ValidationError

from device_drivers import DeviceConfig, open_driver
from device_drivers._io.sim import PtyEndpoint, TcpEndpoint, parse_listen
from device_drivers.card.driver import CardReaderDriver
from device_drivers.errors import DeviceError
from device_drivers.osdp.driver import OsdpControlPanel
from device_drivers.readings import CardRead, DeviceOffline, DeviceOnline
from device_drivers.relay.config import RelayDoorConfig
from device_drivers.relay.driver import GpioRelay, RelayDoor
from device_drivers.relay.sim import MemoryPin
from device_drivers.turnstile.driver import TurnstileDriver
from device_drivers.turnstile.sim import TurnstileSimulator
from device_drivers.wedge.driver import KeyboardWedgeReader

DEVICES = TypeAdapter(list[DeviceConfig])


def _levels(pin: MemoryPin) -> list[bool]:
    return [level for _, level in pin.changes]


def test_relay_pulse_holds_for_its_time_and_extends() -> None:
    async def scenario() -> None:
        pin = MemoryPin()  # stands in for the GPIO line (mocked boundary: no gpiochip on this machine)
        relay = GpioRelay(pin)
        await relay.pulse(0.05)
        assert pin.active
        await asyncio.sleep(0.02)
        await relay.pulse(0.1)  # a second grant while open extends the open
        await asyncio.sleep(0.06)
        assert pin.active
        await asyncio.sleep(0.1)
        assert not pin.active
        assert _levels(pin) == [True, True, False]
        start, end = pin.changes[0][0], pin.changes[-1][0]
        assert end - start >= 0.1e9

    asyncio.run(scenario())


def test_relay_door_open_hold_lock_per_direction() -> None:
    async def scenario() -> None:
        config = RelayDoorConfig(
            kind="relay_door", id="door-1", line=17, exit_line=27, pulse_ms=30, simulated=True
        )
        door = open_driver(config)
        assert isinstance(door, RelayDoor)
        entry_pin, exit_pin = door.pins
        assert isinstance(entry_pin, MemoryPin) and isinstance(exit_pin, MemoryPin)
        async with door:
            readings = door.readings()
            assert isinstance(await anext(readings), DeviceOnline)
            await door.open("exit")
            assert exit_pin.active and not entry_pin.active
            await asyncio.sleep(0.06)
            assert not exit_pin.active
            await door.hold_open("entry")
            await asyncio.sleep(0.06)
            assert entry_pin.active
            await door.lock()
            assert not entry_pin.active and not exit_pin.active

            entry_pin.close()  # the line goes away
            with pytest.raises(DeviceError) as err:
                await door.open("entry")
            assert err.value.code == "write_failed"
            offline = await anext(readings)
            assert isinstance(offline, DeviceOffline) and "open failed" in offline.reason
        assert door.counters == {"open": 1, "hold_open": 1, "lock": 1, "write_failed": 2}

    asyncio.run(scenario())


def test_gpio_without_gpiod_is_a_clear_error() -> None:
    config = RelayDoorConfig(kind="relay_door", id="door-2", chip="/dev/gpiochip9", line=3)
    with pytest.raises(DeviceError) as err:
        open_driver(config)
    assert err.value.code in ("unsupported", "offline")


DEMO = """
- kind: card_reader
  id: gate-a-reader
  profile: em4100_id12
  simulated: true
- kind: card_reader
  id: gate-a-wiegand
  profile: wiegand_serial_converter
  port: socket://127.0.0.1:7001
  debounce_s: 0.5
- kind: turnstile
  id: gate-a
  profile: turnstile_rs485_crc
  port: /dev/ttyUSB1
  address: 3
- kind: relay_door
  id: staff-door
  line: 17
  simulated: true
- kind: osdp
  id: lab-bus
  simulated: true
  readers:
    - {id: lab-reader, address: 1}
- kind: keyboard_wedge
  id: desk-reader
  device: /dev/input/by-id/usb-reader-event-kbd
  alphabet: hex
"""


def test_device_configs_select_drivers_by_kind() -> None:
    configs = DEVICES.validate_python(yaml.safe_load(DEMO))
    drivers = [open_driver(c) for c in configs]
    assert [type(d) for d in drivers] == [
        CardReaderDriver,
        CardReaderDriver,
        TurnstileDriver,
        RelayDoor,
        OsdpControlPanel,
        KeyboardWedgeReader,
    ]
    turnstile = drivers[2]
    assert isinstance(turnstile, TurnstileDriver) and turnstile.turnstile.address == 3
    assert turnstile.url == "/dev/ttyUSB1"
    assert isinstance(drivers[0], CardReaderDriver) and drivers[0].simulator is not None


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"kind": "barrier"}, "does not match any of the expected tags"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"simulated": False}, "give a port, or set simulated: true"),
        ({"profile": "turnstile_stx_xor"}, "profile turnstile_stx_xor is a turnstile"),
        ({"profile": "nope"}, "unknown firmware profile 'nope'"),
        ({"id": "has space"}, "String should match pattern"),
    ],
)
def test_bad_device_configs_are_rejected(patch: dict[str, object], message: str) -> None:
    item = {"kind": "card_reader", "id": "r", "profile": "em4100_id12", "simulated": True, **patch}
    with pytest.raises(ValidationError, match=message):
        DEVICES.validate_python([item])


def test_every_config_field_is_described() -> None:
    schema = DEVICES.json_schema()
    for name, definition in schema["$defs"].items():
        for field, spec in definition.get("properties", {}).items():
            assert spec.get("description"), f"{name}.{field} has no description"


def test_parse_listen() -> None:
    assert isinstance(parse_listen("pty"), PtyEndpoint)
    link = parse_listen("pty:/tmp/x")
    assert isinstance(link, PtyEndpoint) and link.link == Path("/tmp/x")
    tcp = parse_listen("tcp://127.0.0.1:7000")
    assert isinstance(tcp, TcpEndpoint) and (tcp.host, tcp.port) == ("127.0.0.1", 7000)
    with pytest.raises(ValueError, match="not a listen address"):
        parse_listen("nowhere")


def test_run_simulator_presents_cards_from_stdin(tmp_path: Path) -> None:
    """The CLI entry point in a real process: cards typed on stdin arrive as frames on the pty."""
    link = tmp_path / "ttySIM"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from device_drivers import run_simulator; "
            f"run_simulator('card_reader', 'em4100_id12', 'pty:{link}')",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        banner = proc.stdout.readline()
        assert f"open {link}" in banner
        port = serial.serial_for_url(str(link), timeout=5)
        proc.stdin.write("62E3086CED\n")
        proc.stdin.flush()
        assert port.read(16) == bytes.fromhex("02 36 32 45 33 30 38 36 43 45 44 30 38 0d 0a 03")
        port.close()
        proc.stdin.close()
        proc.wait(timeout=10)
        assert proc.returncode == 0
        assert not link.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_turnstile_simulator_over_socket_answers_raw_bytes() -> None:
    """A client speaking the wire protocol by hand (no driver) gets ack then passage_done."""

    async def scenario() -> None:
        from device_drivers import make_simulator

        async with make_simulator("turnstile", "turnstile_stx_xor", TcpEndpoint()) as sim:
            port = serial.serial_for_url(sim.url, timeout=5)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, port.write, bytes.fromhex("02 03 21 01 01 22 03"))
            started = time.monotonic()
            reply = await loop.run_in_executor(None, port.read, 12)
            port.close()
            assert reply == bytes.fromhex("02 02 06 21 25 03") + bytes.fromhex("02 02 41 01 42 03")
            assert time.monotonic() - started < 5

    asyncio.run(scenario())


def test_turnstile_simulator_acks_the_code_it_received() -> None:
    """Open B has its own code in this protocol: the ack names that code, then the passage follows."""

    async def scenario() -> None:
        from device_drivers import make_simulator
        from device_drivers.turnstile.codec import TurnstileCodec

        async with make_simulator("turnstile", "turnstile_rs485_crc", TcpEndpoint()) as sim:
            assert isinstance(sim, TurnstileSimulator)
            sim.passage_delay_s = 0.01
            codec: TurnstileCodec = sim.codec
            port = serial.serial_for_url(sim.url, timeout=5)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, port.write, bytes.fromhex("01 02 81 e1"))  # open B
            ack = codec.event("ack", value=0x02)
            passage = codec.event("passage_done", "exit")
            reply = await loop.run_in_executor(None, port.read, len(ack) + len(passage))
            port.close()
            assert reply == ack + passage

    asyncio.run(scenario())


def test_simulated_reader_presents_its_demo_cards() -> None:
    async def scenario() -> None:
        config = DEVICES.validate_python(
            [
                {
                    "kind": "card_reader",
                    "id": "demo",
                    "profile": "wiegand_serial_converter",
                    "simulated": True,
                    "sim_cards": ["12:345", "4660:123456/37"],
                    "sim_interval_s": 0.05,
                    "debounce_s": 0,
                },
            ]
        )[0]
        driver = open_driver(config)
        assert isinstance(driver, CardReaderDriver)
        credentials = []
        async with driver:
            async for reading in driver.readings():
                if isinstance(reading, CardRead):
                    credentials.append(reading.credential)
                    if len(credentials) == 3:
                        break
        assert credentials == ["12:345", "4660:123456", "12:345"]

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"sim_cards": ["12:345"], "simulated": False, "port": "loop://"}, "sim_cards needs simulated: true"),
        ({"sim_cards": ["1:70000"]}, "sim_cards: '1:70000': 70000 does not fit in 16 bits"),
    ],
)
def test_bad_demo_cards_are_rejected(patch: dict[str, object], message: str) -> None:
    item = {
        "kind": "card_reader",
        "id": "r",
        "profile": "wiegand_serial_converter",
        "simulated": True,
        **patch,
    }
    with pytest.raises(ValidationError, match=message):
        DEVICES.validate_python([item])

"""OSDP control panel end to end against a libosdp peripheral device (PD) on a pty, secure channel on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import osdp
import pytest
from pydantic import ValidationError

from device_drivers import BackoffConfig, load_secret, open_driver
from device_drivers.errors import DeviceError
from device_drivers.osdp.config import OsdpBusConfig, OsdpReaderConfig
from device_drivers.osdp.driver import OsdpControlPanel
from device_drivers.osdp.sim import OsdpBusSimulator, OsdpReaderSimulator
from device_drivers.readings import CardRead, DeviceOffline, DeviceOnline, DeviceTamper

T = TypeVar("T")
FAST = BackoffConfig(initial_s=0.05, max_s=0.2)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 90))  # type: ignore[arg-type]


async def next_of(readings: Any, kind: type[T], timeout: float = 15) -> T:
    async def wait() -> T:
        async for item in readings:
            if isinstance(item, kind):
                return item
        raise AssertionError("readings ended")

    return await asyncio.wait_for(wait(), timeout)


async def wait_until(predicate: Any, timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_secure_channel_card_reads_feedback_tamper_and_offline() -> None:
    async def scenario() -> None:
        key = osdp.KeyStore.gen_key()
        reader = OsdpReaderConfig(id="door-7-reader", address=7, scbk_secret="unused")
        async with OsdpReaderSimulator(7, key) as pd:
            cp = OsdpControlPanel("bus-1", pd.url, [reader], {"door-7-reader": key}, backoff=FAST)
            async with cp:
                readings = cp.readings()
                online = await next_of(readings, DeviceOnline)
                assert online.device_id == "door-7-reader" and "secure channel" in online.reason
                await wait_until(lambda: pd.secure)

                pd.present("123:4567")
                card = await next_of(readings, CardRead)
                assert (card.device_id, card.credential, card.card_format) == (
                    "door-7-reader",
                    "123:4567",
                    "H10301",
                )
                assert (card.raw_hex, card.bits) == ("BD88EB80", 26)

                pd.present_bits(26, bytes.fromhex("BD88EBC0"))  # last parity bit flipped
                pd.present_bits(30, bytes.fromhex("BD88EBC0"))  # no 30-bit layout
                pd.present_raw(bytes.fromhex("04a24b3c"))
                card = await next_of(readings, CardRead)
                assert (card.credential, card.card_format, card.bits) == ("04A24B3C", "osdp_raw", 32)
                assert cp.counters["parity"] == 1 and cp.counters["unknown_layout"] == 1

                pd.tamper(True)
                tamper = await next_of(readings, DeviceTamper)
                assert tamper.tampered and not tamper.power_failure

                await cp.feedback("door-7-reader", granted=True)
                await cp.feedback("door-7-reader", granted=False)
                await wait_until(lambda: len(pd.commands) == 4)
                leds = [c for c in pd.commands if c["command"] == osdp.Command.LED]
                beeps = [c for c in pd.commands if c["command"] == osdp.Command.Buzzer]
                assert [c["on_color"] for c in leds] == [osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red]
                assert [c["rep_count"] for c in beeps] == [1, 3]

                with pytest.raises(DeviceError) as err:
                    await cp.feedback("nobody", granted=True)
                assert err.value.code == "unknown"

                # The reader loses power: offline; feedback is refused meanwhile.
                await asyncio.get_running_loop().run_in_executor(None, pd.stop)
                offline = await next_of(readings, DeviceOffline, timeout=30)
                assert offline.device_id == "door-7-reader"
                with pytest.raises(DeviceError) as err:
                    await cp.feedback("door-7-reader", granted=True)
                assert err.value.code == "offline"

    run(scenario())


def test_reader_power_cycle_goes_offline_and_back_online(tmp_path: Path) -> None:
    async def scenario() -> None:
        key = osdp.KeyStore.gen_key()
        link = tmp_path / "ttyOSDP"
        reader = OsdpReaderConfig(id="r9", address=9, scbk_secret="unused")
        first = OsdpReaderSimulator(9, key, link=link)
        first.start()
        async with OsdpControlPanel("bus-9", str(link), [reader], {"r9": key}, backoff=FAST) as cp:
            readings = cp.readings()
            await next_of(readings, DeviceOnline)
            await asyncio.get_running_loop().run_in_executor(None, first.stop)
            await next_of(readings, DeviceOffline)
            async with OsdpReaderSimulator(9, key, link=link) as second:
                online = await next_of(readings, DeviceOnline, timeout=20)
                assert online.device_id == "r9"
                second.present("1:2")
                assert (await next_of(readings, CardRead)).credential == "1:2"
            assert cp.counters["reconnects"] >= 1

    run(scenario())


def test_wrong_key_never_comes_online() -> None:
    async def scenario() -> None:
        async with OsdpReaderSimulator(3, osdp.KeyStore.gen_key()) as pd:
            reader = OsdpReaderConfig(id="r3", address=3, scbk_secret="unused")
            # A short handshake window: the retries come quickly, and each is still refused.
            async with OsdpControlPanel(
                "bus-2", pd.url, [reader], {"r3": osdp.KeyStore.gen_key()}, backoff=FAST, handshake_s=0.3
            ) as cp:
                offline = await next_of(cp.readings(), DeviceOffline, timeout=10)
                assert "does not answer" in offline.reason
                await wait_until(lambda: cp.counters.get("reconnects", 0) >= 2)
                assert not cp.reader_online["r3"] and cp.counters["reconnects"] >= 2
                assert not pd.secure

    run(scenario())


def test_simulated_bus_from_config() -> None:
    async def scenario() -> None:
        config = OsdpBusConfig(
            kind="osdp", id="demo-bus", simulated=True, readers=[OsdpReaderConfig(id="demo-osdp", address=1)]
        )
        cp = open_driver(config)
        assert isinstance(cp, OsdpControlPanel)
        async with cp:
            readings = cp.readings()
            await next_of(readings, DeviceOnline)
            assert cp.simulator is not None
            assert isinstance(cp.simulator, OsdpBusSimulator)
            cp.simulator.readers[1].present("4660:123456/37")
            card = await next_of(readings, CardRead)
            assert (card.credential, card.card_format) == ("4660:123456", "H10304")

    run(scenario())


def test_secure_channel_is_required_by_default() -> None:
    with pytest.raises(ValidationError, match="secure channel needs scbk_secret"):
        OsdpBusConfig(kind="osdp", id="b", port="/dev/ttyUSB0", readers=[{"id": "r", "address": 1}])  # type: ignore[list-item]
    insecure = OsdpBusConfig(
        kind="osdp",
        id="b",
        port="/dev/ttyUSB0",
        secure_channel=False,
        readers=[{"id": "r", "address": 1}],  # type: ignore[list-item]
    )
    assert insecure.readers[0].scbk_secret is None
    with pytest.raises(DeviceError) as err:
        OsdpControlPanel("b", "/dev/null", list(insecure.readers), {"r": None})
    assert err.value.code == "no_key"
    with pytest.raises(ValidationError, match="same address"):
        OsdpBusConfig(
            kind="osdp",
            id="b",
            port="x",
            secure_channel=False,
            readers=[{"id": "a", "address": 1}, {"id": "b", "address": 1}],
        )  # type: ignore[list-item]


def test_keys_come_from_credentials_directory_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = bytes(range(16))
    (tmp_path / "osdp_door7").write_text(key.hex() + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_secret("osdp_door7") == key
    monkeypatch.setenv("OSDP_ENV_KEY", "00" * 16)
    assert load_secret("OSDP_ENV_KEY") == bytes(16)
    monkeypatch.setenv("OSDP_SHORT", "0011")
    for name, code in (("missing", "no_key"), ("OSDP_SHORT", "bad_key")):
        with pytest.raises(DeviceError) as err:
            load_secret(name)
        assert err.value.code == code


def test_run_simulator_osdp_reader_from_stdin(tmp_path: Path) -> None:
    """`edge-agent simulate osdp ...` in a real process: a control panel with the same key reads
    the cards and tamper typed on its stdin."""
    import os
    import subprocess
    import sys

    key = osdp.KeyStore.gen_key()
    link = tmp_path / "ttyOSDPSIM"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from device_drivers import run_simulator; "
            f"run_simulator('osdp', 'wiegand_serial_converter', 'pty:{link}')",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OSDP_SCBK": key.hex()},
    )

    async def scenario() -> None:
        assert proc.stdout is not None and proc.stdin is not None
        banner = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
        assert f"open {link}" in banner
        reader = OsdpReaderConfig(id="sim-reader", address=1, scbk_secret="unused")
        async with OsdpControlPanel("bus-sim", str(link), [reader], {"sim-reader": key}, backoff=FAST) as cp:
            readings = cp.readings()
            await next_of(readings, DeviceOnline)
            proc.stdin.write("123:4567\ntamper\n")
            proc.stdin.flush()
            assert (await next_of(readings, CardRead)).credential == "123:4567"
            assert (await next_of(readings, DeviceTamper)).tampered
            proc.stdin.close()

    try:
        run(scenario())
        proc.wait(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_readers_on_one_bus_each_with_its_own_key() -> None:
    async def scenario() -> None:
        keys = {"entry-reader": osdp.KeyStore.gen_key(), "exit-reader": osdp.KeyStore.gen_key()}
        readers = [
            OsdpReaderConfig(id="entry-reader", address=1, scbk_secret="unused"),
            OsdpReaderConfig(id="exit-reader", address=2, scbk_secret="unused"),
        ]
        async with (
            OsdpBusSimulator({1: keys["entry-reader"], 2: keys["exit-reader"]}) as bus,
            OsdpControlPanel("bus-2r", bus.url, readers, dict(keys), backoff=FAST) as cp,
        ):
            readings = cp.readings()
            online = {(await next_of(readings, DeviceOnline)).device_id for _ in range(2)}
            assert online == {"entry-reader", "exit-reader"}
            await wait_until(lambda: bus.readers[1].secure and bus.readers[2].secure)

            bus.readers[2].present("7:1000")
            bus.readers[1].present("7:2000")
            reads = {
                (c.device_id, c.credential) for c in [await next_of(readings, CardRead) for _ in range(2)]
            }
            assert reads == {("exit-reader", "7:1000"), ("entry-reader", "7:2000")}

            await cp.feedback("exit-reader", granted=False)
            await wait_until(lambda: len(bus.readers[2].commands) == 2)
            assert bus.readers[1].commands == []

    run(scenario())


def test_a_reader_with_the_wrong_key_does_not_keep_others_offline() -> None:
    async def scenario() -> None:
        good, other = osdp.KeyStore.gen_key(), osdp.KeyStore.gen_key()
        readers = [
            OsdpReaderConfig(id="good", address=1, scbk_secret="unused"),
            OsdpReaderConfig(id="rogue", address=2, scbk_secret="unused"),
        ]
        async with (
            OsdpBusSimulator({1: good, 2: osdp.KeyStore.gen_key()}) as bus,
            OsdpControlPanel("bus-k", bus.url, readers, {"good": good, "rogue": other}, backoff=FAST) as cp,
        ):
            readings = cp.readings()
            assert (await next_of(readings, DeviceOnline)).device_id == "good"
            bus.readers[1].present("1:1")
            assert (await next_of(readings, CardRead)).device_id == "good"
            assert not cp.reader_online["rogue"]

    run(scenario())

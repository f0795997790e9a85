"""Drivers end to end against their simulators over real pty pairs and TCP sockets (socket://)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from device_drivers import Backoff, BackoffConfig, CardReaderConfig, TurnstileConfig, open_driver
from device_drivers._io.serial import SerialDriver
from device_drivers._io.sim import PtyEndpoint, TcpEndpoint
from device_drivers.card.driver import CardReaderDriver
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.errors import DeviceError
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import CardRead, DeviceOffline, DeviceOnline, Reading, TurnstileEvent
from device_drivers.turnstile.driver import TurnstileDriver
from device_drivers.turnstile.sim import TurnstileSimulator

T = TypeVar("T")
FAST = BackoffConfig(initial_s=0.05, max_s=0.2, jitter=0.5)
TIMEOUT = 10.0


def profile(name: str) -> FirmwareProfile:
    return load_profile(resolve_profile(name))


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


class Readings:
    """Collects a driver's readings in the background so tests can wait for the next of a type."""

    def __init__(self, driver: SerialDriver) -> None:
        self.driver = driver
        self.items: list[Reading] = []
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for reading in self.driver.readings():
            self.items.append(reading)
            self._new.set()

    async def next(self, kind: type[T], timeout: float = TIMEOUT) -> T:
        async def wait() -> T:
            seen = 0
            while True:
                for item in self.items[seen:]:
                    seen += 1
                    if isinstance(item, kind):
                        self.items.remove(item)
                        return item
                self._new.clear()
                await self._new.wait()

        return await asyncio.wait_for(wait(), timeout)

    def of(self, kind: type[T]) -> list[T]:
        return [item for item in self.items if isinstance(item, kind)]


@contextlib.asynccontextmanager
async def reader_with_sim(
    profile_name: str, endpoint: Any = None, **kwargs: Any
) -> AsyncIterator[tuple[CardReaderDriver, CardReaderSimulator, Readings]]:
    prof = profile(profile_name)
    async with CardReaderSimulator(prof, endpoint or PtyEndpoint()) as sim:
        driver = CardReaderDriver("reader-1", sim.url, prof, backoff=FAST, **kwargs)
        async with driver:
            readings = Readings(driver)
            await readings.next(DeviceOnline)
            yield driver, sim, readings


@pytest.mark.parametrize("transport", ["pty", "socket"])
def test_em4100_reader_reads_cards_and_survives_bad_frames(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        endpoint = PtyEndpoint() if transport == "pty" else TcpEndpoint()
        async with reader_with_sim("em4100_id12", endpoint) as (driver, sim, readings):
            if transport == "socket":
                assert driver.url.startswith("socket://127.0.0.1:")
            sim.present("62E3086CED")
            card = await readings.next(CardRead)
            assert (card.device_id, card.credential, card.card_format) == ("reader-1", "62E3086CED", "em4100")
            assert (card.facility_code, card.card_number, card.bits) == (0x62, 0xE3086CED, 40)
            assert card.at.tzinfo is not None

            sim.inject(b"\x00\xffnoise")
            sim.present_bad_checksum("01004A651F")
            sim.present("01004A651F")
            card = await readings.next(CardRead)
            assert card.credential == "01004A651F"
            assert driver.counters["garbage"] >= 1
            assert driver.counters["bad_checksum"] == 1
            assert driver.counters["cards"] == 2

    with caplog.at_level(logging.WARNING, logger="device_drivers._io.serial"):
        run(scenario())
    assert any(
        "device reader-1: line noise" in r.getMessage() and "bad_checksum=1" in r.getMessage()
        for r in caplog.records
    )


def test_repeats_within_debounce_are_one_presentation() -> None:
    async def scenario() -> None:
        async with reader_with_sim("rdm6300", debounce_s=5.0) as (driver, sim, readings):
            for _ in range(3):
                sim.present("1A004A3F7C")
            sim.present("0F02D6F28B")
            assert (await readings.next(CardRead)).credential == "1A004A3F7C"
            assert (await readings.next(CardRead)).credential == "0F02D6F28B"
            assert driver.counters["repeats"] == 2

    run(scenario())


def test_uid_line_reader() -> None:
    async def scenario() -> None:
        async with reader_with_sim("uid_line_reader") as (driver, sim, readings):
            sim.inject(b"04a24b3c\r\n")  # lower case from some firmware
            sim.inject(b"zz\r\n")
            sim.present("04:53:6A:1A:30:5E:80")
            assert (await readings.next(CardRead)).credential == "04A24B3C"
            card = await readings.next(CardRead)
            assert (card.credential, card.bits, card.card_format) == ("04536A1A305E80", 56, "uid")
            assert driver.counters["bad_data"] == 1

    run(scenario())


def test_wiegand_converter_checks_parity() -> None:
    async def scenario() -> None:
        async with reader_with_sim("wiegand_serial_converter", TcpEndpoint()) as (driver, sim, readings):
            sim.present("123:4567")
            card = await readings.next(CardRead)
            assert (card.card_format, card.facility_code, card.card_number, card.bits) == (
                "H10301",
                123,
                4567,
                26,
            )
            assert card.raw_hex == "BD88EB80"
            sim.present_bad_parity("4660:123456/37")
            sim.present("4660:123456/37")
            card = await readings.next(CardRead)
            assert (card.credential, card.card_format) == ("4660:123456", "H10304")
            sim.present("1000:54321/34")
            assert (await readings.next(CardRead)).card_format == "H10306"
            assert driver.counters["parity"] == 1

    run(scenario())


def test_frame_cut_by_silence_is_dropped() -> None:
    async def scenario() -> None:
        async with reader_with_sim("rdm6300") as (driver, sim, readings):
            frame = sim.codec.encode(sim.card("1A004A3F7C"))
            sim.inject(frame[:6])
            await asyncio.sleep(0.3)  # far beyond the profile's inter-byte timeout
            sim.present("0F02D6F28B")
            assert (await readings.next(CardRead)).credential == "0F02D6F28B"
            assert driver.counters["truncated"] == 1

    run(scenario())


@pytest.mark.parametrize("name", ["turnstile_stx_xor", "turnstile_rs485_crc", "turnstile_rs485_sum8"])
def test_turnstile_open_passage_and_alarms(name: str) -> None:
    async def scenario() -> None:
        prof = profile(name)
        async with (
            TurnstileSimulator(prof, PtyEndpoint(), passage_delay_s=0.05) as sim,
            TurnstileDriver("gate-1", sim.url, prof, backoff=FAST) as driver,
        ):
            readings = Readings(driver)
            await readings.next(DeviceOnline)
            await driver.open("exit")
            event = await readings.next(TurnstileEvent)
            assert (event.device_id, event.kind, event.direction) == ("gate-1", "passage_done", "exit")
            assert sim.commands[-1].name == "open" and sim.commands[-1].direction == "exit"
            await driver.open("entry")
            assert (await readings.next(TurnstileEvent)).direction == "entry"

            await driver.hold_open("entry")
            await driver.lock()
            await driver.normal()
            for _ in range(50):
                if len(sim.commands) == 5:
                    break
                await asyncio.sleep(0.02)
            assert [c.name for c in sim.commands[2:]] == ["hold_open", "lock", "normal"]
            assert sim.state == "normal"

            sim.raise_event("forced", "entry")
            sim.raise_event("tailgating", "exit")
            sim.raise_event("fire_alarm")
            fault_code = next(iter(prof.turnstile.fault_codes)) if prof.turnstile else 0
            sim.raise_event("fault", value=fault_code)
            got = [await readings.next(TurnstileEvent) for _ in range(4)]
            assert [(e.kind, e.direction) for e in got] == [
                ("forced", "entry"),
                ("tailgating", "exit"),
                ("fire_alarm", None),
                ("fault", None),
            ]
            assert got[3].detail == prof.turnstile.fault_codes[fault_code] if prof.turnstile else False
            assert driver.counters["ack"] >= 4

    run(scenario())


def test_turnstile_timeout_when_nobody_passes() -> None:
    async def scenario() -> None:
        prof = profile("turnstile_stx_xor")
        async with (
            TurnstileSimulator(prof, TcpEndpoint(), auto_pass=False, passage_window_s=0.1) as sim,
            TurnstileDriver("gate-2", sim.url, prof, backoff=FAST) as driver,
        ):
            readings = Readings(driver)
            await readings.next(DeviceOnline)
            await driver.open("entry")
            event = await readings.next(TurnstileEvent)
            assert (event.kind, event.direction) == ("passage_timeout", "entry")

    run(scenario())


def test_rs485_bus_ignores_other_addresses_and_echo() -> None:
    async def scenario() -> None:
        prof = profile("turnstile_rs485_crc")
        async with (
            TurnstileSimulator(prof, PtyEndpoint(), address=7, passage_delay_s=0.05) as sim,
            TurnstileDriver("gate-7", sim.url, prof, address=7, backoff=FAST) as driver,
        ):
            readings = Readings(driver)
            await readings.next(DeviceOnline)
            other = TurnstileSimulator(prof, address=3)
            sim.inject(other.codec.event("forced", "entry"))  # another gate on the bus
            sim.inject(driver.turnstile.command("lock"))  # our own command echoed back
            sim.raise_event("tailgating", "entry")
            event = await readings.next(TurnstileEvent)
            assert (event.kind, event.direction) == ("tailgating", "entry")
            assert driver.counters["other_address"] == 1
            assert driver.counters["echo"] == 1

    run(scenario())


def test_socket_disconnect_gives_offline_then_online_and_reads_again() -> None:
    async def scenario() -> None:
        prof = profile("em4100_id12")
        endpoint = TcpEndpoint()
        async with reader_with_sim("em4100_id12", endpoint) as (driver, sim, readings):
            port = endpoint.port
            endpoint.drop_clients()
            offline = await readings.next(DeviceOffline)
            assert "read failed" in offline.reason
            await readings.next(DeviceOnline)
            sim.present("62E3086CED")
            assert (await readings.next(CardRead)).credential == "62E3086CED"

            # The converter is powered off: nothing listens for a while, then it comes back.
            await sim.__aexit__(None, None, None)
            await readings.next(DeviceOffline)
            await asyncio.sleep(0.5)
            assert not driver.online
            assert not readings.of(DeviceOnline)
            async with CardReaderSimulator(prof, TcpEndpoint(port=port)) as back:
                await readings.next(DeviceOnline)
                back.present("01004A651F")
                assert (await readings.next(CardRead)).credential == "01004A651F"
            assert driver.counters["reconnects"] >= 2

    run(scenario())


def test_pty_unplugged_and_replugged_behind_a_stable_path(tmp_path: Path) -> None:
    async def scenario() -> None:
        prof = profile("rdm6300")
        link = tmp_path / "ttyREADER"
        driver = CardReaderDriver("reader-pty", str(link), prof, backoff=FAST)
        async with driver:
            readings = Readings(driver)
            # Not plugged in yet: one offline, then retries.
            offline = await readings.next(DeviceOffline)
            assert "cannot open" in offline.reason
            async with CardReaderSimulator(prof, PtyEndpoint(link)) as sim:
                await readings.next(DeviceOnline)
                sim.present("1A004A3F7C")
                assert (await readings.next(CardRead)).credential == "1A004A3F7C"
            await readings.next(DeviceOffline)
            async with CardReaderSimulator(prof, PtyEndpoint(link)) as sim:
                await readings.next(DeviceOnline)
                sim.present("0F02D6F28B")
                assert (await readings.next(CardRead)).credential == "0F02D6F28B"
            assert len(readings.of(DeviceOffline)) == 0  # consumed above, none extra while retrying

    run(scenario())


def test_noisy_line_does_not_starve_another_device() -> None:
    async def scenario() -> None:
        async with (
            reader_with_sim("em4100_id12") as (noisy, noisy_sim, _),
            reader_with_sim("rdm6300") as (
                quiet,
                quiet_sim,
                quiet_readings,
            ),
        ):
            stop = asyncio.Event()
            rng = random.Random(7)

            async def flood() -> None:
                while not stop.is_set():
                    noisy_sim.inject(rng.randbytes(2048))
                    await asyncio.sleep(0)

            flooding = asyncio.create_task(flood())
            try:
                for card in ("1A004A3F7C", "0F02D6F28B", "1A004A3F7C"):
                    quiet_sim.present(card)
                    assert (await quiet_readings.next(CardRead)).credential == card
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await flooding
            assert noisy.counters["bytes"] > 10_000
            assert sum(v for k, v in noisy.counters.items() if k not in ("bytes", "frames", "cards")) > 0
            assert quiet.counters.get("garbage", 0) == 0

    run(scenario())


def test_readings_nobody_consumes_are_dropped_oldest_first_and_counted() -> None:
    async def scenario() -> None:
        prof = profile("uid_line_reader")
        async with CardReaderSimulator(prof) as sim:
            driver = CardReaderDriver("reader-q", sim.url, prof, backoff=FAST, debounce_s=0)
            driver.queue_size = 3
            async with driver:
                while not driver.online:  # pyserial flushes input on open: bytes before it are lost
                    await asyncio.sleep(0.01)
                for n in range(6):
                    sim.present(f"0000000{n}")
                for _ in range(100):
                    if driver.counters.get("cards", 0) == 6:
                        break
                    await asyncio.sleep(0.02)
                assert driver.counters.get("dropped_readings") == 4, driver.counters  # online + cards 0..2
                got = []
                async for reading in driver.readings():
                    got.append(reading)
                    if len(got) == 3:
                        break
                assert [r.credential for r in got if isinstance(r, CardRead)] == [
                    "00000003",
                    "00000004",
                    "00000005",
                ]

    run(scenario())


def test_write_while_offline_is_a_device_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver = TurnstileDriver(
            "gate-x", str(tmp_path / "nothing"), profile("turnstile_stx_xor"), backoff=FAST
        )
        async with driver:
            with pytest.raises(DeviceError) as err:
                await driver.open("entry")
            assert err.value.code == "offline" and err.value.device_id == "gate-x"

    run(scenario())


def test_driver_is_a_reusable_context_manager() -> None:
    async def scenario() -> None:
        prof = profile("rdm6300")
        async with CardReaderSimulator(prof) as sim:
            driver = CardReaderDriver("reader-r", sim.url, prof, backoff=FAST)
            for card in ("1A004A3F7C", "0F02D6F28B"):
                async with driver:
                    readings = Readings(driver)
                    await readings.next(DeviceOnline)
                    sim.present(card)
                    assert (await readings.next(CardRead)).credential == card
                with pytest.raises(RuntimeError, match="already running"):
                    async with driver, driver:
                        pass

    run(scenario())


def test_simulated_driver_runs_its_own_simulator() -> None:
    async def scenario() -> None:
        # The registry attaches the simulator; the driver only starts it and opens its port.
        reader = open_driver(
            CardReaderConfig(kind="card_reader", id="demo-reader", profile="em4100_id12", simulated=True)
        )
        gate = open_driver(
            TurnstileConfig(
                kind="turnstile",
                id="demo-gate",
                profile="turnstile_rs485_sum8",
                simulated=True,
                sim_passage_delay_s=0.01,
            )
        )
        assert isinstance(reader, CardReaderDriver) and isinstance(gate, TurnstileDriver)
        async with reader, gate:
            assert reader.simulator is not None and reader.url == reader.simulator.url
            assert isinstance(reader.simulator, CardReaderSimulator)
            card_readings, gate_readings = Readings(reader), Readings(gate)
            await card_readings.next(DeviceOnline)
            await gate_readings.next(DeviceOnline)
            reader.simulator.present("62E3086CED")
            assert (await card_readings.next(CardRead)).credential == "62E3086CED"
            await gate.open("entry")
            assert (await gate_readings.next(TurnstileEvent)).kind == "passage_done"

    run(scenario())


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(BackoffConfig(initial_s=1, max_s=8, multiplier=2, jitter=0.5), random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays[3:])) > 1  # jittered, not a fixed cap
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_backoff_without_jitter_is_exact_and_its_rng_is_injectable() -> None:
    exact = Backoff(BackoffConfig(initial_s=0.1, max_s=0.4, multiplier=2, jitter=0))
    assert [exact.next_delay() for _ in range(4)] == [0.1, 0.2, 0.4, 0.4]
    exact.reset()
    assert exact.next_delay() == 0.1
    same = [Backoff(BackoffConfig(), random.Random(3)).next_delay() for _ in range(2)]
    assert same[0] == same[1]
    default = Backoff()  # the defaults of BackoffConfig
    assert (default.initial_s, default.max_s) == (BackoffConfig().initial_s, BackoffConfig().max_s)


@pytest.mark.parametrize("name", ["turnstile_stx_xor", "turnstile_rs485_crc"])
def test_confirmed_commands_wait_for_ack_resend_and_report_nak(name: str) -> None:
    async def scenario() -> None:
        prof = profile(name)
        async with (
            TurnstileSimulator(prof, PtyEndpoint(), passage_delay_s=0.05) as sim,
            TurnstileDriver("gate-c", sim.url, prof, backoff=FAST, retries=2) as driver,
        ):
            readings = Readings(driver)
            await readings.next(DeviceOnline)
            await driver.open("exit", confirm=True)
            assert driver.counters["ack"] == 1
            assert (await readings.next(TurnstileEvent)).kind == "passage_done"

            sim.ack = False  # a deaf controller: the command goes out 1 + retries times
            with pytest.raises(DeviceError) as err:
                await driver.lock(confirm=True)
            assert err.value.code == "no_ack"
            assert [c.name for c in sim.commands].count("lock") == 3
            assert driver.counters["no_ack"] == 3

            sim.ack = True
            sim.refuse.add("hold_open")
            with pytest.raises(DeviceError) as err:
                await driver.hold_open("entry", confirm=True)
            assert err.value.code == "nak"
            nak = await readings.next(TurnstileEvent)
            assert nak.kind == "nak"
            assert nak.value == driver.turnstile.spec_for("command", "hold_open", "entry").code
            await driver.normal(confirm=True)

    run(scenario())


def test_a_second_driver_on_the_same_port_is_refused() -> None:
    async def scenario() -> None:
        async with reader_with_sim("em4100_id12") as (_, sim, readings):
            second = CardReaderDriver("reader-2", sim.url, profile("em4100_id12"), backoff=FAST)
            async with second:
                offline = await Readings(second).next(DeviceOffline)
                assert "cannot open" in offline.reason
            sim.present("62E3086CED")
            assert (await readings.next(CardRead)).device_id == "reader-1"

    run(scenario())


def test_frame_completed_after_a_scheduling_gap_is_kept() -> None:
    """A frame whose second half reaches the driver late (a busy box descheduled its reader thread)
    still decodes when the halves make a valid frame: only a frame the codec rejects was cut."""

    async def scenario() -> None:
        async with reader_with_sim("rdm6300") as (driver, sim, readings):
            frame = sim.codec.encode(sim.card("1A004A3F7C"))
            sim.inject(frame[:6])
            await asyncio.sleep(0.3)
            sim.inject(frame[6:])
            assert (await readings.next(CardRead)).credential == "1A004A3F7C"
            assert driver.counters.get("truncated", 0) == 0

    run(scenario())

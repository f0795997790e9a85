"""Floods: a megabyte and more of line noise into every framing parser, then valid frames.

Every shipped profile's parser gets random bytes and mutated frames (cut, a flipped bit, runs of the
start byte), 1 MiB of each, fed as the serial driver feeds it (4 KiB chunks through
:class:`FrameStream`), then its golden frames. Every golden frame must come out, the noise must be
accounted for in the counters, the log must hold summary lines only, and the time spent must stay
within a generous multiple of the same parser's time on valid frames alone, measured in the same run
(no absolute timings: the bench, bench/bench_serial_flood.py, has the figures).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from device_drivers import MalformedFrame, codec_for, drain, load_profile
from device_drivers._io.sim import line_noise
from device_drivers._io.stream import DropSummary, FrameStream
from device_drivers.card.codec import CardCodec
from device_drivers.card.driver import CardReaderDriver
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.gpio.driver import GpioWiegandReader
from device_drivers.gpio.sim import SimulatedWiegandLines
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.readings import CardRead, DeviceOnline, Reading
from device_drivers.wedge.codec import EV_KEY, KEY_DOWN, KeyEvent, KeystrokeDecoder
from device_drivers.wedge.driver import KeyboardWedgeReader
from firmware_profiles import profile_paths

MIB = 1024 * 1024
CHUNK = 4096  # what SerialDriver's reader thread hands over at most
PROFILES = [load_profile(path) for path in profile_paths()]
STREAM_LOGGER = "device_drivers._io.stream"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _flood(profile: FirmwareProfile, seed: int) -> bytes:
    """1 MiB of random bytes and 1 MiB of mutated golden frames, then what ends a line."""
    rng = random.Random(seed)
    golden = [g.hex for g in profile.golden]
    noise = rng.randbytes(MIB) + line_noise(MIB, golden, rng, start=profile.framing.start or b"")
    # A line protocol has no start marker: it can only resynchronise on a line end (or on silence,
    # which the driver turns into a cut): so the noise ends with one.
    if profile.framing.start is None and profile.framing.end is not None:
        noise += profile.framing.end
    return noise


def _feed(profile: FirmwareProfile, data: bytes, clock: FakeClock) -> tuple[list[Any], dict[str, int], float]:
    """Values decoded, counters, and seconds spent, with ``data`` fed in driver-sized chunks."""
    counters: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        counters[key] = counters.get(key, 0) + n

    drops = DropSummary("dev-1", 10.0, clock=clock)
    stream = FrameStream(codec_for(profile), count=count, drops=drops)
    values: list[Any] = []
    began = time.perf_counter()
    for offset in range(0, len(data), CHUNK):
        values.extend(stream.feed(data[offset : offset + CHUNK], time.monotonic_ns()))
    spent = time.perf_counter() - began
    drops.close()
    return values, counters, spent


@pytest.mark.parametrize("profile", PROFILES, ids=[p.id for p in PROFILES])
def test_every_parser_gets_through_a_flood(
    profile: FirmwareProfile, caplog: pytest.LogCaptureFixture
) -> None:
    codec = codec_for(profile)
    golden = [codec.decode(g.hex)[0] for g in profile.golden]
    valid = b"".join(g.hex for g in profile.golden)
    noise = _flood(profile, seed=11)
    clock = FakeClock()
    # The baseline: valid frames alone (256 KiB of them) through the same path.
    repeats = 256 * 1024 // len(valid)
    baseline_data = valid * repeats
    baseline_values, _, baseline_s = _feed(profile, baseline_data, clock)
    assert len(baseline_values) == len(golden) * repeats

    with caplog.at_level(logging.INFO):
        values, counters, flood_s = _feed(profile, noise + valid, clock)
    assert values[-len(golden) :] == golden
    assert counters["bytes"] == len(noise) + len(valid)
    # All but the frames noise made by chance (each at most max_frame bytes) is counted as dropped.
    chance = len(values) - len(golden)
    assert len(noise) - chance * profile.framing.max_frame <= counters["dropped_bytes"] <= len(noise)
    assert counters["bad_frames"] == sum(
        n for code, n in counters.items() if code not in ("bytes", "frames", "bad_frames", "dropped_bytes")
    )
    # Summary lines only: the first drop at once, the rest when the interval is over (here: close,
    # since the fake clock stands still).
    lines = [r for r in caplog.records if r.name == STREAM_LOGGER]
    assert len(lines) == 2 and len(caplog.records) == 2
    assert f"dropped {counters['dropped_bytes']} bytes" not in lines[0].getMessage()
    assert "good frames" in lines[1].getMessage() and "dev-1: line noise" in lines[1].getMessage()
    # Bulk resynchronisation: 2 MiB of noise costs less than the same bytes of valid frames
    # (measured: 10 to 1,000 times less; the per-byte resync it replaced cost up to 15 times more).
    assert flood_s <= baseline_s * len(noise) / len(baseline_data), (flood_s, baseline_s)


def test_summary_is_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    drops = DropSummary("dev-1", 10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger=STREAM_LOGGER):
        for _ in range(35):
            for _drop in range(100):
                drops.dropped("garbage", 7, "garbage: 7 bytes")
            drops.good()
            clock.now += 1.0
        drops.close()
    messages = [r.getMessage() for r in caplog.records]
    # The first drop at once, then at t = 10, 20, 30 (the next drop after each interval), then the
    # rest at close: 3,500 drops in five lines, every drop counted in one of them.
    assert len(messages) == 5
    counted = [int(m.split("dropped ")[1].split(" bytes in ")[1].split(" ")[0]) for m in messages]
    assert sum(counted) == 3500 and counted[0] == 1
    assert all("garbage=" in m for m in messages)


def test_buffer_stays_bounded_on_a_line_without_frame_boundaries() -> None:
    for profile in PROFILES:
        codec = codec_for(profile)
        buffer = bytearray()
        # A stuck line: the start byte (or the first byte of a frame) for ever, never a whole frame.
        byte = (profile.framing.start or profile.golden[0].hex)[:1]
        for _ in range(8):
            buffer += byte * CHUNK
            for value in drain(codec, buffer):
                assert isinstance(value, MalformedFrame)
            assert len(buffer) < profile.framing.max_frame, profile.id


def test_driver_decides_swipes_after_a_flood_and_logs_a_summary(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The card reader driver over a pty: 2 MiB of noise at the speed the driver reads, then cards."""
    profile = next(p for p in PROFILES if p.id == "em4100_id12")

    async def scenario() -> None:
        async with CardReaderSimulator(profile) as sim:
            driver = CardReaderDriver("reader-f", sim.url, profile, debounce_s=0)
            async with driver:
                reads: asyncio.Queue[CardRead] = asyncio.Queue()
                online = asyncio.Event()

                async def collect() -> None:
                    async for reading in driver.readings():
                        if isinstance(reading, CardRead):
                            reads.put_nowait(reading)
                        elif isinstance(reading, DeviceOnline):
                            online.set()

                collector = asyncio.create_task(collect())
                # Opening the port flushes what arrived before: present cards once it is open.
                await asyncio.wait_for(online.wait(), 10)
                sim.present("62E3086CED")
                assert (await asyncio.wait_for(reads.get(), 10)).credential == "62E3086CED"
                await sim.flood(_flood(profile, seed=5))
                # The noise is made of the golden cards' frames, cut and mutated, and a cut frame
                # followed by the right byte by chance is a card again: other cards come after it.
                golden = {driver.codec.decode(g.hex)[0].credential for g in profile.golden}
                for card in ("0012AB34CD", "00FFEE0011", "0012AB34CD"):
                    sim.present(card)
                    while (read := await asyncio.wait_for(reads.get(), 10)).credential != card:
                        assert read.credential in golden
                assert driver.counters["dropped_bytes"] >= 2 * MIB - 64
                collector.cancel()

    with caplog.at_level(logging.INFO):
        asyncio.run(asyncio.wait_for(scenario(), 60))
    noise_lines = [r for r in caplog.records if "line noise" in r.getMessage()]
    assert 1 <= len(noise_lines) <= 3
    assert len(caplog.records) < 10


async def _next_card(readings: AsyncIterator[Reading]) -> CardRead:
    async for reading in readings:
        if isinstance(reading, CardRead):
            return reading
    raise AssertionError("the readings ended")


class _GarbageKeyboard:
    """The input-device boundary (no input device on build machines): a reader typing garbage,
    tens of thousands of keys as fast as they come, then one card."""

    def __init__(self, rng: random.Random, keys: int, card_codes: list[int]) -> None:
        self.events: list[KeyEvent] = []
        at = time.monotonic_ns()
        for _ in range(keys):
            at += rng.choice((1_000, 1_000, 200_000_000))  # fast, or a pause that cuts the input
            code = rng.choice((2, 3, 30, 28, 28, 45, 57, 96))  # digits, a letter, Enter, stray keys
            self.events.append(KeyEvent(EV_KEY, code, KEY_DOWN, at))
        at += 200_000_000
        for code in [*card_codes, 28]:
            at += 1_000_000
            self.events.append(KeyEvent(EV_KEY, code, KEY_DOWN, at))

    async def async_read_loop(self) -> AsyncIterator[KeyEvent]:
        for event in self.events:
            yield event
        await asyncio.Event().wait()  # then quiet, plugged in

    def grab(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_keyboard_wedge_typing_garbage_is_summarised(caplog: pytest.LogCaptureFixture) -> None:
    digits = {str(d): code for d, code in zip("1234567890", range(2, 12), strict=True)}
    keyboard = _GarbageKeyboard(random.Random(3), 50_000, [digits[c] for c in "34567890"])

    async def scenario() -> KeyboardWedgeReader:
        reader = KeyboardWedgeReader(
            "wedge-f", "/dev/input/fake", KeystrokeDecoder("decimal"), opener=lambda path: keyboard
        )
        async with reader:
            readings = reader.readings()
            # Garbage typed as 1s and 2s with an Enter is a card number like any other.
            while (card := await asyncio.wait_for(_next_card(readings), 30)).credential != "34567890":
                assert set(card.credential) <= {"1", "2"}
        return reader

    with caplog.at_level(logging.INFO):
        reader = asyncio.run(scenario())
    dropped = sum(reader.counters.get(code, 0) for code in ("bad_key", "bad_length", "truncated"))
    assert dropped > 10_000
    noise_lines = [r.getMessage() for r in caplog.records if "line noise" in r.getMessage()]
    assert len(noise_lines) == 2  # the first drop at once, the rest when the reader closed
    assert sum(int(m.split(" bytes in ")[1].split(" ")[0]) for m in noise_lines) == dropped
    assert len(caplog.records) < 10


def test_noisy_wiegand_lines_are_summarised(caplog: pytest.LogCaptureFixture) -> None:
    codec = CardCodec(load_profile(next(p for p in profile_paths() if p.stem == "wiegand_serial_converter")))
    rng = random.Random(4)

    async def scenario() -> GpioWiegandReader:
        # Frames of wire time (edges carry it): 300 of them at 5 ms gaps take 1.5 s to arrive.
        lines = SimulatedWiegandLines(codec, bit_interval_s=0.000_05, frame_gap_s=0.005)
        async with GpioWiegandReader("gpio-f", lines, codec, frame_gap_s=0.004) as reader:
            for _ in range(300):
                bits = rng.randrange(1, 64)  # noise pulses: frames of any length, parity by chance
                lines.present_bits(bits, rng.getrandbits(bits))
            lines.present("123:4567")
            readings = reader.readings()
            while (await asyncio.wait_for(_next_card(readings), 30)).credential != "123:4567":
                pass  # noise can make a valid frame by chance
        return reader

    with caplog.at_level(logging.INFO):
        reader = asyncio.run(scenario())
    dropped = sum(reader.counters.get(code, 0) for code in ("parity", "unknown_layout", "bad_length"))
    assert dropped > 250
    assert 1 <= len([r for r in caplog.records if "line noise" in r.getMessage()]) <= 2
    assert len(caplog.records) < 10

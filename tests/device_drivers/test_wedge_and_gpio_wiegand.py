"""Keyboard-wedge and GPIO Wiegand readers.

Their hardware boundaries cannot run here (no input device, no GPIO chip), so these tests use a
fake input device and a fake edge source: mocks at the boundary, with real decoding behind them.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Literal

import pytest

from device_drivers import BackoffConfig
from device_drivers.card.codec import CardCodec
from device_drivers.errors import DeviceError
from device_drivers.gpio.codec import WiegandBitCollector
from device_drivers.gpio.driver import GpioWiegandReader
from device_drivers.gpio.sim import SimulatedWiegandLines
from device_drivers.profiles import wiegand
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import CardRead, DeviceOffline, DeviceOnline
from device_drivers.wedge.codec import EV_KEY, KeyEvent, KeystrokeDecoder
from device_drivers.wedge.driver import KeyboardWedgeReader
from device_drivers.wedge.sim import SimulatedKeyboard

MS = 1_000_000
CODES = {
    "1": 2,
    "2": 3,
    "3": 4,
    "4": 5,
    "5": 6,
    "6": 7,
    "7": 8,
    "8": 9,
    "9": 10,
    "0": 11,
    "A": 30,
    "B": 48,
    "C": 46,
    "D": 32,
    "E": 18,
    "F": 33,
    "\n": 28,
    "x": 45,
}
WIEGAND = CardCodec(load_profile(resolve_profile("wiegand_serial_converter")))


def typed(text: str, start_ns: int = 0, step_ns: int = 5 * MS) -> list[KeyEvent]:
    """Key-down and key-up events for ``text``, as a reader types it."""
    events = []
    at = start_ns
    for char in text:
        events.append(KeyEvent(EV_KEY, CODES[char], 1, at))
        events.append(KeyEvent(EV_KEY, CODES[char], 0, at + MS))
        at += step_ns
    return events


def decode_all(decoder: KeystrokeDecoder, events: list[KeyEvent]) -> list[str | str]:
    out: list[str] = []
    for event in events:
        result = decoder.feed(event)
        if isinstance(result, DeviceError):
            out.append(f"!{result.code}")
        elif result is not None:
            out.append(result)
    return out


def test_keystroke_decoder() -> None:
    decoder = KeystrokeDecoder("decimal", min_length=4, max_length=10, key_gap_s=0.05)
    assert decode_all(decoder, typed("0004875551\n")) == ["0004875551"]
    assert decode_all(decoder, typed("12\n", 10**9)) == ["!bad_length"]
    assert decode_all(decoder, typed("12x34\n", 2 * 10**9)) == ["!bad_key"]
    assert decode_all(decoder, typed("12345678901\n", 3 * 10**9)) == ["!bad_length"]
    # A person typing slowly: the partial input is dropped when the pause is seen.
    slow = typed("12", 4 * 10**9) + typed("3456\n", 4 * 10**9 + 500 * MS)
    assert decode_all(decoder, slow) == ["!truncated", "3456"]
    hex_decoder = KeystrokeDecoder("hex")
    assert decode_all(hex_decoder, typed("04A24B3C\n")) == ["04A24B3C"]
    assert decode_all(decoder, typed("\n", 6 * 10**9)) == []


class FakeInputDevice:
    """Stands in for evdev.InputDevice (no input device on build machines): plays events, then
    fails like an unplugged USB device."""

    def __init__(self, events: list[KeyEvent], unplug: bool = True) -> None:
        self.events = events
        self.unplug = unplug
        self.grabbed = self.closed = False

    async def async_read_loop(self) -> AsyncIterator[KeyEvent]:
        for event in self.events:
            await asyncio.sleep(0)
            yield event
        if self.unplug:
            raise OSError(errno.ENODEV, "No such device")
        await asyncio.Event().wait()

    def grab(self) -> None:
        self.grabbed = True

    def close(self) -> None:
        self.closed = True


def test_keyboard_wedge_reader_reads_and_reconnects() -> None:
    async def scenario() -> None:
        devices = [
            FakeInputDevice(typed("0004875551\n")),
            FileNotFoundError("unplugged"),
            FakeInputDevice(typed("12\n") + typed("0012345678\n", 10**9), unplug=False),
        ]
        opened: list[FakeInputDevice] = []

        def opener(path: str) -> FakeInputDevice:
            assert path == "/dev/input/by-id/usb-reader-event-kbd"
            item = devices.pop(0)
            if isinstance(item, Exception):
                raise item
            opened.append(item)
            return item

        reader = KeyboardWedgeReader(
            "wedge-1",
            "/dev/input/by-id/usb-reader-event-kbd",
            KeystrokeDecoder(),
            backoff=BackoffConfig(initial_s=0.01, max_s=0.02),
            opener=opener,  # type: ignore[arg-type]
        )
        async with reader:
            got = []
            async for reading in reader.readings():
                got.append(reading)
                if len([r for r in got if isinstance(r, CardRead)]) == 2:
                    break
        kinds = [type(r).__name__ for r in got]
        assert kinds == ["DeviceOnline", "CardRead", "DeviceOffline", "DeviceOnline", "CardRead"]
        cards = [r for r in got if isinstance(r, CardRead)]
        assert [c.credential for c in cards] == ["0004875551", "0012345678"]
        assert cards[0].card_number == 4875551 and cards[0].card_format == "keyboard_decimal"
        offline = next(r for r in got if isinstance(r, DeviceOffline))
        assert "No such device" in offline.reason
        assert all(d.grabbed and (d.closed or d is opened[-1]) for d in opened)
        assert reader.counters["bad_length"] == 1

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_bit_collector_splits_frames_on_silence() -> None:
    collector = WiegandBitCollector(frame_gap_s=0.025)
    value = wiegand.build(WIEGAND.layout(26), 4567, 123)
    frames = []
    at = 0
    for _ in range(2):
        for index in range(26):
            bit: Literal[0, 1] = 1 if (value >> (25 - index)) & 1 else 0
            done = collector.edge(bit, at)
            if done:
                frames.append(done)
            at += 2 * MS
        at += 100 * MS
    assert frames == [(26, value)]
    assert collector.flush(at - 90 * MS) is None  # 12 ms after the last bit: not yet
    assert collector.flush(at - 70 * MS) == (26, value)
    assert collector.flush(at) is None


class FakeEdges:
    """Stands in for libgpiod edge events (no GPIO chip here): D0/D1 pulses 2 ms apart, frames
    separated by silence, with real monotonic times."""

    def __init__(self, frames: list[tuple[int, int]]) -> None:
        self.frames = frames
        self.closed = False

    async def edges(self) -> AsyncIterator[tuple[Literal[0, 1], int]]:
        import time

        for bits, value in self.frames:
            for index in range(bits):
                yield (1 if (value >> (bits - 1 - index)) & 1 else 0), time.monotonic_ns()
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.06)
        await asyncio.Event().wait()

    def close(self) -> None:
        self.closed = True


def test_gpio_wiegand_reader_decodes_and_checks_parity() -> None:
    async def scenario() -> None:
        good26 = wiegand.build(WIEGAND.layout(26), 4567, 123)
        good37 = wiegand.build(WIEGAND.layout(37), 123456, 4660)
        bad = good26 ^ 1  # odd parity bit flipped
        reader = GpioWiegandReader(
            "gpio-1", FakeEdges([(26, good26), (26, bad), (3, 0b101), (37, good37)]), WIEGAND
        )
        async with reader:
            got = []
            async for reading in reader.readings():
                got.append(reading)
                if len([r for r in got if isinstance(r, CardRead)]) == 2:
                    break
        assert isinstance(got[0], DeviceOnline)
        cards = [r for r in got if isinstance(r, CardRead)]
        assert [(c.credential, c.card_format, c.raw_hex) for c in cards] == [
            ("123:4567", "H10301", "BD88EB80"),
            ("4660:123456", "H10304", "891A1E2408"),
        ]
        assert reader.counters["parity"] == 1 and reader.counters["unknown_layout"] == 1

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_gpio_without_gpiod_is_a_clear_error() -> None:
    from device_drivers.gpio.config import GpioWiegandConfig

    config = GpioWiegandConfig(kind="gpio_wiegand", id="g", chip="/dev/gpiochip9", d0_line=5, d1_line=6)
    with pytest.raises(DeviceError) as err:
        GpioWiegandReader.from_config(config)
    assert err.value.code in ("unsupported", "offline")


def test_simulated_keyboard_types_cards_into_the_reader() -> None:
    async def scenario() -> None:
        keyboard = SimulatedKeyboard()
        reader = KeyboardWedgeReader(
            "wedge-sim", "/dev/input/sim", KeystrokeDecoder("hex"), opener=lambda path: keyboard
        )
        async with reader:
            readings = reader.readings()
            assert isinstance(await anext(readings), DeviceOnline)
            keyboard.type_card("04a24b3c")
            card = await anext(readings)
            assert isinstance(card, CardRead) and card.credential == "04A24B3C"
            keyboard.unplug()
            offline = await anext(readings)
            assert isinstance(offline, DeviceOffline) and "No such device" in offline.reason
        assert keyboard.grabbed and keyboard.closed

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_simulated_wiegand_lines_feed_the_gpio_reader() -> None:
    async def scenario() -> None:
        lines = SimulatedWiegandLines(WIEGAND)
        async with GpioWiegandReader("gpio-sim", lines, WIEGAND) as reader:
            readings = reader.readings()
            assert isinstance(await anext(readings), DeviceOnline)
            lines.present_bits(26, wiegand.build(WIEGAND.layout(26), 4567, 123) ^ 1)  # parity wrong
            lines.present("4660:123456/37")
            card = await anext(readings)
            assert isinstance(card, CardRead) and (card.credential, card.bits) == ("4660:123456", 37)
            assert reader.counters["parity"] == 1

    asyncio.run(asyncio.wait_for(scenario(), 30))

"""USB keyboard-wedge card readers: the reader "types" the card number and Enter.

* :class:`KeystrokeDecoder` (sans-I/O) turns key events into card numbers, dropping a number typed
  too slowly (a person at a real keyboard, or a cut transmission), with stray keys, or of a wrong
  length.
* :class:`KeyboardWedgeReader` reads a Linux input device through ``evdev`` (grabbed, so the
  digits do not also reach a console), reconnects with backoff when it is unplugged, and yields
  :class:`CardRead`. The input device is behind the small :class:`InputDevice` protocol; tests
  use a fake one because no input device exists on build machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field

from device_drivers.base import ReadingSource
from device_drivers.card_codec import CardData
from device_drivers.errors import DeviceError
from device_drivers.serial_driver import Backoff, BackoffConfig
from device_drivers.types import utc_now

logger = logging.getLogger(__name__)

# Linux input event codes (include/uapi/linux/input-event-codes.h, a stable kernel ABI), so the
# decoder needs no evdev import.
EV_KEY = 1
KEY_DOWN = 1
_DIGITS = {2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0"}
_KEYPAD = {79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0"}
_HEX_LETTERS = {30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F"}
_ENTER = {28, 96}  # KEY_ENTER, KEY_KPENTER
_IGNORED = {42, 54}  # shift keys: some readers send upper-case hex with shift


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One input event as the kernel reports it."""

    type: int
    code: int
    value: int
    at_ns: int


class KeystrokeDecoder:
    """Key events in, card numbers out.

    :meth:`feed` returns a completed card number (on Enter), a :class:`DeviceError` for input that
    was dropped (codes ``bad_key``, ``bad_length``, ``truncated``), or ``None``.
    """

    def __init__(
        self,
        alphabet: Literal["decimal", "hex"] = "decimal",
        *,
        min_length: int = 4,
        max_length: int = 32,
        key_gap_s: float = 0.1,
    ) -> None:
        self.keys = dict(_DIGITS) | dict(_KEYPAD)
        if alphabet == "hex":
            self.keys |= _HEX_LETTERS
        self.alphabet = alphabet
        self.min_length = min_length
        self.max_length = max_length
        self.key_gap_ns = int(key_gap_s * 1e9)
        self._typed: list[str] = []
        self._last_ns = 0
        self._spoiled: str | None = None

    def feed(self, event: KeyEvent) -> str | DeviceError | None:
        if event.type != EV_KEY or event.value != KEY_DOWN or event.code in _IGNORED:
            return None
        dropped: DeviceError | None = None
        if self._typed and event.at_ns - self._last_ns > self.key_gap_ns:
            dropped = DeviceError(f"typing paused after {''.join(self._typed)!r}", code="truncated")
            self._reset()
        self._last_ns = event.at_ns
        if event.code in _ENTER:
            text, spoiled = "".join(self._typed), self._spoiled
            self._reset()
            if spoiled:
                return DeviceError(f"stray key {spoiled} in {text!r}", code="bad_key")
            if not text:
                return dropped
            if not self.min_length <= len(text) <= self.max_length:
                return DeviceError(f"{len(text)} characters: {text!r}", code="bad_length")
            return text
        char = self.keys.get(event.code)
        if char is None:
            self._spoiled = self._spoiled or f"code {event.code}"
        elif len(self._typed) < self.max_length + 1:
            self._typed.append(char)
        return dropped

    def _reset(self) -> None:
        self._typed.clear()
        self._spoiled = None


class InputDevice(Protocol):
    """The input-device boundary (``evdev.InputDevice`` satisfies it)."""

    def async_read_loop(self) -> AsyncIterator[Any]: ...

    def grab(self) -> None: ...

    def close(self) -> None: ...


def open_evdev(path: str) -> InputDevice:
    """Open ``path`` (``/dev/input/by-id/...-event-kbd``) with python-evdev."""
    try:
        import evdev
    except ImportError as err:
        raise DeviceError("keyboard-wedge readers need the `evdev` package", code="unsupported") from err
    device: InputDevice = evdev.InputDevice(path)
    return device


class KeyboardWedgeConfig(BaseModel):
    """A USB card reader that types card numbers as a keyboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["keyboard_wedge"] = Field(description="Selects this driver.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    device: str = Field(description="Input device path, best a stable `/dev/input/by-id/...-event-kbd` link.")
    alphabet: Literal["decimal", "hex"] = Field(default="decimal", description="What the reader types.")
    min_length: int = Field(default=4, ge=1, description="Shorter input is not a card.")
    max_length: int = Field(default=32, ge=1, description="Longer input is not a card.")
    key_gap_ms: int = Field(
        default=100, gt=0, description="A longer pause between keys drops the input (readers type fast)."
    )
    grab: bool = Field(default=True, description="Take the device exclusively, so keys reach nothing else.")
    backoff: BackoffConfig = Field(
        default=BackoffConfig(), description="Delays between reopening the device."
    )


class KeyboardWedgeReader(ReadingSource):
    """Reads cards from a keyboard-wedge reader; a reusable async context manager."""

    def __init__(
        self,
        device_id: str,
        path: str,
        decoder: KeystrokeDecoder,
        *,
        grab: bool = True,
        backoff: BackoffConfig | None = None,
        opener: Callable[[str], InputDevice] = open_evdev,
    ) -> None:
        super().__init__(device_id)
        self.path = path
        self.decoder = decoder
        self.grab = grab
        self.backoff = Backoff(backoff or BackoffConfig())
        self.opener = opener
        self.card_format = f"keyboard_{decoder.alphabet}"

    @classmethod
    def from_config(cls, config: KeyboardWedgeConfig) -> KeyboardWedgeReader:
        decoder = KeystrokeDecoder(
            config.alphabet,
            min_length=config.min_length,
            max_length=config.max_length,
            key_gap_s=config.key_gap_ms / 1000,
        )
        return cls(config.id, config.device, decoder, grab=config.grab, backoff=config.backoff)

    async def __aenter__(self) -> Self:
        self._start(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()
        self._close_readings()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                device = await loop.run_in_executor(None, self.opener, self.path)
                if self.grab:
                    device.grab()
            except (OSError, DeviceError) as err:
                self._went_offline(f"cannot open {self.path}: {err}")
                await asyncio.sleep(self.backoff.next_delay())
                continue
            self.backoff.reset()
            self._went_online(f"opened {self.path}")
            try:
                async for raw in device.async_read_loop():
                    self._on_event(raw)
                reason = "input device closed"
            except OSError as err:
                reason = f"read failed: {err}"
            finally:
                with contextlib.suppress(OSError):
                    device.close()
            self._went_offline(reason)
            self._count("reconnects")
            await asyncio.sleep(self.backoff.next_delay())

    def _on_event(self, raw: Any) -> None:
        if not isinstance(raw, KeyEvent):
            # evdev's event: its kernel timestamp (seconds) keeps key gaps exact under load.
            raw = KeyEvent(raw.type, raw.code, raw.value, int(raw.timestamp() * 1e9))
        result = self.decoder.feed(raw)
        if result is None:
            return
        if isinstance(result, DeviceError):
            self._count(result.code)
            logger.warning("device %s: dropped keyboard input (%s): %s", self.device_id, result.code, result)
            return
        credential = result.upper()
        number = int(credential, 16 if self.decoder.alphabet == "hex" else 10)
        self._count("cards")
        self._emit(
            CardData(
                credential,
                self.card_format,
                credential.encode().hex().upper(),
                len(credential) * 8,
                None,
                number,
            ).to_read(self.device_id, utc_now(), time.monotonic_ns())
        )


__all__ = [
    "InputDevice",
    "KeyEvent",
    "KeyboardWedgeConfig",
    "KeyboardWedgeReader",
    "KeystrokeDecoder",
    "open_evdev",
]

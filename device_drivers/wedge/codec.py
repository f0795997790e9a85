"""Sans-I/O decoder of a keyboard-wedge reader: kernel key events in, card numbers out. The reader
"types" the card number and Enter; input typed too slowly (a person at a real keyboard, or a cut
transmission), with stray keys, or of a wrong length is dropped. No I/O and no asyncio here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device_drivers.errors import DeviceError

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


__all__ = ["EV_KEY", "KEY_DOWN", "KeyEvent", "KeystrokeDecoder"]

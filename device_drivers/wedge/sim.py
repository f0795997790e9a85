"""A simulated keyboard-wedge reader: an input device that types card numbers as a reader does
(digits a few ms apart, then Enter) and can be unplugged. It stands where ``evdev.InputDevice``
would (see :class:`~device_drivers.wedge.driver.InputDevice`). Test and demo equipment."""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import AsyncIterator

from device_drivers.wedge.codec import EV_KEY, KEY_DOWN, KeyEvent

# Linux key codes of what a reader types (include/uapi/linux/input-event-codes.h).
_CODES = {
    **{str(d): code for d, code in zip("1234567890", range(2, 12), strict=True)},
    "A": 30,
    "B": 48,
    "C": 46,
    "D": 32,
    "E": 18,
    "F": 33,
    "\n": 28,
}
_KEY_UP = 0


class SimulatedKeyboard:
    """Types what :meth:`type_card` is given into :meth:`async_read_loop`; :meth:`unplug` ends the
    loop with the error an unplugged USB device gives."""

    def __init__(self, key_gap_s: float = 0.005) -> None:
        self.key_gap_s = key_gap_s
        self.grabbed = False
        self.closed = False
        self._typed: asyncio.Queue[str | None] = asyncio.Queue()

    def type_card(self, text: str) -> None:
        """Type ``text`` (digits or hex letters) followed by Enter."""
        self._typed.put_nowait(text.upper() + "\n")

    def unplug(self) -> None:
        self._typed.put_nowait(None)

    async def async_read_loop(self) -> AsyncIterator[KeyEvent]:
        while (text := await self._typed.get()) is not None:
            for char in text:
                code = _CODES[char]
                now = time.monotonic_ns()
                yield KeyEvent(EV_KEY, code, KEY_DOWN, now)
                yield KeyEvent(EV_KEY, code, _KEY_UP, now + 1_000_000)
                await asyncio.sleep(self.key_gap_s)
        raise OSError(errno.ENODEV, "No such device")

    def grab(self) -> None:
        self.grabbed = True

    def close(self) -> None:
        self.closed = True


__all__ = ["SimulatedKeyboard"]

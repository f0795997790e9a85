"""USB keyboard-wedge card readers: the reader "types" the card number and Enter.

* :class:`~device_drivers.wedge.codec.KeystrokeDecoder` (sans-I/O) turns key events into card
  numbers.
* :class:`KeyboardWedgeReader` reads a Linux input device through ``evdev`` (grabbed, so the
  digits do not also reach a console), reconnects with backoff when it is unplugged, and yields
  :class:`CardRead`. The input device is behind the small :class:`InputDevice` protocol; tests
  use a fake one because no input device exists on build machines.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Protocol, Self

from device_drivers._io.backoff import Backoff, BackoffParameters
from device_drivers._io.source import ReadingSource
from device_drivers.card.codec import CardData
from device_drivers.errors import DeviceError
from device_drivers.readings import utc_now
from device_drivers.wedge.codec import KeyEvent, KeystrokeDecoder
from device_drivers.wedge.config import KeyboardWedgeConfig


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


class KeyboardWedgeReader(ReadingSource):
    """Reads cards from a keyboard-wedge reader; a reusable async context manager."""

    def __init__(
        self,
        device_id: str,
        path: str,
        decoder: KeystrokeDecoder,
        *,
        grab: bool = True,
        backoff: BackoffParameters | None = None,
        opener: Callable[[str], InputDevice] = open_evdev,
        noise_log_interval_s: float = 10.0,
    ) -> None:
        super().__init__(device_id, noise_log_interval_s=noise_log_interval_s)
        self.path = path
        self.decoder = decoder
        self.grab = grab
        self.backoff = Backoff(backoff)
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
        return cls(
            config.id,
            config.device,
            decoder,
            grab=config.grab,
            backoff=config.backoff,
            noise_log_interval_s=config.noise_log_interval_s,
        )

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
            # A stuck key or a reader typing garbage: counted, and summarised in the log.
            self._count(result.code)
            self.drops.dropped(result.code, 0, f"keyboard input ({result.code}): {result}")
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


__all__ = ["InputDevice", "KeyboardWedgeReader", "open_evdev"]

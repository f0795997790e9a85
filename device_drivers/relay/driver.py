"""Relay / dry-contact door and turnstile control.

Layers, so the pin-level part stays small and replaceable:

* :class:`OutputPin` — drive one output line. :class:`LibgpiodPin` does it on real hardware through
  libgpiod (python ``gpiod`` >= 2); :class:`~device_drivers.relay.sim.MemoryPin` records levels
  (simulation, tests).
* :class:`Relay` — ``set`` / ``pulse`` on top of a pin (:class:`GpioRelay`); overlapping pulses
  extend each other instead of cutting the open short.
* :class:`RelayDoor` — the same command surface as the turnstile driver (``open(direction)``,
  ``hold_open``, ``lock``, ``normal``, ``readings()``) for a door strike or a turnstile wired to
  dry contacts (one contact per direction, or one for both). A dry contact reports nothing back,
  so it yields only ``DeviceOnline``/``DeviceOffline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self

from device_drivers._io.source import ReadingSource
from device_drivers.errors import DeviceError
from device_drivers.profiles.config import Direction
from device_drivers.relay.config import RelayDoorConfig

logger = logging.getLogger(__name__)


class OutputPin(Protocol):
    """The pin-level boundary: one output line, driven active or inactive."""

    def set_active(self, active: bool) -> None: ...

    def close(self) -> None: ...


class LibgpiodPin:
    """One GPIO output line through libgpiod v2 (``pip install gpiod``), requested at construction.

    Not exercised by the test suite (no GPIO chip on the build machines): the logic above it is
    tested through :class:`MemoryPin`.
    """

    def __init__(
        self, chip: str, line: int, *, active_low: bool = False, consumer: str = "edge-agent"
    ) -> None:
        try:
            import gpiod
            from gpiod.line import Direction as LineDirection
            from gpiod.line import Value
        except ImportError as err:
            raise DeviceError(
                "GPIO needs the `gpiod` package (libgpiod v2 bindings)", code="unsupported"
            ) from err
        self._line = line
        self._values = (Value.INACTIVE, Value.ACTIVE)
        try:
            self._request: Any = gpiod.request_lines(
                chip,
                consumer=consumer,
                config={
                    line: gpiod.LineSettings(
                        direction=LineDirection.OUTPUT, active_low=active_low, output_value=Value.INACTIVE
                    )
                },
            )
        except OSError as err:
            raise DeviceError(f"cannot request {chip} line {line}: {err}", code="offline") from err

    def set_active(self, active: bool) -> None:
        self._request.set_value(self._line, self._values[active])

    def close(self) -> None:
        self._request.release()


PinFactory = Callable[[int], OutputPin]
"""Makes the output pin of a GPIO line number."""


class Relay(Protocol):
    """A relay or dry contact."""

    async def set(self, active: bool) -> None: ...

    async def pulse(self, seconds: float) -> None: ...


class GpioRelay:
    """A relay driven by an :class:`OutputPin`.

    :meth:`pulse` returns once the contact is closed; it opens again ``seconds`` later unless another
    pulse (extending it) or :meth:`set` came in between.
    """

    def __init__(self, pin: OutputPin) -> None:
        self.pin = pin
        self._release: asyncio.TimerHandle | None = None
        self._release_at = 0.0

    async def set(self, active: bool) -> None:
        self._cancel_release()
        self.pin.set_active(active)

    async def pulse(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        release_at = loop.time() + seconds
        if self._release is not None and self._release_at >= release_at:
            return
        self._cancel_release()
        self.pin.set_active(True)
        self._release_at = release_at
        self._release = loop.call_at(release_at, self._off)

    def _off(self) -> None:
        self._release = None
        try:
            self.pin.set_active(False)
        except DeviceError as err:
            logger.error("relay release failed: %s", err)

    def _cancel_release(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None


class RelayDoor(ReadingSource):
    """Open, hold open and lock through relays; a reusable async context manager."""

    def __init__(self, device_id: str, relays: dict[Direction, Relay], pulse_s: float) -> None:
        if set(relays) != {"entry", "exit"}:
            raise ValueError("give a relay for entry and for exit (the same one for both is fine)")
        super().__init__(device_id)
        self.relays = relays
        self.pulse_s = pulse_s
        self.pins: list[OutputPin] = []

    @classmethod
    def from_config(cls, config: RelayDoorConfig, *, open_pin: PinFactory | None = None) -> RelayDoor:
        """Request the GPIO lines through libgpiod, or through ``open_pin`` (the registry passes
        in-memory pins for a ``simulated`` door)."""

        def libgpiod_pin(line: int) -> OutputPin:
            return LibgpiodPin(
                config.chip, line, active_low=config.active_low, consumer=f"edge-agent:{config.id}"
            )

        pin = open_pin or libgpiod_pin

        entry_pin = pin(config.line)
        entry = GpioRelay(entry_pin)
        pins: list[OutputPin] = [entry_pin]
        exit_relay = entry
        if config.exit_line is not None and config.exit_line != config.line:
            exit_pin = pin(config.exit_line)
            pins.append(exit_pin)
            exit_relay = GpioRelay(exit_pin)
        door = cls(config.id, {"entry": entry, "exit": exit_relay}, config.pulse_ms / 1000)
        door.pins = pins
        return door

    async def __aenter__(self) -> Self:
        self._open_readings()
        self._went_online("relay lines ready")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(DeviceError):
            await self.normal()
        self._close_readings()

    async def _do(self, what: str, direction: Direction | None, active: bool | None) -> None:
        relays = (
            [self.relays[direction]] if direction else list({id(r): r for r in self.relays.values()}.values())
        )
        try:
            for relay in relays:
                if active is None:
                    await relay.pulse(self.pulse_s)
                else:
                    await relay.set(active)
        except (DeviceError, OSError) as err:
            self._count("write_failed")
            self._went_offline(f"{what} failed: {err}")
            raise DeviceError(
                f"{self.device_id}: {what} failed: {err}", device_id=self.device_id, code="write_failed"
            ) from err
        self._count(what)

    async def open(self, direction: Direction) -> None:
        """Pulse the contact of ``direction`` for the configured time."""
        await self._do("open", direction, None)

    async def hold_open(self, direction: Direction = "entry") -> None:
        """Keep the contact of ``direction`` closed until :meth:`normal` or :meth:`lock`."""
        await self._do("hold_open", direction, True)

    async def lock(self) -> None:
        """Release every contact (a dry contact cannot do more than not open)."""
        await self._do("lock", None, False)

    async def normal(self) -> None:
        """Release every contact."""
        await self._do("normal", None, False)

    def close(self) -> None:
        """Release the GPIO lines."""
        for pin in self.pins:
            pin.close()


__all__ = ["GpioRelay", "LibgpiodPin", "OutputPin", "PinFactory", "Relay", "RelayDoor"]

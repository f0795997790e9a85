"""Turnstile simulator: speaks a turnstile profile's real bytes over a pty or a TCP socket. It
answers ``open`` with an ack and, after ``passage_delay_s``, a ``passage_done`` in the opened
direction (or ``passage_timeout`` when nobody passes), and raises forced/tailgating/fire-alarm/fault
events on request. Test and demo equipment (see :mod:`device_drivers.registry`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import TracebackType
from typing import Literal

from device_drivers._io.sim import SimEndpoint, Simulator
from device_drivers.errors import DeviceError, MalformedFrame
from device_drivers.profiles.config import Direction, FirmwareProfile
from device_drivers.profiles.framing import drain
from device_drivers.turnstile.codec import TurnstileCodec, TurnstileMessage


class TurnstileSimulator(Simulator):
    """A turnstile of ``profile``: acks commands, reports passages, raises alarms on request.

    After ``open`` it reports ``passage_done`` in that direction after ``passage_delay_s``, or, with
    ``auto_pass`` off, ``passage_timeout`` after the profile's passage window (``passage_window_s``
    overrides it). Set ``ack`` false to make it silent, put command names in ``refuse`` to have
    them answered with a nak.
    """

    def __init__(
        self,
        profile: FirmwareProfile,
        endpoint: SimEndpoint | None = None,
        *,
        address: int | None = None,
        passage_delay_s: float = 0.2,
        auto_pass: bool = True,
        passage_window_s: float | None = None,
    ) -> None:
        super().__init__(endpoint)
        self.profile = profile
        self.codec = TurnstileCodec(profile, address)
        self.passage_delay_s = passage_delay_s
        self.auto_pass = auto_pass
        self.passage_window_s = passage_window_s or profile.timing.passage_window_s
        self.ack = True
        self.refuse: set[str] = set()
        self.commands: list[TurnstileMessage] = []
        self.command_ns: list[int] = []  # when each of ``commands`` arrived (monotonic ns)
        self.counters: dict[str, int] = {}
        self.state: Literal["locked", "normal", "open", "held_open"] = "normal"
        self._buffer = bytearray()
        self._pending: set[asyncio.TimerHandle] = set()
        self.command_received = asyncio.Event()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        await super().__aexit__(exc_type, exc, tb)

    def raise_event(self, name: str, direction: Direction | None = None, value: int | None = None) -> bytes:
        """Send an event (``forced``, ``tailgating``, ``fire_alarm``, ``fault``...)."""
        return self._send(self.codec.event(name, direction, value))

    def _on_bytes(self, data: bytes) -> None:
        self._buffer += data
        for value in drain(self.codec, self._buffer):
            if isinstance(value, MalformedFrame):
                self.counters[value.code] = self.counters.get(value.code, 0) + 1
                continue
            if value.kind != "command" or (value.address is not None and value.address != self.codec.address):
                continue
            self._command(value)

    def _command(self, command: TurnstileMessage) -> None:
        self.commands.append(command)
        self.command_ns.append(time.monotonic_ns())
        self.command_received.set()
        code = self.codec.spec_for("command", command.name, command.direction).code
        if command.name in self.refuse:
            with contextlib.suppress(ValueError):
                self._send(self.codec.event("nak", value=code))
            return
        if self.ack:
            with contextlib.suppress(ValueError):
                self._send(self.codec.event("ack", value=code))
        if command.name == "open":
            self.state = "open"
            if self.auto_pass:
                self._later(self.passage_delay_s, "passage_done", command.direction)
            else:
                self._later(self.passage_window_s, "passage_timeout", command.direction)
        elif command.name == "hold_open":
            self.state = "held_open"
        elif command.name == "lock":
            self.state = "locked"
        else:
            self.state = "normal"

    def _later(self, delay: float, name: str, direction: Direction | None) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._pending.discard(handle)
            if self.state == "open":
                self.state = "normal"
            with contextlib.suppress(DeviceError):
                self.raise_event(name, direction)

        handle = loop.call_later(delay, fire)
        self._pending.add(handle)


__all__ = ["TurnstileSimulator"]

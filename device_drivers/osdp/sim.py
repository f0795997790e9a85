"""Simulated OSDP readers: libosdp peripheral devices (PDs) on a pty, as readers on one RS-485
line. :class:`OsdpBusSimulator` is such a bus, :class:`OsdpReaderSimulator` a bus with one reader.
Test and demo equipment (see :mod:`device_drivers.registry`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import osdp

from device_drivers.card.codec import CardCodec, CardData, card_from_text
from device_drivers.errors import DeviceError
from device_drivers.profiles.loader import load_profile, resolve_profile


class _BusDropChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """One reader's tap on a simulated RS-485 bus: it hears everything the CP sends (and, like a
    real PD, ignores what is addressed to others); what it sends goes to the CP."""

    def __init__(self, send: Callable[[bytes], int]) -> None:
        super().__init__()
        self._send = send
        self._inbox = bytearray()
        self._lock = threading.Lock()

    def hear(self, data: bytes) -> None:
        with self._lock:
            self._inbox += data

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            data = bytes(self._inbox[:max_bytes])
            del self._inbox[:max_bytes]
        return data

    def write(self, buf: bytes) -> int:
        return self._send(buf)

    def flush(self) -> None:
        with self._lock:
            self._inbox.clear()


class OsdpPdSimulator:
    """One simulated OSDP reader (a libosdp peripheral device) on a bus of
    :class:`OsdpBusSimulator`. It presents cards (raw Wiegand from a profile's layouts, or raw
    bytes), reports tamper, and records the LED/buzzer commands it receives in ``commands``."""

    def __init__(self, address: int, scbk: bytes | None, *, secure_channel: bool, wiegand: CardCodec) -> None:
        self.address = address
        self.scbk = scbk
        self.secure_channel = secure_channel
        self.wiegand = wiegand
        self.commands: list[dict[str, Any]] = []
        self._pd: Any = None

    def start(self, channel: osdp.Channel) -> None:
        flags = [osdp.LibFlag.EnforceSecure] if self.secure_channel else []
        capabilities = osdp.PDCapabilities(
            [
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.CardDataFormat, 1, 1),
            ]
        )
        self._pd = osdp.PeripheralDevice(
            osdp.PDInfo(self.address, channel, scbk=self.scbk, flags=flags),
            capabilities,
            log_level=osdp.LogLevel.Error,
            command_handler=self._command,
        )
        self._pd.start()

    def stop(self) -> None:
        if self._pd is not None:
            self._pd.teardown()
            self._pd = None

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        self.commands.append(command)
        # libosdp queues each command for get_command() too; drain it, we keep our own list.
        self._pd.get_command(timeout=-1)
        return 0, None

    @property
    def secure(self) -> bool:
        """Whether the secure channel is up."""
        return bool(self._pd is not None and self._pd.is_sc_active())

    def _submit(self, event: dict[str, Any]) -> None:
        if self._pd is None:
            raise DeviceError("simulated OSDP reader is off", code="offline")
        self._pd.submit_event(event)

    def present(self, text: str) -> CardData:
        """Present a Wiegand card, ``FC:NUMBER[/BITS]`` (default 26 bits), as raw Wiegand data."""
        card = card_from_text(self.wiegand, text)
        self.present_bits(card.bits, bytes.fromhex(card.raw_hex))
        return card

    def present_bits(self, bits: int, packed: bytes) -> None:
        """Present raw Wiegand bits (left-aligned), right or wrong."""
        self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "length": bits,
                "format": osdp.CardFormat.Wiegand,
                "data": packed,
            }
        )

    def present_raw(self, data: bytes) -> None:
        """Present card data of unspecified format (a UID, for instance)."""
        self._submit(
            {
                "event": osdp.Event.CardRead,
                "reader_no": 0,
                "direction": 0,
                "length": len(data) * 8,
                "format": osdp.CardFormat.Unspecified,
                "data": data,
            }
        )

    def tamper(self, tampered: bool, power_failure: bool = False) -> None:
        """Report the tamper switch (and power) state."""
        self._submit(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Local,
                "report": bytes([int(tampered), int(power_failure)]),
            }
        )


class OsdpBusSimulator:
    """An RS-485 line with OSDP readers, on a pty (``url`` is the slave path the CP opens).

    ``readers`` maps each address to its SCBK. A thread hands what the CP writes to every reader,
    as the bus does; readers answer on the same line. ``link``, if given, is a stable symlink to
    the pty.
    """

    def __init__(
        self,
        readers: dict[int, bytes | None],
        *,
        secure_channel: bool = True,
        wiegand: CardCodec | None = None,
        link: str | Path | None = None,
    ) -> None:
        codec = wiegand or CardCodec(load_profile(resolve_profile("wiegand_serial_converter")))
        self.readers = {
            address: OsdpPdSimulator(address, key, secure_channel=secure_channel, wiegand=codec)
            for address, key in readers.items()
        }
        self.link = None if link is None else Path(link)
        self.url = ""
        self._fds: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None

    def start(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._fds = (master, slave)
        self.url = os.ttyname(slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.url)
            self.url = str(self.link)

        def send(data: bytes) -> int:
            try:
                return os.write(master, data)
            except OSError:
                return 0

        taps = [_BusDropChannel(send) for _ in self.readers]
        for reader, tap in zip(self.readers.values(), taps, strict=True):
            reader.start(tap)
        self._stop = stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(master, 4096)
                except OSError:
                    return
                for tap in taps:
                    tap.hear(data)

        self._pump = threading.Thread(target=pump, name="osdp-bus-sim", daemon=True)
        self._pump.start()

    def stop(self) -> None:
        """Power the readers off."""
        self._stop.set()
        if self._pump is not None:
            self._pump.join()
            self._pump = None
        for reader in self.readers.values():
            reader.stop()
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.stop)


class OsdpReaderSimulator(OsdpBusSimulator):
    """A bus with one OSDP reader; the reader's methods are available directly."""

    def __init__(
        self,
        address: int,
        scbk: bytes | None,
        *,
        secure_channel: bool = True,
        wiegand: CardCodec | None = None,
        link: str | Path | None = None,
    ) -> None:
        super().__init__({address: scbk}, secure_channel=secure_channel, wiegand=wiegand, link=link)
        self.reader = self.readers[address]
        self.present = self.reader.present
        self.present_bits = self.reader.present_bits
        self.present_raw = self.reader.present_raw
        self.tamper = self.reader.tamper

    @property
    def commands(self) -> list[dict[str, Any]]:
        """LED/buzzer commands the reader received."""
        return self.reader.commands

    @property
    def secure(self) -> bool:
        """Whether the secure channel is up."""
        return self.reader.secure


__all__ = ["OsdpBusSimulator", "OsdpPdSimulator", "OsdpReaderSimulator"]

"""OSDP v2 control panel (CP) for card readers on an RS-485 bus, built on ``libosdp``.

* Secure channel is on by default: every reader needs its own SCBK (16 bytes), read from a secret
  (``$CREDENTIALS_DIRECTORY/<name>`` or the environment variable ``<name>``), never from the YAML.
* Card reads (raw Wiegand, decoded with a Wiegand profile's layouts; raw data of unspecified
  format, as hex) become :class:`CardRead`. Formatted (ASCII) reads are not handled: with
  libosdp 3.2.9 they never reached the CP in our tests. Tamper/power local status becomes
  :class:`DeviceTamper`; readers going on and off line become :class:`DeviceOnline` /
  :class:`DeviceOffline`.
* :meth:`OsdpControlPanel.feedback` drives the reader's LED and buzzer on grant/deny.

libosdp runs its own thread (polling the bus every 20 ms); its callbacks are handed to the event
loop with ``call_soon_threadsafe``. The serial line is a pyserial port URL, reopened with backoff.
:class:`OsdpBusSimulator` puts libosdp peripheral devices (PDs) on a pty, as readers on one RS-485
line; :class:`OsdpReaderSimulator` is such a bus with one reader. Both serve tests and demos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import osdp
import serial
from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers.base import ReadingSource
from device_drivers.card_codec import CardCodec, CardData, normalise_hex
from device_drivers.errors import DeviceError
from device_drivers.profile import load_profile, resolve_profile
from device_drivers.serial_driver import Backoff, BackoffConfig
from device_drivers.simulators import card_from_text
from device_drivers.types import DeviceOffline, DeviceOnline, DeviceTamper, utc_now

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_FIRST_ATTEMPT_S = 2.0
_LED = {
    "green": osdp.CommandLEDColor.Green,
    "red": osdp.CommandLEDColor.Red,
    "amber": osdp.CommandLEDColor.Amber,
}


def load_secret(name: str) -> bytes:
    """A 16-byte key written as 32 hex digits, from ``$CREDENTIALS_DIRECTORY/<name>`` (systemd
    credentials) or else the environment variable ``<name>``."""
    text = None
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / name).is_file():
        text = (Path(directory) / name).read_text()
    elif name in os.environ:
        text = os.environ[name]
    if text is None:
        raise DeviceError(
            f"secret {name} not found in $CREDENTIALS_DIRECTORY or the environment", code="no_key"
        )
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise DeviceError(f"secret {name} is not hex", code="bad_key") from None
    if len(key) != 16:
        raise DeviceError(f"secret {name} holds {len(key)} bytes, an SCBK has 16", code="bad_key")
    return key


class OsdpReaderConfig(BaseModel):
    """One OSDP reader (PD) on the bus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Device id of this reader; used in events.")
    address: int = Field(ge=0, le=126, description="The reader's OSDP address.")
    scbk_secret: str | None = Field(
        default=None,
        description="Name of the secret holding this reader's secure channel base key (32 hex digits): a "
        "file in $CREDENTIALS_DIRECTORY or an environment variable. Required with the secure channel.",
    )


class OsdpBusConfig(BaseModel):
    """An RS-485 line with OSDP v2 readers, driven by this gateway as control panel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["osdp"] = Field(description="Selects this driver.")
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Id of the bus (readers have their own ids).")
    port: str | None = Field(default=None, description="pyserial port URL of the RS-485 adapter.")
    baudrate: int = Field(default=9600, gt=0, description="Line speed (OSDP: 9600 to 115200).")
    readers: list[OsdpReaderConfig] = Field(min_length=1, description="The readers on this bus.")
    secure_channel: bool = Field(
        default=True, description="Require the OSDP secure channel (turn off only for legacy readers)."
    )
    wiegand_profile: str = Field(
        default="wiegand_serial_converter",
        description="Profile whose Wiegand layouts decode raw card data (id or YAML path).",
    )
    led_s: float = Field(default=1.0, gt=0, description="How long the grant/deny LED colour shows.")
    simulated: bool = Field(default=False, description="Run libosdp reader simulators on a pty (demo).")
    backoff: BackoffConfig = Field(default=BackoffConfig(), description="Delays between reopening the port.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.port is None and not self.simulated:
            raise ValueError("give a port, or set simulated: true")
        if len({r.address for r in self.readers}) != len(self.readers):
            raise ValueError("two readers with the same address")
        if len({r.id for r in self.readers}) != len(self.readers):
            raise ValueError("two readers with the same id")
        if self.secure_channel and not self.simulated:
            missing = [r.id for r in self.readers if r.scbk_secret is None]
            if missing:
                raise ValueError(f"secure channel needs scbk_secret for {missing}")
        return self


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """libosdp channel over a pyserial port URL; non-blocking reads; after a failure the port is
    closed and reopened no sooner than the backoff allows (libosdp keeps polling meanwhile)."""

    def __init__(self, url: str, baudrate: int, backoff: BackoffConfig, name: str) -> None:
        super().__init__()
        self.url = url
        self.baudrate = baudrate
        self.backoff = Backoff(backoff)
        self.name = name
        self.failures = 0
        self._port: serial.SerialBase | None = None
        self._next_try = 0.0

    def _ensure(self) -> serial.SerialBase | None:
        if self._port is None and time.monotonic() >= self._next_try:
            try:
                self._port = serial.serial_for_url(
                    self.url, baudrate=self.baudrate, timeout=0, write_timeout=1
                )
                self.backoff.reset()
            except Exception as err:  # see read(): nothing may escape into libosdp's thread
                self._fail(err)
        return self._port

    def _fail(self, err: Exception) -> None:
        self.failures += 1
        logger.warning("osdp bus %s: %s failed: %s", self.name, self.url, err)
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
        self._port = None
        self._next_try = time.monotonic() + self.backoff.next_delay()

    def read(self, max_bytes: int) -> bytes:
        port = self._ensure()
        if port is None:
            return b""
        # Anything raised here would kill libosdp's thread (termios.error is not even an OSError).
        try:
            return bytes(port.read(max_bytes))
        except Exception as err:
            self._fail(err)
            return b""

    def write(self, buf: bytes) -> int:
        port = self._ensure()
        if port is None:
            return 0
        try:
            return int(port.write(buf) or 0)
        except Exception as err:
            self._fail(err)
            return 0

    def flush(self) -> None:
        if self._port is not None:
            try:
                self._port.reset_input_buffer()
            except Exception as err:
                self._fail(err)

    def close(self) -> None:
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None


class OsdpControlPanel(ReadingSource):
    """The control panel for one OSDP bus: a reusable async context manager with ``readings()``."""

    def __init__(
        self,
        bus_id: str,
        url: str | None,
        readers: list[OsdpReaderConfig],
        keys: dict[str, bytes | None],
        *,
        secure_channel: bool = True,
        baudrate: int = 9600,
        wiegand: CardCodec | None = None,
        led_s: float = 1.0,
        backoff: BackoffConfig | None = None,
        simulated: bool = False,
    ) -> None:
        if secure_channel and any(keys.get(r.id) is None for r in readers):
            raise DeviceError(f"osdp bus {bus_id}: secure channel needs a key per reader", code="no_key")
        if url is None and not simulated:
            raise ValueError("a port URL is needed unless simulated")
        super().__init__(bus_id)
        self.bus_id = bus_id
        self.url = url or ""
        self.readers = readers
        self.keys = keys
        self.secure_channel = secure_channel
        self.baudrate = baudrate
        self.wiegand = wiegand or CardCodec(load_profile(resolve_profile("wiegand_serial_converter")))
        self.led_s = led_s
        self.backoff = backoff or BackoffConfig()
        self.reader_online: dict[str, bool] = {r.id: False for r in readers}
        self.simulator: OsdpBusSimulator | None = None
        if simulated:
            self.simulator = OsdpBusSimulator(
                {r.address: keys.get(r.id) for r in readers},
                secure_channel=secure_channel,
                wiegand=self.wiegand,
            )
        self._by_address = {r.address: r for r in readers}
        self._by_id = {r.id: r for r in readers}
        self._tamper: dict[str, tuple[bool, bool]] = {}
        self._cp: Any = None
        self._channel: SerialChannel | None = None
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(cls, config: OsdpBusConfig) -> OsdpControlPanel:
        """Build from configuration, loading each reader's key from its secret (simulated buses
        without secrets get fresh random keys shared with their simulators)."""
        keys: dict[str, bytes | None] = {}
        for reader in config.readers:
            if reader.scbk_secret is not None:
                keys[reader.id] = load_secret(reader.scbk_secret)
            elif config.simulated and config.secure_channel:
                keys[reader.id] = osdp.KeyStore.gen_key()
            else:
                keys[reader.id] = None
        return cls(
            config.id,
            config.port,
            list(config.readers),
            keys,
            secure_channel=config.secure_channel,
            baudrate=config.baudrate,
            wiegand=CardCodec(load_profile(resolve_profile(config.wiegand_profile))),
            led_s=config.led_s,
            backoff=config.backoff,
            simulated=config.simulated,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._cp is not None:
            raise RuntimeError(f"osdp bus {self.bus_id} is already running")
        self._loop = asyncio.get_running_loop()
        self._open_readings()
        if self.simulator is not None:
            await self.simulator.__aenter__()
            self.url = self.simulator.url
        self._channel = SerialChannel(self.url, self.baudrate, self.backoff, self.bus_id)
        flags = [osdp.LibFlag.EnforceSecure] if self.secure_channel else []
        infos = [
            osdp.PDInfo(r.address, self._channel, scbk=self.keys.get(r.id), name=r.id, flags=flags)
            for r in self.readers
        ]
        self._cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=self._on_event)
        self._cp.start()
        self._watch = asyncio.create_task(self._watch_status(), name=f"osdp:{self.bus_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        cp, self._cp = self._cp, None
        if cp is not None:
            await asyncio.get_running_loop().run_in_executor(None, cp.teardown)
        if self._channel is not None:
            self._channel.close()
        if self.simulator is not None:
            await self.simulator.__aexit__(exc_type, exc, tb)
        for reader_id, was_online in self.reader_online.items():
            if was_online:
                self._emit(DeviceOffline(reader_id, "control panel stopped", utc_now()))
            self.reader_online[reader_id] = False
        self._close_readings()

    # -- feedback ---------------------------------------------------------------------------------

    async def feedback(self, device_id: str, granted: bool) -> None:
        """Grant: green LED and one beep; deny: red LED and three beeps."""
        await self.led(device_id, "green" if granted else "red", self.led_s)
        await self.beep(device_id, 1 if granted else 3)

    async def led(self, device_id: str, color: Literal["green", "red", "amber"], seconds: float) -> None:
        """Show ``color`` on the reader's LED for ``seconds``, then back to its idle colour."""
        ticks = max(1, round(seconds * 10))  # OSDP timers count 100 ms
        await self._command(
            device_id,
            {
                "command": osdp.Command.LED,
                "reader": 0,
                "led_number": 0,
                "control_code": 2,
                "on_count": ticks,
                "off_count": 0,
                "on_color": _LED[color],
                "off_color": osdp.CommandLEDColor.Black,
                "timer_count": ticks,
                "temporary": True,
            },
        )

    async def beep(self, device_id: str, count: int) -> None:
        """``count`` short beeps."""
        await self._command(
            device_id,
            {
                "command": osdp.Command.Buzzer,
                "reader": 0,
                "control_code": 2,
                "on_count": 2,
                "off_count": 1,
                "rep_count": count,
            },
        )

    async def _command(self, device_id: str, command: dict[str, Any]) -> None:
        reader = self._by_id.get(device_id)
        if reader is None:
            raise DeviceError(
                f"no OSDP reader {device_id} on bus {self.bus_id}", device_id=device_id, code="unknown"
            )
        cp = self._cp
        if cp is None or not self.reader_online.get(device_id):
            raise DeviceError(f"OSDP reader {device_id} is offline", device_id=device_id, code="offline")
        # submit_command takes libosdp's lock, which its thread holds while polling: not on the loop.
        ok = await asyncio.get_running_loop().run_in_executor(
            None, cp.submit_command, reader.address, command
        )
        if not ok:
            self._count("command_refused")
            raise DeviceError(
                f"OSDP reader {device_id} refused a command", device_id=device_id, code="refused"
            )

    # -- from libosdp's thread ---------------------------------------------------------------------

    def _on_event(self, pd: int, event: dict[str, Any]) -> int:
        cp = self._cp
        if cp is None or self._loop is None:
            return 0
        address = cp.pd_addr[pd]
        # libosdp also queues every event for get_event(); nobody polls it here, so drain it.
        cp.get_event(address, timeout=-1)
        self._loop.call_soon_threadsafe(self._handle, address, event, time.monotonic_ns(), utc_now())
        return 0

    def _handle(self, address: int, event: dict[str, Any], received_ns: int, at: Any) -> None:
        reader = self._by_address.get(address)
        if reader is None:
            return
        kind = event.get("event")
        if kind == osdp.Event.CardRead:
            try:
                card = self._card(event)
            except DeviceError as err:
                self._count(err.code)
                logger.warning(
                    "device %s: card data rejected (%s): %s event=%s", reader.id, err.code, err, event
                )
                return
            self._count("cards")
            self._emit(card.to_read(reader.id, at, received_ns))
        elif kind == osdp.Event.Status and event.get("type") == osdp.StatusReportType.Local:
            report = bytes(event.get("report", b""))
            state = (bool(report[:1] and report[0]), bool(report[1:2] and report[1]))
            if self._tamper.get(reader.id) != state:
                self._tamper[reader.id] = state
                self._count("tamper" if state[0] else "tamper_cleared")
                self._emit(DeviceTamper(reader.id, state[0], state[1], at))
        else:
            self._count("other_events")

    def _card(self, event: dict[str, Any]) -> CardData:
        data = bytes(event.get("data", b""))
        bits = int(event.get("length", 0))
        if event.get("format") == osdp.CardFormat.Wiegand:
            return self.wiegand.card_from_bits(bits, data)
        if not data:
            raise DeviceError("empty card data", code="bad_data")
        return CardData(normalise_hex(data.hex()), "osdp_raw", data.hex().upper(), bits or len(data) * 8)

    async def _watch_status(self) -> None:
        """Report readers going on and off line; re-enable an offline reader with backoff, because
        libosdp by itself waits minutes before it tries a silent reader again."""
        loop = asyncio.get_running_loop()
        backoffs = {r.id: Backoff(self.backoff) for r in self.readers}
        # Let libosdp's own first attempt (probe, capabilities, secure channel) finish first.
        next_kick = {r.id: loop.time() + _FIRST_ATTEMPT_S + backoffs[r.id].next_delay() for r in self.readers}
        reported_offline: set[str] = set()
        while (cp := self._cp) is not None:
            mask = await loop.run_in_executor(None, cp.status)
            for index, address in enumerate(cp.pd_addr):
                reader = self._by_address[address]
                up = bool(mask & (1 << index))
                if up and not self.reader_online[reader.id]:
                    self.reader_online[reader.id] = True
                    reported_offline.discard(reader.id)
                    backoffs[reader.id].reset()
                    secure = " (secure channel)" if self.secure_channel else ""
                    logger.info("device %s online on OSDP bus %s%s", reader.id, self.bus_id, secure)
                    self._emit(DeviceOnline(reader.id, f"OSDP address {address} answers{secure}", utc_now()))
                elif not up and self.reader_online[reader.id]:
                    self.reader_online[reader.id] = False
                    reported_offline.add(reader.id)
                    self._count("offline")
                    logger.warning("device %s offline on OSDP bus %s", reader.id, self.bus_id)
                    self._emit(
                        DeviceOffline(reader.id, f"OSDP address {address} stopped answering", utc_now())
                    )
                    next_kick[reader.id] = loop.time() + backoffs[reader.id].next_delay()
                elif not up and loop.time() >= next_kick[reader.id]:
                    if reader.id not in reported_offline:
                        reported_offline.add(reader.id)
                        logger.warning("device %s not answering on OSDP bus %s", reader.id, self.bus_id)
                        self._emit(
                            DeviceOffline(reader.id, f"OSDP address {address} does not answer", utc_now())
                        )
                    self._count("reconnects")
                    await loop.run_in_executor(None, self._kick, cp, address)
                    # Never kick again before a handshake (probe, capabilities, secure channel) can finish.
                    next_kick[reader.id] = loop.time() + max(
                        _FIRST_ATTEMPT_S, backoffs[reader.id].next_delay()
                    )
            await asyncio.sleep(_POLL_S)

    @staticmethod
    def _kick(cp: Any, address: int) -> None:
        """Make libosdp try a reader again now (disable, let a poll cycle pass, enable)."""
        cp.disable_pd(address)
        time.sleep(0.1)
        cp.enable_pd(address)


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


__all__ = [
    "OsdpBusConfig",
    "OsdpBusSimulator",
    "OsdpControlPanel",
    "OsdpPdSimulator",
    "OsdpReaderConfig",
    "OsdpReaderSimulator",
    "SerialChannel",
    "load_secret",
]

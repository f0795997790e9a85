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
loop with ``call_soon_threadsafe``. The serial line is a pyserial port URL
(:class:`~device_drivers._io.serial.PolledPort`), reopened with the shared backoff; a reader that
stops answering is retried with it too. Simulated readers live in :mod:`device_drivers.osdp.sim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any, Literal, Self

import osdp

from device_drivers._io.backoff import Backoff, BackoffParameters
from device_drivers._io.config import BackoffConfig
from device_drivers._io.serial import PolledPort
from device_drivers._io.source import AttachedSimulator, ReadingSource
from device_drivers.card.codec import CardCodec, CardData
from device_drivers.card.credentials import normalise_hex
from device_drivers.errors import DeviceError
from device_drivers.osdp.config import OsdpBusConfig, OsdpReaderConfig
from device_drivers.profiles.config import Transport
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import DeviceOffline, DeviceOnline, DeviceTamper, utc_now
from device_drivers.secrets import load_secret

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_LED = {
    "green": osdp.CommandLEDColor.Green,
    "red": osdp.CommandLEDColor.Red,
    "amber": osdp.CommandLEDColor.Amber,
}


def reader_keys(config: OsdpBusConfig) -> dict[str, bytes | None]:
    """Each reader's secure channel key, loaded from its secret; readers of a simulated bus without
    a secret get a fresh random key (to share with their simulators); None without secure channel."""
    keys: dict[str, bytes | None] = {}
    for reader in config.readers:
        if reader.scbk_secret is not None:
            keys[reader.id] = load_secret(reader.scbk_secret)
        elif config.simulated and config.secure_channel:
            keys[reader.id] = osdp.KeyStore.gen_key()
        else:
            keys[reader.id] = None
    return keys


class SerialChannel(osdp.Channel):  # type: ignore[misc]  # libosdp ships no type hints
    """libosdp's channel over the shared serial port owner: non-blocking reads, and after a failure
    the port is reopened no sooner than the backoff allows (libosdp keeps polling meanwhile)."""

    def __init__(self, url: str, baudrate: int, backoff: BackoffParameters, name: str) -> None:
        super().__init__()
        self.port = PolledPort(url, Transport(baudrate=baudrate), Backoff(backoff), f"osdp bus {name}")

    @property
    def failures(self) -> int:
        return self.port.failures

    def read(self, max_bytes: int) -> bytes:
        return self.port.read(max_bytes)

    def write(self, buf: bytes) -> int:
        return self.port.write(buf)

    def flush(self) -> None:
        self.port.flush_input()

    def close(self) -> None:
        self.port.close()


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
        backoff: BackoffParameters | None = None,
        handshake_s: float = 2.0,
        noise_log_interval_s: float = 10.0,
        simulator: AttachedSimulator | None = None,
    ) -> None:
        if secure_channel and any(keys.get(r.id) is None for r in readers):
            raise DeviceError(f"osdp bus {bus_id}: secure channel needs a key per reader", code="no_key")
        if url is None and simulator is None:
            raise ValueError("a port URL is needed unless simulated")
        super().__init__(bus_id, noise_log_interval_s=noise_log_interval_s)
        self.bus_id = bus_id
        self.url = url or ""
        self.readers = readers
        self.keys = keys
        self.secure_channel = secure_channel
        self.baudrate = baudrate
        self.wiegand = wiegand or CardCodec(load_profile(resolve_profile("wiegand_serial_converter")))
        self.led_s = led_s
        self.backoff: BackoffParameters = backoff or BackoffConfig()
        self.handshake_s = handshake_s
        self.reader_online: dict[str, bool] = {r.id: False for r in readers}
        self.simulator = simulator
        self._by_address = {r.address: r for r in readers}
        self._by_id = {r.id: r for r in readers}
        self._tamper: dict[str, tuple[bool, bool]] = {}
        self._cp: Any = None
        self._channel: SerialChannel | None = None
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_config(
        cls,
        config: OsdpBusConfig,
        *,
        keys: dict[str, bytes | None] | None = None,
        simulator: AttachedSimulator | None = None,
    ) -> OsdpControlPanel:
        """Build from configuration; ``keys`` default to :func:`reader_keys`. A ``simulated`` bus
        gets its simulator (sharing the keys) from the registry."""
        return cls(
            config.id,
            config.port,
            list(config.readers),
            reader_keys(config) if keys is None else keys,
            secure_channel=config.secure_channel,
            baudrate=config.baudrate,
            wiegand=CardCodec(load_profile(resolve_profile(config.wiegand_profile))),
            led_s=config.led_s,
            backoff=config.backoff,
            handshake_s=config.handshake_s,
            noise_log_interval_s=config.noise_log_interval_s,
            simulator=simulator,
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
                detail = f"reader {reader.id}: card data ({err.code}): {err} event={event}"
                self.drops.dropped(err.code, 0, detail)
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
        next_kick = {r.id: loop.time() + self.handshake_s + backoffs[r.id].next_delay() for r in self.readers}
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
                        self.handshake_s, backoffs[reader.id].next_delay()
                    )
            await asyncio.sleep(_POLL_S)

    @staticmethod
    def _kick(cp: Any, address: int) -> None:
        """Make libosdp try a reader again now (disable, let a poll cycle pass, enable)."""
        cp.disable_pd(address)
        time.sleep(0.1)
        cp.enable_pd(address)


__all__ = ["OsdpControlPanel", "SerialChannel", "reader_keys"]

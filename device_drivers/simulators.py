"""Device simulators that speak the real bytes of a firmware profile, over a pty pair or a TCP
socket (for ``socket://`` URLs). Used by the tests, the benchmark, ``edge-agent simulate`` and
simulated devices in the demo configuration.

* :class:`CardReaderSimulator`: EM4100/UID readers and Wiegand-to-serial converters; ``present()``
  a card, or inject garbage, a bad checksum or bad parity.
* :class:`TurnstileSimulator`: answers ``open`` with an ack and, after ``passage_delay_s``, a
  ``passage_done`` in the opened direction (or ``passage_timeout`` when nobody passes), and can
  raise forced/tailgating/fire-alarm/fault events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import tty
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from device_drivers.card_codec import CardCodec, CardData
from device_drivers.codecs import drain
from device_drivers.errors import DeviceError, MalformedFrame
from device_drivers.framing import Frame
from device_drivers.profile import Direction, FirmwareProfile, load_profile, resolve_profile
from device_drivers.turnstile_codec import TurnstileCodec, TurnstileMessage

logger = logging.getLogger(__name__)


class SimEndpoint:
    """The simulator's end of a serial line."""

    url: str = ""
    on_receive: Callable[[bytes], None] | None = None

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def _received(self, data: bytes) -> None:
        if self.on_receive is not None:
            self.on_receive(data)


class PtyEndpoint(SimEndpoint):
    """A pty pair: the simulator holds the master, drivers open the slave path (``url``).

    ``link``, if given, is a symlink kept pointing at the slave, so a restarted simulator keeps the
    path drivers were configured with. The simulator also holds the slave open (in raw mode) so no
    byte is cooked or lost before a driver opens it.
    """

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = None if link is None else Path(link)
        self._master = -1
        self._slave = -1
        self.dropped = 0

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        path = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(path)
            tmp.replace(self.link)
            path = str(self.link)
        self.url = path
        asyncio.get_running_loop().add_reader(self._master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self._received(data)

    def send(self, data: bytes) -> None:
        if self._master < 0:
            raise DeviceError("simulator is not running", code="offline")
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        if written < len(data):
            # Nobody drains the slave and the pty buffer is full: like a real line, bytes are lost.
            self.dropped += len(data) - written

    async def close(self) -> None:
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()


class TcpEndpoint(SimEndpoint):
    """A TCP listener: drivers connect with ``socket://host:port`` (``url``). Every connected client
    receives what the simulator sends; what any client sends reaches the simulator."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"socket://{self.host}:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                self._received(data)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @property
    def clients(self) -> int:
        """How many drivers are connected."""
        return len(self._writers)

    def send(self, data: bytes) -> None:
        for writer in list(self._writers):
            writer.write(data)

    def drop_clients(self) -> None:
        """Close every client connection (a cable pulled), keep listening."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.drop_clients()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class Simulator:
    """Base: an endpoint, started and closed as an async context manager (reusable)."""

    def __init__(self, endpoint: SimEndpoint | None) -> None:
        self.endpoint = endpoint or PtyEndpoint()
        self.endpoint.on_receive = self._on_bytes
        self.sent = 0

    @property
    def url(self) -> str:
        """What a driver opens: a pty path or ``socket://host:port``."""
        return self.endpoint.url

    async def __aenter__(self) -> Self:
        await self.endpoint.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.endpoint.close()

    def inject(self, data: bytes) -> None:
        """Send raw bytes (line noise, a cut frame)."""
        self.endpoint.send(data)

    def _send(self, frame: bytes) -> bytes:
        self.endpoint.send(frame)
        self.sent += 1
        return frame

    def _on_bytes(self, data: bytes) -> None:
        """Bytes from the driver; readers ignore them."""


def card_from_text(codec: CardCodec, text: str) -> CardData:
    """A card written as text: hex for EM4100/UID readers; ``FC:NUMBER`` or ``NUMBER``, optionally
    followed by ``/BITS`` (default 26), for Wiegand layouts. ``ValueError`` if it does not fit."""
    if codec.profile.wiegand is None:
        return codec.card_from_hex(text)
    fields, _, bits = text.partition("/")
    facility, _, number = fields.rpartition(":")
    return codec.card_from_fields(int(number), int(facility) if facility else None, int(bits or 26))


def _corrupt_checksum(profile: FirmwareProfile, frame: bytes) -> bytes:
    """``frame`` with its last checksum byte changed (still hex where the checksum is ASCII hex)."""
    index = len(frame) - len(profile.framing.end or b"") - 1
    out = bytearray(frame)
    out[index] = ord("0") if out[index] != ord("0") else ord("1")
    if profile.framing.checksum is not None and profile.framing.checksum.encoding == "binary":
        out[index] = frame[index] ^ 0x01
    return bytes(out)


class CardReaderSimulator(Simulator):
    """A card reader or Wiegand converter of ``profile``; while running it presents ``cards`` (if
    any) in turn every ``interval_s``, as a demo does."""

    def __init__(
        self,
        profile: FirmwareProfile,
        endpoint: SimEndpoint | None = None,
        *,
        cards: list[str] | None = None,
        interval_s: float = 5.0,
    ) -> None:
        super().__init__(endpoint)
        self.profile = profile
        self.codec = CardCodec(profile)
        self.cards = [self.card(text) for text in cards or []]
        self.interval_s = interval_s
        self._demo: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        if self.cards:
            self._demo = asyncio.create_task(self._present_in_turn(), name=f"demo-cards:{self.url}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._demo is not None:
            self._demo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._demo
            self._demo = None
        await super().__aexit__(exc_type, exc, tb)

    async def _present_in_turn(self) -> None:
        index = 0
        while True:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(DeviceError):
                self.present(self.cards[index % len(self.cards)])
            index += 1

    def card(self, text: str) -> CardData:
        """A card from text (see :func:`card_from_text`)."""
        return card_from_text(self.codec, text)

    def present(self, card: CardData | str) -> bytes:
        """Send the frame of ``card``; returns the bytes sent."""
        if isinstance(card, str):
            card = self.card(card)
        return self._send(self.codec.encode(card))

    def present_bad_checksum(self, card: CardData | str) -> bytes:
        """Send ``card`` with a wrong checksum."""
        if isinstance(card, str):
            card = self.card(card)
        return self._send(_corrupt_checksum(self.profile, self.codec.encode(card)))

    def present_bad_parity(self, card: CardData | str) -> bytes:
        """Send a Wiegand ``card`` with its last bit flipped (the frame check stays valid)."""
        if isinstance(card, str):
            card = self.card(card)
        if self.profile.wiegand is None:
            raise ValueError("parity exists only on Wiegand converters")
        raw = bytearray(bytes.fromhex(card.raw_hex))
        raw[(card.bits - 1) // 8] ^= 0x80 >> ((card.bits - 1) % 8)
        return self._send(self.codec.frames.encode(Frame(data=bytes([card.bits]) + bytes(raw))))


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


SimulatorKind = Literal["card_reader", "wiegand", "turnstile", "osdp"]


def make_simulator(
    kind: SimulatorKind, profile: FirmwareProfile | str, endpoint: SimEndpoint | None = None
) -> CardReaderSimulator | TurnstileSimulator:
    """A simulator of ``kind`` for ``profile`` (a profile, a shipped profile id or a YAML path)."""
    if kind == "osdp":
        raise ValueError("an OSDP reader is simulated by device_drivers.osdp.OsdpReaderSimulator")
    if isinstance(profile, str):
        profile = load_profile(resolve_profile(profile))
    if kind == "turnstile":
        if profile.family != "turnstile":
            raise ValueError(f"profile {profile.id} is a {profile.family}, not a turnstile")
        return TurnstileSimulator(profile, endpoint)
    if profile.family == "turnstile":
        raise ValueError(f"profile {profile.id} is a turnstile, not a {kind}")
    return CardReaderSimulator(profile, endpoint)


def parse_listen(address: str) -> SimEndpoint:
    """``pty`` (a new pty), ``pty:/path/link`` (a pty behind a stable symlink), ``tcp://host:port``,
    ``socket://host:port`` or ``host:port`` (a TCP listener)."""
    if address == "pty":
        return PtyEndpoint()
    if address.startswith("pty:"):
        return PtyEndpoint(address[4:])
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a listen address: {address!r} (pty, pty:/path, host:port)")
    return TcpEndpoint(host or "127.0.0.1", int(port))


async def serve_simulator(
    kind: SimulatorKind,
    profile: FirmwareProfile | str,
    listen: str,
    *,
    cards: list[str] | None = None,
    interval_s: float = 2.0,
    ready: Callable[[str], None] | None = None,
    lines: asyncio.Queue[str] | None = None,
    osdp_address: int = 1,
) -> None:
    """Run a simulator until cancelled. Card readers present ``cards`` in turn every ``interval_s``
    and every card text put on ``lines``; turnstiles raise the events put on ``lines``; ``ready``
    gets the URL drivers should open.

    ``osdp`` is a libosdp reader on a pty (``profile``: the Wiegand profile of its cards), at
    ``osdp_address``, with the secure channel keyed by ``$OSDP_SCBK`` (32 hex digits) or, if unset,
    a fresh key logged at start for the control panel's secret.
    """
    sim: Any
    act: Callable[[str], object]
    if kind == "osdp":
        from device_drivers.osdp import OsdpReaderSimulator

        endpoint = parse_listen(listen)
        if not isinstance(endpoint, PtyEndpoint):
            raise ValueError("the OSDP simulator listens on a pty (pty or pty:/path)")
        if isinstance(profile, str):
            profile = load_profile(resolve_profile(profile))
        key_hex = os.environ.get("OSDP_SCBK")
        key = bytes.fromhex(key_hex) if key_hex else os.urandom(16)
        if not key_hex:
            logger.warning("OSDP simulator: no $OSDP_SCBK, using the fresh key %s", key.hex())
        osdp_sim = OsdpReaderSimulator(osdp_address, key, wiegand=CardCodec(profile), link=endpoint.link)

        def act_osdp(text: str) -> object:
            if text in ("tamper", "untamper"):
                osdp_sim.tamper(text == "tamper")
                return text
            return osdp_sim.present(text)

        sim, act = osdp_sim, act_osdp
    else:
        plain = make_simulator(kind, profile, parse_listen(listen))
        if isinstance(plain, CardReaderSimulator):
            act = plain.present
        else:
            turnstile = plain

            def act_turnstile(text: str) -> object:
                name, _, direction = text.partition(" ")
                return turnstile.raise_event(name, direction or None)  # type: ignore[arg-type]

            act = act_turnstile
        sim = plain
    async with sim:
        if ready is not None:
            ready(sim.url)
        index = 0
        while True:
            text = None
            if lines is not None:
                with contextlib.suppress(TimeoutError):
                    text = await asyncio.wait_for(lines.get(), interval_s if cards else None)
            else:
                await asyncio.sleep(interval_s if cards else 3600)
            if text is None and cards:
                text = cards[index % len(cards)]
                index += 1
            if text and text.strip():
                try:
                    result = act(text.strip())
                    logger.info("simulator %s: %s -> %s", sim.url, text.strip(), result)
                except (ValueError, DeviceError) as err:
                    logger.warning("simulator %s: cannot do %r: %s", sim.url, text, err)


def run_simulator(
    kind: SimulatorKind,
    profile: str,
    port_or_listen_addr: str,
    *,
    cards: list[str] | None = None,
    interval_s: float = 2.0,
) -> None:
    """CLI entry point (``edge-agent simulate KIND PROFILE ADDR``): run a simulator in the foreground.

    Prints the URL to configure the driver with. Each line on standard input is a card to present
    (card readers: hex, or ``FC:NUMBER[/BITS]`` for Wiegand and OSDP) or an event to raise
    (turnstiles: ``forced entry``, ``fire_alarm``...; OSDP: ``tamper``, ``untamper``). Stops on
    Ctrl-C or end of input.
    """

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()
        done = asyncio.Event()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(done.set)

        def ready(url: str) -> None:
            print(f"{kind} simulator for {profile}: open {url}", flush=True)
            if sys.stdin is not None and not sys.stdin.closed:
                threading.Thread(target=read_stdin, daemon=True).start()

        serving = asyncio.create_task(
            serve_simulator(
                kind,
                profile,
                port_or_listen_addr,
                cards=cards,
                interval_s=interval_s,
                ready=ready,
                lines=lines,
            )
        )
        waiting = asyncio.create_task(done.wait())
        finished, _ = await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if serving in finished:
            serving.result()
        # Give the last presented card a moment to be read.
        await asyncio.sleep(0.2)
        serving.cancel()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


__all__ = [
    "CardReaderSimulator",
    "PtyEndpoint",
    "SimEndpoint",
    "Simulator",
    "SimulatorKind",
    "TcpEndpoint",
    "TurnstileSimulator",
    "card_from_text",
    "make_simulator",
    "parse_listen",
    "run_simulator",
    "serve_simulator",
]

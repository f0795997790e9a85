"""What every simulator shares: the simulator's end of a serial line, over a pty pair or a TCP
socket (for ``socket://`` URLs), and the :class:`Simulator` base that runs one as a reusable async
context manager. Test and demo equipment: production code reaches simulators only through
:mod:`device_drivers.registry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tty
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from device_drivers.errors import DeviceError

logger = logging.getLogger(__name__)


class SimEndpoint:
    """The simulator's end of a serial line."""

    url: str = ""
    on_receive: Callable[[bytes], None] | None = None

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data`` as fast as the far end reads it, losing nothing."""
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

    async def send_all(self, data: bytes) -> None:
        if self._master < 0:
            raise DeviceError("simulator is not running", code="offline")
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self._master, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self._master)

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

    async def send_all(self, data: bytes) -> None:
        for writer in list(self._writers):
            writer.write(data)
            await writer.drain()

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

    async def flood(self, data: bytes) -> None:
        """Send raw bytes at the speed the driver reads them, losing none (a burst of line noise
        larger than any kernel buffer)."""
        await self.endpoint.send_all(data)

    def _send(self, frame: bytes) -> bytes:
        self.endpoint.send(frame)
        self.sent += 1
        return frame

    def _on_bytes(self, data: bytes) -> None:
        """Bytes from the driver; readers ignore them."""


def line_noise(size: int, frames: Sequence[bytes], rng: random.Random, *, start: bytes = b"") -> bytes:
    """About ``size`` bytes of what a bad line delivers: random bytes, and ``frames`` cut short, with
    a byte changed (a bad checksum or a broken frame), or between runs of their ``start`` marker
    repeated (a floating line reads as a stream of one byte). Test and demo equipment."""
    out = bytearray()
    marker = start or b"\x00"
    while len(out) < size:
        frame = rng.choice(frames)
        kind = rng.randrange(5)
        if kind == 0:
            out += rng.randbytes(rng.randrange(1, 512))
        elif kind == 1:
            out += frame[: rng.randrange(1, len(frame))]
        elif kind == 2:
            # Not in the start marker (after a run of it, the rest would be the frame again), and not
            # bit 5, which turns an ASCII hex letter into the same digit in the other case.
            bad = bytearray(frame)
            bad[rng.randrange(len(start), len(bad))] ^= 1 << rng.choice((0, 1, 2, 3, 4, 6, 7))
            out += bad
        elif kind == 3:
            out += marker * rng.randrange(1, 256)
        else:
            out += marker * rng.randrange(1, 8) + frame[: rng.randrange(1, len(frame))]
    return bytes(out)


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


__all__ = ["PtyEndpoint", "SimEndpoint", "Simulator", "TcpEndpoint", "line_noise", "parse_listen"]

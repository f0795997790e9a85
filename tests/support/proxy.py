"""A TCP proxy for fault injection between a client and a real server (the broker): a campus uplink
in a box, since this machine's kernel has no ``netem``.

Faults, switchable while connections are open:

* ``latency``: seconds added one way, each direction (0.05 adds 100 ms of round-trip time). Chunks
  are delayed, not serialised: a window of publishes stays in flight, as on a real long link;
* ``rate``: a bandwidth cap in bytes/s, each direction (None: uncapped); bytes queue behind it
  as behind a slow uplink, up to about a quarter of a second of buffer, then TCP pushes back;
* ``blackhole()``: stop forwarding but keep every connection open (a dead 4G link that TCP has not
  noticed: keep-alives and timeouts must find it). What was sent meanwhile is held and delivered
  when forwarding resumes; a new connection is accepted but reaches nothing (a SYN into the void), and
  one whose client gives up before the link returns never reaches the server;
* ``reset()``: close every connection at once (RST), as a NAT box or a broker crash would;
* ``partition(seconds, mode)``: a timed outage, then pass-through again: ``"blackhole"`` as above,
  or ``"refuse"`` (every connection reset and the port closed, so connects are refused).

``async with FaultProxy(port) as proxy`` runs it in the caller's event loop. When the code under test
shares that loop and its timing matters (a drain measured through the proxy, a keep-alive timed),
``with ProxyThread(port) as proxy`` runs the same proxy on its own loop in a thread; its methods
are the same and are safe to call from any thread. ``python -m tests.support.proxy`` runs one as a
process (for benches).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

T = TypeVar("T")
PartitionMode = Literal["blackhole", "refuse"]

_READ = 65536
_BUFFER_S = 0.25  # of queueing a capped link holds before TCP pushes back
_UNCAPPED_BUFFER = 4 << 20  # enough for 100 MB/s x 40 ms in flight


class _Pipe:
    """One direction of one connection: a delay line, a pacer and a bounded buffer."""

    def __init__(self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.buffered = 0
        self.changed = asyncio.Event()
        self.eof = False
        self.dead = False  # its reader closed inside a blackhole: drop what it holds
        self.next_free = 0.0  # when the capped "wire" is free again

    def _limit(self) -> int:
        rate = self.proxy.rate
        if rate is None:
            return _UNCAPPED_BUFFER
        return max(16384, int(rate * (self.proxy.latency + _BUFFER_S)))

    async def pump_in(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.buffered >= self._limit():
                self.changed.clear()
                await self.changed.wait()
            try:
                data: bytes | None = await self.reader.read(_READ)
            except (ConnectionError, OSError):
                data = None
            if not data and not self.proxy._forwarding.is_set():
                # One side went away inside a blackhole: a dead link carries neither its FIN nor its
                # RST, nor what it still had in the pipe; when the link is back the other side gets
                # a reset (its next segment would meet one).
                self.dead = True
                await self.proxy._forwarding.wait()
                raise ConnectionAbortedError
            if data is None:
                raise ConnectionResetError
            if not data:
                self.eof = True
                self.changed.set()
                return
            self.chunks.append((loop.time() + self.proxy.latency, data))
            self.buffered += len(data)
            self.changed.set()

    async def pump_out(self) -> None:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        while True:
            while not self.chunks:
                if self.eof:
                    return
                self.changed.clear()
                await self.changed.wait()
            due, data = self.chunks[0]
            await proxy._forwarding.wait()
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            await proxy._forwarding.wait()
            if self.dead or self.writer.is_closing():
                raise ConnectionAbortedError
            rate = proxy.rate
            if rate:
                # Paced in slices of ~20 ms so a capped link trickles rather than bursts.
                piece = max(1460, int(rate / 50))
                data, rest = data[:piece], data[piece:]
                start = max(loop.time(), self.next_free)
                self.next_free = start + len(data) / rate
                if (wait := self.next_free - loop.time()) > 0:
                    await asyncio.sleep(wait)
                await proxy._forwarding.wait()
                if self.dead:
                    raise ConnectionAbortedError
                if rest:
                    self.chunks[0] = (due, rest)
                else:
                    self.chunks.popleft()
            else:
                self.chunks.popleft()
            self.buffered -= len(data)
            self.changed.set()
            self.writer.write(data)
            await self.writer.drain()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self.port = 0
        self.latency = 0.0
        """Seconds added one way, each direction."""
        self.rate: float | None = None
        """Bandwidth cap in bytes/s, each direction; None: uncapped."""
        self.connections = 0  # accepted so far
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._partition_end: asyncio.TimerHandle | None = None
        self._placeholder: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    @property
    def partitioned(self) -> bool:
        return self._partition_end is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port or self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._partition_end is not None:
            self._partition_end.cancel()
            self._partition_end = None
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        await self._close_server()
        self.reset()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def pass_through(self) -> None:
        """No faults: no latency, no cap, forwarding (held bytes are delivered)."""
        self.latency = 0.0
        self.rate = None
        self._forwarding.set()

    def blackhole(self) -> None:
        """Stop forwarding in both directions; connections stay open and bytes are held."""
        self._forwarding.clear()

    def reset(self) -> None:
        """Abort every open connection with a TCP RST (SO_LINGER 0); new ones are still accepted."""
        for pair in list(self._pairs):
            self._abort(pair)
        self._pairs.clear()

    def partition(self, seconds: float, mode: PartitionMode = "blackhole") -> None:
        """An outage of ``seconds``, then pass-through. ``blackhole``: nothing forwarded, connections
        kept open; ``refuse``: every connection reset and the port closed (connects refused)."""
        loop = asyncio.get_running_loop()
        if self._partition_end is not None:
            self._partition_end.cancel()
        if mode == "blackhole":
            self.blackhole()
            self._partition_end = loop.call_later(seconds, self._heal)
        else:
            self.reset()
            server, self._server = self._server, None
            if server is not None:
                server.close()
                # The port stays bound but not listening, so connects are refused (RST) and neither
                # another process nor a client's own ephemeral port (a TCP self-connect) takes it.
                self._placeholder = socket.socket()
                self._placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._placeholder.bind(("127.0.0.1", self.port))
            self._partition_end = loop.call_later(seconds, lambda: self._spawn(self._reopen()))

    def _heal(self) -> None:
        self._partition_end = None
        self._forwarding.set()

    async def _reopen(self) -> None:
        self._partition_end = None
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        await self.start()  # the same port: clients reconnect to the address they know

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _abort(pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        for writer in pair:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        early = bytearray()
        # Into a blackhole: nothing reaches the server until the link is back; a client that gives
        # up meanwhile never reached it at all.
        while not self._forwarding.is_set():
            read = asyncio.ensure_future(client_r.read(_READ))
            back = asyncio.ensure_future(self._forwarding.wait())
            done, _ = await asyncio.wait({read, back}, return_when=asyncio.FIRST_COMPLETED)
            back.cancel()
            if read not in done:
                read.cancel()
                break
            try:
                data = read.result()
            except (ConnectionError, OSError):
                data = b""
            if not data:
                client_w.transport.abort()
                return
            early += data
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.transport.abort()
            return
        if early:
            up_w.write(bytes(early))
        pair = (client_w, up_w)
        self._pairs.add(pair)
        for reader, writer in ((client_r, up_w), (up_r, client_w)):
            self._spawn(self._run_pipe(_Pipe(self, reader, writer), pair))

    async def _run_pipe(self, pipe: _Pipe, pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(pipe.pump_in())
                tg.create_task(pipe.pump_out())
        except* (ConnectionError, OSError):
            pass
        finally:
            if pair in self._pairs:
                self._pairs.discard(pair)
                if pipe.dead or not self._forwarding.is_set():
                    self._abort(pair)
                else:
                    for w in pair:
                        w.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class ProxyThread:
    """A :class:`FaultProxy` on its own event loop in a daemon thread; every method is thread-safe."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self._args = (upstream_port, upstream_host)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._proxy: FaultProxy | None = None

    def call(self, fn: Callable[[FaultProxy], T]) -> T:
        """``fn(proxy)`` on the proxy's loop; its result."""

        async def run() -> T:
            assert self._proxy is not None
            return fn(self._proxy)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def port(self) -> int:
        return self.call(lambda p: p.port)

    @property
    def url(self) -> str:
        return self.call(lambda p: p.url)

    @property
    def open_connections(self) -> int:
        return self.call(lambda p: p.open_connections)

    @property
    def connections(self) -> int:
        return self.call(lambda p: p.connections)

    @property
    def partitioned(self) -> bool:
        return self.call(lambda p: p.partitioned)

    def set(self, *, latency: float | None = None, rate: float | None = None) -> None:
        """Set the one-way ``latency`` (s) and/or the ``rate`` cap (bytes/s, 0 for uncapped)."""

        def apply(p: FaultProxy) -> None:
            if latency is not None:
                p.latency = latency
            if rate is not None:
                p.rate = rate or None

        self.call(apply)

    def pass_through(self) -> None:
        self.call(FaultProxy.pass_through)

    def blackhole(self) -> None:
        self.call(FaultProxy.blackhole)

    def reset(self) -> None:
        self.call(FaultProxy.reset)

    def partition(self, seconds: float, mode: PartitionMode = "blackhole") -> None:
        self.call(lambda p: p.partition(seconds, mode))

    def start(self) -> None:
        self._thread.start()

        async def create() -> None:
            self._proxy = FaultProxy(*self._args)
            await self._proxy.start()

        asyncio.run_coroutine_threadsafe(create(), self._loop).result(10)

    def stop(self) -> None:
        if self._proxy is not None:
            asyncio.run_coroutine_threadsafe(self._proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    """``python -m tests.support.proxy UPSTREAM_PORT [--rtt-ms N] [--rate B]``: prints its port."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream_port", type=int)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round-trip time to add")
    parser.add_argument("--rate", type=float, default=0.0, help="bandwidth cap, bytes/s each way")
    args = parser.parse_args()

    async def serve() -> None:
        async with FaultProxy(args.upstream_port, listen_port=args.listen_port) as proxy:
            proxy.latency = args.rtt_ms / 2000
            proxy.rate = args.rate or None
            print(proxy.port, flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()

"""The test support itself: waiting, the fake clock, the broker's lifecycle, the fault proxy."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, timedelta
from pathlib import Path

import pytest

from tests.support.broker import MosquittoBroker
from tests.support.clock import EPOCH, FakeClock
from tests.support.proxy import FaultProxy
from tests.support.wait import WaitTimeout, async_wait_until, wait_until


def test_wait_until_returns_the_value_and_says_what_timed_out() -> None:
    calls: list[int] = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, 5, 0.001) is True
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"timed out after 0.05s waiting for the door; last result: 0"):
        wait_until(lambda: 0, 0.05, 0.01, what="the door")
    assert time.monotonic() - start < 1
    # Only the named exceptions mean "not yet"; the last one is in the message.
    with pytest.raises(WaitTimeout, match="FileNotFoundError"):
        wait_until(lambda: Path("/nonexistent/x").read_text(), 0.05, 0.01, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 5)


def test_async_wait_until_lets_the_loop_run() -> None:
    async def scenario() -> None:
        flag = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, flag.set)
        assert await async_wait_until(flag.is_set, 5, what="flag") is True

        async def probe() -> int:
            return 7

        assert await async_wait_until(probe, 1) == 7
        with pytest.raises(WaitTimeout, match="never"):
            await async_wait_until(lambda: False, 0.05, what="never")

    asyncio.run(scenario())


def test_fake_clock_sleeps_wake_only_when_advanced_in_deadline_order() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        assert clock.now() == EPOCH and clock.now().tzinfo is UTC
        woke: list[str] = []

        async def sleeper(name: str, s: float) -> None:
            await clock.sleep(s)
            woke.append(name)

        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 10), ("early", 2), ("mid", 5))]
        await asyncio.sleep(0)
        assert clock.sleepers == 3
        await clock.advance_and_settle(1.9)
        assert woke == []
        await clock.advance_and_settle(3.1)  # now t=5: early and mid are due
        assert woke == ["early", "mid"]
        assert clock.monotonic() == pytest.approx(1005.0)
        assert clock.now() == EPOCH + timedelta(seconds=5)
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        clock.advance(100)
        assert clock.sleepers == 0 and woke == ["early", "mid"]
        await clock.sleep(0)  # returns at once
        with pytest.raises(ValueError):
            clock.advance(-1)

    asyncio.run(scenario())


def test_broker_stops_kills_and_restarts_on_the_same_port(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        port = broker.port
        assert broker.running and broker.url == f"mqtt://127.0.0.1:{port}"
        broker.kill()
        assert not broker.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        broker.restart()
        assert broker.running and broker.port == port
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        broker.restart(kill=True)
        assert broker.running
    assert not broker.running


def test_fault_proxy_passes_delays_blackholes_and_resets() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        upstream = server.sockets[0].getsockname()[1]
        async with server, FaultProxy(upstream) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

            proxy.latency = 0.2
            start = time.monotonic()
            writer.write(b"slow")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"slow"
            assert time.monotonic() - start >= 0.35  # both directions delayed
            proxy.pass_through()

            proxy.blackhole()
            writer.write(b"lost?")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(5), 0.3)
            assert proxy.open_connections == 1  # held open, not closed
            proxy.pass_through()  # held bytes are delivered, not dropped
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"lost?"

            proxy.reset()
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                writer.write(b"x")
                await writer.drain()
                await asyncio.wait_for(reader.readexactly(1), 5)
            writer.close()
            # New connections are accepted after a reset.
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(b"again")
            assert await asyncio.wait_for(reader.readexactly(5), 5) == b"again"
            assert proxy.connections == 2
            writer.close()

    asyncio.run(scenario())

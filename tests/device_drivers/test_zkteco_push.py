"""ZKTeco push (``/iclock``): the gateway's server against the terminal simulator (httpx, as the
firmware talks): handshake, ATTLOG answered ``OK: n`` only after every record is acknowledged,
retries after a cut or a timeout lose nothing, the serial allow-list, bad and oversize input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from device_drivers.readings import DeviceOffline, DeviceOnline, Reading, TerminalAttendance
from device_drivers.zkteco.config import ZktecoPushConfig
from device_drivers.zkteco.driver import ZkPushServer, probe_zkteco_push
from device_drivers.zkteco.sim import ZkPushTerminalSimulator

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))  # type: ignore[arg-type]


def config(**extra: Any) -> ZktecoPushConfig:
    fields: dict[str, Any] = {
        "kind": "zkteco_push",
        "id": "zk-push",
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "timezone": "Europe/Berlin",
        "ack_timeout_s": 2,
        "terminals": [
            {"serial": "CEXJ201560001", "id": "zk-lobby"},
            {"serial": "CEXJ201560002", "id": "zk-gym", "timezone": "UTC"},
        ],
    }
    fields.update(extra)
    return ZktecoPushConfig(**fields)


async def take(it: AsyncIterator[Reading], n: int, server: ZkPushServer | None) -> list[TerminalAttendance]:
    out: list[TerminalAttendance] = []
    async for r in it:
        if isinstance(r, TerminalAttendance):
            out.append(r)
            if server is not None:
                server.acknowledge(r)
            if len(out) == n:
                return out
    raise AssertionError("readings ended")


async def until(pred: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.02)


def test_handshake_upload_and_ok_only_after_acknowledge() -> None:
    async def main() -> None:
        async with ZkPushServer.from_config(config()) as server:
            terminal = ZkPushTerminalSimulator("CEXJ201560001", url=server.url, batch=3)
            for i in range(4):
                terminal.add_record(
                    str(4711 + i % 2), datetime(2026, 12, 1, 8, 0, i), status=i % 2, verify=15
                )
            terminal.add_record("4712", datetime(2026, 12, 1, 8, 0, 3), status=1, verify=15)  # same second
            async with terminal:
                it = server.readings()
                online = await anext(it)
                assert isinstance(online, DeviceOnline) and online.device_id == "zk-lobby"
                await until(lambda: terminal.state.options)
                assert terminal.state.options["TransInterval"] == "1"
                assert terminal.state.options["Realtime"] == "1"
                got = await take(it, 3, None)  # read, not yet committed: the terminal keeps them
                await asyncio.sleep(0.3)
                assert terminal.sent == 0 and terminal.pending == 5
                for r in got:
                    server.acknowledge(r)
                got += await take(it, 2, server)
                await until(lambda: terminal.pending == 0)
            assert terminal.sent == 5
            r = got[0]
            assert (r.device_id, r.user_id, r.method, r.punch) == ("zk-lobby", "4711", "face", "check_in")
            assert r.terminal_time == datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)
            assert got[1].punch == "check_out" and r.raw["serial"] == "CEXJ201560001"
            assert len({x.record_id for x in got}) == 5
            assert got[3].record_id.endswith("|0") and got[4].record_id.endswith("|1")
            assert server.counters["records"] == 5 and server.counters["handshakes"] == 1

    run(main())


def test_an_upload_not_committed_in_time_is_refused_and_sent_again_with_the_same_ids() -> None:
    async def main() -> None:
        async with ZkPushServer.from_config(config(ack_timeout_s=0.5)) as server:
            terminal = ZkPushTerminalSimulator("CEXJ201560002", url=server.url, interval_s=0.1)
            terminal.add_record("9", datetime(2026, 12, 1, 8, 0, 0))
            async with terminal:
                it = server.readings()
                first = await take(it, 1, None)  # never acknowledged
                await until(lambda: server.counters.get("ack_timeout", 0) >= 1)
                assert terminal.pending == 1 and terminal.state.last_status == 503
                again = await take(it, 1, server)
                await until(lambda: terminal.pending == 0)
            assert again[0].record_id == first[0].record_id
            assert again[0].terminal_time == datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)  # this terminal: UTC

    run(main())


def test_a_retry_of_an_upload_still_waiting_is_not_delivered_twice() -> None:
    async def main() -> None:
        server = ZkPushServer.from_config(config())
        async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            url = "/iclock/cdata?SN=CEXJ201560001&table=ATTLOG&Stamp=7"
            body = b"4711\t2026-12-01 08:00:00\t0\t1\t0\n"
            first = asyncio.create_task(client.post(url, content=body))
            it = server.readings()
            await anext(it)  # online
            reading = await anext(it)
            second = asyncio.create_task(client.post(url, content=body))  # the terminal gave up, retries
            await until(lambda: server.counters.get("attlog_uploads", 0) == 2)
            assert server._queue.empty()
            assert isinstance(reading, TerminalAttendance)
            server.acknowledge(reading)
            assert (await first).text == "OK: 1" and (await second).text == "OK: 1"

    run(main())


def test_a_silent_terminal_goes_offline() -> None:
    async def main() -> None:
        async with ZkPushServer.from_config(config(offline_after_s=0.3)) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                await client.get("/iclock/getrequest", params={"SN": "CEXJ201560002"})
            it = server.readings()
            assert isinstance(await anext(it), DeviceOnline)
            off = await anext(it)
            assert isinstance(off, DeviceOffline) and off.device_id == "zk-gym" and "not called" in off.reason

    run(main())


def test_a_cut_link_loses_nothing_the_terminal_retries() -> None:
    async def main() -> None:
        server = ZkPushServer.from_config(config())
        async with server:
            url = server.url
            port = server.port
        # The gateway is down: the terminal keeps its records and retries.
        terminal = ZkPushTerminalSimulator("CEXJ201560001", url=url, interval_s=0.05)
        for i in range(20):
            terminal.add_record(str(i), datetime(2026, 12, 1, 9, 0, i))
        async with terminal:
            await until(lambda: terminal.state.failures >= 3)
            assert terminal.pending == 20
            server = ZkPushServer.from_config(config(listen_port=port))
            async with server:
                got = await take(server.readings(), 20, server)
                await until(lambda: terminal.pending == 0)
        assert [r.user_id for r in got] == [str(i) for i in range(20)]

    run(main())


def test_unknown_serial_bad_lines_oversize_and_garbage() -> None:
    async def main() -> None:
        async with ZkPushServer.from_config(config(max_body_bytes=2048)) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                r = await client.get("/iclock/cdata", params={"SN": "INTRUDER", "options": "all"})
                assert r.status_code == 403
                r = await client.post(
                    "/iclock/cdata?SN=INTRUDER&table=ATTLOG", content=b"1\t2026-12-01 08:00:00\n"
                )
                assert r.status_code == 403
                assert server.counters["unknown_serial"] == 2
                r = await client.post("/iclock/cdata?SN=CEXJ201560001&table=ATTLOG", content=b"x" * 4096)
                assert r.status_code == 413 and server.counters["body_too_large"] == 1
            async with httpx.AsyncClient(base_url=server.url) as client:
                body = b"1\tnot a time\t0\t1\n\t2026-12-01 08:00:00\t0\t1\n77\t2026-12-01 08:00:00\t0\t2\t0\n"
                task = asyncio.create_task(
                    client.post("/iclock/cdata?SN=CEXJ201560001&table=ATTLOG&Stamp=1", content=body)
                )
                (rec,) = await take(server.readings(), 1, server)
                r = await task
                assert r.text == "OK: 3" and rec.user_id == "77" and rec.method == "card"
                assert server.counters["bad_record"] == 2
                r = await client.post("/iclock/cdata?SN=CEXJ201560001&table=OPERLOG", content=b"OPLOG 4\t0\n")
                assert r.text == "OK: 1" and server.counters["operlog_lines"] == 1
                server.queue_command("CEXJ201560001", "SET OPTION DateTime=1234")
                r = await client.get("/iclock/getrequest", params={"SN": "CEXJ201560001"})
                assert r.text.startswith("C:1:SET OPTION") and server.counters["commands_sent"] == 1
                r = await client.get("/iclock/getrequest", params={"SN": "CEXJ201560001"})
                assert r.text == "OK"
                r = await client.post(
                    "/iclock/devicecmd?SN=CEXJ201560001", content=b"ID=1&Return=0&CMD=DATA\n"
                )
                assert r.text == "OK" and server.counters["command_results"] == 1
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"\x00\x01garbage\r\n\r\n")
            assert (await reader.read(100)).startswith(b"HTTP/1.1 400")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /iclock/cdata HTTP/1.1\r\nX: " + b"a" * 20000)
            assert (await reader.read(100)).startswith(b"HTTP/1.1 431")
            writer.close()
            assert server.counters["bad_request"] == 2

    run(main())


def test_probe_push() -> None:
    async def main() -> None:
        results = await probe_zkteco_push(config())
        assert [r.status for r in results] == ["ok", "ok"]

    run(main())


def test_a_flood_from_an_unknown_serial_is_counted_and_logged_rate_limited(caplog: Any) -> None:
    import logging

    caplog.set_level(logging.WARNING)

    async def main() -> None:
        async with ZkPushServer.from_config(config()) as server:
            async with httpx.AsyncClient(base_url=server.url) as client:
                for _ in range(200):
                    r = await client.get("/iclock/getrequest", params={"SN": "ROGUE"})
                    assert r.status_code == 403
            assert server.counters["unknown_serial"] == 200

    run(main())
    lines = [rec for rec in caplog.records if "unknown_serial" in rec.getMessage()]
    assert 1 <= len(lines) <= 2

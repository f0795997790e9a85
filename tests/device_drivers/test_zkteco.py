"""ZKTeco pull (TCP, port 4370): the codec against pyzk's own functions, the simulator against
pyzk's own client, and the driver against the simulator (high-water mark, cut links, bad auth,
garbage, cleared logs, clock, real-time events)."""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError
from zk import ZK  # type: ignore[import-untyped]
from zk.exception import ZKErrorResponse  # type: ignore[import-untyped]

from device_drivers import BackoffConfig
from device_drivers.errors import DeviceError
from device_drivers.readings import DeviceOffline, DeviceOnline, Reading, TerminalAttendance
from device_drivers.zkteco import codec
from device_drivers.zkteco.codec import Record, User
from device_drivers.zkteco.config import ZktecoConfig, ZktecoPushConfig
from device_drivers.zkteco.driver import ZkPullDriver, probe_zkteco, start_index
from device_drivers.zkteco.sim import ZkDeviceSimulator

T = TypeVar("T")
FAST = BackoffConfig(initial_s=0.05, max_s=0.2)
DAY = datetime(2026, 12, 1, 8, 0, 0)


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 90))  # type: ignore[arg-type]


def users(n: int = 5) -> list[User]:
    return [User(i, str(100 + i), f"User {i}") for i in range(1, n + 1)]


def log(n: int, same_second: int = 1) -> list[Record]:
    """``n`` records; ``same_second`` consecutive records share a timestamp."""
    return [
        Record(str(100 + i % 5 + 1), DAY + timedelta(seconds=i // same_second), i % 3, i % 6, i % 5 + 1)
        for i in range(n)
    ]


def config(sim: ZkDeviceSimulator, **extra: Any) -> ZktecoConfig:
    fields: dict[str, Any] = {
        "kind": "zkteco",
        "id": "zk-office",
        "host": "127.0.0.1",
        "port": sim.port,
        "poll_interval_s": 1,
        "backoff": FAST,
        "timeout_s": 2,
    }
    fields.update(extra)
    return ZktecoConfig(**fields)


async def take(
    it: AsyncIterator[Reading], n: int, driver: ZkPullDriver | None = None, ack: bool = True
) -> list[TerminalAttendance]:
    """The next ``n`` records (acknowledged as the agent would), skipping online/offline."""
    out: list[TerminalAttendance] = []
    async for r in it:
        if isinstance(r, TerminalAttendance):
            out.append(r)
            if ack and driver is not None:
                driver.acknowledge(r)
            if len(out) == n:
                return out
    raise AssertionError("readings ended")


async def next_of(it: AsyncIterator[Reading], kind: type[T]) -> T:
    async for r in it:
        if isinstance(r, kind):
            return r
    raise AssertionError("readings ended")


# --- codec ----------------------------------------------------------------------------------------


def test_codec_matches_pyzk() -> None:
    from zk import base

    client = ZK("127.0.0.1")
    for n in range(64):
        data = os.urandom(n)
        assert codec.checksum(data) == struct.unpack("H", client._ZK__create_checksum(list(data)))[0]
        assert codec.make_commkey(987654, n * 1000 + 7) == base.make_commkey(987654, n * 1000 + 7)
    t = datetime(2031, 2, 28, 23, 59, 58)
    assert codec.encode_time(t) == client._ZK__encode_time(t)
    assert codec.decode_time(codec.encode_time(t)) == t
    with pytest.raises(codec.ZkProtocolError):
        codec.decode_time(((26 * 12 + 1) * 31 + 30) * 86400)  # 31 February 2026


def test_record_ids_tell_apart_records_of_the_same_second() -> None:
    same = [Record("7", DAY, 1, 0)] * 3 + [Record("7", DAY, 1, 1)]
    ids = codec.record_ids(same)
    assert len(set(ids)) == 4
    assert ids == codec.record_ids(same)  # stable on a re-read
    assert ids[0] == "7|2026-12-01T08:00:00|1|0|0"


def test_start_index_finds_the_mark_after_rotation_and_clearing() -> None:
    ids = [f"r{i}" for i in range(10)]
    from device_drivers.zkteco.driver import _Mark

    assert start_index(ids, _Mark()) == (0, "same")
    assert start_index(ids, _Mark(4, "r3")) == (4, "same")
    assert start_index(ids[2:], _Mark(4, "r3")) == (2, "rotated")
    assert start_index(["x", "y"], _Mark(4, "r3")) == (0, "cleared")


def test_packet_reader_rejects_garbage_and_splits_a_stream() -> None:
    reader = codec.PacketReader()
    stream = codec.encode(codec.CMD_ACK_OK, 5, 1) + codec.encode(codec.CMD_DATA, 5, 2, b"abc")
    assert [p.command for p in reader.feed(stream[:10])] == []
    packets = reader.feed(stream[10:])
    assert [(p.command, p.payload) for p in packets] == [(codec.CMD_ACK_OK, b""), (codec.CMD_DATA, b"abc")]
    with pytest.raises(codec.ZkProtocolError) as err:
        codec.PacketReader().feed(b"GET / HTTP/1.1\r\n\r\n")
    assert err.value.code == "garbled"
    bad = bytearray(codec.encode(codec.CMD_ACK_OK, 5, 1))
    bad[10] ^= 0xFF
    assert codec.PacketReader().feed(bytes(bad))[0].checksum_ok is False


# --- the simulator, checked with pyzk's own client ----------------------------------------------------


def test_pyzk_talks_to_the_simulator() -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(comm_key=4711, users=users(), records=log(3000, 3)) as sim:

            def client() -> None:
                zk = ZK("127.0.0.1", port=sim.port, timeout=5, password=4711, ommit_ping=True)
                conn = zk.connect()
                assert [u.user_id for u in conn.get_users()] == ["101", "102", "103", "104", "105"]
                records = conn.get_attendance()
                assert len(records) == 3000
                assert (records[5].user_id, records[5].timestamp, records[5].status, records[5].punch) == (
                    "101",
                    DAY + timedelta(seconds=1),
                    2,
                    5,
                )
                conn.set_time(datetime(2030, 1, 2, 3, 4, 5))
                assert abs((conn.get_time() - datetime(2030, 1, 2, 3, 4, 5)).total_seconds()) < 3
                conn.disconnect()
                wrong = ZK("127.0.0.1", port=sim.port, timeout=5, password=1, ommit_ping=True)
                with pytest.raises(ZKErrorResponse, match="Unauthenticated"):
                    wrong.connect()

            await asyncio.to_thread(client)

    run(main())


def test_pyzk_live_capture_gets_the_simulators_real_time_event() -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(users=users()) as sim:
            got: list[Any] = []
            zk = ZK("127.0.0.1", port=sim.port, timeout=5, ommit_ping=True)
            conn = await asyncio.to_thread(zk.connect)
            started = threading.Event()

            def capture() -> None:
                for att in conn.live_capture(new_timeout=1):
                    started.set()
                    if att is not None:
                        got.append(att)
                        conn.end_live_capture = True

            thread = threading.Thread(target=capture)
            thread.start()
            while 500 not in sim.commands:  # CMD_REG_EVENT
                await asyncio.sleep(0.02)
            sim.add_record("103", datetime(2026, 12, 1, 9, 30, 0), status=15, punch=1)
            await asyncio.to_thread(thread.join, 20)
            assert [(a.user_id, a.timestamp, a.status, a.punch) for a in got] == [
                ("103", datetime(2026, 12, 1, 9, 30, 0), 15, 1)
            ]

    run(main())


# --- the driver ------------------------------------------------------------------------------------


def test_download_then_restart_delivers_nothing_twice_and_skips_nothing(tmp_path: Path) -> None:
    """Several records share each second; half is acknowledged, then the driver restarts."""

    async def main() -> None:
        async with ZkDeviceSimulator(comm_key=0, users=users(), records=log(5000, 4)) as sim:
            driver = ZkPullDriver.from_config(config(sim), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                online = await next_of(it, DeviceOnline)
                assert "connected" in online.reason
                first = await take(it, 2500, driver)
                await it.aclose()
            assert driver.mark == (2500, first[-1].record_id)
            assert (tmp_path / "zkteco_mark.json").exists()

            sim.add_record("101", DAY + timedelta(hours=2))
            driver = ZkPullDriver.from_config(config(sim), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                rest = await take(it, 2501, driver)
                await it.aclose()
            ids = [r.record_id for r in first + rest]
            assert len(ids) == len(set(ids)) == 5001
            assert [r.raw["index"] for r in first + rest] == list(range(5001))
            r0 = first[0]
            assert (r0.user_id, r0.method, r0.punch) == ("101", "password", "check_in")
            assert r0.terminal_time == DAY.replace(tzinfo=UTC)
            assert first[1].method == "fingerprint" and first[2].method == "card"
            assert rest[-1].user_id == "101" and rest[-1].raw["index"] == 5000

    run(main())


def test_unacknowledged_records_come_again_after_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(users=users(), records=log(20)) as sim:
            driver = ZkPullDriver.from_config(config(sim), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                got = await take(it, 10, driver)
                await take(it, 10, driver, ack=False)  # read, never committed
                await it.aclose()
            assert driver.mark[0] == 10
            driver = ZkPullDriver.from_config(config(sim), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                again = await take(it, 10, driver)
                await it.aclose()
            assert [r.raw["index"] for r in again] == list(range(10, 20))
            assert not {r.record_id for r in got} & {r.record_id for r in again}

    run(main())


def test_terminal_time_is_made_aware_with_the_configured_timezone(tmp_path: Path) -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(users=users(), records=log(1), timezone="Europe/Berlin") as sim:
            driver = ZkPullDriver.from_config(config(sim, timezone="Europe/Berlin"), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                (r,) = await take(it, 1, driver)
                await it.aclose()
            assert r.terminal_time == datetime(2026, 12, 1, 7, 0, 0, tzinfo=UTC)
            assert abs(driver.clock_skew_s or 99) < 3

    run(main())


def test_a_link_cut_in_the_middle_of_the_download_loses_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        # 40-byte records: 5000 records are 4 chunks of 0xFFC0 bytes; the link drops after the first.
        async with ZkDeviceSimulator(users=users(), records=log(5000, 2)) as sim:
            sim.faults.drop_after_chunks = 2  # the users' chunk, then one log chunk
            driver = ZkPullDriver.from_config(config(sim), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                seen: list[Reading] = []
                got: list[TerminalAttendance] = []
                async for r in it:
                    seen.append(r)
                    if isinstance(r, TerminalAttendance):
                        got.append(r)
                        driver.acknowledge(r)
                        if len(got) == 5000:
                            break
                await it.aclose()
            offline = [r for r in seen if isinstance(r, DeviceOffline)]
            assert len(offline) == 1 and "closed the connection" in offline[0].reason
            assert [r.raw["index"] for r in got] == list(range(5000))
            assert driver.counters["connection_failed"] == 1
            assert sim.connections == 2

    run(main())


def test_wrong_comm_key_is_offline_with_a_clear_reason_and_keeps_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_ZK_KEY", "1234")

    async def main() -> None:
        async with ZkDeviceSimulator(comm_key=999, users=users(), records=log(3)) as sim:
            driver = ZkPullDriver.from_config(config(sim, password_credential="zk_key"), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                off = await next_of(it, DeviceOffline)
                assert "authentication failed" in off.reason and "CMD_ACK_UNAUTH" in off.reason
                sim.comm_key = 1234  # the terminal's key is corrected
                await next_of(it, DeviceOnline)
                assert len(await take(it, 3, driver)) == 3
                await it.aclose()

    run(main())


def test_garbage_and_refused_auth_are_counted_and_the_driver_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_ZK_KEY5", "5")

    async def main() -> None:
        async with ZkDeviceSimulator(comm_key=5, users=users(), records=log(3)) as sim:
            sim.faults.garbage_next = True  # the answer to the first CMD_CONNECT
            driver = ZkPullDriver.from_config(config(sim, password_credential="zk_key5"), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                off = await next_of(it, DeviceOffline)
                assert "garbled" in off.reason
                assert driver.counters["protocol_garbled"] == 1
                await next_of(it, DeviceOnline)
                assert len(await take(it, 3, driver)) == 3
                sim.faults.refuse_auth = True
                sim.disconnect_all()
                off = await next_of(it, DeviceOffline)
                assert "closed the connection" in off.reason
                sim.add_record("101")
                sim.faults.refuse_auth = False
                await next_of(it, DeviceOnline)
                (r,) = await take(it, 1, driver)
                assert r.raw["index"] == 3
                await it.aclose()

    run(main())


def test_cleared_log_and_real_time_events(tmp_path: Path) -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(users=users(), records=log(10)) as sim:
            # An hour between polls: only the real-time event can bring the new record.
            driver = ZkPullDriver.from_config(config(sim, poll_interval_s=3600), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                await take(it, 10, driver)
                sim.add_record("104", datetime(2026, 12, 1, 12, 0, 0), status=15, punch=1)
                (r,) = await take(it, 1, driver)
                assert (r.user_id, r.method, r.punch) == ("104", "face", "check_out")
                assert driver.counters["realtime_events"] == 1
                sim.clear_log()
                sim.add_record("102", datetime(2026, 12, 1, 13, 0, 0), status=2)
                (r,) = await take(it, 1, driver)
                assert (r.user_id, r.method, r.raw["index"]) == ("102", "card", 0)
                assert driver.counters["log_cleared"] == 1
                # An event that does not decode (20 bytes) still means "read the log".
                sim.records.append(Record("101", datetime(2026, 12, 1, 14, 0, 0), 1, 0, 1))
                sim._log_cache = None
                for writer in sim._writers:
                    writer.write(codec.encode(codec.CMD_REG_EVENT, codec.EF_ATTLOG, 0, b"\x01" * 20))
                (r,) = await take(it, 1, driver)
                assert r.user_id == "101" and driver.counters["protocol_bad_event"] == 1
                await it.aclose()

    run(main())


def test_without_real_time_events_it_polls_and_sync_clock_sets_the_clock(tmp_path: Path) -> None:
    async def main() -> None:
        async with ZkDeviceSimulator(users=users(), records=log(2), clock_offset_s=-600) as sim:
            sim.faults.no_realtime = True
            driver = ZkPullDriver.from_config(config(sim, sync_clock=True), state_dir=tmp_path)
            async with driver:
                it = driver.readings()
                await take(it, 2, driver)
                assert driver.clock_skew_s is not None and driver.clock_skew_s < -590
                assert driver.counters["clock_set"] == 1
                assert abs(sim.clock_offset_s) < 3
                assert driver.counters["realtime_unsupported"] == 1
                sim.add_record("105")
                (r,) = await take(it, 1, driver)
                assert r.user_id == "105"
                await it.aclose()

    run(main())


def test_probe_reports_reachable_authenticated_and_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_ZK_PROBE", "77")

    async def main() -> None:
        async with ZkDeviceSimulator(comm_key=77, users=users(), records=log(4), clock_offset_s=120) as sim:
            results = await probe_zkteco(config(sim, password_credential="zk_probe"))
            by = {r.check: r for r in results}
            assert by["reachable"].status == "ok" and by["authenticated"].status == "ok"
            assert by["clock"].status == "warn" and (
                "+119 s" in by["clock"].detail or "+120 s" in by["clock"].detail
            )
            assert "4 attendance records" in by["log"].detail
            sim.comm_key = 78
            results = await probe_zkteco(config(sim, password_credential="zk_probe"))
            assert [(r.check, r.status) for r in results] == [("reachable", "ok"), ("authenticated", "fail")]
        port = sim.port
        results = await probe_zkteco(ZktecoConfig(kind="zkteco", id="x", host="127.0.0.1", port=port))
        assert results[0].status == "fail"

    run(main())


def test_a_comm_key_that_is_no_number_is_refused_alike_by_driver_probe_and_doctor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One reading of the comm key credential (codec.parse_comm_key) for the driver, its probe,
    the simulator and doctor's credential check."""
    assert codec.parse_comm_key("123456\n") == 123456 and codec.parse_comm_key("0") == 0
    for bad in ("", "abc", "-5", "+5", "12 34", str(1 << 32)):
        with pytest.raises(ValueError):
            codec.parse_comm_key(bad)
    monkeypatch.setenv("EDGE_AGENT_ZK_BAD", "seven")
    bad = ZktecoConfig(kind="zkteco", id="zk-bad", host="127.0.0.1", password_credential="zk_bad")
    with pytest.raises(DeviceError) as err:
        run(ZkPullDriver.from_config(bad, state_dir=tmp_path).__aenter__())
    assert err.value.code == "bad_comm_key" and "zk_bad" in str(err.value)
    (probed,) = run(probe_zkteco(bad))
    assert (probed.check, probed.status) == ("authenticated", "fail") and "comm key" in probed.detail

    from edge_agent.config import GatewayConfig
    from edge_agent.doctor import Status, check_credentials

    site = GatewayConfig.model_validate(
        {
            "gateway": {"site": "s", "id": "gw"},
            "api": {"enabled": False},
            "agent": {"roster_signatures": "optional"},
            "devices": [bad.model_dump(exclude_defaults=True) | {"kind": "zkteco"}],
        }
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "zk_bad").write_text("seven\n")
    (result,) = check_credentials(site, credentials)
    assert result.status is Status.FAIL and "comm key is a whole number" in result.detail
    (credentials / "zk_bad").write_text("4711\n")
    (result,) = check_credentials(site, credentials)
    assert result.status is Status.OK and result.detail == "a ZKTeco comm key"


def test_config_host_rules() -> None:
    with pytest.raises(ValidationError, match="give a host"):
        ZktecoConfig(kind="zkteco", id="zk")
    push = ZktecoPushConfig(kind="zkteco_push", id="zk-push", terminals=[{"serial": "A1", "id": "t1"}])
    assert push.listen_port == 8081 and push.host is None
    with pytest.raises(ValidationError, match="unique"):
        ZktecoPushConfig(
            kind="zkteco_push", id="p", terminals=[{"serial": "A1", "id": "t1"}, {"serial": "A1", "id": "t2"}]
        )


def test_simulated_devices_through_the_registry(tmp_path: Path) -> None:
    """``simulated: true``: the registry attaches the simulators; the drivers reach them on 127.0.0.1."""
    from device_drivers import open_driver
    from device_drivers.zkteco.driver import ZkPushServer

    async def main() -> None:
        pull = open_driver(ZktecoConfig(kind="zkteco", id="zk-demo", simulated=True), state_dir=tmp_path)
        assert isinstance(pull, ZkPullDriver) and isinstance(pull.simulator, ZkDeviceSimulator)
        async with pull:
            pull.simulator.add_record("1001", status=1)
            it = pull.readings()
            await next_of(it, DeviceOnline)
            (r,) = await take(it, 1, pull)
            assert r.user_id == "1001" and r.method == "fingerprint"
            await it.aclose()
        push_config = ZktecoPushConfig(
            kind="zkteco_push", id="zk-push", simulated=True, terminals=[{"serial": "SIM1", "id": "zk-sim"}]
        )
        push = open_driver(push_config, state_dir=tmp_path)
        assert isinstance(push, ZkPushServer)
        async with push:
            assert push.simulator is not None and push.simulator.serial == "SIM1"
            push.simulator.add_record("2", verify=15)
            it = push.readings()
            await next_of(it, DeviceOnline)
            async for reading in it:
                if isinstance(reading, TerminalAttendance):
                    assert (reading.device_id, reading.user_id, reading.method) == ("zk-sim", "2", "face")
                    push.acknowledge(reading)
                    break
            await it.aclose()

    run(main())


def test_the_8_and_16_byte_record_variants_decode_as_pyzk_reads_them() -> None:
    t = codec.encode_time(DAY)
    # 8 bytes: uid (H), verify (B), time (4s), punch (B); the user id comes from the user table.
    rows8 = struct.pack("<HBIB", 3, 15, t, 1) + struct.pack("<HBIB", 9, 1, t + 1, 0)
    got = codec.decode_records(struct.pack("<I", len(rows8)) + rows8, 2, {3: "4711"})
    assert [(r.user_id, r.uid, r.status, r.punch, r.timestamp) for r in got] == [
        ("4711", 3, 15, 1, DAY),
        ("9", 9, 1, 0, DAY + timedelta(seconds=1)),
    ]
    # 16 bytes: user id (I), time (4s), verify (B), punch (B), reserved (2s), workcode (I).
    rows16 = struct.pack("<I4sBB2sI", 4711, struct.pack("<I", t), 2, 3, b"\0\0", 0)
    (r,) = codec.decode_records(struct.pack("<I", 16) + rows16, 1)
    assert (r.user_id, r.status, r.punch, r.timestamp) == ("4711", 2, 3, DAY)
    with pytest.raises(codec.ZkProtocolError) as err:
        codec.decode_records(struct.pack("<I", 80) + rows16, 1)
    assert err.value.code == "truncated"
    with pytest.raises(codec.ZkProtocolError) as err:
        codec.decode_records(struct.pack("<I", 12) + b"x" * 12, 1)
    assert err.value.code == "bad_record"

"""The outbox against real SQLite files: durability, seq, lanes, drop policy, corruption."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sync.contract import validate_event
from sync.envelope import Event, parse_event
from sync.event_types import Lane, Severity
from sync.outbox import Outbox, OutboxConfig
from sync.outbox.store import DB_NAME

SOURCE = "campus/test-site/gw-1/gateway"
# Housekeeping only when a test runs it: no drop policy on the write path.
MANUAL = {"housekeeping_interval_s": 3600, "space_check_interval_s": 3600, "space_check_bytes": 1 << 40}


def heartbeat(i: int, pad: int = 0) -> Event:
    return Event(
        "edu.campus.device.heartbeat.v1",
        "campus/test-site/gw-1/r1",
        {
            "device": "r1",
            "kind": "sim",
            "uptime_s": float(i),
            "counter": i,
            **({"readings": pad} if pad else {}),
        },
    )


def access_like(i: int) -> Event:
    # The access lane's registered types are gateway lifecycle events until the access issue lands.
    return Event(
        "edu.campus.gateway.started.v1",
        SOURCE,
        {"version": "t", "hostname": "h", "outbox_backlog": i, "previous_shutdown": "clean"},
    )


def alert(i: int) -> Event:
    return Event(
        "edu.campus.security.test_alert.v1",
        "campus/test-site/gw-1/cam1",
        {"device": "cam1", "reason": f"test {i}"},
        severity=Severity.CRITICAL,
    )


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_append_assigns_increasing_seq_and_group_commits(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            futs = [ob.append_nowait(heartbeat(i)) for i in range(5000)]
            committed = await asyncio.gather(*futs)
            assert [c.seq for c in committed] == list(range(1, 5001))
            # Group commit: far fewer transactions than events.
            assert ob.stats.commits < 5000 / 10
            assert ob.pending_total == 5000

    run(scenario())
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5000
    assert [r[0] for r in conn.execute("SELECT name FROM migrations")] == ["0001_initial", "0002_attachments"]
    payload = conn.execute("SELECT payload FROM events WHERE seq=4242").fetchone()[0]
    event = parse_event(payload)
    assert event["seq"] == 4242 and event["data"]["counter"] == 4241
    validate_event(event)


def test_seq_continues_across_reopen_and_never_reuses_after_purge(tmp_path: Path) -> None:
    async def first() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(10)])
            ob.mark_delivered(list(range(1, 11)))

    async def second() -> int:
        config = OutboxConfig(delivered_retention_s=0, housekeeping_interval_s=0.01)
        async with Outbox(tmp_path, config, SOURCE) as ob:
            await ob.append(heartbeat(0))  # the housekeeping after this commit purges delivered rows
            await asyncio.sleep(0.05)
            return (await ob.append(heartbeat(1))).seq

    run(first())
    assert run(second()) == 12
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("SELECT min(seq) FROM events").fetchone()[0] == 11


def test_fetch_pending_by_lane_and_mark_delivered(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(3)])
            await ob.append(alert(1))
            await ob.append(access_like(1))
            assert [r.seq for r in ob.fetch_pending(Lane.ALERT, 0, 10)] == [4]
            assert [r.seq for r in ob.fetch_pending(Lane.ACCESS, 0, 10)] == [5]
            assert [r.seq for r in ob.fetch_pending(Lane.TELEMETRY, 1, 10)] == [2, 3]
            ob.mark_delivered([1, 4])
            # Acknowledged rows disappear from the pending view at once, before the mark commits.
            assert [r.seq for r in ob.fetch_pending(Lane.TELEMETRY, 0, 10)] == [2, 3]
            await ob.append(heartbeat(9))
            await ob.flush()  # marks commit after the appends of their batch, in their own transaction
            backlog = ob.backlog()
            assert backlog[Lane.ALERT].pending == 0
            assert backlog[Lane.TELEMETRY].pending == 3
            assert backlog[Lane.TELEMETRY].oldest_age_s is not None

    run(scenario())


def test_drop_policy_drops_only_telemetry_and_reports_it(tmp_path: Path) -> None:
    config = OutboxConfig(max_bytes=1 << 20, min_free_bytes=0, **MANUAL)

    async def scenario() -> None:
        async with Outbox(tmp_path, config, SOURCE) as ob:
            # ~1.5 MiB of undelivered telemetry, some delivered telemetry, and access + alerts.
            telemetry = await asyncio.gather(*[ob.append_nowait(heartbeat(i, pad=i)) for i in range(4000)])
            keep = await asyncio.gather(*[ob.append_nowait(access_like(i)) for i in range(300)])
            alerts = await asyncio.gather(*[ob.append_nowait(alert(i)) for i in range(300)])
            ob.mark_delivered([c.seq for c in telemetry[:500]])
            await ob.append(heartbeat(99999))
            assert ob.used_bytes() > config.max_bytes
            done = asyncio.get_running_loop().create_future()
            ob.run_in_writer(
                lambda: (ob.housekeeping(), done.get_loop().call_soon_threadsafe(done.set_result, None))
            )
            await done
            await asyncio.sleep(0.05)
            assert ob.used_bytes() <= config.max_bytes
            access_left = ob.fetch_pending(Lane.ACCESS, 0, 10_000)
            alerts_left = ob.fetch_pending(Lane.ALERT, 0, 10_000)
            assert {r.seq for r in alerts_left} == {c.seq for c in alerts}
            # Every access row is still there, plus the drop report.
            seqs = {r.seq for r in access_left}
            assert {c.seq for c in keep} <= seqs
            reports = [parse_event(r.payload) for r in access_left if r.type.endswith("events_dropped.v1")]
            assert len(reports) == 1
            report = reports[0]
            validate_event(report)
            dropped = report["data"]["undelivered_dropped"]
            assert dropped > 0
            assert report["data"]["delivered_purged"] == 500
            assert report["data"]["reason"] == "size_cap"
            assert report["data"]["types"] == {"edu.campus.device.heartbeat.v1": dropped}
            # Oldest telemetry went first: what is left is a suffix of what was appended.
            left = [r.seq for r in ob.fetch_pending(Lane.TELEMETRY, 0, 10_000)]
            assert left == sorted(left)
            assert left[0] == report["data"]["last_seq"] + 1
            assert ob.stats.dropped_undelivered == {"edu.campus.device.heartbeat.v1": dropped}

    run(scenario())


def test_over_cap_with_only_undroppable_events_keeps_them(tmp_path: Path) -> None:
    config = OutboxConfig(max_bytes=1 << 20, min_free_bytes=0, **MANUAL)

    async def scenario() -> None:
        async with Outbox(tmp_path, config, SOURCE) as ob:
            alerts = await asyncio.gather(*[ob.append_nowait(alert(i)) for i in range(6000)])
            assert ob.used_bytes() > config.max_bytes
            done = asyncio.get_running_loop().create_future()
            ob.run_in_writer(
                lambda: (ob.housekeeping(), done.get_loop().call_soon_threadsafe(done.set_result, None))
            )
            await done
            assert len(ob.fetch_pending(Lane.ALERT, 0, 10_000)) == len(alerts)
            assert ob.stats.over_limit == 1
            assert ob.stats.dropped_undelivered == {}

    run(scenario())


def test_corrupt_database_is_moved_aside_and_seq_resumes_above_floor(tmp_path: Path) -> None:
    async def first() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(50)])

    run(first())
    (tmp_path / DB_NAME).write_bytes(b"this is not an sqlite file at all" * 100)

    async def second() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            assert ob.recovered_from is not None and ob.recovered_from.exists()
            await asyncio.sleep(0.05)
            rows = ob.fetch_pending(Lane.ACCESS, 0, 10)
            assert len(rows) == 1
            report = parse_event(rows[0].payload)
            validate_event(report)
            assert report["type"] == "edu.campus.gateway.storage_recovered.v1"
            assert report["data"]["moved_to"] == str(ob.recovered_from)
            # Above every seq that may have been handed out before the loss.
            assert report["seq"] > 50
            nxt = await ob.append(heartbeat(1))
            assert nxt.seq == report["seq"] + 1

    run(second())
    assert len(list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))) == 1


def test_appending_to_closed_outbox_raises(tmp_path: Path) -> None:
    from sync.outbox import OutboxClosed

    async def scenario() -> None:
        ob = Outbox(tmp_path, OutboxConfig(), SOURCE)
        await ob.open()
        await ob.close()
        with pytest.raises(OutboxClosed):
            ob.append_nowait(heartbeat(1))

    run(scenario())


def test_disk_floor_drops_telemetry_and_returns_pages(tmp_path: Path) -> None:
    import shutil

    # A floor above the free space this file system has: the policy must act on it.
    floor = shutil.disk_usage(tmp_path).free + (1 << 30)
    config = OutboxConfig(max_bytes=1 << 30, min_free_bytes=floor, min_free_percent=100, **MANUAL)

    async def scenario() -> None:
        async with Outbox(tmp_path, config, SOURCE) as ob:
            await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(2000)])
            kept = await asyncio.gather(*[ob.append_nowait(access_like(i)) for i in range(50)])
            done = asyncio.get_running_loop().create_future()
            loop = asyncio.get_running_loop()
            ob.run_in_writer(lambda: (ob.housekeeping(), loop.call_soon_threadsafe(done.set_result, None)))
            await done
            await ob.flush()
            # Nothing can lift the floor, so all telemetry goes; access rows never do.
            assert ob.fetch_pending(Lane.TELEMETRY, 0, 10_000) == []
            access = ob.fetch_pending(Lane.ACCESS, 0, 10_000)
            assert {c.seq for c in kept} <= {r.seq for r in access}
            report = next(parse_event(r.payload) for r in access if r.type.endswith("events_dropped.v1"))
            validate_event(report)
            assert report["data"]["reason"] == "disk_floor"
            assert report["data"]["undelivered_dropped"] == 2000
            assert ob.stats.over_limit == 1

    run(scenario())


def test_attachments_live_and_die_with_their_event(tmp_path: Path) -> None:
    config = OutboxConfig(delivered_retention_s=0, housekeeping_interval_s=3600)

    async def scenario() -> None:
        async with Outbox(tmp_path, config, SOURCE) as ob:
            ev = alert(1)
            ob.submit(ev, attachment=b"\xff\xd8jpeg bytes")
            await ob.flush()
            row = ob.fetch_pending(Lane.ALERT, 0, 10)[0]
            assert row.attachment == b"\xff\xd8jpeg bytes" and row.event_id == ev.id
            ob.mark_delivered([row.seq])
            await ob.flush()
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            ob.run_in_writer(lambda: (ob.housekeeping(), loop.call_soon_threadsafe(done.set_result, None)))
            await done

    run(scenario())
    conn = sqlite3.connect(tmp_path / DB_NAME)
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM attachments").fetchone()[0] == 0


def test_restored_older_database_resumes_above_the_seq_floor(tmp_path: Path) -> None:
    from sync.outbox.store import SEQ_FLOOR_NAME

    async def fill() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(10)])

    run(fill())
    # As if this database were a backup taken long before: the floor says 500,000 seqs were reserved.
    (tmp_path / SEQ_FLOOR_NAME).write_text("500000\n")

    async def resume() -> int:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            return (await ob.append(heartbeat(0))).seq

    assert run(resume()) == 500_001
    # A normal restart (floor just one block ahead) continues without a gap.
    (tmp_path / SEQ_FLOOR_NAME).write_text(str(500_001 + 100_000) + "\n")
    assert run(resume()) == 500_002


def test_corrupt_outbox_undelivered_rows_are_salvaged_and_delivered_after_restart(
    tmp_path: Path, mosquitto: Any
) -> None:
    from device_drivers import Backoff, BackoffConfig
    from sync import MqttConfig, MqttLink
    from tests.support.mqtt import Collector
    from tests.support.wait import async_wait_until

    async def fill() -> list[Any]:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            committed = await asyncio.gather(*[ob.append_nowait(heartbeat(i, pad=i)) for i in range(1500)])
            committed += await asyncio.gather(*[ob.append_nowait(alert(i)) for i in range(100)])
            ob.mark_delivered([c.seq for c in committed[:200]])
            await ob.flush()
            return committed

    committed = run(fill())
    path = tmp_path / DB_NAME
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a damaged block in the middle of the table
        fh.seek((size // 4096 // 2) * 4096)
        fh.write(b"\xde\xad" * 4096)
    collector = Collector(mosquitto.url, "campus/v1/salvage-site/gw-1/#")

    async def restart() -> None:
        async with Outbox(tmp_path, OutboxConfig(), SOURCE) as ob:
            assert ob.recovered_from is not None
            rows = [r for lane in Lane for r in ob.fetch_pending(lane, 0, 100_000)]
            by_seq = {r.seq: r for r in rows}
            originals = {c.seq: c.id for c in committed}
            salvaged = [r for r in rows if r.seq in originals]
            # A block was lost, not the file: most undelivered rows come back with their seq and id.
            assert ob.salvaged == len(salvaged) > 1000
            assert all(originals[r.seq] == r.event_id for r in salvaged)
            assert not {c.seq for c in committed[:200]} & by_seq.keys(), "delivered rows are not salvaged"
            await ob.flush()
            report = next(
                parse_event(r.payload)
                for r in ob.fetch_pending(Lane.ACCESS, 0, 10)
                if r.type.endswith("storage_recovered.v1")
            )
            validate_event(report)
            assert report["data"]["salvaged"] == ob.salvaged and report["seq"] > max(originals)
            link = MqttLink(
                MqttConfig(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.5),
                ob,
                site="salvage-site",
                gateway="gw-1",
                version="t",
                backoff=Backoff(BackoffConfig(initial_s=0.1, max_s=0.5)),
            )
            task = asyncio.create_task(link.run())
            try:
                await async_wait_until(lambda: ob.pending_total == 0, 30, what="the salvaged rows delivered")
            finally:
                await link.shutdown(drain_timeout_s=1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            wanted = {r.event_id for r in salvaged}
            await asyncio.to_thread(
                collector.wait_for,
                lambda ms: wanted <= {m.json()["id"] for m in ms if "/events/" in m.topic},
                20,
            )

    try:
        run(restart())
    finally:
        collector.close()


@pytest.mark.parametrize(
    ("fs_bytes", "floor", "cap", "reserve"),
    [
        (16 << 20, 4 << 20, 8 << 20, 1 << 20),  # a tiny partition: a quarter, half, 1/16
        (4 * 10**9, 200_000_000, 1 << 30, 32 << 20),  # a 4 GB card: 5 %
        (16 * 10**9, 256 << 20, 1 << 30, 32 << 20),  # a 16 GB card: the 256 MiB ceiling
    ],
)
def test_default_limits_follow_the_file_system(fs_bytes: int, floor: int, cap: int, reserve: int) -> None:
    limits = OutboxConfig().limits(fs_bytes)
    assert (limits.min_free_bytes, limits.max_bytes, limits.reserve_bytes) == (floor, cap, reserve)
    # Never so large that the floor is reached only when the disk is already full.
    assert limits.min_free_bytes + limits.reserve_bytes < fs_bytes // 2
    assert limits.check_bytes <= max(4096, limits.min_free_bytes // 8)

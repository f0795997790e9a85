"""The outbox on a real, small file system that fills up: nothing protected is lost, every loss is
counted and reported, and the writer recovers without a restart.

Each test mounts its own 16 MiB tmpfs (the tests run as root here); where mounting is not allowed
they are skipped with the reason. The disk is filled the way it fills in the field: by another
writer (a log storm, a download) taking whatever space there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sync.contract import validate_event
from sync.envelope import Event, parse_event
from sync.event_types import EVENT_TYPES, Lane, Severity
from sync.outbox import Outbox, OutboxConfig
from tests.support.wait import async_wait_until

SOURCE = "campus/disk-site/gw-1/gateway"
FS_SIZE = "16m"


def mount_tmpfs(where: Path, size: str = FS_SIZE) -> None:
    """Mount a tmpfs of ``size`` at ``where``; skips the test where that is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root")


def unmount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "fs"
    mount_tmpfs(where)
    try:
        yield where
    finally:
        unmount(where)


class Hog:
    """Another writer on the same file system: takes every free byte it can get."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "hog.bin"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def fill(self) -> int:
        """Write until the file system is full; returns the bytes taken now."""
        taken = 0
        for size in (1 << 20, 64 << 10, 4096, 512):
            block = b"\0" * size
            while True:
                try:
                    taken += os.write(self.fd, block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
        return taken

    def release(self) -> None:
        os.ftruncate(self.fd, 0)

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def heartbeat(i: int) -> Event:
    return Event(
        "edu.campus.device.heartbeat.v1",
        "campus/disk-site/gw-1/sim-0",
        {"device": "sim-0", "kind": "sim", "uptime_s": float(i), "counter": i},
    )


def access(i: int) -> Event:
    return Event(
        "edu.campus.access.denied.v1",
        "campus/disk-site/gw-1/reader-in",
        {"gate": "gate-1", "reader": "reader-in", "credential": f"card-{i}", "reason": "unknown_credential"},
    )


def attendance(i: int) -> Event:
    return Event(
        "edu.campus.attendance.recorded.v1",
        "campus/disk-site/gw-1/gate-1",
        {"point": "gate-1", "person": f"p-{i}"},
    )


def alert(i: int) -> Event:
    return Event(
        "edu.campus.security.test_alert.v1",
        "campus/disk-site/gw-1/cam-1",
        {"device": "cam-1", "reason": f"test {i}"},
        severity=Severity.WARNING,
    )


class Producer:
    """Submits events at ``rate`` per second the way the agent does (``submit``: nobody waits), one
    in ten an alert, access decision or attendance record; remembers what it submitted."""

    def __init__(self, outbox: Outbox, rate: int) -> None:
        self.outbox = outbox
        self.rate = rate
        self.submitted: dict[str, Event] = {}
        self.protected: set[str] = set()
        self.counter = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tick = 0.01
        per_tick = max(1, self.rate // 100)
        next_at = loop.time()
        while True:
            for _ in range(per_tick):
                i = self.counter
                self.counter += 1
                kind = i % 30
                ev = (
                    alert(i)
                    if kind == 0
                    else access(i)
                    if kind == 10
                    else attendance(i)
                    if kind == 20
                    else None
                )
                if ev is None:
                    ev = heartbeat(i)
                elif ev.spec.lane != Lane.TELEMETRY:
                    self.protected.add(ev.id)
                self.submitted[ev.id] = ev
                self.outbox.submit(ev)
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def rows_of(outbox: Outbox) -> list[Any]:
    return [row for lane in Lane for row in outbox.fetch_pending(lane, 0, 10_000_000)]


def check_accounting(outbox: Outbox, producer: Producer) -> dict[str, Any]:
    """Every protected event is in the outbox; every other one is there, in a reported seq range, or
    counted as never committed; no seq is missing without a report naming it."""
    rows = rows_of(outbox)
    by_id = {row.event_id: row for row in rows}
    assert len(by_id) == len(rows), "an event was committed twice"
    missing = producer.protected - by_id.keys()
    assert not missing, f"{len(missing)} alerts/access/attendance events lost"
    reports = [parse_event(r.payload) for r in rows if r.type == "edu.campus.gateway.events_dropped.v1"]
    for report in reports:
        validate_event(report)
    ranges = [(r["data"]["first_seq"], r["data"]["last_seq"]) for r in reports if r["data"]["first_seq"]]
    present = {row.seq for row in rows}
    unexplained = [
        seq
        for seq in range(1, outbox.last_seq + 1)
        if seq not in present and not any(a <= seq <= b for a, b in ranges)
    ]
    assert not unexplained, f"seqs missing without a report: {unexplained[:20]}"
    dropped: dict[str, int] = {}
    never: dict[str, int] = {}
    for report in reports:
        for type_, n in report["data"]["types"].items():
            dropped[type_] = dropped.get(type_, 0) + n
        for type_, n in report["data"].get("never_committed_types", {}).items():
            never[type_] = never.get(type_, 0) + n
    for type_ in (*dropped, *never):
        assert EVENT_TYPES[type_].lane == Lane.TELEMETRY, f"a protected type was lost: {type_}"
    # Exact accounting of telemetry: kept + dropped (by seq) + never committed = submitted.
    submitted_hb = sum(1 for ev in producer.submitted.values() if ev.type == "edu.campus.device.heartbeat.v1")
    kept_hb = sum(
        1 for row in rows if row.event_id in producer.submitted and row.type.endswith("heartbeat.v1")
    )
    hb = "edu.campus.device.heartbeat.v1"
    assert kept_hb + dropped.get(hb, 0) + never.get(hb, 0) == submitted_hb
    assert outbox.stats.dropped_undelivered == dropped
    assert outbox.stats.never_committed == never
    return {"reports": reports, "dropped": dropped, "never": never, "rows": rows}


@pytest.mark.parametrize("rate", [1000, 10_000])
def test_full_disk_at_rate_keeps_every_protected_event_and_reports_every_loss(
    small_fs: Path, rate: int
) -> None:
    async def scenario() -> None:
        hog = Hog(small_fs)
        # The defaults, on a 16 MiB file system: floor and reserve follow its size.
        async with Outbox(small_fs / "data", OutboxConfig(), SOURCE) as ob:
            assert ob.limits.min_free_bytes <= 4 << 20 and ob.limits.reserve_bytes == 1 << 20
            assert ob.storage.reserve_held
            producer = Producer(ob, rate)
            task = asyncio.create_task(producer.run())
            try:
                await async_wait_until(lambda: ob.stats.appended > rate // 2, 20, what="a first backlog")

                # The broker is down; someone else fills the disk, again and again as space frees up.
                async def squeeze() -> bool:
                    hog.fill()
                    return ob.storage.state == "critical"

                await async_wait_until(squeeze, 30, interval=0.02, what="storage critical")
                alert_row = ob.critical_alert
                assert alert_row is not None
                await async_wait_until(lambda: ob.storage.memory_queue > 20, 10, what="events held in memory")
                # Space comes back: the held events are committed, the reserve set aside again.
                hog.release()
                await async_wait_until(lambda: ob.storage.state == "ok", 20, what="storage ok again")
                assert ob.storage.memory_queue == 0 and ob.storage.reserve_held
                before = ob.stats.appended
                await async_wait_until(
                    lambda: ob.stats.appended > before + rate // 10, 10, what="writing again"
                )
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ob.flush()
            await asyncio.sleep(0)  # the futures of the last commit
            ob.run_in_writer(ob.housekeeping)  # reports whatever is still unreported
            await ob.flush()
            result = check_accounting(ob, producer)
            assert ob.stats.reserve_released >= 1 and ob.stats.critical_episodes >= 1
            assert result["dropped"] or result["never"], "the squeeze should have cost some telemetry"
            critical = [r for r in result["rows"] if r.type == "edu.campus.gateway.storage_critical.v1"]
            assert (
                len(critical) == 1
                and critical[0].seq == alert_row[1]
                and critical[0].event_id == alert_row[0].id
            )
            validate_event(parse_event(critical[0].payload))
        hog.close()

    asyncio.run(scenario())


def test_delivery_marks_survive_a_failing_append(small_fs: Path) -> None:
    async def scenario() -> None:
        hog = Hog(small_fs)
        # The memory queue holds every later alert whatever the timing: this test is about the
        # marks; its overflow has its own test below.
        config = OutboxConfig(min_free_bytes=0, memory_queue_max=20_000)
        async with Outbox(small_fs / "data", config, SOURCE) as ob:
            first = await asyncio.gather(*[ob.append_nowait(alert(i)) for i in range(6000)])
            acked = {c.seq for c in first[:1000]}
            hog.fill()
            # One writer batch: acknowledgements for 1,000 rows and an append far bigger than the
            # space left, so the append fails for space.
            gate = threading.Event()
            ob.run_in_writer(gate.wait)
            ob.mark_delivered(sorted(acked))
            later = [alert(10_000 + i) for i in range(12_000)]
            for ev in later:
                ob.submit(ev)
            gate.set()
            await async_wait_until(
                lambda: ob.stats.space_failures > 0, 10, what="an append failing for space"
            )

            def offered_again() -> set[int]:
                return acked & {r.seq for r in ob.fetch_pending(Lane.ALERT, 0, 100_000)}

            # Whether or not the marks found room yet, the acknowledged rows are never offered again.
            assert not offered_again()
            hog.release()
            await async_wait_until(lambda: ob.storage.memory_queue == 0, 20, what="the held alerts committed")
            await async_wait_until(lambda: ob.stats.delivered == 1000, 10, what="the marks committed")
            await ob.flush()
            assert not offered_again()
            ids = {r.event_id for r in ob.fetch_pending(Lane.ALERT, 0, 100_000)}
            assert {ev.id for ev in later} <= ids
            assert {c.id for c in first[1000:]} <= ids
            assert ob.stats.never_committed == {}
        hog.close()

    asyncio.run(scenario())


def test_memory_queue_overflow_loses_access_before_alerts_counted_and_reported(small_fs: Path) -> None:
    config = OutboxConfig(reserve_bytes=0, min_free_bytes=0, memory_queue_max=100)

    async def scenario() -> None:
        hog = Hog(small_fs)
        async with Outbox(small_fs / "data", config, SOURCE) as ob:
            await ob.append(alert(-1))
            hog.fill()
            await async_wait_until(
                lambda: (ob.submit(attendance(0)), hog.fill(), ob.storage.state == "critical")[-1],
                20,
                what="storage critical",
            )
            assert ob.storage.memory_queue <= config.memory_queue_max
            alerts = [alert(i) for i in range(20)]
            for i in range(300):
                ob.submit(access(i))
                if i % 15 == 0:
                    ob.submit(alerts[i // 15])
            await async_wait_until(
                lambda: sum(ob.stats.never_committed.values()) > 0, 10, what="the memory queue overflowing"
            )
            assert ob.storage.memory_queue == config.memory_queue_max
            hog.release()
            await async_wait_until(lambda: ob.storage.state == "ok", 20, what="storage ok")
            ob.run_in_writer(ob.housekeeping)
            await ob.flush()
            rows = rows_of(ob)
            ids = {r.event_id for r in rows}
            assert {a.id for a in alerts} <= ids, "alerts go last when the memory queue overflows"
            reports = [parse_event(r.payload) for r in rows if r.type.endswith("events_dropped.v1")]
            lost = {k: v for rep in reports for k, v in rep["data"].get("never_committed_types", {}).items()}
            assert lost == ob.stats.never_committed
            assert set(lost) <= {"edu.campus.access.denied.v1", "edu.campus.attendance.recorded.v1"}
            assert any(rep["data"]["reason"] == "storage_critical" for rep in reports)
            for rep in reports:
                validate_event(rep)
                assert rep["data"]["never_committed_from"] <= rep["data"]["never_committed_to"]
            kept_access = sum(1 for r in rows if r.type == "edu.campus.access.denied.v1")
            assert kept_access + lost.get("edu.campus.access.denied.v1", 0) == 300
            assert len([r for r in rows if r.type.endswith("storage_critical.v1")]) == 1
        hog.close()

    asyncio.run(scenario())


def test_alerts_are_never_dropped_while_the_floor_policy_drops_telemetry(
    small_fs: Path, mosquitto: Any
) -> None:
    """Issue 11, item 6: alerts and the drop policy, with the link draining alerts-first meanwhile.

    The drop SQL deletes only delivered rows and undelivered telemetry-lane rows; the drain reads
    each lane from its own cursor. Here the floor can never be met, so every write-path check drops
    telemetry while alerts keep coming and the link publishes: every alert reaches the subscriber."""
    from device_drivers import Backoff, BackoffConfig
    from sync import MqttConfig, MqttLink
    from tests.support.mqtt import Collector

    config = OutboxConfig(min_free_bytes=64 << 20, min_free_percent=100, reserve_bytes=0)
    collector = Collector(mosquitto.url, "campus/v1/floor-site/gw-1/#")

    async def scenario() -> None:
        async with Outbox(small_fs / "data", config, SOURCE) as ob:
            link = MqttLink(
                MqttConfig(url=mosquitto.url, reconnect_min_s=0.1, reconnect_max_s=0.5),
                ob,
                site="floor-site",
                gateway="gw-1",
                version="t",
                backoff=Backoff(BackoffConfig(initial_s=0.1, max_s=0.5)),
            )
            task = asyncio.create_task(link.run())
            alerts: list[Event] = []
            try:
                for i in range(4000):
                    ob.submit(heartbeat(i))
                    if i % 10 == 0:
                        alerts.append(alert(i))
                        ob.submit(alerts[-1])
                    if i % 100 == 0:
                        await asyncio.sleep(0.005)
                await ob.flush()
                await async_wait_until(lambda: ob.stats.dropped_undelivered, 10, what="telemetry dropped")
                wanted = {a.id for a in alerts}
                await asyncio.to_thread(
                    collector.wait_for,
                    lambda ms: wanted <= {m.json()["id"] for m in ms if "/alerts/" in m.topic},
                    30,
                )
            finally:
                await link.shutdown(drain_timeout_s=1)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            assert set(ob.stats.dropped_undelivered) == {"edu.campus.device.heartbeat.v1"}
            assert ob.stats.never_committed == {}

    try:
        asyncio.run(scenario())
    finally:
        collector.close()

"""Outbox benchmarks, each next to a baseline measured in the same run (DESIGN.md quality bars).

1. Durable append: events/s through ``Outbox.append_nowait`` (group commit, synchronous=FULL, WAL)
   next to raw batched SQLite inserts of the same rows with the same pragmas. Bar: >= 50,000/s.
2. Drain: outbox -> local Mosquitto at QoS 1 through ``MqttLink`` next to a bare paho QoS 1 publish
   loop with the same payloads and in-flight window. Bar: ratio >= 0.8.
3. Memory: RSS of the agent process idle, and with a 1,000,000-event backlog (must not grow with it).

Run: ``.venv/bin/python bench/bench_outbox.py [--events N] [--backlog N]``. It starts its own
Mosquitto on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from common import free_port, rss_mib, start_broker

from device_drivers import Backoff
from sync import Event, Lane, MqttConfig, MqttLink, Outbox, OutboxConfig

SOURCE = "campus/bench/gw-1/gateway"


def events(n: int) -> list[Event]:
    return [
        Event(
            "edu.campus.device.heartbeat.v1",
            "campus/bench/gw-1/reader-1",
            {"device": "reader-1", "kind": "sim", "uptime_s": float(i), "counter": i},
        )
        for i in range(n)
    ]


# -- 1. append -------------------------------------------------------------------------------


def raw_insert_rate(workdir: Path, rows: list[tuple[object, ...]], batch: int) -> float:
    path = workdir / "raw.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, lane INTEGER NOT NULL,"
        " type TEXT NOT NULL,"
        " severity TEXT, created_at REAL NOT NULL, payload BLOB NOT NULL, delivered_at REAL)"
    )
    conn.execute("CREATE INDEX events_pending ON events(lane, seq) WHERE delivered_at IS NULL")
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


async def outbox_append_rate(workdir: Path, evs: list[Event]) -> tuple[float, float, int]:
    # As the agent's producers do: submit without waiting; flush() returns once all are durable.
    async with Outbox(workdir / "ob", OutboxConfig(synchronous="full"), SOURCE) as ob:
        start = time.perf_counter()
        for e in evs:
            ob.submit(e)
        await ob.flush()
        elapsed = time.perf_counter() - start
        commits = ob.stats.commits
    # Building the events (ULID, dataclass) too, as the agent does for each event.
    async with Outbox(workdir / "ob2", OutboxConfig(synchronous="full"), SOURCE) as ob:
        start = time.perf_counter()
        for e in events(len(evs)):
            ob.submit(e)
        await ob.flush()
        built = time.perf_counter() - start
    return len(evs) / elapsed, len(evs) / built, commits


async def append_rate_while_dropping(workdir: Path, n: int) -> tuple[float, float, int, int]:
    """Appends while the disk floor policy drops: a floor 16 MiB below the free space now, so once the
    outbox has grown by that much each write-path check drops the oldest telemetry. Returns the
    plain rate (same run, same events) and the rate while dropping, with what was dropped."""
    rates = []
    dropped = passes = 0
    for floor in (False, True):
        extra: dict[str, object] = {}
        if floor:
            free = shutil.disk_usage(workdir).free
            extra = {"min_free_bytes": free - (16 << 20), "min_free_percent": 100, "min_free_min_bytes": 0}
        config = OutboxConfig(synchronous="full", reserve_bytes=0, **extra)  # type: ignore[arg-type]
        async with Outbox(workdir / ("floor" if floor else "plain"), config, SOURCE) as ob:
            batch = events(n)
            start = time.perf_counter()
            for e in batch:
                ob.submit(e)
            await ob.flush()
            rates.append(n / (time.perf_counter() - start))
            dropped = sum(ob.stats.dropped_undelivered.values())
            passes = ob.stats.inline_drops
    return rates[0], rates[1], dropped, passes


# -- 2. drain --------------------------------------------------------------------------------


def bare_paho_rate(port: int, payloads: list[bytes], window: int) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id="bench-bare")
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]

    def on_publish(*_: object) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.2)
    start = time.perf_counter()
    for p in payloads:
        client.publish("campus/v1/bench/gw-1/events/device", p, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    return len(payloads) / elapsed


async def link_drain_rate(
    workdir: Path, port: int, evs: list[Event], window: int
) -> tuple[float, list[bytes]]:
    async with Outbox(workdir / "drain", OutboxConfig(), SOURCE) as ob:
        await asyncio.gather(*[ob.append_nowait(e) for e in evs])
        payloads = [r.payload for r in ob.fetch_pending(Lane.TELEMETRY, 0, len(evs))]
        link = MqttLink(
            MqttConfig(url=f"mqtt://127.0.0.1:{port}", inflight_window=window),
            ob,
            site="bench",
            gateway="gw-1",
            version="bench",
            backoff=Backoff(),
        )
        task = asyncio.create_task(link.run())
        await link.connected.wait()
        start = time.perf_counter()
        while link.stats.acked < len(evs):
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        await link.shutdown(1.0)
        await task
    return len(evs) / elapsed, payloads


# -- 3. memory -------------------------------------------------------------------------------


def agent_rss(workdir: Path, data: Path, url: str, seconds: float) -> tuple[float, float]:
    """Start the agent, sample RSS for ``seconds``; returns (last, peak) in MiB."""
    config = workdir / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "gateway": {"site": "bench", "id": "gw-1"},
                "mqtt": {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
                "simulated": [{"id": "sim-1", "interval_s": 1.0}, {"id": "sim-2", "interval_s": 1.0}],
            }
        )
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--mqtt-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = last = 0.0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.25)
            last = rss_mib(proc.pid)
            peak = max(peak, last)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return last, peak


async def fill_backlog(data: Path, n: int) -> None:
    async with Outbox(data, OutboxConfig(synchronous="normal"), SOURCE) as ob:
        chunk = 50_000
        for start in range(0, n, chunk):
            await asyncio.gather(*[ob.append_nowait(e) for e in events(min(chunk, n - start))])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000, help="events for the append benchmark")
    parser.add_argument("--drain-events", type=int, default=50_000, help="events for the drain benchmark")
    parser.add_argument("--window", type=int, default=100, help="QoS 1 in-flight window")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="backlog for the memory benchmark")
    parser.add_argument(
        "--disk-floor-only", action="store_true", help="only the append rate while the disk floor drops"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}"
    )
    try:
        evs = events(args.events)
        rows = [(i + 1, e.id, 2, e.type, None, time.time(), e.to_json(i + 1)) for i, e in enumerate(evs)]
        raw = raw_insert_rate(workdir, rows, 5000)
        append, built, commits = asyncio.run(outbox_append_rate(workdir, evs))
        print(
            f"append: raw batched inserts {raw:,.0f}/s; outbox {append:,.0f}/s (ratio {append / raw:.2f}, "
            f"{commits} commits for {args.events:,} events); building events too {built:,.0f}/s; bar 50,000/s"
        )
        plain, dropping, dropped, passes = asyncio.run(append_rate_while_dropping(workdir, args.events))
        print(
            f"append while the disk floor policy drops: {dropping:,.0f}/s vs {plain:,.0f}/s without "
            f"(ratio {dropping / plain:.2f}); {dropped:,} dropped in {passes} write-path passes; bar 50,000/s"
        )
        if args.disk_floor_only:
            return

        broker, port = start_broker(workdir)
        try:
            devs = events(args.drain_events)
            link_rate, payloads = asyncio.run(link_drain_rate(workdir, port, devs, args.window))
            bare = bare_paho_rate(port, payloads, args.window)
            link_rate2, _ = asyncio.run(
                link_drain_rate(workdir / "second", port, events(args.drain_events), args.window)
            )
            bare2 = bare_paho_rate(port, payloads, args.window)
            link_best, bare_best = max(link_rate, link_rate2), max(bare, bare2)
            print(
                f"drain: bare paho QoS 1 {bare_best:,.0f}/s; outbox via MqttLink {link_best:,.0f}/s "
                f"(ratio {link_best / bare_best:.2f}, window {args.window}, best of 2 each); bar 0.8"
            )

            idle, idle_peak = agent_rss(workdir, workdir / "idle", f"mqtt://127.0.0.1:{port}", 8)
            data = workdir / "backlog"
            t0 = time.perf_counter()
            asyncio.run(fill_backlog(data, args.backlog))
            fill_s = time.perf_counter() - t0
            dead = f"mqtt://127.0.0.1:{free_port()}"
            held, held_peak = agent_rss(workdir, data, dead, 8)
            draining, drain_peak = agent_rss(workdir, data, f"mqtt://127.0.0.1:{port}", 15)
            print(
                f"memory: agent RSS idle {idle:.0f} MiB (peak {idle_peak:.0f}); with {args.backlog:,} events "
                f"backlog, broker down {held:.0f} MiB (peak {held_peak:.0f}); draining it {draining:.0f} MiB "
                f"(peak {drain_peak:.0f}); ratio peak/idle {drain_peak / idle_peak:.2f}; "
                f"(backlog filled in {fill_s:.0f}s); bar RSS < 400 MiB, flat with backlog"
            )
        finally:
            broker.terminate()
            broker.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

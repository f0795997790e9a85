"""Fleet simulation: N gateways -> Mosquitto -> K ingest consumers (processes) -> PostgreSQL.

For each K (default 1, 2, 4), on a fresh database:
1. *Rush*: every gateway publishes the morning-rush mix (two thirds gate passes, a third attendance,
   1% alerts, which go out on two topics) at ``--rate`` events/s for ``--rush-s`` seconds. Latency is
   the event's ``time`` (set when the simulated gateway builds it) to the commit time of its row
   (``pg_xact_commit_timestamp``, the server runs with ``track_commit_timestamp=on``): p50 and p99.
2. *Flood*: every gateway publishes ``--flood`` events as fast as the broker accepts them. Ingest
   events/s = events / (last commit - first event time), next to the rate at which the broker
   acknowledged the publishes in the same run (the ratio says whether ingest keeps up).
3. *Drain*: the consumers stop, the fleet publishes ``--drain`` events per gateway (the broker keeps
   them in the consumers' sessions), the consumers start again: events / (last commit - start) is
   what K consumers and the database sustain without the simulated fleet competing for the cores.
Then a crash run with K=2: a flood during which one consumer is killed with SIGKILL and restarted
with the same client id a few seconds later.

After every run the database is checked against what was sent: rows == events sent, every gateway's
stored count == its highest seq == what it sent, no open gap, no dead letter. A mismatch fails the run.

Gateways are light simulators (tests/central/sim_gateway.py): real envelopes and topics, each with
its own MQTT client id, retained status and Last Will, but no outbox behind them; they run in
``--publishers`` processes. Everything runs on this machine, so consumers, broker, database and the
simulated fleet share its cores. PostgreSQL keeps its durable defaults (fsync, synchronous_commit).

Run: ``python bench/fleet.py [--gateways 200] [--consumers 1,2,4] [--rate 2] [--rush-s 20]
[--flood 100] [--no-crash]``. It starts its own Mosquitto and PostgreSQL on free ports.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from tests.central.pg_server import PostgresServer  # noqa: E402
from tests.central.sim_gateway import SimGateway, morning_rush  # noqa: E402
from tests.conftest import MosquittoBroker  # noqa: E402

PREFIX = "campus/v1"


# --- publisher process: a slice of the fleet, driven by commands on stdin -----------------------


def publisher(url: str, first: int, count: int) -> None:
    """Own gateways ``first .. first+count-1``; answer each stdin command with a 'done' line."""
    rng = random.Random(first)
    gateways = [
        SimGateway(url, f"site{i % 10}", f"gw{i:04d}", prefix=PREFIX) for i in range(first, first + count)
    ]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        sent = messages = 0
        started = time.time()
        if cmd[0] == "rush":
            rate, duration = float(cmd[1]), float(cmd[2])
            tick = 0.05
            owed = 0.0
            next_tick = time.monotonic()
            end = next_tick + duration
            while time.monotonic() < end:
                owed += rate * tick
                while owed >= 1.0:
                    owed -= 1.0
                    for gw in gateways:
                        event = morning_rush(gw.site, gw.gateway, rng)
                        gw.publish(event)
                        sent += 1
                        messages += 2 if event.severity else 1
                next_tick += tick
                time.sleep(max(0.0, next_tick - time.monotonic()))
        elif cmd[0] == "flood":
            per_gateway = int(cmd[1])
            for _ in range(per_gateway):
                for gw in gateways:
                    event = morning_rush(gw.site, gw.gateway, rng)
                    gw.publish(event)
                    sent += 1
                    messages += 2 if event.severity else 1
        for gw in gateways:
            gw.flush(120)
        print(f"done {sent} {messages} {started} {time.time()}", flush=True)
    for gw in gateways:
        gw.close()


@dataclass
class PhaseResult:
    sent: int
    messages: int
    started: float
    acked: float


class Fleet:
    """The publisher processes, commanded together."""

    def __init__(self, url: str, gateways: int, processes: int) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        per = -(-gateways // processes)
        for first in range(0, gateways, per):
            count = min(per, gateways - first)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--publisher", url, str(first), str(count)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=REPO_ROOT,
                )
            )
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a publisher process failed to start")

    def run(self, command: str) -> PhaseResult:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        results = []
        for proc in self.procs:
            assert proc.stdout is not None
            parts = proc.stdout.readline().split()
            if not parts or parts[0] != "done":
                raise RuntimeError(f"publisher failed on {command!r}")
            results.append(parts)
        return PhaseResult(
            sent=sum(int(p[1]) for p in results),
            messages=sum(int(p[2]) for p in results),
            started=min(float(p[3]) for p in results),
            acked=max(float(p[4]) for p in results),
        )

    def close(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        for proc in self.procs:
            proc.wait(60)


# --- baseline: the same stream, straight off the broker ---------------------------------------------


class TransportProbe:
    """A plain (unshared) subscriber that notes event time -> arrival for every event: the latency
    the broker and the simulated fleet add on their own, measured in the same run as the ingest's."""

    def __init__(self, url: str) -> None:
        address = urlsplit(url)
        self.latencies_ms: list[float] = []
        self.recording = False
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-probe", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(f"{PREFIX}/+/+/events/#", qos=1)
        self.client.connect(address.hostname or "127.0.0.1", address.port or 1883)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("probe subscription not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.recording:
            at = datetime.fromisoformat(orjson.loads(msg.payload)["time"].replace("Z", "+00:00"))
            self.latencies_ms.append((datetime.now(UTC) - at).total_seconds() * 1000)

    def percentiles(self) -> tuple[float, float]:
        cuts = statistics.quantiles(self.latencies_ms, n=100)
        return cuts[49], cuts[98]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- consumers -------------------------------------------------------------------------------------


class Consumer:
    def __init__(
        self, url: str, dsn: str, group: str, client_id: str, logdir: Path, batch_wait_ms: float
    ) -> None:
        self.argv = [
            sys.executable, "-m", "sync.central", "ingest", "--mqtt-url", url, "--database", dsn,
            "--group", group, "--client-id", client_id, "--stats-interval", "3600",
            "--batch-wait-ms", str(batch_wait_ms),
        ]  # fmt: skip
        self.log = logdir / f"{client_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu_at_start = 0.0
        self.cpu_before = 0.0  # CPU of earlier runs of this consumer (it is restarted by the drain phase)

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the process
        connected = self.log.read_text().count("connected as") if self.log.exists() else 0
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        deadline = time.monotonic() + 30
        while self.log.read_text().count("connected as") <= connected:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"consumer did not connect; see {self.log}")
            time.sleep(0.05)
        self.cpu_at_start = _cpu_s(self.proc.pid, children=False)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) spent ingesting: since connected, start-up (imports) excluded."""
        assert self.proc is not None
        return self.cpu_before + _cpu_s(self.proc.pid, children=False) - self.cpu_at_start

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_before = self.cpu_s()
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def final_counters(self) -> str:
        lines = [line for line in self.log.read_text().splitlines() if "ingest stopped" in line]
        return lines[-1].split("counters: ", 1)[1] if lines else "?"


# --- checks and figures ----------------------------------------------------------------------------


def _cpu_s(pid: int, *, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are fields 14-17 of stat(5); index 11 here after the split.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def storage_per_event(dsn: str) -> tuple[float, float]:
    """Bytes per stored event: the table with its TOAST, and table + indexes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            b"SELECT pg_table_size('events')::float / count(*),"
            b" pg_total_relation_size('events')::float / count(*) FROM events"
        ).fetchone()
        assert row is not None
        return float(row[0]), float(row[1])


def scalar(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return row[0]


def wait_count(dsn: str, expected: int, timeout: float) -> float:
    """Wait until ``events`` holds ``expected`` rows; returns when it did (wall clock)."""
    deadline = time.monotonic() + timeout
    while True:
        n = scalar(dsn, "SELECT count(*) FROM events")
        if n >= expected:
            return time.time()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {n} of {expected} events arrived within {timeout}s")
        time.sleep(0.1)


def verify(dsn: str, sent: int, gateways: int) -> str:
    """Nothing lost, nothing twice: rows == sent; per gateway stored == max seq; no gap, no dead letter."""
    rows = scalar(dsn, "SELECT count(*) FROM events")
    distinct = scalar(dsn, "SELECT count(DISTINCT (source, id)) FROM events")
    per_gateway_ok = scalar(
        dsn,
        "SELECT count(*) FROM gateways g WHERE g.events = g.max_seq "
        "AND g.events = (SELECT count(*) FROM events e WHERE e.gateway = g.gateway)",
    )
    open_gaps = scalar(dsn, "SELECT count(*) FROM open_gaps")
    dead = scalar(dsn, "SELECT count(*) FROM dead_letters")
    problems = []
    if rows != sent:
        problems.append(f"{rows} rows for {sent} events sent")
    if distinct != rows:
        problems.append(f"{rows - distinct} duplicated rows")
    if per_gateway_ok != gateways:
        problems.append(f"{gateways - per_gateway_ok} gateways whose stored count != their last seq")
    if open_gaps:
        problems.append(f"{open_gaps} open gaps")
    if dead:
        problems.append(f"{dead} dead letters")
    if problems:
        raise RuntimeError("verification failed: " + "; ".join(problems))
    return f"verified: {rows} rows == {sent} sent, 0 duplicated, 0 open gaps, 0 dead letters"


def latency_ms(dsn: str, since: float, until: float) -> tuple[float, float, int]:
    sql = f"""
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY l), count(*)
        FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - time) * 1000 AS l FROM events
              WHERE time >= to_timestamp({since}) AND time <= to_timestamp({until})) x
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return float(row[0]), float(row[1]), int(row[2])


def flood_rate(dsn: str, since: float) -> tuple[float, float]:
    sql = f"""
        SELECT count(*), extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(time))
        FROM events WHERE time >= to_timestamp({since})
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return float(row[0]), float(row[1])


# --- runs ------------------------------------------------------------------------------------------


def run_k(
    args: argparse.Namespace, broker: MosquittoBroker, pg: PostgresServer, k: int, logdir: Path
) -> None:
    dsn = pg.create_database(f"fleet_k{k}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        from sync.central.schema import apply_migrations

        apply_migrations(conn)  # before K consumers race to do it
    group = f"bench{uuid.uuid4().hex[:6]}"
    consumers = [
        Consumer(broker.url, dsn, group, f"{group}-c{i}", logdir, args.batch_wait_ms) for i in range(k)
    ]
    for c in consumers:
        c.start()
    fleet = Fleet(broker.url, args.gateways, args.publishers)
    probe = TransportProbe(broker.url)
    assert pg.proc is not None
    pg_cpu_before = _cpu_s(pg.proc.pid, children=True)
    try:
        # Rush: fixed offered load, latency.
        probe.latencies_ms.clear()
        probe.recording = True
        rush = fleet.run(f"rush {args.rate} {args.rush_s}")
        probe.recording = False
        wait_count(dsn, rush.sent, 120)
        p50, p99, n = latency_ms(dsn, rush.started, rush.acked)
        b50, b99 = probe.percentiles()
        offered = rush.sent / (rush.acked - rush.started)
        print(
            f"K={k} rush: {rush.sent} events ({rush.messages} messages) at {offered:.0f} events/s offered; "
            f"latency event time -> row committed: p50 {p50:.1f} ms, p99 {p99:.1f} ms (n={n}); "
            f"baseline event time -> a plain subscriber: p50 {b50:.1f} ms, p99 {b99:.1f} ms"
        )
        # Flood: as fast as the broker takes it, throughput.
        flood = fleet.run(f"flood {args.flood}")
        wait_count(dsn, rush.sent + flood.sent, 300)
        count, span = flood_rate(dsn, flood.started)
        accept = flood.sent / (flood.acked - flood.started)
        ingest = count / span
        print(
            f"K={k} flood: {flood.sent} events ({flood.messages} messages); ingest {ingest:.0f} events/s "
            f"end to end; broker accepted the publishes at {accept:.0f} events/s; ratio {ingest / accept:.2f}"
        )
        # Drain: the consumers are stopped while the fleet publishes (the broker queues every message in
        # their sessions), then started: their rate alone, with the fleet idle.
        for c in consumers:
            c.stop()
        drain = fleet.run(f"flood {args.drain}")
        started = time.time()
        for c in consumers:
            c.start()
        done = wait_count(dsn, rush.sent + flood.sent + drain.sent, 300)
        # Rate between the first and the last commit, not counting the first transaction's rows
        # (they were committed at the start of that span, not during it).
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                b"WITH c AS (SELECT pg_xact_commit_timestamp(xmin) AS at FROM events"
                b" WHERE time >= to_timestamp(%s))"
                b" SELECT count(*) FILTER (WHERE at > (SELECT min(at) FROM c)),"
                b" extract(epoch FROM max(at) - min(at)) FROM c",
                (drain.started,),
            ).fetchone()
            assert row is not None
        drain_rate = float(row[0]) / float(row[1])
        print(
            f"K={k} drain: {drain.sent} queued events ingested at {drain_rate:.0f} events/s between "
            f"commits, fleet idle (all stored {done - started:.1f} s after the consumers were started)"
        )
        total = rush.sent + flood.sent + drain.sent
        print(f"K={k} {verify(dsn, total, args.gateways)}")
        consumer_cpu = sum(c.cpu_s() for c in consumers)
        table, with_indexes = storage_per_event(dsn)
    finally:
        probe.close()
        fleet.close()
        for c in consumers:
            c.stop()
    # The database backends are children of the postmaster: their CPU lands in its cutime/cstime
    # once the consumers' connections have closed.
    time.sleep(0.5)
    pg_cpu = _cpu_s(pg.proc.pid, children=True) - pg_cpu_before
    print(
        f"K={k} cost: consumers {consumer_cpu / total * 1e6:.0f} µs CPU per event, PostgreSQL backends "
        f"{pg_cpu / total * 1e6:.0f} µs CPU per event; storage {table:.0f} B/event in the table, "
        f"{with_indexes:.0f} B/event with its indexes"
    )
    for c in consumers:
        print(f"K={k} {c.log.stem}: {c.final_counters()}")


def run_crash(args: argparse.Namespace, broker: MosquittoBroker, pg: PostgresServer, logdir: Path) -> None:
    dsn = pg.create_database("fleet_crash")
    with psycopg.connect(dsn, autocommit=True) as conn:
        from sync.central.schema import apply_migrations

        apply_migrations(conn)
    group = f"crash{uuid.uuid4().hex[:6]}"
    consumers = [
        Consumer(broker.url, dsn, group, f"{group}-c{i}", logdir, args.batch_wait_ms) for i in range(2)
    ]
    for c in consumers:
        c.start()
    fleet = Fleet(broker.url, args.gateways, args.publishers)
    try:
        flood: list[PhaseResult] = []
        worker = threading.Thread(target=lambda: flood.append(fleet.run(f"flood {args.crash_flood}")))
        worker.start()
        target = args.gateways * args.crash_flood // 4
        while scalar(dsn, "SELECT count(*) FROM events") < target:
            time.sleep(0.02)
        consumers[0].kill()
        killed_at_rows = scalar(dsn, "SELECT count(*) FROM events")
        print(
            f"crash: consumer {consumers[0].log.stem} killed with SIGKILL at {killed_at_rows} rows "
            f"of {args.gateways * args.crash_flood}"
        )
        time.sleep(args.down_s)
        consumers[0].start()
        worker.join()
        sent = flood[0].sent
        wait_count(dsn, sent, 300)
        time.sleep(1)  # anything still redelivered now would show as a duplicate or a row too many
        outcome = verify(dsn, sent, args.gateways)
        print(f"crash: {sent} events sent, consumer down {args.down_s:.0f} s; {outcome}")
    finally:
        fleet.close()
        for c in consumers:
            c.stop()
    for c in consumers:
        print(f"crash {c.log.stem} (c0: counters since its restart): {c.final_counters()}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        publisher(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=200, help="simulated gateways")
    parser.add_argument("--publishers", type=int, default=2, help="processes the gateways are spread over")
    parser.add_argument("--consumers", default="1,2,4", help="comma-separated consumer counts K")
    parser.add_argument("--rate", type=float, default=2.0, help="rush events/s per gateway")
    parser.add_argument("--rush-s", type=float, default=20.0, help="rush duration")
    parser.add_argument("--flood", type=int, default=100, help="flood events per gateway")
    parser.add_argument(
        "--drain", type=int, default=100, help="events per gateway queued for the drain phase"
    )
    parser.add_argument("--crash-flood", type=int, default=150, help="events per gateway in the crash run")
    parser.add_argument("--down-s", type=float, default=3.0, help="how long the killed consumer stays down")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=20.0,
        help="consumers' batch gathering time (their default: 20)",
    )
    parser.add_argument("--no-crash", action="store_true", help="skip the crash run")
    args = parser.parse_args()

    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores; broker, database, consumers and fleet all on it")
    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    broker = MosquittoBroker(workdir)
    broker.start()
    pg = PostgresServer({"track_commit_timestamp": "on", "max_connections": "50", "shared_buffers": "256MB"})
    pg.start()
    try:
        for k in (int(x) for x in args.consumers.split(",")):
            run_k(args, broker, pg, k, workdir)
        if not args.no_crash:
            run_crash(args, broker, pg, workdir)
    finally:
        pg.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

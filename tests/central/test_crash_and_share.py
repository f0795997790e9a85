"""Consumers sharing one subscription, and a consumer killed with SIGKILL mid-stream: nothing lost,
nothing stored twice. Real Mosquitto, real PostgreSQL, consumers as real processes."""

from __future__ import annotations

import ast
import random
import signal
from pathlib import Path

import psycopg

from tests.central.helpers import (
    consumer_thread,
    query,
    scalar,
    start_consumer_process,
    stop_process,
    unique,
    wait_rows,
    wait_subscribed,
    wait_until,
)
from tests.central.pg_server import PostgresServer
from tests.central.sim_gateway import SimGateway, morning_rush
from tests.conftest import MosquittoBroker

SITE = "south"


def publish(gateways: list[SimGateway], per_gateway: int, seed: int) -> set[str]:
    """Interleave ``per_gateway`` morning-rush events over the gateways; returns the ids sent."""
    rng = random.Random(seed)
    ids: set[str] = set()
    for _ in range(per_gateway):
        for gw in gateways:
            event = morning_rush(SITE, gw.gateway, rng)
            gw.publish(event)
            ids.add(event.id)
    for gw in gateways:
        gw.flush()
    return ids


def test_two_consumers_in_one_group_split_the_load_without_loss(
    mosquitto: MosquittoBroker, database: str
) -> None:
    prefix, group = unique("share"), unique("g")
    with (
        consumer_thread(mosquitto.url, database, prefix=prefix, group=group, client_id=unique("a")) as a,
        consumer_thread(mosquitto.url, database, prefix=prefix, group=group, client_id=unique("b")) as b,
    ):
        gateways = [SimGateway(mosquitto.url, SITE, f"gw{i}", prefix=prefix) for i in range(4)]
        sent = publish(gateways, 500, seed=1)
        wait_rows(database, "SELECT count(*) FROM events", len(sent), timeout=60)
        for gw in gateways:
            gw.close()
    stored = {r[0] for r in query(database, "SELECT id FROM events")}
    assert stored == sent
    assert scalar(database, "SELECT count(*) FROM events") == len(sent)
    # Both took a real share, and together they stored each event exactly once.
    assert a.stats.events_stored > len(sent) // 4 and b.stats.events_stored > len(sent) // 4
    assert a.stats.events_stored + b.stats.events_stored == len(sent)
    # The alerts' second copies were the only duplicates either saw.
    alerts = scalar(database, "SELECT count(*) FROM events WHERE severity IS NOT NULL")
    assert a.stats.duplicates + b.stats.duplicates == alerts
    # Each gateway's seqs were split across two consumers, so transient gaps came and went; once
    # everything is in, none is open and the high-water mark is each gateway's last seq.
    assert scalar(database, "SELECT count(*) FROM open_gaps") == 0
    assert query(database, "SELECT DISTINCT max_seq FROM gateways") == [(500,)]
    assert scalar(database, "SELECT count(*) FROM dead_letters") == 0


def test_consumer_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    mosquitto: MosquittoBroker, database: str, tmp_path: Path
) -> None:
    prefix, group, client_id = unique("crash"), unique("g"), unique("c")
    log = tmp_path / "ingest.log"
    # Small batches, so the consumer has many commits to go when it is killed.
    small = ("--batch-max", "100")
    proc = start_consumer_process(
        mosquitto.url, database, prefix=prefix, group=group, client_id=client_id, log=log, extra=small
    )
    try:
        wait_subscribed(log)
        gateways = [SimGateway(mosquitto.url, SITE, f"gw{i}", prefix=prefix) for i in range(3)]
        # Frozen while the stream is published, so it cannot finish before the test gets to kill it.
        proc.send_signal(signal.SIGSTOP)
        sent = publish(gateways, 2000, seed=2)
        proc.send_signal(signal.SIGCONT)
        with psycopg.connect(database, autocommit=True) as conn:
            wait_until(
                lambda: conn.execute("SELECT count(*) >= 500 FROM events").fetchone() == (True,), 60, "500"
            )
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = scalar(database, "SELECT count(*) FROM events")
        assert at_kill < len(sent), "the consumer finished before the kill; the test proved nothing"
        # While it is down, the gateways go on; the broker queues its share in its session.
        sent |= publish(gateways, 500, seed=3)

        proc = start_consumer_process(
            mosquitto.url, database, prefix=prefix, group=group, client_id=client_id, log=log, extra=small
        )
        wait_rows(database, "SELECT count(*) FROM events", len(sent), timeout=90)
        for gw in gateways:
            gw.close()
    finally:
        stop_process(proc)
    stored = query(database, "SELECT id, count(*) OVER () FROM events")
    assert {r[0] for r in stored} == sent
    assert stored[0][1] == len(sent)
    assert scalar(database, "SELECT count(*) FROM open_gaps") == 0
    assert query(database, "SELECT DISTINCT max_seq FROM gateways") == [(2500,)]
    assert scalar(database, "SELECT count(*) FROM dead_letters") == 0
    # The restarted consumer got the dead one's unacknowledged in-flight window again (DUP flag),
    # which is what the manual acks are for; the unique key then kept those rows single.
    final = [line for line in log.read_text().splitlines() if "ingest stopped; counters: " in line]
    assert len(final) == 1, "the killed consumer must not have logged a clean stop"
    counters = ast.literal_eval(final[0].split("counters: ", 1)[1])
    assert counters["redelivered"] > 0
    assert counters["dead_letters"] == {}


def test_database_restart_mid_stream_loses_nothing(mosquitto: MosquittoBroker) -> None:
    """PostgreSQL goes away under a running consumer: it acknowledges nothing it could not commit,
    reconnects, retries its batch, and the stream resumes with nothing lost."""
    server = PostgresServer({"fsync": "off"})
    server.start()
    try:
        dsn = server.create_database("outage")
        prefix, group = unique("pgdown"), unique("g")
        with consumer_thread(
            mosquitto.url, dsn, prefix=prefix, group=group, client_id=unique("c")
        ) as consumer:
            gateways = [SimGateway(mosquitto.url, SITE, f"gw{i}", prefix=prefix) for i in range(2)]
            sent = publish(gateways, 250, seed=4)
            wait_rows(dsn, "SELECT count(*) FROM events", len(sent))
            server.stop(remove=False)
            sent |= publish(gateways, 250, seed=5)  # arrives while the database is down
            wait_until(lambda: consumer.stats.batch_retries > 0, 30, "a failed batch")
            server.start()
            wait_rows(dsn, "SELECT count(*) FROM events", len(sent), timeout=90)
            for gw in gateways:
                gw.close()
        assert {r[0] for r in query(dsn, "SELECT id FROM events")} == sent
        assert scalar(dsn, "SELECT count(*) FROM events") == len(sent)
        assert scalar(dsn, "SELECT count(*) FROM open_gaps") == 0
    finally:
        server.stop()


def test_broker_restarts_consumer_reconnects_and_its_queue_survives(tmp_path: Path) -> None:
    """A clean broker restart (with persistence): the running consumer reconnects and resumes; and
    what the broker queued for a stopped consumer's session is still delivered after the restart."""
    broker = MosquittoBroker(
        tmp_path, f"persistence true\npersistence_location {tmp_path}/\nautosave_interval 3600"
    )
    broker.start()
    server = PostgresServer({"fsync": "off"})
    server.start()
    try:
        dsn = server.create_database("brokerdown")
        prefix, group, client_id = unique("mqdown"), unique("g"), unique("c")
        count = "SELECT count(*) FROM events"
        with consumer_thread(broker.url, dsn, prefix=prefix, group=group, client_id=client_id) as consumer:
            before = [SimGateway(broker.url, SITE, f"a{i}", prefix=prefix) for i in range(2)]
            sent = publish(before, 200, seed=6)
            for gw in before:
                gw.close(clean=False)
            wait_rows(dsn, count, len(sent))
            broker.restart()
            wait_until(consumer.subscribed.is_set, 30, "the consumer to reconnect and subscribe")
            after = [SimGateway(broker.url, SITE, f"b{i}", prefix=prefix) for i in range(2)]
            sent |= publish(after, 200, seed=7)
            for gw in after:
                gw.close(clean=False)
            wait_rows(dsn, count, len(sent))
        # The consumer is stopped; its persistent session collects its share across a broker restart.
        queued = [SimGateway(broker.url, SITE, f"c{i}", prefix=prefix) for i in range(2)]
        sent |= publish(queued, 200, seed=8)
        for gw in queued:
            gw.close(clean=False)
        broker.restart()
        with consumer_thread(broker.url, dsn, prefix=prefix, group=group, client_id=client_id):
            wait_rows(dsn, count, len(sent))
        assert scalar(dsn, count) == len(sent)
        assert {r[0] for r in query(dsn, "SELECT id FROM events")} == sent
        assert scalar(dsn, "SELECT count(*) FROM dead_letters") == 0
    finally:
        server.stop()
        broker.stop()

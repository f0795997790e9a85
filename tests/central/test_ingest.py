"""The ingest consumer against a real Mosquitto and a real PostgreSQL: idempotency, gaps,
dead letters, gateway state from the retained status and the Last Will."""

from __future__ import annotations

import random
import subprocess
import sys

import orjson

from sync.central.schema import MIGRATIONS
from tests.central.helpers import REPO_ROOT, consumer_thread, query, scalar, unique, wait_rows, wait_until
from tests.central.sim_gateway import SimGateway, attendance, forced, granted
from tests.conftest import MosquittoBroker

SITE = "north"


def test_same_event_twice_and_an_alert_on_two_topics_are_stored_once(
    mosquitto: MosquittoBroker, database: str
) -> None:
    prefix, group = unique("idem"), unique("g")
    rng = random.Random(10)
    with consumer_thread(
        mosquitto.url, database, prefix=prefix, group=group, client_id=unique("c")
    ) as consumer:
        gw = SimGateway(mosquitto.url, SITE, "gw1", prefix=prefix)
        event = granted(SITE, "gw1", rng)
        gw.publish(event, seq=1)
        gw.publish(event, seq=1)  # a redelivery after a lost PUBACK: same id, same seq
        alert = forced(SITE, "gw1", rng)
        gw.publish(alert, seq=2)  # goes to alerts/{severity} and events/access
        gw.flush()
        # Four messages carry two events: wait until all four were handled, not just two rows.
        wait_until(lambda: consumer.stats.events_stored + consumer.stats.duplicates >= 4, 20, "4 messages")
        gw.close()
    rows = query(database, "SELECT source, id, seq, severity, topic FROM events ORDER BY seq")
    assert [(r[0], r[1], r[2]) for r in rows] == [(event.source, event.id, 1), (alert.source, alert.id, 2)]
    assert rows[1][3] == alert.severity
    assert consumer.stats.duplicates == 2
    assert consumer.stats.events_stored == 2
    assert scalar(database, "SELECT count(*) FROM gaps") == 0
    assert scalar(database, "SELECT count(*) FROM dead_letters") == 0
    assert [r[0] for r in query(database, "SELECT id FROM open_alerts")] == [alert.id]
    query(
        database,
        "INSERT INTO alert_acknowledgements (source, id, acknowledged_by) "
        "VALUES (%s, %s, 'guard-1') RETURNING 1",
        (alert.source, alert.id),
    )
    assert scalar(database, "SELECT count(*) FROM open_alerts") == 0


def test_gap_is_detected_then_filled_by_late_events(mosquitto: MosquittoBroker, database: str) -> None:
    prefix, group = unique("gap"), unique("g")
    rng = random.Random(11)
    with consumer_thread(mosquitto.url, database, prefix=prefix, group=group, client_id=unique("c")):
        gw = SimGateway(mosquitto.url, SITE, "gw2", prefix=prefix)
        for seq in (1, 2, 6):
            gw.publish(granted(SITE, "gw2", rng), seq=seq)
        gw.flush()
        wait_rows(database, "SELECT count(*) FROM events", 3)
        gaps = query(database, "SELECT gateway, from_seq, to_seq, missing, filled_at FROM gaps")
        assert gaps == [(f"campus/{SITE}/gw2", 3, 5, 3, None)]
        assert query(database, "SELECT from_seq, to_seq FROM open_gaps") == [(3, 5)]
        assert scalar(database, "SELECT max_seq FROM gateways") == 6

        gw.publish(granted(SITE, "gw2", rng), seq=4)
        gw.flush()
        wait_rows(database, "SELECT count(*) FROM events", 4)
        assert query(database, "SELECT missing, filled_at IS NULL FROM gaps") == [(2, True)]

        for seq in (3, 5):
            gw.publish(granted(SITE, "gw2", rng), seq=seq)
        gw.publish(granted(SITE, "gw2", rng), seq=9)  # a new gap 7..8 after the old one closed
        gw.flush()
        wait_rows(database, "SELECT count(*) FROM events", 7)
        gw.close()
    gaps = query(
        database, "SELECT from_seq, to_seq, missing, filled_at IS NOT NULL FROM gaps ORDER BY from_seq"
    )
    assert gaps == [(3, 5, 0, True), (7, 8, 2, False)]
    assert query(database, "SELECT from_seq FROM open_gaps") == [(7,)]
    assert scalar(database, "SELECT max_seq FROM gateways") == 9


def test_bad_messages_are_dead_lettered_and_the_stream_goes_on(
    mosquitto: MosquittoBroker, database: str
) -> None:
    prefix, group = unique("dead"), unique("g")
    rng = random.Random(12)
    with consumer_thread(
        mosquitto.url, database, prefix=prefix, group=group, client_id=unique("c")
    ) as consumer:
        gw = SimGateway(mosquitto.url, SITE, "gw3", prefix=prefix)
        base = gw.topics.base
        gw.publish_raw(f"{base}/events/access", b"\x00\xffnot json")
        schema_invalid = orjson.loads(granted(SITE, "gw3", rng).to_json(1))
        del schema_invalid["data"]["gate"]
        gw.publish_raw(f"{base}/events/access", orjson.dumps(schema_invalid))
        gw.publish_raw(f"{base}/mystery/channel", b"{}")
        # Valid for the schema, refused by PostgreSQL (no NUL in text): must not block the stream.
        nul = orjson.loads(granted(SITE, "gw3", rng).to_json(2))
        nul["data"]["gate"] = "gate\u0000one"
        nul_payload = orjson.dumps(nul)
        gw.publish_raw(f"{base}/events/access", nul_payload)
        good = attendance(SITE, "gw3", rng)
        gw.publish(good, seq=3)
        gw.flush()
        wait_rows(database, "SELECT count(*) FROM dead_letters", 4)
        wait_rows(database, "SELECT count(*) FROM events", 1)
        gw.close()
    dead = query(database, "SELECT code, topic, reason, payload FROM dead_letters ORDER BY id")
    assert sorted(d[0] for d in dead) == ["bad_json", "database_rejected", "schema_invalid", "unknown_topic"]
    by_code = {d[0]: d for d in dead}
    assert bytes(by_code["bad_json"][3]) == b"\x00\xffnot json"
    assert "gate" in by_code["schema_invalid"][2]
    assert by_code["unknown_topic"][1].endswith("/mystery/channel")
    assert bytes(by_code["database_rejected"][3]) == nul_payload
    assert query(database, "SELECT id FROM events") == [(good.id,)]
    assert dict(consumer.stats.dead_letters) == {
        "bad_json": 1,
        "schema_invalid": 1,
        "unknown_topic": 1,
        "database_rejected": 1,
    }
    # The attendance view counts the one valid attendance event, under its class.
    today = query(database, "SELECT class, persons FROM attendance_today")
    assert today == [(good.data["person"]["group"], 1)]


def test_gateway_goes_offline_through_its_last_will(mosquitto: MosquittoBroker, database: str) -> None:
    prefix, group = unique("will"), unique("g")
    with consumer_thread(mosquitto.url, database, prefix=prefix, group=group, client_id=unique("c")):
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.central.sim_gateway",
                "--url",
                mosquitto.url,
                "--site",
                SITE,
                "--gateway",
                "gw4",
                "--prefix",
                prefix,
                "--events",
                "20",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert gateway.stdout is not None and gateway.stdout.readline().strip() == b"ready"
            wait_rows(database, "SELECT count(*) FROM events", 20)
            wait_rows(database, "SELECT count(*) FROM gateway_status WHERE state = 'online'", 1)
            assert scalar(database, "SELECT count(*) FROM gateways_offline") == 0
            backlog = query(database, "SELECT gateway, access_pending, state FROM gateway_backlog")
            assert backlog == [(f"campus/{SITE}/gw4", 0, "online")]
        finally:
            gateway.kill()  # SIGKILL: no clean offline status, only the broker's Last Will
            gateway.wait()
        wait_rows(database, "SELECT count(*) FROM gateways_offline", 1)
    assert query(database, "SELECT gateway, reason FROM gateways_offline") == [
        (f"campus/{SITE}/gw4", "connection_lost")
    ]


def test_migrations_are_recorded_and_applied_once(database: str) -> None:
    cmd = [sys.executable, "-m", "sync.central", "migrate", "--database", database]
    first = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    second = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert all(name in first.stdout for name, _ in MIGRATIONS)
    assert "up to date" in second.stdout
    assert [r[0] for r in query(database, "SELECT name FROM schema_migrations ORDER BY name")] == [
        name for name, _ in MIGRATIONS
    ]


def test_bad_arguments_exit_2_with_the_reason() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sync.central", "ingest", "--mqtt-url", "http://x", "--database", "x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "mqtt://" in done.stderr and "postgresql://" in done.stderr


def test_the_command_line_needs_no_postgresql_driver_to_parse() -> None:
    """``edge-central --help`` and argument errors work where psycopg is not installed; the driver
    is imported only by the command that talks to the database."""
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # any import of it now raises ImportError\n"
        "from sync.central import build_parser\n"
        "a = build_parser().parse_args(['ingest', '--mqtt-url', 'mqtt://h', '--database', 'postgresql://x'])\n"
        "print(a.func.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cmd_ingest"

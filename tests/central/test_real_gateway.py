"""The ingest against what the real gateway pieces publish: ``sync.outbox.Outbox`` drained by
``sync.MqttLink`` (the agent's own uplink, with the drivers' one backoff), not the light simulator."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from device_drivers import Backoff, BackoffConfig
from sync import Event, MqttConfig, MqttLink, Outbox, OutboxConfig, Severity
from tests.central.helpers import consumer_thread, query, scalar, unique, wait_rows
from tests.central.sim_gateway import attendance, forced, granted
from tests.conftest import MosquittoBroker

SITE, GW = "east", "gw-real"


def test_events_and_status_of_a_real_gateway_link(
    tmp_path: Path, mosquitto: MosquittoBroker, database: str
) -> None:
    prefix, group = unique("real"), unique("g")
    rng = random.Random(20)
    events = [granted(SITE, GW, rng) for _ in range(150)] + [attendance(SITE, GW, rng) for _ in range(50)]
    alerts = [forced(SITE, GW, rng) for _ in range(5)]
    assert all(a.severity in (Severity.WARNING, Severity.CRITICAL) for a in alerts)
    # A guard acknowledged the first alert at the gateway's console: it is no longer open centrally.
    ack = Event(
        "edu.campus.security.alert_acknowledged.v1",
        f"campus/{SITE}/{GW}/gateway",
        {
            "alert_id": alerts[0].id,
            "alert_type": alerts[0].type,
            "by": "guard-li",
            "via": "console",
            "at": "2026-11-29T14:00:00.000Z",
        },
    )

    async def gateway() -> None:
        config = MqttConfig(url=mosquitto.url, topic_prefix=prefix, reconnect_min_s=0.1, reconnect_max_s=0.5)
        async with Outbox(tmp_path / "data", OutboxConfig(), f"campus/{SITE}/{GW}/gateway") as outbox:
            backoff = Backoff(BackoffConfig(initial_s=0.1, max_s=0.5))
            link = MqttLink(config, outbox, site=SITE, gateway=GW, version="test", backoff=backoff)
            task = asyncio.create_task(link.run())
            try:
                for event in [*events, *alerts, ack]:
                    await outbox.append(event)
                deadline = time.monotonic() + 30
                while outbox.pending_total and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert outbox.pending_total == 0
                # The link's retained status must reach the database as 'online' before shutdown.
                await asyncio.to_thread(
                    wait_rows, database, "SELECT count(*) FROM gateway_status WHERE state = 'online'", 1
                )
            finally:
                await link.shutdown(1.0)
                await asyncio.wait_for(task, 10)

    with consumer_thread(
        mosquitto.url, database, prefix=prefix, group=group, client_id=unique("c")
    ) as consumer:
        asyncio.run(gateway())
        wait_rows(database, "SELECT count(*) FROM gateway_status WHERE state = 'offline'", 1)
        wait_rows(database, "SELECT count(*) FROM events", len(events) + len(alerts) + 1)
    stored = {r[0] for r in query(database, "SELECT id FROM events")}
    assert stored == {e.id for e in [*events, *alerts, ack]}
    assert scalar(database, "SELECT count(*) FROM dead_letters") == 0
    # seq as the outbox numbered it: 1..N without holes, so no gap stays open.
    assert scalar(database, "SELECT max_seq FROM gateways") == len(events) + len(alerts) + 1
    assert scalar(database, "SELECT count(*) FROM open_gaps") == 0
    assert query(database, "SELECT gateway, reason FROM gateways_offline") == [
        (f"campus/{SITE}/{GW}", "shutdown")
    ]
    assert {r[0] for r in query(database, "SELECT id FROM open_alerts")} == {a.id for a in alerts[1:]}
    # Each alert came twice (alerts/{severity} and events/access) and was stored once.
    assert consumer.stats.duplicates >= len(alerts)

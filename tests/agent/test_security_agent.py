"""Security alerts through the whole agent: a camera clip, the rule, the alert lane with its snapshot,
the local alert book, and acknowledgement, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.agent import Agent
from edge_agent.alerts import AlertError
from edge_agent.config import parse_config
from sync.contract import validate_event
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.vision.scene_clips import (
    WalkerPath,
    corridor_background,
    linear_path,
    person_sprite,
    walk_clip,
    write_video,
)

SITE, GW = "sec-site", "gw-sec"


def intrusion_clip(shared_dir: Path, path: Path) -> Path:
    walk = linear_path((120, 600), (1100, 600), 20)
    frames = walk_clip(
        corridor_background(), [WalkerPath(person_sprite(shared_dir, "figure"), walk, 250.0)], 25
    )
    return write_video([f.frame for f in frames], path, fps=5.0)


def config_text(tmp_path: Path, url: str, video: Path) -> str:
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: UTC}}
agent: {{data_dir: {tmp_path / "data"}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
cameras:
  - device: {{kind: camera_sim, id: cam-corridor, video: {video}, loop: true, analysis_fps: 5}}
    security:
      zones: [{{id: restricted, points: [[760, 380], [1280, 380], [1280, 720], [760, 720]]}}]
      pipeline: {{tamper: null}}
      rules:
        - {{kind: intrusion, id: restricted-area, zone: restricted, severity: critical, cooldown_s: 3600}}
"""


def test_intrusion_alert_with_snapshot_kept_locally_and_acknowledged(
    tmp_path: Path, shared_dir: Path, mosquitto: MosquittoBroker
) -> None:
    video = intrusion_clip(shared_dir, tmp_path / "corridor.avi")
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        agent = Agent(parse_config(config_text(tmp_path, mosquitto.url, video)), data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not collector.snapshot("/alerts/critical"):
                await asyncio.sleep(0.1)
            alert = collector.snapshot("/alerts/critical")[0].json()
            assert alert["type"] == "edu.campus.security.intrusion.v1"
            assert agent.alerts is not None
            record = agent.alerts.get(alert["id"])
            assert record is not None and record.has_snapshot and record.acknowledged_at is None
            jpeg = agent.alerts.snapshot(alert["id"])
            assert (
                jpeg is not None and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
            )
            done = agent.acknowledge_alert(alert["id"], by="guard-li", via="console", note="checked, cleaner")
            assert done.acknowledged_by == "guard-li"
            with pytest.raises(AlertError) as again:
                agent.acknowledge_alert(alert["id"], by="guard-wang", via="console")
            assert again.value.code == "already_acknowledged"
            with pytest.raises(AlertError) as unknown:
                agent.acknowledge_alert("01NOSUCHALERT0000000000000", by="guard-li", via="api")
            assert unknown.value.code == "unknown_alert"
            while time.monotonic() < deadline and not any(
                m.json()["type"] == "edu.campus.security.alert_acknowledged.v1"
                for m in collector.snapshot("/events/")
            ):
                await asyncio.sleep(0.1)
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    collector.close()
    events = [m.json() for m in collector.snapshot("/events/")]
    for event in events:
        validate_event(event)
    intrusions = [e for e in events if e["type"] == "edu.campus.security.intrusion.v1"]
    assert len(intrusions) == 1  # the clip loops; the cooldown holds the rest back
    snapshot = collector.snapshot(f"/snapshots/{intrusions[0]['id']}")
    assert snapshot and snapshot[0].payload[:2] == b"\xff\xd8"
    ack = next(e for e in events if e["type"] == "edu.campus.security.alert_acknowledged.v1")
    assert ack["data"] == {
        "alert_id": intrusions[0]["id"],
        "alert_type": intrusions[0]["type"],
        "by": "guard-li",
        "via": "console",
        "at": ack["data"]["at"],
        "note": "checked, cleaner",
    }


def test_alert_book_keeps_snapshots_only_for_their_retention(tmp_path: Path) -> None:
    import sqlite3
    import time as _time

    from edge_agent.alerts import AlertBook
    from sync.envelope import Event
    from sync.event_types import Severity

    def alert() -> Event:
        return Event(
            "edu.campus.security.test_alert.v1",
            "campus/s/g/cam",
            {"device": "cam", "reason": "r"},
            severity=Severity.WARNING,
        )

    book = AlertBook(tmp_path, snapshot_retention_s=3600, keep_s=7200)
    kept = book.record(alert(), b"\xff\xd8jpeg")
    assert book.snapshot(kept.id) == b"\xff\xd8jpeg"
    # Two hours later (rewind the row's clock): the snapshot went after one, the alert after two.
    conn = sqlite3.connect(tmp_path / "alerts.db")
    conn.execute("UPDATE alerts SET created_at = ?", (_time.time() - 3700,))
    conn.commit()
    book.housekeeping()
    assert book.snapshot(kept.id) is None and book.get(kept.id) is not None
    conn.execute("UPDATE alerts SET created_at = ?", (_time.time() - 7300,))
    conn.commit()
    book.housekeeping()
    assert book.get(kept.id) is None
    book.close()
    no_snapshots = AlertBook(tmp_path / "none", snapshot_retention_s=0)
    record = no_snapshots.record(alert(), b"\xff\xd8jpeg")
    assert not record.has_snapshot and no_snapshots.snapshot(record.id) is None


def test_a_still_empty_scene_goes_to_the_idle_rate_and_motion_brings_it_back(
    tmp_path: Path, shared_dir: Path, mosquitto: MosquittoBroker
) -> None:
    still = np.full((720, 1280, 3), 110, np.uint8)
    still_clip = write_video([still] * 20, tmp_path / "still.avi", fps=5.0)
    config = parse_config(f"""
gateway: {{site: {SITE}, id: {GW}}}
agent: {{data_dir: {tmp_path / "data"}, shutdown_timeout_s: 3}}
mqtt: {{url: "{mosquitto.url}"}}
cameras:
  - device: {{kind: camera_sim, id: cam-still, video: {still_clip}, loop: true, analysis_fps: 5}}
    idle_analysis_fps: 1
    idle_after_s: 3
    security:
      zones: [{{id: z, points: [[0, 400], [1280, 400], [1280, 720], [0, 720]]}}]
      pipeline: {{tamper: null}}
      rules: [{{kind: intrusion, id: r, zone: z}}]
""")

    async def scenario() -> None:
        agent = Agent(config, data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 30
            camera = None
            while time.monotonic() < deadline:
                camera = agent.drivers.get("cam-still")
                if camera is not None and camera._interval_ns == 1_000_000_000:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.2)
            assert camera is not None and camera._interval_ns == 1_000_000_000  # type: ignore[union-attr]
            # Someone appears: the next analysed frame has motion and the full rate is back.
            agent.security_workers["cam-still"].last_activity = time.monotonic()
            await asyncio.sleep(1.5)
            assert camera._interval_ns == 200_000_000  # type: ignore[union-attr]
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())

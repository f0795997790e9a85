"""Security alerts through the whole agent: a camera clip, the rule, the alert lane with its snapshot,
the local alert book, and acknowledgement, against a real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import CollectorRegistry

from device_drivers import CameraFrame
from edge_agent.alerts import AlertError
from edge_agent.cameras import SecurityWorker
from edge_agent.config import parse_config
from edge_agent.config.cameras import CameraSetup
from edge_agent.inference import InferenceService, Lane, Skipped
from edge_agent.metrics import GatewayCollector
from edge_agent.services import CameraDirectory
from sync import Event
from sync.contract import validate_event
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway
from tests.support.clock import EPOCH, FakeClock
from tests.support.wait import async_wait_until
from tests.vision.scene_clips import cover, shared_person_detector
from vision.scenes import (
    WalkerPath,
    corridor_background,
    linear_path,
    paste_person,
    person_sprite,
    walk_clip,
    write_video,
)

SITE, GW = "sec-site", "gw-sec"


def intrusion_clip(path: Path) -> Path:
    walk = linear_path((120, 600), (1100, 600), 20)
    frames = walk_clip(corridor_background(), [WalkerPath(person_sprite("figure"), walk, 250.0)], 25)
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
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    video = intrusion_clip(tmp_path / "corridor.avi")
    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")

    async def scenario() -> None:
        agent = build_gateway(
            parse_config(config_text(tmp_path, mosquitto.url, video)), data_dir=tmp_path / "data"
        )
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not collector.snapshot("/alerts/critical"):
                await asyncio.sleep(0.1)
            alert = collector.snapshot("/alerts/critical")[0].json()
            assert alert["type"] == "edu.campus.security.intrusion.v1"
            assert agent.alert_book is not None and agent.services is not None
            record = agent.alert_book.get(alert["id"])
            assert record is not None and record.has_snapshot and record.acknowledged_at is None
            jpeg = agent.alert_book.snapshot(alert["id"])
            assert (
                jpeg is not None and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
            )
            desk = agent.services.alerts
            done = desk.acknowledge(alert["id"], by="guard-li", via="console", note="checked, cleaner")
            assert done.acknowledged_by == "guard-li"
            with pytest.raises(AlertError) as again:
                desk.acknowledge(alert["id"], by="guard-wang", via="console")
            assert again.value.code == "already_acknowledged"
            with pytest.raises(AlertError) as unknown:
                desk.acknowledge("01NOSUCHALERT0000000000000", by="guard-li", via="api")
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
    tmp_path: Path, mosquitto: MosquittoBroker
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
        agent = build_gateway(config, data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 30
            camera = None
            while time.monotonic() < deadline:
                camera = agent.devices.drivers.get("cam-still")
                if camera is not None and camera._interval_ns == 1_000_000_000:  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.2)
            assert camera is not None and camera._interval_ns == 1_000_000_000  # type: ignore[union-attr]
            # Someone appears: the next analysed frame has motion and the full rate is back.
            agent.cameras.security_workers["cam-still"].last_activity = time.monotonic()
            await async_wait_until(
                lambda: camera._interval_ns == 200_000_000,  # type: ignore[union-attr]
                10,
                what="the full analysis rate back",
            )
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())


# -- the security worker on its own: narrow services, a fake clock, capture timestamps ----------

CLIP_FRAMES = 1000
WALK_EVERY = 250  # a person walks through the restricted zone in the first 40 frames of every 250
WALK_FRAMES = 40
FRAME_S = 0.1  # 10 fps capture
COVER_FROM, COVER_TO = 930, 960  # a hand over the lens near the end


def worker_setup() -> CameraSetup:
    return CameraSetup.model_validate(
        {
            "device": {"kind": "camera_sim", "id": "cam-tamper"},
            "security": {
                "zones": [{"id": "restricted", "points": [[760, 380], [1280, 380], [1280, 720], [760, 720]]}],
                "rules": [
                    {"kind": "intrusion", "id": "into", "zone": "restricted", "cooldown_s": 0},
                    {"kind": "tamper", "id": "tamper", "severity": "critical", "cooldown_s": 0},
                ],
                # Tamper checks on every frame, as on the cameras that lost frames (the default then).
                "pipeline": {"tamper": {"check_every_s": 0}},
            },
        }
    )


class ClipFrames:
    """The 1,000 frames, composited when asked for (1,000 720p frames would take 2.7 GB)."""

    def __init__(self) -> None:
        self.background = corridor_background()
        self.sprite = person_sprite("figure")
        self.walk = linear_path((120, 600), (1100, 600), WALK_FRAMES)

    def __getitem__(self, k: int) -> npt.NDArray[np.uint8]:
        frame = self.background.copy()
        step = k % WALK_EVERY
        if step < WALK_FRAMES:
            paste_person(frame, self.sprite, self.walk[step], 250.0)
        return cover(frame, seed=k) if COVER_FROM <= k < COVER_TO else frame


def test_a_periodic_check_beside_1000_frames_refuses_none_for_time_order() -> None:
    # The defect: a periodic check moved the tamper clock to "now", past frames captured earlier
    # but not yet analysed ("time went backwards"), and those frames were lost. Here every frame is
    # submitted only after a check ran at a later time than its capture.
    clock = FakeClock()
    emitted: list[tuple[Event, bytes | None]] = []
    clip = ClipFrames()
    setup = worker_setup()
    worker = SecurityWorker(
        setup,
        detector=shared_person_detector(),
        grants=lambda gate, window_s: 0,
        emit=lambda event, attachment=None: emitted.append((event, attachment)),
        source=lambda device: f"campus/s/g/{device}",
        timezone=UTC,
        monotonic=clock.monotonic,
        now=clock.now,
        sleep=clock.sleep,
        stream_check_interval_s=0.05,  # of fake time: several checks between two frames
    )
    registry = CollectorRegistry()
    # The metrics read the gateway's services; the camera section is all this test feeds them.
    services = SimpleNamespace(cameras=CameraDirectory(security_workers={"cam-tamper": worker}))
    registry.register(GatewayCollector(services))  # type: ignore[arg-type]

    def person_errors() -> float | None:
        return registry.get_sample_value("edge_person_analysis_errors_total", {"camera": "cam-tamper"})

    def frames_done(count: int) -> Callable[[], bool]:
        # Frames analysed or refused: each submitted frame ends as one or the other.
        return lambda: worker.counters["frames_analysed"] + worker.errors >= count

    async def scenario() -> None:
        run = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0)
            for k in range(CLIP_FRAMES):
                captured_mono, captured_wall = clock.monotonic(), clock.now()
                frame = CameraFrame(
                    "cam-tamper", clip[k], captured_wall, k + 1, received_ns=round(captured_mono * 1e9)
                )
                # Time goes on before the frame reaches analysis, and the periodic check runs meanwhile.
                await clock.advance_and_settle(FRAME_S)
                worker.submit(frame)
                await async_wait_until(
                    frames_done(k + 1),
                    timeout=30,
                    interval=0.002,
                    what=f"frame {k + 1} analysed",
                )
            assert clock.sleepers == 1  # the periodic check is waiting for its next turn
            # The camera then falls silent: the check, not a frame, reports it, once.
            for _ in range(12):
                await clock.advance_and_settle(1.0)
        finally:
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            await worker.stop()

    asyncio.run(scenario())
    assert worker.errors == 0 and worker.counters["analysis_errors"] == 0
    assert person_errors() == 0.0
    assert worker.counters["frames_analysed"] == CLIP_FRAMES and worker.pipeline.frames == CLIP_FRAMES
    assert worker.counters["frames_replaced"] == 0
    assert worker.pipeline.detector_runs < CLIP_FRAMES  # the motion gate still skips the still frames
    types = [(e.type, e.data.get("kind")) for e, _ in emitted]
    tampers = [kind for t, kind in types if t == "edu.campus.security.camera_tamper.v1"]
    assert tampers == ["covered", "stream_lost"]
    intrusions = [(e, jpeg) for e, jpeg in emitted if e.type == "edu.campus.security.intrusion.v1"]
    assert len(intrusions) == CLIP_FRAMES // WALK_EVERY  # one per walk into the zone
    for event, jpeg in intrusions:
        assert event.data["snapshot"] and jpeg is not None and jpeg[:2] == b"\xff\xd8"
    # Every alert carries the capture time of its frame (fake wall clock), never a later one.
    first = min(e.time for e, _ in intrusions)
    assert first >= EPOCH and first < EPOCH + timedelta(seconds=WALK_FRAMES * FRAME_S)


def test_the_newest_frame_wins_when_a_worker_falls_behind() -> None:
    still = np.zeros((8, 8, 3), np.uint8)
    started, release = threading.Event(), threading.Event()

    def frame(seq: int) -> CameraFrame:
        return CameraFrame("cam", still, EPOCH + timedelta(seconds=seq), seq, received_ns=seq * 10**9)

    def analyse(f: CameraFrame) -> int:
        started.set()
        release.wait(10)  # the analysis of frame 1 is slow: frames 2 and 3 arrive meanwhile
        return f.seq

    async def scenario() -> None:
        service = InferenceService(workers=1)
        lane = Lane(service, "cam", "security", analyse)
        try:
            first = lane.offer(frame(1))
            await asyncio.to_thread(started.wait, 10)
            second = lane.offer(frame(2))
            third = lane.offer(frame(3))  # frame 2 was never taken: replaced
            assert await asyncio.wait_for(second, 5) == Skipped("replaced")
            assert not third.done()  # it waits for the thread
            release.set()
            assert await asyncio.wait_for(first, 5) == 1
            assert await asyncio.wait_for(third, 5) == 3
            assert lane.counters == {"offered": 3, "replaced": 1, "analysed": 2}
        finally:
            release.set()
            service.close()

    asyncio.run(scenario())

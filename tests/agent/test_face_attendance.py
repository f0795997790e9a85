"""Face attendance end to end: `edge-agent enroll` from photos, then the real agent watching a
camera (a video file built from the shipped scene photos), real ONNX models, real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.config import parse_config
from edge_agent.face_templates import FACES_DB, FaceTemplateStore, TemplateKeyError, parse_key
from edge_agent.metrics import gateway_registry
from sync.contract import SCHEMA_DIR as SCHEMAS
from sync.contract import validate_event
from tests.conftest import MosquittoBroker
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway
from tests.support.agent_process import run_enroll
from tests.support.wait import async_wait_until
from vision import FaceDetector
from vision.face_eval import crop_around, realistic_variants, walking_clip
from vision.scenes import load_photo

SITE, GW = "face-site", "gw-face"


def _subject(
    detector: FaceDetector, image: npt.NDArray[np.uint8], index: int
) -> tuple[float, float, float, float]:
    return sorted(detector.detect(image), key=lambda f: f.box[0])[index].box


@pytest.fixture(scope="module")
def face_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Enrollment photos of alice and carol, and a clip where alice and bob (not enrolled) walk in."""
    out = tmp_path_factory.mktemp("faces")
    detector = FaceDetector()
    alice_img = load_photo("sample6.jpg")
    carol_img = load_photo("sample3.jpg")
    bob_img = load_photo("sample5.jpg")
    alice_box, carol_box, bob_box = (
        _subject(detector, alice_img, 3),
        _subject(detector, carol_img, 0),
        _subject(detector, bob_img, 1),
    )
    cv2.imwrite(str(out / "alice.jpg"), crop_around(alice_img, alice_box))
    cv2.imwrite(str(out / "carol.jpg"), crop_around(carol_img, carol_box))
    cv2.imwrite(str(out / "crowd.jpg"), load_photo("sample1.jpg"))
    (out / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    alice = cv2.resize(
        realistic_variants(crop_around(alice_img, alice_box, 0.6))["rotate_6"], None, fx=0.5, fy=0.5
    )
    bob = cv2.resize(realistic_variants(crop_around(bob_img, bob_box, 0.6))["jpeg_40"], None, fx=0.5, fy=0.5)
    room = cv2.resize(load_photo("sample1.jpg")[760:, :], (1280, 720))
    video = out / "classroom.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (1280, 720))
    for frame in walking_clip(
        room,
        [alice, bob],
        frames=40,
        paths=[((150, 300), (1100, 380)), ((1150, 420), (250, 330))],
        still_frames=5,
    ):
        writer.write(frame)
    writer.release()
    return {"dir": out, "video": video}


def _config(tmp_path: Path, url: str, video: Path, seed: Path) -> str:
    return f"""
gateway: {{site: {SITE}, id: {GW}, timezone: UTC}}
agent: {{data_dir: {tmp_path / "data"}, roster_seed: {seed}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5}}
cameras:
  - device: {{kind: camera_sim, id: cam-7a, video: {video}, loop: true, analysis_fps: 10}}
    face:
      point: room-7a
      stranger_alerts: true
      attendance:
        sessions:
          - {{id: all-day, weekdays: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00",
             late_after_min: 1440}}
"""


def _roster(path: Path) -> Path:
    persons: list[dict[str, Any]] = [
        {
            "id": pid,
            "name": pid.title(),
            "role": "student",
            "group": "7A",
            "access_groups": [],
            "consent": {"granted_by": "self", "granted_at": "2026-01-01T00:00:00Z", "scopes": ["attendance"]},
        }
        for pid in ("alice", "carol")
    ]
    path.write_text(json.dumps({"kind": "snapshot", "version": 1, "persons": persons}))
    return path


def test_enroll_then_recognise_attendance_and_stranger(
    tmp_path: Path, mosquitto: MosquittoBroker, face_scene: dict[str, Any]
) -> None:
    key = secrets.token_hex(32)
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": key}
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(
        _config(tmp_path, mosquitto.url, face_scene["video"], _roster(tmp_path / "roster.json"))
    )
    # Enrolment attaches faces to people the roster knows. Before the first run the local roster is
    # empty: without a roster seed enroll refuses and says what to do first...
    unseeded = tmp_path / "unseeded.yaml"
    unseeded.write_text(config_path.read_text().replace(f", roster_seed: {tmp_path / 'roster.json'}", ""))
    assert "roster_seed" not in unseeded.read_text()
    before_roster = run_enroll(unseeded, "alice", face_scene["dir"] / "alice.jpg", env=env)
    assert before_roster.returncode == 1 and "roster_seed" in before_roster.stderr, before_roster.stderr
    # ...and with one (this config) it applies the seed first, as the agent does at start.
    ok = run_enroll(
        config_path, "alice", face_scene["dir"] / "alice.jpg", face_scene["dir"] / "broken.jpg", env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert "roster seed" in ok.stdout, ok.stdout
    assert "stored template" in ok.stdout and "rejected broken.jpg: not_an_image" in ok.stderr
    crowd = run_enroll(config_path, "carol", face_scene["dir"] / "crowd.jpg", env=env)
    assert crowd.returncode == 1 and "several_faces" in crowd.stderr
    assert run_enroll(config_path, "carol", face_scene["dir"] / "carol.jpg", env=env).returncode == 0
    no_key = run_enroll(
        config_path,
        "carol",
        face_scene["dir"] / "carol.jpg",
        env={k: v for k, v in env.items() if k != "EDGE_AGENT_FACE_TEMPLATE_KEY"},
    )
    assert no_key.returncode == 2 and "face_template_key" in no_key.stderr
    # Another key does not open this gallery: enroll refuses (non-zero), nothing is stored under it.
    other_key = run_enroll(
        config_path,
        "carol",
        face_scene["dir"] / "carol.jpg",
        env={**env, "EDGE_AGENT_FACE_TEMPLATE_KEY": secrets.token_hex(32)},
    )
    assert other_key.returncode == 2 and "template_key_mismatch" not in other_key.stdout
    assert "does not open the gallery" in other_key.stderr, other_key.stderr
    # At rest: no embedding in the clear; the wrong key opens nothing.
    db = sqlite3.connect(tmp_path / "data" / FACES_DB)
    rows = db.execute("SELECT ciphertext FROM templates").fetchall()
    db.close()
    assert len(rows) == 2 and all(len(r[0]) == 128 * 4 + 16 for r in rows)
    with pytest.raises(TemplateKeyError) as wrong:
        FaceTemplateStore(tmp_path / "data", parse_key(secrets.token_hex(32), "k"))
    assert wrong.value.code == "template_key_mismatch"

    collector = Collector(mosquitto.url, f"campus/v1/{SITE}/{GW}/#")
    os.environ["EDGE_AGENT_FACE_TEMPLATE_KEY"] = key
    try:

        async def scenario() -> None:
            agent = build_gateway(parse_config(config_path.read_text()), data_dir=tmp_path / "data")
            task = asyncio.create_task(agent.run())
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    kinds = [m.json()["type"] for m in collector.snapshot("/events/")]
                    if (
                        "edu.campus.attendance.recorded.v1" in kinds
                        and "edu.campus.security.stranger.v1" in kinds
                    ):
                        break
                    await asyncio.sleep(0.2)
                # The clip loops: whatever the worker analyses next must record nothing more for
                # alice (checked after the run). Wait for frames analysed, not for time.
                worker = agent.cameras.face_workers["cam-7a"]
                seen = worker.counters["frames_analysed"]
                await async_wait_until(
                    lambda: worker.counters["frames_analysed"] >= seen + 30,
                    60,
                    what="30 more frames analysed",
                )
                faces = agent.cameras.faces
                assert faces is not None and faces.gallery.template_count == 2
                # Where each model runs and what the shared inference service did, in the retained
                # status message (valid against its schema) and the metrics.
                status = json.loads(agent.link.status_payload("online", "test"))
                jsonschema.validate(status, json.loads((SCHEMAS / "status.json").read_text()))
                models = {m["model"]: m["provider"] for m in status["vision"]["models"]}
                assert models == {"centerface": "cpu", "dlib_resnet_v1": "cpu"}
                lanes = {(x["camera"], x["analysis"]): x for x in status["vision"]["inference"]["lanes"]}
                assert lanes[("cam-7a", "faces")]["analysed"] >= 30
                # A face camera alone: every frame analysed lately was attendance's.
                assert status["vision"]["inference"]["attendance_share"] > 0.9
                assert agent.services is not None
                registry = gateway_registry(agent.services)
                provider = {"model": "centerface", "provider": "cpu"}
                assert registry.get_sample_value("edge_model_execution_provider", provider) == 1
                analysed = {"camera": "cam-7a", "analysis": "faces", "outcome": "analysed"}
                assert (registry.get_sample_value("edge_inference_frames_total", analysed) or 0) >= 30
            finally:
                agent.request_stop("test")
                await asyncio.wait_for(task, 30)

        asyncio.run(scenario())
    finally:
        os.environ.pop("EDGE_AGENT_FACE_TEMPLATE_KEY", None)
    collector.close()
    events = [m.json() for m in collector.snapshot("/events/")]
    for event in events:
        validate_event(event)
    attendance = [e for e in events if e["type"] == "edu.campus.attendance.recorded.v1"]
    assert [a["subject"] for a in attendance] == ["alice"]
    record = attendance[0]["data"]
    assert (
        record["method"] == "face" and record["point"] == "room-7a" and record["model_id"] == "dlib_resnet_v1"
    )
    assert record["distance"] < 0.5
    strangers = [e for e in events if e["type"] == "edu.campus.security.stranger.v1"]
    assert len(strangers) == 1  # rate-limited, however often the clip loops
    snapshot = collector.snapshot(f"/snapshots/{strangers[0]['id']}")
    assert (
        snapshot and cv2.imdecode(np.frombuffer(snapshot[0].payload, np.uint8), cv2.IMREAD_COLOR) is not None
    )


def test_face_recognition_off_without_key_but_gates_and_camera_health_run(
    tmp_path: Path, mosquitto: MosquittoBroker, face_scene: dict[str, Any]
) -> None:
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(
        _config(tmp_path, mosquitto.url, face_scene["video"], _roster(tmp_path / "roster.json"))
    )
    os.environ.pop("EDGE_AGENT_FACE_TEMPLATE_KEY", None)

    async def scenario() -> None:
        agent = build_gateway(parse_config(config_path.read_text()), data_dir=tmp_path / "data")
        task = asyncio.create_task(agent.run())
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not agent.devices.state.get("cam-7a", {}).get("online"):
                await asyncio.sleep(0.1)
            status = agent.status()
            assert status["faces"]["enabled"] is False and "face_template_key" in status["faces"]["error"]
            assert agent.devices.state["cam-7a"]["online"] is True
            assert agent.counters.get("faces_disabled_template_key_missing") == 1
        finally:
            agent.request_stop("test")
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())

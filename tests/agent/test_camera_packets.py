"""MJPEG frames reach the workers undecoded: the inference thread decodes them, and a packet that
does not decode is its own camera's counted, logged error (the rest of a batch is analysed, the
camera goes on). Real models on the project's photos."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from device_drivers import CameraError, CameraFrame
from device_drivers.camera.driver import JpegPacket
from edge_agent.cameras import SecurityWorker, _analyse_faces
from edge_agent.config import CameraSetup, FaceSettings
from edge_agent.face_templates import FaceTemplateStore, parse_key
from edge_agent.faces import FaceService
from tests.support.agent_harness import face_camera_worker
from tests.support.jpeg import without_scan
from tests.vision.scene_clips import shared_person_detector
from vision import FaceFrameResult
from vision.scenes import load_photo


def packet_frame(camera: str, seq: int, data: bytes) -> CameraFrame:
    packet = JpegPacket.of(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR, None)
    assert packet is not None
    return CameraFrame(camera, packet, datetime.now(UTC), seq, received_ns=seq * 10**9)


def photo_jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.resize(load_photo("sample2.jpg"), (640, 427)))
    assert ok
    return data.tobytes()


def test_a_packet_that_does_not_decode_fails_alone_in_a_face_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = FaceService(FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k")), FaceSettings())
    workers = [face_camera_worker(service, f"room-{i}", tmp_path) for i in (1, 2)]
    good = photo_jpeg()
    try:
        outcomes = _analyse_faces(
            [
                (workers[0].lane, packet_frame("room-1", 1, without_scan(good))),
                (workers[1].lane, packet_frame("room-2", 1, good)),
            ]
        )
        assert isinstance(outcomes[0], CameraError) and outcomes[0].code == "bad_frame"
        assert isinstance(outcomes[1], FaceFrameResult) and outcomes[1].faces  # decoded here, analysed

        async def through_the_lane() -> None:
            with caplog.at_level(logging.ERROR, logger="edge_agent.cameras"):
                await workers[0].on_frame(packet_frame("room-1", 2, without_scan(good)))
            await workers[0].on_frame(packet_frame("room-1", 3, good))  # the camera goes on

        asyncio.run(through_the_lane())
        counters = workers[0].counters
        assert counters["analysis_errors_bad_frame"] == 1 and counters["frames_analysed"] == 1
        assert workers[0].errors == 1
        assert any(
            "frame 2 not analysed" in r.getMessage() and "does not decode" in r.getMessage()
            for r in caplog.records
        )
    finally:
        for worker in workers:
            worker.close()


def test_a_security_camera_counts_a_packet_that_does_not_decode_and_goes_on() -> None:
    setup = CameraSetup.model_validate(
        {
            "device": {"kind": "camera_sim", "id": "yard"},
            "security": {
                "zones": [{"id": "z", "points": [[0, 0], [640, 0], [640, 427], [0, 427]]}],
                "rules": [],
            },
        }
    )
    worker = SecurityWorker(
        setup,
        detector=shared_person_detector(),
        grants=lambda gate, window_s: 0,
        emit=lambda event, attachment=None: None,
        source=lambda device: f"campus/s/g/{device}",
        timezone=UTC,
    )
    good = photo_jpeg()

    async def scenario() -> None:
        await worker.on_frame(packet_frame("yard", 1, without_scan(good)))
        await worker.on_frame(packet_frame("yard", 2, good))

    try:
        asyncio.run(scenario())
    finally:
        worker.close()
    assert worker.counters["analysis_errors_bad_frame"] == 1
    assert worker.counters["frames_analysed"] == 1 and worker.pipeline.frames == 1

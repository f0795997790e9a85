"""The cameras API of the zone editor against a real agent started from a config file: a simulated
camera's real frames, its zones as configured, the JPEG with and without the zones drawn, and the
YAML of drawn zones checked in the agent's own file (bad drawings refused with a code, counted)."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import yaml

from device_drivers import CameraFrame
from device_drivers.camera.driver import JpegPacket
from edge_agent.config import load_config, parse_config
from tests.api.conftest import GW, SITE, Tokens, until
from tests.conftest import MosquittoBroker
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.jpeg import without_scan

WIDTH, HEIGHT = 320, 180
# A doorway zone in pixels and a normalized tripwire down the middle; a rule uses the zone, so a
# drawing that drops it must be reported invalid in the whole configuration.
CAMERAS = f"""
cameras:
  - device: {{kind: camera_sim, id: cam-door, loop: true, analysis_fps: 2, width: {WIDTH}, height: {HEIGHT}}}
    security:
      reference_size: [{WIDTH}, {HEIGHT}]
      zones:
        - {{id: doorway, name: Doorway, points: [[20, 20], [150, 20], [150, 160], [20, 160]]}}
      lines:
        - {{id: threshold, coords: normalized, start: [0.75, 0.1], end: [0.75, 0.9], label_a_to_b: in}}
      rules:
        - {{kind: intrusion, id: doorway-entered, zone: doorway}}
  - device: {{kind: camera_sim, id: cam-dark, video: /nonexistent/cam-dark.mp4, analysis_fps: 1}}
  - device: {{kind: camera_sim, id: cam-wide, loop: true, analysis_fps: 2, width: {WIDTH}, height: {HEIGHT},
              analysis_width: {WIDTH // 2}}}
"""
MAX_BODY = 4096


def running_cameras(tmp_path: Path, broker_url: str, max_body: int = MAX_BODY, cameras: str = CAMERAS) -> Any:
    return running_gate(
        tmp_path,
        broker_url,
        site=SITE,
        gateway=GW,
        from_file=True,
        api={"max_body_bytes": max_body},
        extra=cameras,
    )


def decode(response: httpx.Response) -> np.ndarray[Any, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "no-store"
    image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def yellow_share(image: np.ndarray[Any, Any]) -> float:
    """Share of the pixels on the doorway zone's outline that are yellowish (green and red well above
    blue: the 1-pixel outline is blurred by the JPEG), on its best edge: the person walking through
    the clip hides part of one edge at most."""
    edges = [image[20, 40:140], image[160, 40:140], image[40:140, 20], image[40:140, 150]]
    shares = []
    for edge in edges:
        pixels = edge.astype(int)
        shares.append(float((np.minimum(pixels[:, 1], pixels[:, 2]) - pixels[:, 0] > 60).mean()))
    return max(shares)


def square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y], [x + side, y], [x + side, y + side], [x, y + side]]


def test_cameras_frames_and_zone_yaml(tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens) -> None:
    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url) as gate:
            await check(gate, tokens)

    asyncio.run(asyncio.wait_for(scenario(), 120))


async def check(gate: RunningGate, tokens: Tokens) -> None:
    services = gate.agent.services
    assert services is not None and gate.config_path is not None
    await until(lambda: "cam-door" in services.cameras.latest_frames, "a frame of cam-door")
    viewer, operator, admin = (gate.client(r, tokens) for r in ("viewer", "operator", "admin"))
    async with viewer, operator, admin, gate.client() as anon:
        # The list: frame size of the real frame, zones and lines as configured.
        cameras = {c["id"]: c for c in (await viewer.get("/api/v1/cameras")).json()["cameras"]}
        door, dark = cameras["cam-door"], cameras["cam-dark"]
        assert door["frame"]["width"] == WIDTH and door["frame"]["height"] == HEIGHT
        assert door["security"] is True and door["reference_size"] == [WIDTH, HEIGHT]
        assert [(z["id"], z["name"], z["coords"]) for z in door["zones"]] == [("doorway", "Doorway", "pixel")]
        assert door["zones"][0]["points"] == [[20, 20], [150, 20], [150, 160], [20, 160]]
        line = door["lines"][0]
        assert (line["id"], line["coords"], line["start"], line["label_a_to_b"]) == (
            "threshold",
            "normalized",
            [0.75, 0.1],
            "in",
        )
        assert dark["frame"] is None and dark["security"] is False and dark["zones"] == []
        assert (await anon.get("/api/v1/cameras")).status_code == 401

        # The frame itself, at the analysed size; with overlay=1 the zone's left edge is drawn.
        plain = decode(await viewer.get(door["frame_url"]))
        assert plain.shape == (HEIGHT, WIDTH, 3)
        drawn = decode(await viewer.get(door["frame_url"], params={"overlay": "1"}))
        assert yellow_share(drawn) > 0.9
        assert yellow_share(plain) < 0.1
        missing = await viewer.get("/api/v1/cameras/cam-dark/frame.jpg")
        assert (missing.status_code, missing.json()["code"]) == (404, "no_frame")
        unknown = await viewer.get("/api/v1/cameras/cam-nope/frame.jpg")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_camera")
        # A camera analysed at half its width keeps the main stream's picture for evidence.
        await until(lambda: "cam-wide" in services.cameras.latest_frames, "a frame of cam-wide")
        analysed = decode(await viewer.get("/api/v1/cameras/cam-wide/frame.jpg"))
        assert analysed.shape == (HEIGHT // 2, WIDTH // 2, 3)
        evidence = decode(await viewer.get("/api/v1/cameras/cam-wide/frame.jpg", params={"full": "1"}))
        assert evidence.shape == (HEIGHT, WIDTH, 3)
        # cam-door is analysed at its full size: full=1 is the same picture.
        assert decode(await viewer.get(door["frame_url"], params={"full": "1"})).shape == (HEIGHT, WIDTH, 3)
        # An MJPEG frame nobody analysed is decoded for the request; one that does not decode (its
        # header says 320x240, its scan is missing) is a clear 503, counted, and the API goes on.
        ok, good = cv2.imencode(".jpg", np.zeros((240, 320, 3), np.uint8))
        assert ok
        packet = JpegPacket.of(np.frombuffer(without_scan(good.tobytes()), np.uint8), cv2.IMREAD_COLOR, None)
        assert packet is not None
        services.cameras.latest_frames["cam-dark"] = CameraFrame("cam-dark", packet, datetime.now(UTC), 1)
        broken = await viewer.get("/api/v1/cameras/cam-dark/frame.jpg")
        assert (broken.status_code, broken.json()["code"]) == (503, "bad_frame")
        assert services.counters.get("api_camera_frame_decode_failed") == 1
        del services.cameras.latest_frames["cam-dark"]

        # Drawn zones come back as YAML built from the config models, checked in the agent's file.
        edit = {
            "reference_size": [WIDTH, HEIGHT],
            "zones": [
                {"id": "doorway", "name": "Doorway", "points": [[10, 12], [160, 12], [160, 170], [10, 170]]}
            ],
            "lines": [
                {
                    "id": "threshold",
                    "start": [240, 10],
                    "end": [240, 170],
                    "label_a_to_b": "in",
                    "label_b_to_a": "out",
                }
            ],
        }
        answer = await admin.post("/api/v1/cameras/cam-door/zones", json=edit)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["camera"] == "cam-door" and body["checked_against"] == str(gate.config_path)
        assert body["validation"] == {"valid": True, "issues": []}
        fragment = yaml.safe_load(body["yaml"])["security"]
        assert fragment["reference_size"] == [WIDTH, HEIGHT]
        assert fragment["zones"] == [
            {"id": "doorway", "name": "Doorway", "points": edit["zones"][0]["points"]}
        ]
        assert fragment["lines"][0]["start"] == [240, 10] and fragment["lines"][0]["label_b_to_a"] == "out"
        # Pasted over the camera's zones in the real file, it loads, and the rule still has its zone.
        data = yaml.safe_load(gate.config_path.read_text())
        data["cameras"][0]["security"].update(fragment)
        pasted = parse_config(yaml.safe_dump(data), "pasted")
        security = pasted.cameras[0].security
        assert security is not None and security.zones[0].points[0] == (10, 12)
        assert (
            load_config(gate.config_path).cameras[0].security == services.config.current().cameras[0].security
        )

        # Normalized coordinates need no reference size; dropping the zone the rule needs is reported.
        answer = await admin.post(
            "/api/v1/cameras/cam-door/zones",
            json={"zones": [{"id": "hall", "coords": "normalized", "points": square(0.1, 0.1, 0.5)}]},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "reference_size" not in yaml.safe_load(body["yaml"])["security"]
        assert body["validation"]["valid"] is False
        assert any("doorway" in i["message"] for i in body["validation"]["issues"]), body

        # Bad drawings: a specific code each, counted, never a 500.
        bad: list[tuple[dict[str, Any], str]] = [
            ({"zones": [{"id": "z", "points": [[1, 1], [50, 1]]}]}, "too_few_points"),
            ({"zones": [{"id": "z", "points": [[1, 1], [50, 50], [50, 1], [1, 50]]}]}, "not_a_polygon"),
            (
                {"reference_size": [WIDTH, HEIGHT], "zones": [{"id": "z", "points": square(300, 10, 40)}]},
                "outside_frame",
            ),
            (
                {"zones": [{"id": "z", "coords": "normalized", "points": square(0.8, 0.8, 0.3)}]},
                "outside_frame",
            ),
            ({"lines": [{"id": "l", "start": [5, 5], "end": [5, 5]}]}, "zero_length_line"),
            (
                {
                    "zones": [{"id": "x", "points": square(1, 1, 9)}],
                    "lines": [{"id": "x", "start": [1, 1], "end": [9, 9]}],
                },
                "duplicate_id",
            ),
            ({"zones": [{"id": "z", "points": [[i, (i * i) % 97] for i in range(300)]}]}, "too_many_points"),
        ]
        for edit, code in bad:
            before = services.counters.get(f"api_zone_edit_refused_{code}")
            refused = await admin.post("/api/v1/cameras/cam-door/zones", json=edit)
            assert (refused.status_code, refused.json()["code"]) == (422, code), (edit, refused.text)
            assert services.counters.get(f"api_zone_edit_refused_{code}") == before + 1
        # Pixel coordinates on a camera without a frame, and without a reference size to go by.
        no_size = await admin.post(
            "/api/v1/cameras/cam-dark/zones", json={"zones": [{"id": "z", "points": square(1, 1, 9)}]}
        )
        assert (no_size.status_code, no_size.json()["code"]) == (422, "no_reference_size")
        for response, status, code in [
            (await admin.post("/api/v1/cameras/cam-nope/zones", json={}), 404, "unknown_camera"),
            (
                await admin.post("/api/v1/cameras/cam-door/zones", json={"zones": "door"}),
                422,
                "invalid_request",
            ),
            (
                await admin.post(
                    "/api/v1/cameras/cam-door/zones",
                    content=b'{"zones": [{"id": "z", "points": [[NaN, 1], [2, 2], [3, 1]]}]}',
                    headers={"Content-Type": "application/json"},
                ),
                422,
                "invalid_request",
            ),
            (
                await admin.post(
                    "/api/v1/cameras/cam-door/zones",
                    json={"zones": [{"id": "z", "points": square(1, 1, 9) * (MAX_BODY // 10)}]},
                ),
                413,
                "body_too_large",
            ),
            (await operator.post("/api/v1/cameras/cam-door/zones", json={}), 403, "forbidden"),
            (await viewer.post("/api/v1/cameras/cam-door/zones", json={}), 403, "forbidden"),
        ]:
            assert (response.status_code, response.json()["code"]) == (status, code), response.text

        # The file was edited since the start: without the camera, or not YAML any more.
        fine = {"zones": [{"id": "z", "points": square(1, 1, 9)}]}
        data = yaml.safe_load(gate.config_path.read_text())
        data["cameras"] = data["cameras"][1:]
        gate.config_path.write_text(yaml.safe_dump(data))
        gone = await admin.post("/api/v1/cameras/cam-door/zones", json=fine)
        assert (gone.status_code, gone.json()["code"]) == (409, "camera_not_in_config"), gone.text
        gate.config_path.write_text("cameras: [\n")
        broken = await admin.post("/api/v1/cameras/cam-door/zones", json=fine)
        assert (broken.status_code, broken.json()["code"]) == (409, "config_unreadable"), broken.text
        assert services.counters.get("api_zone_edit_refused_config_unreadable") == 1


def test_a_drawing_of_many_large_zones_is_checked_off_the_event_loop(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, monkeypatch: Any
) -> None:
    """The largest drawing the API takes (64 zones of 256 points, ~400 KB) costs seconds of pure
    Python to check; the gates share the event loop, so none of it may run there."""
    from edge_agent.api.routers import cameras as router
    from vision import config as vision_config

    def ring(k: int) -> list[list[float]]:
        cx, cy = 20 + (k % 8) * 38, 15 + (k // 8) * 20
        return [
            [cx + 9 * math.cos(2 * math.pi * i / 256), cy + 9 * math.sin(2 * math.pi * i / 256)]
            for i in range(256)
        ]

    drawing = {
        "reference_size": [WIDTH, HEIGHT],
        "zones": [{"id": f"z{k}", "points": ring(k)} for k in range(64)],
    }
    checked_in: list[str] = []

    def watched(real: Any) -> Any:
        def polygon_problem(points: Any) -> Any:
            if len(points) == 256:  # the drawing's, not the configured zones
                checked_in.append(threading.current_thread().name)
            return real(points)

        return polygon_problem

    async def scenario() -> None:
        async with running_cameras(tmp_path, mosquitto.url, max_body=5 * 1024 * 1024) as gate:
            async with gate.client("admin", tokens) as admin:
                monkeypatch.setattr(router, "polygon_problem", watched(router.polygon_problem))
                monkeypatch.setattr(vision_config, "polygon_problem", watched(vision_config.polygon_problem))
                answer = await admin.post("/api/v1/cameras/cam-door/zones", json=drawing, timeout=120)
            assert answer.status_code == 200, answer.text
            zones = yaml.safe_load(answer.json()["yaml"])["security"]["zones"]
            assert [z["id"] for z in zones] == [f"z{k}" for k in range(64)]
            assert all(len(z["points"]) == 256 for z in zones)

    asyncio.run(asyncio.wait_for(scenario(), 180))
    loop_thread = threading.current_thread().name  # asyncio.run ran the agent's loop here
    assert len(checked_in) >= 64, "the drawing's polygons were not checked"
    assert loop_thread not in checked_in, (
        f"{checked_in.count(loop_thread)} polygons checked on the event loop"
    )

"""Enrollment through the API with real photos and the real face models: one face cropped from a
shipped scene photo is stored (encrypted); a group photo is refused with several_faces."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np

from edge_agent.face_templates import FACES_DB
from sync.contract import validate_event
from tests.api.conftest import FACE_CAMERA, Tokens, running_api, until
from tests.api.test_api import outbox_events
from tests.conftest import MosquittoBroker
from vision.face_detect import FaceDetector
from vision.face_eval import crop_around
from vision.scenes import SCENES_DIR, load_photo


def _photos() -> tuple[bytes, bytes]:
    image = load_photo("sample6.jpg")
    box = sorted(FaceDetector().detect(image), key=lambda f: f.box[0])[3].box
    ok, single = cv2.imencode(".jpg", crop_around(image, box))
    assert ok
    return bytes(single), (SCENES_DIR / "sample1.jpg").read_bytes()


def test_enroll_one_face_and_refuse_a_group_photo(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens, face_key: str
) -> None:
    single, group = _photos()

    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url, extra_config=FACE_CAMERA) as gate:
            await until(lambda: gate.agent.cameras.faces is not None, "face service")
            # The camera's person detection is counted at scrape time (frames of the generated clip).
            await until(
                lambda: (
                    "cam-7a" in gate.agent.cameras.security_workers
                    and gate.agent.cameras.security_workers["cam-7a"].pipeline.frames > 0
                ),
                "person frames",
            )
            async with gate.client() as anon:
                scraped = (await anon.get("/metrics")).text
            assert 'edge_person_pipeline_total{camera="cam-7a",name="frames"}' in scraped
            assert 'edge_device_online{device="cam-7a",kind="camera"} 1.0' in scraped
            operator, viewer = gate.client("operator", tokens), gate.client("viewer", tokens)
            async with operator, viewer:
                ok = await operator.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S1"},
                    files=[
                        ("photos", ("s1.jpg", single, "image/jpeg")),
                        ("photos", ("class.jpg", group, "image/jpeg")),
                    ],
                )
                assert ok.status_code == 201, ok.text
                body = ok.json()
                assert len(body["stored"]) == 1
                assert [(r["photo"], r["code"]) for r in body["rejected"]] == [("class.jpg", "several_faces")]
                assert gate.agent.cameras.faces is not None and "S1" in gate.agent.cameras.faces.gallery
                person = (await viewer.get("/api/v1/roster/persons/S1")).json()
                assert person["face_templates"] == 1

                only_group = await operator.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2"},
                    files=[("photos", ("class.jpg", group, "image/jpeg"))],
                )
                assert only_group.status_code == 422 and only_group.json()["code"] == "several_faces"
                noise = np.random.default_rng(7).integers(0, 255, 4096, dtype=np.uint8).tobytes()
                garbage = await operator.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2"},
                    files=[("photos", ("noise.jpg", noise, "image/jpeg"))],
                )
                assert garbage.status_code == 422, garbage.text
                unknown = await operator.post(
                    "/api/v1/enrollments",
                    data={"person_id": "NOBODY"},
                    files=[("photos", ("s1.jpg", single, "image/jpeg"))],
                )
                assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_person"
                refused = await viewer.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S1"},
                    files=[("photos", ("s1.jpg", single, "image/jpeg"))],
                )
                assert refused.status_code == 403
            await gate.agent.outbox.flush()  # the last audit events were submitted, not yet committed
            assert (tmp_path / "data" / FACES_DB).is_file()
            audits = [a["data"] for a in outbox_events(gate.agent, "edu.campus.gateway.audit.v1")]
            enrolls = [
                (a["target"], a["result"], a.get("reason", "")) for a in audits if a["action"] == "enroll"
            ]
            assert enrolls[0] == ("S1", "ok", "1 stored, 1 rejected")
            assert ("S2", "refused", "several_faces") in enrolls
            assert ("NOBODY", "refused", "unknown_person") in enrolls
            # The viewer's 403 is audited too (its target is empty: the person id is in the form).
            assert any(a["action"] == "enroll" and a["role"] == "viewer" for a in audits)
            for event in outbox_events(gate.agent, "edu.campus.gateway.audit.v1"):
                validate_event(event)

    asyncio.run(scenario())

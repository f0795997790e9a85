"""Enrollment through the API with real photos and the real face models: one face cropped from a
shipped scene photo is stored (encrypted); a group photo is refused with several_faces; a look-alike
of another person is refused unless an admin forces it (audited); consent is required; a person's
templates are listed (metadata only) and deleted. Biometric endpoints are admin only, every call
audited with the token's name."""

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
            admin, operator = gate.client("admin", tokens), gate.client("operator", tokens)
            viewer = gate.client("viewer", tokens)
            async with admin, operator, viewer:
                ok = await admin.post(
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

                only_group = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2"},
                    files=[("photos", ("class.jpg", group, "image/jpeg"))],
                )
                assert only_group.status_code == 422 and only_group.json()["code"] == "several_faces"
                noise = np.random.default_rng(7).integers(0, 255, 4096, dtype=np.uint8).tobytes()
                garbage = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2"},
                    files=[("photos", ("noise.jpg", noise, "image/jpeg"))],
                )
                assert garbage.status_code == 422, garbage.text
                unknown = await admin.post(
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
                # An operator may run the gate, not handle biometric data.
                not_admin = await operator.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S1"},
                    files=[("photos", ("s1.jpg", single, "image/jpeg"))],
                )
                assert not_admin.status_code == 403 and not_admin.json()["code"] == "forbidden"
                assert (await operator.get("/api/v1/persons/S1/templates")).status_code == 403
                assert (await operator.delete("/api/v1/persons/S1/templates")).status_code == 403

                # S1's face for S2: refused, naming S1 and the distance...
                look_alike = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2"},
                    files=[("photos", ("s1-again.jpg", single, "image/jpeg"))],
                )
                assert look_alike.status_code == 422, look_alike.text
                assert look_alike.json()["code"] == "matches_other_person"
                assert "0.00 from S1's template" in look_alike.json()["details"][0]["message"]
                no_reason = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2", "force": "true"},
                    files=[("photos", ("s1-again.jpg", single, "image/jpeg"))],
                )
                assert no_reason.status_code == 422 and no_reason.json()["code"] == "reason_required"
                # ...unless an admin forces it with a reason (audited below).
                forced = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "S2", "force": "true", "reason": "twins, checked at the office"},
                    files=[("photos", ("s1-again.jpg", single, "image/jpeg"))],
                )
                assert forced.status_code == 201, forced.text
                assert [f["code"] for f in forced.json()["forced"]] == ["matches_other_person"]
                # No consent on record for T1: refused with the reason.
                no_consent = await admin.post(
                    "/api/v1/enrollments",
                    data={"person_id": "T1"},
                    files=[("photos", ("s1.jpg", single, "image/jpeg"))],
                )
                assert no_consent.status_code == 422 and no_consent.json()["code"] == "consent_missing"

                listed = await admin.get("/api/v1/persons/S2/templates")
                assert listed.status_code == 200, listed.text
                [template] = listed.json()["templates"]
                assert set(template) == {"id", "created_at", "source", "model"}  # never the vector
                assert template["id"] == forced.json()["stored"][0] and template["source"] == "enrolled"
                deleted = await admin.delete("/api/v1/persons/S2/templates")
                assert deleted.json() == {"person_id": "S2", "deleted": 1}
                assert (await admin.get("/api/v1/persons/S2/templates")).json()["templates"] == []
                assert "S2" not in gate.agent.cameras.faces.current_gallery()
                assert (await admin.get("/api/v1/persons/NOBODY/templates")).status_code == 404
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
            refused_operator = {
                (a["action"], a["actor"])
                for a in audits
                if a["role"] == "operator" and a["result"] == "refused"
            }
            assert {
                ("enroll", "guard-1"),
                ("list_templates", "guard-1"),
                ("delete_templates", "guard-1"),
            } <= refused_operator
            admin_name = next(a["actor"] for a in audits if a["role"] == "admin")
            [force_audit] = [a for a in audits if a["action"] == "enroll_forced"]
            assert (force_audit["target"], force_audit["result"], force_audit["actor"]) == (
                "S2",
                "ok",
                admin_name,
            )
            assert "twins, checked at the office" in force_audit["reason"]
            assert "matches_other_person" in force_audit["reason"]
            assert ("S2", "refused", "matches_other_person") in enrolls
            assert ("T1", "refused", "consent_missing") in enrolls
            did = {(a["action"], a["target"], a["result"]) for a in audits if a["role"] == "admin"}
            assert {("list_templates", "S2", "ok"), ("delete_templates", "S2", "ok")} <= did
            for event in outbox_events(gate.agent, "edu.campus.gateway.audit.v1"):
                validate_event(event)

    asyncio.run(scenario())

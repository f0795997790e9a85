"""Face templates from the centre: embeddings of our model, photos embedded here, other models kept
apart; all encrypted; gone with their person. Real models on the shipped scene photos, real SQLite."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import FaceSettings
from edge_agent.face_templates import FaceTemplateStore, parse_key
from edge_agent.faces import FaceService
from edge_agent.roster import Roster
from sync import RosterDelta, RosterSnapshot
from tests.support.agent_harness import face_camera_worker
from vision.face_eval import crop_around
from vision.scenes import load_photo


def test_roster_templates_are_stored_encrypted_used_and_deleted(tmp_path: Path) -> None:
    store = FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k"))
    roster = Roster(tmp_path)
    service = FaceService(store, FaceSettings(), roster=lambda: roster.index)
    alice_img = load_photo("sample6.jpg")
    carol_img = load_photo("sample3.jpg")
    alice_box = sorted(service.detector.detect(alice_img), key=lambda f: f.box[0])[3].box
    carol_box = sorted(service.detector.detect(carol_img), key=lambda f: f.box[0])[0].box
    alice_crop = crop_around(alice_img, alice_box)
    from vision.face_pipeline import embed_enrollment_photo

    alice_embedding = embed_enrollment_photo(alice_crop, detector=service.detector, embedder=service.embedder)
    ok, carol_jpeg = cv2.imencode(".jpg", crop_around(carol_img, carol_box))
    assert ok
    roster.on_face_templates.append(service.apply_roster)
    roster.on_person_removed.append(service.delete_templates)
    consent = {"granted_by": "self", "granted_at": "2026-01-01T00:00:00Z", "scopes": ["attendance"]}
    persons = [
        {"id": p, "name": p, "role": "student", "consent": consent} for p in ("alice", "carol", "dave")
    ]
    roster.apply_snapshot(
        RosterSnapshot.model_validate(
            {
                "kind": "snapshot",
                "version": 1,
                "persons": persons,
                "face_templates": [
                    {
                        "id": "t-alice",
                        "person_id": "alice",
                        "model_id": service.model_id,
                        "embedding": alice_embedding.embedding.tolist(),
                    },
                    {
                        "id": "t-carol",
                        "person_id": "carol",
                        "model_id": "some_other_model",
                        "photo_jpeg_b64": base64.b64encode(carol_jpeg.tobytes()).decode(),
                    },
                    {"id": "t-dave", "person_id": "dave", "model_id": "arcface_v9", "embedding": [0.1] * 512},
                    {
                        "id": "t-bad",
                        "person_id": "dave",
                        "model_id": "x",
                        "photo_jpeg_b64": "bm90IGEgcGhvdG8=",
                    },
                ],
            }
        )
    )
    assert set(service.current_gallery().persons) == {"alice", "carol"}  # dave's template is another model's
    assert service.counters["templates_other_model_received"] == 1
    assert service.counters["template_photo_not_an_image"] == 1
    stored = {t.id: t for t in store.templates()}
    assert set(stored) == {"t-alice", "t-carol", "t-dave"}
    assert stored["t-carol"].model_id == service.model_id  # embedded here, with our model
    assert np.allclose(stored["t-alice"].embedding, alice_embedding.embedding, atol=1e-6)
    # The photo itself is not kept anywhere in the database.
    raw = (tmp_path / "faces.db").read_bytes()
    assert carol_jpeg.tobytes()[:64] not in raw
    # alice leaves the roster: her template goes from disk and from the gallery.
    roster.apply_delta(
        RosterDelta.model_validate(
            {"kind": "delta", "from_version": 1, "version": 2, "delete": {"persons": ["alice"]}}
        )
    )
    assert "alice" not in service.current_gallery().persons
    assert "t-alice" not in {t.id for t in store.templates()}
    # A template deleted by id goes too.
    roster.apply_delta(
        RosterDelta.model_validate(
            {"kind": "delta", "from_version": 2, "version": 3, "delete": {"face_templates": ["t-carol"]}}
        )
    )
    assert "carol" not in service.current_gallery().persons
    roster.close()
    store.close()


def test_face_and_card_within_the_window_is_face_plus_card(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from device_drivers import CameraFrame
    from edge_agent.attendance import AttendanceBook
    from edge_agent.cameras import CameraWorker
    from edge_agent.config import CameraSetup
    from vision import IdentityDecision

    store = FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k"))
    service = FaceService(store, FaceSettings())
    roster = Roster(tmp_path)
    roster.apply_snapshot(
        RosterSnapshot.model_validate(
            {
                "kind": "snapshot",
                "version": 1,
                "persons": [{"id": p, "name": p, "role": "student", "group": "7A"} for p in ("alice", "bob")],
            }
        )
    )
    setup = CameraSetup.model_validate(
        {
            "device": {"kind": "camera_sim", "id": "cam-7a"},
            "face": {
                "point": "room-7a",
                "card_gate": "door-7a",
                "card_window_s": 30,
                "attendance": {
                    "sessions": [
                        {
                            "id": "s",
                            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                            "start": "00:00",
                            "end": "24:00",
                            "late_after_min": 1440,
                        }
                    ]
                },
            },
        }
    )
    emitted: list[Any] = []
    carded = {"alice"}
    worker = CameraWorker(
        setup,
        models=service.models,
        person=lambda person_id: roster.index.persons.get(person_id),
        attendance=AttendanceBook(tmp_path),
        emit=lambda event, attachment=None: emitted.append(event),
        source=lambda d: f"campus/s/g/{d}",
        timezone=ZoneInfo("UTC"),
        recent_card=lambda gate, person, window: gate == "door-7a" and person in carded,
    )
    frame = CameraFrame("cam-7a", np.zeros((8, 8, 3), np.uint8), datetime.now(UTC), 1)
    for person in ("alice", "bob", "alice"):
        worker._identified(
            IdentityDecision(
                track_id=1,
                person_id=person,
                distance=0.3,
                weight=3.0,
                share=1.0,
                votes=3,
                box=(0, 0, 4, 4),
                model_id=service.model_id,
                timestamp=0.0,
            ),
            frame,
        )
    worker.close()
    methods = {e.subject: e.data["method"] for e in emitted}
    assert methods == {"alice": "face+card", "bob": "face"}
    assert len(emitted) == 2  # once per person per session
    assert emitted[0].data["confidence"] == round(1 - 0.3 / service.gallery.threshold, 4)


def test_a_camera_can_run_the_face_detector_at_its_own_input_size(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from edge_agent.cameras import CameraWorker
    from edge_agent.config import CameraSetup

    service = FaceService(FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k")), FaceSettings())

    def worker(face: dict[str, Any]) -> CameraWorker:
        return face_camera_worker(service, "room-12", tmp_path, face)

    default, rollcall = worker({}), worker({"detector_max_side": 1280})
    assert default.pipeline.detector is service.models.detector
    assert default.pipeline.detector.config.max_side == 640
    assert rollcall.pipeline.detector.config.max_side == 1280
    # The agent's ONNX session, not a second copy of the model.
    assert rollcall.pipeline.detector.model is service.models.detector.model
    with pytest.raises(ValidationError, match="detector_max_side"):
        CameraSetup.model_validate(
            {"device": {"kind": "camera_sim", "id": "c"}, "face": {"detector_max_side": 32}}
        )

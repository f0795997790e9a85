"""Face templates from the centre: embeddings of our model, photos embedded here, other models kept
apart; all encrypted; gone with their person. Real models on the shared photos, real SQLite."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import cv2
import numpy as np

from edge_agent.face_templates import FaceTemplateStore, parse_key
from edge_agent.faces import FaceService, FaceSettings
from edge_agent.roster import Roster
from sync.roster_messages import RosterDelta, RosterSnapshot
from vision.face_eval import crop_around


def test_roster_templates_are_stored_encrypted_used_and_deleted(tmp_path: Path, shared_dir: Path) -> None:
    scenes = shared_dir / "testdata" / "scenes"
    store = FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k"))
    service = FaceService(store, FaceSettings())
    alice_img = cv2.imread(str(scenes / "sample6.jpg"))
    carol_img = cv2.imread(str(scenes / "sample3.jpg"))
    alice_box = sorted(service.detector.detect(alice_img), key=lambda f: f.box[0])[3].box
    carol_box = sorted(service.detector.detect(carol_img), key=lambda f: f.box[0])[0].box
    alice_crop = crop_around(alice_img, alice_box)
    from vision.face_pipeline import embed_enrollment_photo

    alice_embedding = embed_enrollment_photo(alice_crop, detector=service.detector, embedder=service.embedder)
    ok, carol_jpeg = cv2.imencode(".jpg", crop_around(carol_img, carol_box))
    assert ok
    roster = Roster(tmp_path)
    roster.on_face_templates.append(service.apply_roster)
    roster.on_person_removed.append(service.person_removed)
    persons = [{"id": p, "name": p, "role": "student"} for p in ("alice", "carol", "dave")]
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
    assert set(service.gallery.persons) == {"alice", "carol"}  # dave's template is another model's
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
    assert "alice" not in service.gallery.persons
    assert "t-alice" not in {t.id for t in store.templates()}
    # A template deleted by id goes too.
    roster.apply_delta(
        RosterDelta.model_validate(
            {"kind": "delta", "from_version": 2, "version": 3, "delete": {"face_templates": ["t-carol"]}}
        )
    )
    assert "carol" not in service.gallery.persons
    roster.close()
    store.close()

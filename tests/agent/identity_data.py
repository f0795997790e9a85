"""What the identity tests hold about people: real face templates (embeddings of faces in the
project's scene photos, vision/scenes, by the real models), a roster with consent records, cards,
attendance records and alerts naming a person."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.access import AntiPassback, Decision, decide
from edge_agent.alerts import AlertBook
from edge_agent.attendance import ATTENDANCE_DB
from edge_agent.config import AntiPassbackConfig
from edge_agent.face_templates import FaceTemplateStore
from edge_agent.roster import RosterIndex
from sync import Event, Severity
from vision import FaceDetector, FaceEmbedder, embed_enrollment_photo
from vision.face_eval import crop_around
from vision.scenes import load_photo

FACES = {"alice": ("sample6.jpg", 3), "carol": ("sample3.jpg", 0), "bob": ("sample6.jpg", 0)}
"""Person id -> (scene photo, index of the face from the left)."""


def enrollment_photos(out: Path) -> dict[str, Path]:
    """A head-and-shoulders JPEG of each face in :data:`FACES`, as an operator would cut one."""
    detector = FaceDetector()
    photos = {}
    for person_id, (photo, index) in FACES.items():
        image = load_photo(photo)
        box = sorted(detector.detect(image), key=lambda f: f.box[0])[index].box
        path = out / f"{person_id}.jpg"
        cv2.imwrite(str(path), crop_around(image, box))
        photos[person_id] = path
    return photos


def embeddings(photos: dict[str, Path]) -> dict[str, tuple[npt.NDArray[np.float32], str]]:
    """Each photo's embedding and model id, through the enrollment quality gate."""
    detector, embedder = FaceDetector(), FaceEmbedder()
    out = {}
    for person_id, path in photos.items():
        result = embed_enrollment_photo(path.read_bytes(), detector=detector, embedder=embedder)
        out[person_id] = (result.embedding, result.model_id)
    return out


def consent(granted_at: str = "2026-01-01T00:00:00Z", **changes: Any) -> dict[str, Any]:
    return {
        "granted_by": "guardian",
        "guardian_name": "A. Parent",
        "granted_at": granted_at,
        "scopes": ["attendance"],
        "reference": "form-2026-17",
        **changes,
    }


def person(person_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": person_id,
        "name": person_id.title(),
        "role": "student",
        "group": "7A",
        "access_groups": ["students"],
        "birth_date": "2014-03-02",
        "consent": consent(),
        **changes,
    }


def snapshot(persons: list[dict[str, Any]], version: int = 1) -> dict[str, Any]:
    """A roster with ``persons``, one card each (``CARD-<id>``), and a group open on every gate."""
    return {
        "kind": "snapshot",
        "version": version,
        "persons": persons,
        "credentials": [
            {"credential": f"00CA{p['id'].upper()}", "format": "any", "person_id": p["id"]} for p in persons
        ],
        "access_groups": [{"id": "students", "gates": ["*"]}],
    }


def card_of(person_id: str) -> str:
    return f"00CA{person_id.upper()}"


def decide_card(index: RosterIndex, card: str) -> Decision:
    """The gate's decision on ``card`` at gate-1, on a weekday morning."""
    now = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    return decide(
        index,
        credential=card,
        card_format="em4100",
        gate="gate-1",
        direction="in",
        now=now,
        local_now=now,
        monotonic_now=0.0,
        anti_passback=AntiPassback(),
        anti_passback_config=AntiPassbackConfig(),
    )


def store_templates(
    store: FaceTemplateStore, faces: dict[str, tuple[npt.NDArray[np.float32], str]], *people: str
) -> dict[str, str]:
    """One template per person, as enrollment stores it; returns person -> template id."""
    return {p: store.add(p, faces[p][0], faces[p][1], "enrolled") for p in people}


def alerts_naming(book: AlertBook, person_id: str, at: datetime) -> tuple[str, str]:
    """Two alerts naming ``person_id``, each with a snapshot: one acknowledged, one open. No alert the
    gateway raises today names a person (stranger alerts name no one); these stand for one that
    would, recorded through the book as the gateway records alerts."""
    ids = []
    for n in range(2):
        event = Event(
            "edu.campus.security.test_alert.v1",
            "campus/s/gw/cam-1",
            {"device": "cam-1", "reason": f"alert {n}", "person": {"id": person_id, "name": person_id}},
            time=at,
            severity=Severity.WARNING,
        )
        book.record(event, b"\xff\xd8\xff\xe0 face crop of " + person_id.encode())
        ids.append(event.id)
    book.acknowledge(ids[0], "guard-1")
    return ids[0], ids[1]


def attendance_rows(data_dir: Path, person_id: str, days: list[str]) -> None:
    """Attendance records of ``person_id`` on ``days`` (ISO dates), as the book writes them."""
    import sqlite3

    from edge_agent.attendance import AttendanceBook

    AttendanceBook(data_dir).close()  # the schema
    conn = sqlite3.connect(data_dir / ATTENDANCE_DB)
    with conn:
        conn.executemany(
            "INSERT INTO recorded (point, session, day, person_id, at) VALUES ('room-7a', 'p1', ?, ?, ?)",
            [(day, person_id, f"{day}T08:01:00") for day in days],
        )
    conn.close()

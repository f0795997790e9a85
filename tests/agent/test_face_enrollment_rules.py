"""Safe enrollment, in process, with the real models on the shipped scene photos and a real SQLite
gallery: a look-alike of another person is refused (and stored only when an admin forces it), a
wrong photo for the right person is refused, the photos of one enrollment must agree, consent is
required to store and to match, and templates from the centre pass the same gate."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.config import FaceSettings
from edge_agent.face_templates import FaceTemplateStore, parse_key
from edge_agent.faces import FaceService, Override
from edge_agent.roster import Roster
from sync import RosterDelta, RosterSnapshot
from vision import FaceDetector, embed_enrollment_photo
from vision.face_eval import crop_around, realistic_variants
from vision.scenes import load_photo

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CONSENT = {"granted_by": "self", "granted_at": "2026-09-01T00:00:00Z", "scopes": ["attendance"]}


def _face(detector: FaceDetector, photo: str, index: int, variant: str | None = None) -> bytes:
    """A JPEG of one face of a scene photo (a tight crop, so a rotated variant shows one face)."""
    image = load_photo(photo)
    box = sorted(detector.detect(image), key=lambda f: f.box[0])[index].box
    crop = crop_around(image, box, 0.6 if variant else 1.0)
    if variant is not None:
        crop = realistic_variants(crop)[variant]
    ok, jpeg = cv2.imencode(".jpg", crop)
    assert ok
    return jpeg.tobytes()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """alice: sample6 face 3; carol: sample3 face 0; dave: sample2 face 1 (three different people)."""
    d = FaceDetector()
    return {
        "alice": _face(d, "sample6.jpg", 3),
        "alice_rot": _face(d, "sample6.jpg", 3, "rotate_6"),
        "alice_dark": _face(d, "sample6.jpg", 3, "exposure_darker"),
        "alice_jpeg": _face(d, "sample6.jpg", 3, "jpeg_40"),
        "carol": _face(d, "sample3.jpg", 0),
        "carol_rot": _face(d, "sample3.jpg", 0, "rotate_-6"),
        "dave": _face(d, "sample2.jpg", 1),
    }


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Faces:
    service: FaceService
    roster: Roster
    store: FaceTemplateStore
    clock: Clock


def _persons(**consents: dict[str, Any] | None) -> list[dict[str, Any]]:
    out = []
    for pid, consent in consents.items():
        person: dict[str, Any] = {"id": pid, "name": pid.title(), "role": "student"}
        if consent is not None:
            person["consent"] = consent
        out.append(person)
    return out


@pytest.fixture
def faces(tmp_path: Path) -> Iterator[Faces]:
    clock = Clock()
    roster = Roster(tmp_path, now=clock)
    roster.apply_snapshot(
        RosterSnapshot.model_validate(
            {
                "kind": "snapshot",
                "version": 1,
                "persons": _persons(
                    alice=CONSENT,
                    carol=CONSENT,
                    dave=CONSENT,
                    nobody_asked=None,
                    withdrawn={**CONSENT, "withdrawn_at": "2026-11-01T00:00:00Z"},
                    expired={**CONSENT, "expires_at": "2026-11-30T00:00:00Z"},
                    access_only={**CONSENT, "scopes": ["access"]},
                ),
            }
        )
    )
    store = FaceTemplateStore(tmp_path, parse_key(secrets.token_hex(32), "k"), now=clock)
    service = FaceService(store, FaceSettings(), roster=lambda: roster.index, now=clock)
    roster.on_face_templates.append(service.apply_roster)
    roster.on_person_removed.append(service.delete_templates)
    yield Faces(service, roster, store, clock)
    store.close()
    roster.close()


def test_a_look_alike_of_another_person_is_refused_unless_forced(
    faces: Faces, photos: dict[str, bytes]
) -> None:
    svc, index = faces.service, faces.roster.index
    assert svc.enroll("alice", [("alice.jpg", photos["alice"])], index).stored
    # S1002's face for S1001, as the issue tried: refused, naming the other person and the distance.
    refused = svc.enroll("carol", [("alice-again.jpg", photos["alice_jpeg"])], index)
    assert refused.stored == []
    [(name, code, message)] = refused.rejected
    assert (name, code) == ("alice-again.jpg", "matches_other_person")
    assert "from alice's template" in message
    distance = float(message.split("this face is ")[1].split(" from")[0])
    assert distance < svc.threshold
    assert faces.store.count_person("carol") == 0 and "carol" not in svc.current_gallery()
    # An admin who knows better (twins, say) forces it: stored, and the outcome lists what to audit.
    forced = svc.enroll(
        "carol", [("alice-again.jpg", photos["alice_jpeg"])], index, override=Override("identical twins")
    )
    assert len(forced.stored) == 1
    assert [(n, c) for n, c, _ in forced.forced] == [("alice-again.jpg", "matches_other_person")]
    assert any("identical twins" in w for w in forced.warnings)
    assert svc.counters["enroll_forced_matches_other_person"] == 1


def _embedding(svc: FaceService, photo: bytes) -> np.ndarray:
    return embed_enrollment_photo(photo, detector=svc.detector, embedder=svc.embedder).embedding


def test_the_margin_above_the_threshold_is_refused_too(faces: Faces, photos: dict[str, bytes]) -> None:
    svc, index = faces.service, faces.roster.index
    assert svc.enroll("alice", [("alice.jpg", photos["alice"])], index).stored
    # dave is someone else, farther from alice than the threshold: how far decides the margin.
    distance = float(np.linalg.norm(_embedding(svc, photos["dave"]) - _embedding(svc, photos["alice"])))
    assert distance > svc.threshold

    def service(margin: float) -> FaceService:
        settings = FaceSettings(duplicate_margin=margin)
        return FaceService(faces.store, settings, roster=lambda: faces.roster.index, now=faces.clock)

    near = service(distance - svc.threshold + 0.01).enroll("dave", [("dave.jpg", photos["dave"])], index)
    assert [c for _, c, _ in near.rejected] == ["matches_other_person"], near.rejected
    assert f"{distance:.2f} from alice" in near.rejected[0][2]
    assert (
        service(distance - svc.threshold - 0.01).enroll("dave", [("dave.jpg", photos["dave"])], index).stored
    )


def test_a_wrong_photo_for_the_right_person_is_refused(faces: Faces, photos: dict[str, bytes]) -> None:
    svc, index = faces.service, faces.roster.index
    first = svc.enroll("alice", [("alice.jpg", photos["alice"])], index)
    # One photo is allowed (the second may come another day), with a warning to enroll more.
    assert first.stored and any("now holds 1 face template" in w for w in first.warnings)
    # carol is enrolled nowhere, so this is no look-alike: it is unlike alice's own template.
    wrong = svc.enroll("alice", [("carol.jpg", photos["carol"])], index)
    assert [(n, c) for n, c, _ in wrong.rejected] == [("carol.jpg", "inconsistent_with_person")]
    assert "from alice's own templates" in wrong.rejected[0][2]
    assert faces.store.count_person("alice") == 1
    # Another photo of alice herself is welcome.
    second = svc.enroll("alice", [("alice-dark.jpg", photos["alice_dark"])], index)
    assert second.stored and second.warnings == []
    assert faces.store.count_person("alice") == 2
    forced = svc.enroll("alice", [("carol.jpg", photos["carol"])], index, override=Override("new haircut"))
    assert [c for _, c, _ in forced.forced] == ["inconsistent_with_person"] and forced.stored


def test_several_photos_must_agree_and_the_outlier_is_named(faces: Faces, photos: dict[str, bytes]) -> None:
    svc, index = faces.service, faces.roster.index
    out = svc.enroll(
        "alice",
        [
            ("a1.jpg", photos["alice"]),
            ("a2.jpg", photos["alice_rot"]),
            ("stranger.jpg", photos["dave"]),
            ("a3.jpg", photos["alice_dark"]),
        ],
        index,
    )
    assert [(n, c) for n, c, _ in out.rejected] == [("stranger.jpg", "photo_outlier")]
    assert "stranger.jpg does not match the other photos" in out.rejected[0][2]
    assert len(out.stored) == 3 and faces.store.count_person("alice") == 3
    # Two photos of two people: neither can be told right, both are named.
    two = svc.enroll("carol", [("c.jpg", photos["carol"]), ("d.jpg", photos["dave"])], index)
    assert two.stored == [] and sorted(c for _, c, _ in two.rejected) == ["photo_outlier"] * 2
    # Two photos of carol: both stored, each through the quality gate.
    both = svc.enroll("carol", [("c.jpg", photos["carol"]), ("c2.jpg", photos["carol_rot"])], index)
    assert len(both.stored) == 2, both.rejected
    # At most faces.max_templates_per_person (5) in total: alice holds 3, three more are refused.
    more = svc.enroll(
        "alice",
        [("a4.jpg", photos["alice_jpeg"]), ("a5.jpg", photos["alice"]), ("a6.jpg", photos["alice_rot"])],
        index,
    )
    assert more.stored == [] and {c for _, c, _ in more.rejected} == {"too_many_templates"}
    assert "at most 5" in more.rejected[0][2]
    assert svc.enroll("alice", [("a4.jpg", photos["alice_jpeg"])], index).stored


@pytest.mark.parametrize(
    ("person", "code"),
    [
        ("nobody_asked", "consent_missing"),
        ("withdrawn", "consent_withdrawn"),
        ("expired", "consent_expired"),
        ("access_only", "consent_scope"),
    ],
)
def test_enrollment_needs_consent_for_attendance(
    faces: Faces, photos: dict[str, bytes], person: str, code: str
) -> None:
    out = faces.service.enroll(person, [("p.jpg", photos["dave"])], faces.roster.index)
    assert out.stored == [] and [c for _, c, _ in out.rejected] == [code]
    assert faces.store.count_person(person) == 0
    assert faces.service.counters[f"enroll_rejected_{code}"] == 1


def test_the_cameras_gallery_holds_only_persons_with_consent_now(
    faces: Faces, photos: dict[str, bytes]
) -> None:
    svc, roster = faces.service, faces.roster
    assert svc.enroll("alice", [("a.jpg", photos["alice"])], roster.index).stored
    assert svc.enroll("carol", [("c.jpg", photos["carol"])], roster.index).stored
    assert set(svc.current_gallery().persons) == {"alice", "carol"}
    # carol's consent expires tomorrow (a roster delta that changes only her record, no template):
    # matched until then, not a minute after, though her template is still on disk.
    roster.apply_delta(
        RosterDelta.model_validate(
            {
                "kind": "delta",
                "from_version": 1,
                "version": 2,
                "upsert": {
                    "persons": _persons(
                        carol={**CONSENT, "expires_at": (NOW + timedelta(days=1)).isoformat()}
                    )
                },
            }
        )
    )
    assert set(svc.current_gallery().persons) == {"alice", "carol"}
    faces.clock.now = NOW + timedelta(days=1, minutes=1)
    assert set(svc.current_gallery().persons) == {"alice"}
    assert faces.store.count_person("carol") == 1
    [carol_match] = svc.current_gallery().match(_embedding(svc, photos["carol_rot"]))
    assert carol_match.person_id is None
    # alice leaves the roster: never matched again, her templates gone.
    roster.apply_delta(
        RosterDelta.model_validate(
            {"kind": "delta", "from_version": 2, "version": 3, "delete": {"persons": ["alice"]}}
        )
    )
    assert "alice" not in svc.current_gallery() and faces.store.count_person("alice") == 0


def _template_from_centre(tid: str, person: str, photo: bytes) -> dict[str, Any]:
    return {
        "id": tid,
        "person_id": person,
        "model_id": "dlib_resnet_v1",
        "photo_jpeg_b64": base64.b64encode(photo).decode(),
    }


def test_templates_from_the_centre_pass_the_same_gate(faces: Faces, photos: dict[str, bytes]) -> None:
    svc, roster = faces.service, faces.roster
    roster.apply_delta(
        RosterDelta.model_validate(
            {
                "kind": "delta",
                "from_version": 1,
                "version": 2,
                "upsert": {
                    "face_templates": [
                        _template_from_centre("t-alice", "alice", photos["alice"]),
                        # No consent: refused, counted.
                        _template_from_centre("t-nobody", "nobody_asked", photos["dave"]),
                        # alice's face again, for carol: a look-alike, refused.
                        _template_from_centre("t-carol", "carol", photos["alice_jpeg"]),
                        _template_from_centre("t-carol-2", "carol", photos["carol"]),
                    ]
                },
            }
        )
    )
    assert {t.id for t in faces.store.templates()} == {"t-alice", "t-carol-2"}
    assert svc.counters["template_refused_consent_missing"] == 1
    assert svc.counters["template_refused_matches_other_person"] == 1
    assert set(svc.current_gallery().persons) == {"alice", "carol"}
    # A snapshot that sends the same templates again keeps them (they passed when they came).
    snapshot = {
        "kind": "snapshot",
        "version": 3,
        "persons": _persons(alice=CONSENT, carol=CONSENT),
        "face_templates": [
            _template_from_centre("t-alice", "alice", photos["alice"]),
            _template_from_centre("t-carol-2", "carol", photos["carol"]),
        ],
    }
    roster.apply_snapshot(RosterSnapshot.model_validate(snapshot))
    assert {t.id for t in faces.store.templates()} == {"t-alice", "t-carol-2"}


def test_an_old_duplicate_warning_distance_is_read_as_the_margin() -> None:
    # It warned below an absolute distance; now enrollment refuses below threshold + margin.
    assert FaceSettings.model_validate({"duplicate_warning_distance": 0.6}).duplicate_margin == pytest.approx(
        0.1
    )
    legacy = FaceSettings.model_validate({"threshold": 0.45, "duplicate_warning_distance": 0.4})
    assert legacy.duplicate_margin == 0.0
    assert FaceSettings().duplicate_margin == 0.05 and FaceSettings().max_templates_per_person == 5

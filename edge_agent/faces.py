"""Face recognition in the agent: the shared models, the gallery, and where templates come from.

One :class:`FaceService` per agent holds the detector and embedder (thread-safe, shared by every
camera), the in-memory gallery that cameras match against, and the encrypted template store behind
it. Templates arrive by enrollment (photos at the edge) or from the centre in the roster (embeddings
of our model, or photos we embed); a template of another model is counted and reported, never
compared.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.config.cameras import FaceSettings
from edge_agent.face_templates import FaceTemplateStore
from edge_agent.roster import FaceTemplateChange, RosterIndex
from vision import EnrollmentError, FaceDetector, FaceEmbedder, Gallery, embed_enrollment_photo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceModels:
    """What a camera matches faces with: the shared, thread-safe models and the current gallery."""

    detector: FaceDetector
    embedder: FaceEmbedder
    gallery: Callable[[], Gallery]
    """The gallery to match against now; read at every frame."""


@dataclass
class EnrollOutcome:
    """What happened to each photo of one enrollment."""

    person_id: str
    stored: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(photo name, reason code, message)"""
    warnings: list[str] = field(default_factory=list)


class FaceService:
    """Models, gallery and templates; blocking methods are meant for worker threads.

    Cameras get only what they use from it: ``detector``, ``embedder`` and :meth:`current_gallery`
    (read at every frame, so a rebuilt gallery is used from the next frame on), as :attr:`models`."""

    def __init__(self, store: FaceTemplateStore, settings: FaceSettings) -> None:
        self.store = store
        self.settings = settings
        self.detector = FaceDetector()
        self.embedder = FaceEmbedder()
        self.model_id = self.embedder.model_id
        self.gallery = Gallery(self.model_id, threshold=settings.threshold)
        self.counters: Counter[str] = Counter()
        self.reload()

    def current_gallery(self) -> Gallery:
        """The gallery to match against now (replaced whole by :meth:`reload`)."""
        return self.gallery

    @property
    def models(self) -> FaceModels:
        """The narrow handle a camera worker gets."""
        return FaceModels(self.detector, self.embedder, self.current_gallery)

    def reload(self) -> None:
        """Rebuild the gallery from the store (start-up, SIGHUP after an enrollment)."""
        fresh = Gallery(self.model_id, threshold=self.settings.threshold)
        usable = self.store.templates(self.model_id)
        if usable:
            fresh.add_many(
                [t.person_id for t in usable], np.stack([t.embedding for t in usable]), model_id=self.model_id
            )
        other = {m: n for m, n in self.store.count_by_model().items() if m != self.model_id}
        if other:
            # Never compared: a distance between two models' embeddings means nothing.
            log.warning("face templates of other models are stored and ignored: %s", other)
        self.counters["templates_other_model"] = sum(other.values())
        self.gallery = fresh
        log.info(
            "face gallery: %d templates of %d people (%s)", fresh.template_count, len(fresh), self.model_id
        )

    def enroll(self, person_id: str, photos: list[tuple[str, bytes]], roster: RosterIndex) -> EnrollOutcome:
        """Embed each photo through the quality gate and store what passes (encrypted)."""
        outcome = EnrollOutcome(person_id)
        if person_id not in roster.persons:
            outcome.rejected.extend(
                (name, "unknown_person", f"{person_id} is not in the roster") for name, _ in photos
            )
            return outcome
        for name, data in photos:
            try:
                result = embed_enrollment_photo(data, detector=self.detector, embedder=self.embedder)
            except EnrollmentError as err:
                self.counters[f"enroll_rejected_{err.code}"] += 1
                outcome.rejected.append((name, err.code, str(err)))
                continue
            nearest = self.gallery.nearest_person(result.embedding, exclude=person_id)
            if nearest is not None and nearest[1] < self.settings.duplicate_warning_distance:
                outcome.warnings.append(
                    f"{name}: this face is {nearest[1]:.2f} from {nearest[0]}; check it is the right person"
                )
            tid = self.store.add(person_id, result.embedding, result.model_id, "enrolled")
            self.gallery.add(person_id, result.embedding[None, :], model_id=result.model_id)
            outcome.stored.append(tid)
        return outcome

    def apply_roster(self, change: FaceTemplateChange) -> None:
        """Store templates from a roster message: embeddings of our model as they are, photos embedded
        here (and not kept), other models' embeddings kept aside and counted."""
        if change.replace_all:
            self.store.delete_source("centre")
        if change.delete:
            self.store.delete(change.delete)
        for template in change.upsert:
            if template.embedding is not None:
                if template.model_id != self.model_id:
                    self.counters["templates_other_model_received"] += 1
                    log.warning(
                        "face template %s is of model %s, not %s: stored but never compared",
                        template.id,
                        template.model_id,
                        self.model_id,
                    )
                self.store.add(
                    template.person_id, template.embedding, template.model_id, "centre", template.id
                )
                continue
            try:
                photo = base64.b64decode(template.photo_jpeg_b64 or "", validate=True)
                result = embed_enrollment_photo(photo, detector=self.detector, embedder=self.embedder)
            except (binascii.Error, ValueError) as err:
                self.counters["template_photo_bad"] += 1
                log.error("face template %s: photo is not base64: %s", template.id, err)
                continue
            except EnrollmentError as err:
                self.counters[f"template_photo_{err.code}"] += 1
                log.error("face template %s of %s refused: %s", template.id, template.person_id, err)
                continue
            self.store.add(template.person_id, result.embedding, result.model_id, "centre", template.id)
        self.reload()

    def person_removed(self, person_id: str) -> None:
        """The person left the roster: their templates go, from disk and from the gallery."""
        self.store.delete_person(person_id)
        self.gallery.remove(person_id)


def load_photos(paths: list[Path]) -> tuple[list[tuple[str, bytes]], list[tuple[str, str, str]]]:
    """``(photos, unreadable)``: ``(name, bytes)`` of each file read, and ``(name, code, message)`` of
    each that could not be, as :attr:`EnrollOutcome.rejected` lists them (``not_found``,
    ``not_a_file``, ``unreadable``), so a mistyped path is not reported as an empty image."""
    photos: list[tuple[str, bytes]] = []
    unreadable: list[tuple[str, str, str]] = []
    for path in paths:
        try:
            photos.append((path.name, path.read_bytes()))
        except FileNotFoundError:
            unreadable.append((path.name, "not_found", f"{path} not found"))
        except IsADirectoryError:
            unreadable.append((path.name, "not_a_file", f"{path} is a directory, not a photo"))
        except OSError as err:
            unreadable.append((path.name, "unreadable", f"cannot read {path}: {err.strerror or err}"))
        else:
            continue
        log.error("photo %s not enrolled: %s", path, unreadable[-1][2], extra={"code": unreadable[-1][1]})
    return photos, unreadable


# FaceSettings is re-exported until the configuration imports it from edge_agent.config.cameras.
__all__ = ["EnrollOutcome", "FaceModels", "FaceService", "load_photos"]

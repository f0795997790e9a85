"""Face recognition in the agent: the shared models, the gallery, and where templates come from.

One :class:`FaceService` per agent holds the detector and embedder (thread-safe, shared by every
camera), the in-memory gallery that cameras match against, and the encrypted template store behind
it. Templates arrive by enrollment (photos at the edge) or from the centre in the roster (embeddings
of our model, or photos we embed); a template of another model is counted and reported, never
compared.

Every template, whatever its path (``edge-agent enroll``, the local API, the roster), goes through
the same gate (:meth:`FaceService._vet`): the person's consent must allow attendance now, a face
closer than the threshold plus ``faces.duplicate_margin`` to another person is refused
(``matches_other_person``), one farther than the threshold from the person's own templates too
(``inconsistent_with_person``); an admin may force those two with a reason, which is audited. The
gallery cameras match against holds only persons in the roster whose consent allows attendance now.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge_agent.config.cameras import FaceSettings
from edge_agent.face_templates import FaceTemplateStore
from edge_agent.roster import FaceTemplateChange, RosterIndex
from sync import utc_now
from vision import (
    EnrollmentError,
    FaceDetector,
    FaceDetectorConfig,
    FaceEmbedder,
    Gallery,
    RuntimeConfig,
    embed_enrollment_photo,
)

log = logging.getLogger(__name__)

FORCEABLE = frozenset({"matches_other_person", "inconsistent_with_person"})
"""Refusals an admin may override with a reason (audited): a look-alike, a changed face. Consent,
quality and consistency between one enrollment's photos are never overridden."""

CONSENT_USE: Literal["attendance"] = "attendance"
"""Cameras match faces for attendance (sync.messages.roster.ConsentUse)."""

RECOMMENDED_TEMPLATES = 2
"""Fewer templates than this per person get a warning at enrollment (one photo is allowed: the
second may come another day)."""

GALLERY_RECHECK = timedelta(seconds=60)
"""How often the cameras' gallery is rebuilt for consent that starts or ends with time alone."""


@dataclass(frozen=True)
class FaceModels:
    """What a camera matches faces with: the shared, thread-safe models and the current gallery."""

    detector: FaceDetector
    embedder: FaceEmbedder
    gallery: Callable[[], Gallery]
    """The gallery to match against now; read at every frame."""


@dataclass(frozen=True)
class Override:
    """An admin's decision to store photos the look-alike / consistency checks refuse."""

    reason: str


@dataclass
class EnrollOutcome:
    """What happened to each photo of one enrollment."""

    person_id: str
    stored: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    """(photo name, reason code, message)"""
    warnings: list[str] = field(default_factory=list)
    forced: list[tuple[str, str, str]] = field(default_factory=list)
    """(photo name, reason code, message) of refusals an :class:`Override` set aside: to audit."""


class _LimitedLog:
    """Logs at most once per ``interval_s`` with the count since, so a roster full of refused
    templates costs a line a minute, not one per template."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self._interval = interval_s
        self._logged_at: float | None = None
        self._unlogged = 0

    def error(self, message: str, *args: object) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < self._interval:
            return
        log.error(message + " (%d refused since the last such line)", *args, self._unlogged)
        self._logged_at, self._unlogged = now, 0


class FaceService:
    """Models, gallery and templates; blocking methods are meant for worker threads.

    Cameras get only what they use from it: ``detector``, ``embedder`` and :meth:`current_gallery`
    (read at every frame, so a rebuilt gallery is used from the next frame on), as :attr:`models`.
    ``roster`` gives the current roster: the cameras' gallery holds only its persons whose consent
    allows attendance now, rebuilt when the roster changes and every :data:`GALLERY_RECHECK`
    (consent expiring with time). Without it (``edge-agent enroll``) the cameras' gallery is empty.
    ``publish_audit`` gets the audit records of enrollments made outside the agent, at each reload.
    """

    def __init__(
        self,
        store: FaceTemplateStore,
        settings: FaceSettings,
        *,
        roster: Callable[[], RosterIndex] | None = None,
        now: Callable[[], datetime] = utc_now,
        publish_audit: Callable[[dict[str, Any]], None] | None = None,
        runtime: RuntimeConfig | None = None,
        detector: FaceDetectorConfig | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.detector = FaceDetector(detector, runtime=runtime)
        self.embedder = FaceEmbedder(runtime=runtime)
        self.model_id = self.embedder.model_id
        self._roster = roster
        self._now = now
        self.publish_audit = publish_audit
        self._lock = threading.Lock()
        self._all = Gallery(self.model_id, threshold=settings.threshold)
        """Every stored template of our model: what enrollment checks compare against."""
        self.gallery = Gallery(self.model_id, threshold=settings.threshold)
        """What cameras match against: :attr:`_all` less persons without consent or roster entry."""
        self._built_for: tuple[RosterIndex | None, datetime] = (
            None,
            datetime.min.replace(tzinfo=now().tzinfo),
        )
        self.counters: Counter[str] = Counter()
        self._refusals = _LimitedLog()
        self.reload()

    @property
    def threshold(self) -> float:
        return self._all.threshold

    def current_gallery(self) -> Gallery:
        """The gallery to match against now: rebuilt first when the roster changed or a recheck is due."""
        index, built_at = self._built_for
        if self._roster is not None and (
            self._roster() is not index or not built_at <= self._now() < built_at + GALLERY_RECHECK
        ):
            with self._lock:
                self._rebuild_matching()
        return self.gallery

    def _rebuild_matching(self) -> None:
        now = self._now()
        index = self._roster() if self._roster is not None else RosterIndex()
        persons = index.persons

        def allowed(person_id: str) -> bool:
            person = persons.get(person_id)
            return person is not None and person.consent_refusal(CONSENT_USE, now) is None

        fresh = self._all.subset(allowed)
        left_out = len(self._all) - len(fresh)
        # Without a roster (``edge-agent enroll``) no camera matches: nothing to tell.
        if self._roster is not None and left_out != self.counters["gallery_persons_without_consent"]:
            log.info(
                "face gallery: %d people with templates are not matched (no roster entry or consent)",
                left_out,
            )
        self.counters["gallery_persons_without_consent"] = left_out
        self.gallery = fresh
        self._built_for = (index, now)

    @property
    def models(self) -> FaceModels:
        """The narrow handle a camera worker gets."""
        return FaceModels(self.detector, self.embedder, self.current_gallery)

    def _load_all(self) -> None:
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
        self._all = fresh

    def reload(self) -> None:
        """Rebuild the gallery from the store (start-up, SIGHUP after an enrollment) and publish the
        audit records ``edge-agent enroll`` left."""
        with self._lock:
            self._load_all()
            self._rebuild_matching()
        if self.publish_audit is not None:
            self.store.take_audits(self.publish_audit)
        log.info(
            "face gallery: %d templates of %d people (%s), %d matched",
            self._all.template_count,
            len(self._all),
            self.model_id,
            len(self.gallery),
        )

    def _vet(self, person_id: str, embedding: npt.NDArray[np.float32], label: str) -> tuple[str, str] | None:
        """Why a face may not become a template of ``person_id`` (``(code, message)``, forceable
        codes in :data:`FORCEABLE`), or None. Compares with every stored template of our model."""
        thr = self.threshold
        own, other = self._all.own_and_nearest_other(embedding, person_id)
        if other is not None and other[1] < thr + self.settings.duplicate_margin:
            return (
                "matches_other_person",
                f"{label}: this face is {other[1]:.2f} from {other[0]}'s template (refused below "
                f"{thr + self.settings.duplicate_margin:.2f}): it may be {other[0]}, not {person_id}",
            )
        if own is not None and own >= thr:
            return (
                "inconsistent_with_person",
                f"{label}: this face is {own:.2f} from {person_id}'s own templates (threshold {thr:.2f}): "
                "a photo of someone else?",
            )
        return None

    def _consent(self, person_id: str, roster: RosterIndex) -> str | None:
        person = roster.persons.get(person_id)
        if person is None:
            return "unknown_person"
        return person.consent_refusal(CONSENT_USE, self._now())

    def _disagreeing(self, photos: Sequence[tuple[str, npt.NDArray[np.float32]]]) -> dict[str, str]:
        """Photos of one enrollment that do not match the others: name -> message. With two that
        disagree neither can be told right (both named); with more, those whose median distance to
        the others is at or above the threshold (all of them when they are all strangers to each other)."""
        if len(photos) < 2:
            return {}
        thr = self.threshold
        emb = np.stack([e for _, e in photos])
        dist = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2)
        out: dict[str, str] = {}
        for i, (name, _) in enumerate(photos):
            others = np.delete(dist[i], i)
            median = float(np.median(others))
            if median >= thr:
                out[name] = (
                    f"{name} does not match the other photos of this enrollment (median distance "
                    f"{median:.2f}, threshold {thr:.2f}): one person per enrollment"
                )
        return out

    def enroll(
        self,
        person_id: str,
        photos: list[tuple[str, bytes]],
        roster: RosterIndex,
        *,
        override: Override | None = None,
    ) -> EnrollOutcome:
        """Embed each photo through the quality gate, check consent, look-alikes and consistency, and
        store what passes (encrypted). ``override`` lets the forceable refusals through (the caller
        audits :attr:`EnrollOutcome.forced`)."""
        outcome = EnrollOutcome(person_id)

        def refuse_all(names: Sequence[str], code: str, message: str) -> EnrollOutcome:
            self.counters[f"enroll_rejected_{code}"] += len(names)
            outcome.rejected.extend((name, code, message) for name in names)
            return outcome

        names = [name for name, _ in photos]
        refusal = self._consent(person_id, roster)
        if refusal == "unknown_person":
            return refuse_all(names, refusal, f"{person_id} is not in the roster")
        if refusal is not None:
            return refuse_all(
                names,
                refusal,
                f"{person_id}'s biometric consent does not allow storing a face template ({refusal}); "
                "it comes with the roster from the centre",
            )
        good: list[tuple[str, npt.NDArray[np.float32]]] = []
        for name, data in photos:
            try:
                result = embed_enrollment_photo(data, detector=self.detector, embedder=self.embedder)
            except EnrollmentError as err:
                self.counters[f"enroll_rejected_{err.code}"] += 1
                outcome.rejected.append((name, err.code, str(err)))
                continue
            good.append((name, result.embedding))
        if not good:
            return outcome
        held, limit = self.store.count_person(person_id), self.settings.max_templates_per_person
        if held + len(good) > limit:
            return refuse_all(
                [n for n, _ in good],
                "too_many_templates",
                f"{person_id} holds {held} face templates and this would add {len(good)}: at most {limit} "
                "(faces.max_templates_per_person); delete theirs first to enroll again",
            )
        outliers = self._disagreeing(good)
        for name, message in outliers.items():
            self.counters["enroll_rejected_photo_outlier"] += 1
            outcome.rejected.append((name, "photo_outlier", message))
        accepted: list[tuple[str, npt.NDArray[np.float32]]] = []
        for name, embedding in good:
            if name in outliers:
                continue
            problem = self._vet(person_id, embedding, name)
            if problem is not None:
                code, message = problem
                if override is None or code not in FORCEABLE:
                    self.counters[f"enroll_rejected_{code}"] += 1
                    outcome.rejected.append((name, code, message))
                    continue
                self.counters[f"enroll_forced_{code}"] += 1
                outcome.forced.append((name, code, message))
                outcome.warnings.append(f"stored although refused ({override.reason}): {message}")
            accepted.append((name, embedding))
        with self._lock:
            for _, embedding in accepted:
                tid = self.store.add(person_id, embedding, self.model_id, "enrolled")
                self._all.add(person_id, embedding[None, :], model_id=self.model_id)
                outcome.stored.append(tid)
            if accepted:
                self._rebuild_matching()
        if accepted and held + len(accepted) < RECOMMENDED_TEMPLATES:
            outcome.warnings.append(
                f"{person_id} now holds {held + len(accepted)} face template(s): enroll "
                f"{RECOMMENDED_TEMPLATES} to {self.settings.max_templates_per_person} photos (other days, "
                "light and angles) so that one bad frame or a new haircut does not decide"
            )
        return outcome

    def apply_roster(self, change: FaceTemplateChange) -> None:
        """Store templates from a roster message: embeddings of our model as they are, photos embedded
        here (and not kept), other models' embeddings kept aside and counted. Each passes the same
        consent and look-alike checks as an enrollment (no override: the centre fixes its data)."""
        index = self._roster() if self._roster is not None else RosterIndex()
        known = self.store.held()  # not decrypted: _load_all below decrypts once
        if change.replace_all:
            self.store.delete_source("centre")
        if change.delete:
            self.store.delete(change.delete)
        with self._lock:
            self._load_all()
        for template in change.upsert:
            label = f"face template {template.id} of {template.person_id}"
            refusal = self._consent(template.person_id, index)
            if refusal is not None:
                self._refuse_centre(label, refusal, f"consent: {refusal}")
                continue
            if template.embedding is not None:
                embedding = np.asarray(template.embedding, dtype=np.float32)
                if template.model_id != self.model_id:
                    self.counters["templates_other_model_received"] += 1
                    log.warning(
                        "face template %s is of model %s, not %s: stored but never compared",
                        template.id,
                        template.model_id,
                        self.model_id,
                    )
                    self.store.add(template.person_id, embedding, template.model_id, "centre", template.id)
                    continue
            else:
                try:
                    photo = base64.b64decode(template.photo_jpeg_b64 or "", validate=True)
                    embedding = embed_enrollment_photo(
                        photo, detector=self.detector, embedder=self.embedder
                    ).embedding
                except (binascii.Error, ValueError) as err:
                    self.counters["template_photo_bad"] += 1
                    log.error("face template %s: photo is not base64: %s", template.id, err)
                    continue
                except EnrollmentError as err:
                    self.counters[f"template_photo_{err.code}"] += 1
                    log.error("face template %s of %s refused: %s", template.id, template.person_id, err)
                    continue
            # A template we already hold (the next snapshot sends it again) passed when it came.
            if (template.id, template.person_id) not in known:
                problem = self._vet(template.person_id, embedding, label)
                if problem is not None:
                    self._refuse_centre(label, problem[0], problem[1])
                    continue
                if self.store.count_person(template.person_id) >= self.settings.max_templates_per_person:
                    self._refuse_centre(label, "too_many_templates", "the person holds the most allowed")
                    continue
            self.store.add(template.person_id, embedding, self.model_id, "centre", template.id)
            with self._lock:
                self._all.add(template.person_id, embedding[None, :], model_id=self.model_id)
        self.reload()

    def _refuse_centre(self, label: str, code: str, message: str) -> None:
        self.counters[f"template_refused_{code}"] += 1
        self._refusals.error("%s from the centre refused: %s: %s", label, code, message)

    def delete_templates(self, person_id: str) -> int:
        """Delete a person's templates, from disk and from the gallery; how many. For a person who
        left the roster or whose consent lapsed (edge_agent.identity, which audits it), or at an
        admin's request (the person stays in the roster)."""
        with self._lock:
            removed = self.store.delete_person(person_id)
            self._all.remove(person_id)
            self.gallery.remove(person_id)
        return removed


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
__all__ = ["FORCEABLE", "EnrollOutcome", "FaceModels", "FaceService", "Override", "load_photos"]

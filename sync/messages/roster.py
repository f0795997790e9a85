"""Master data from the centre: the roster snapshot and delta messages (the contract, not the store).

The central platform publishes a versioned snapshot and numbered deltas on
``{prefix}/{site}/roster/snapshot`` and ``{prefix}/{site}/roster/delta``. These models validate them;
``schemas/roster/*.json`` are generated from them (a test keeps the files in step) and the AsyncAPI
document references those files.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime
from typing import Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from sync.config import WEEKDAYS, TimeWindow, Weekday
from sync.signing import RosterSignatureHeader

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ConsentUse = Literal["attendance", "access"]
"""What a face template may be used for: marking attendance, or opening a gate."""


class BiometricConsent(_Model):
    """The separate consent that face templates of a person may be stored and matched (PIPL art. 28-31:
    biometric data, and any personal data of a child under 14, are sensitive; a guardian consents for
    a child). The gateway stores and matches a person's templates only for a use this record covers,
    from ``granted_at`` until ``expires_at`` or ``withdrawn_at``; when it lapses, the templates go."""

    granted_by: Literal["self", "guardian"] = Field(
        description="Who consented: the person, or a parent or guardian (required under 14)."
    )
    guardian_name: str | None = Field(
        None, max_length=200, description="The guardian who consented, when granted_by is 'guardian'."
    )
    granted_at: AwareDatetime = Field(description="When consent was given (UTC).")
    scopes: list[ConsentUse] = Field(min_length=1, description="Uses consented to.")
    expires_at: AwareDatetime | None = Field(
        None, description="Consent lapses at this time (UTC); none: no end."
    )
    withdrawn_at: AwareDatetime | None = Field(
        None, description="Withdrawn at this time (UTC): templates are deleted and none is stored again."
    )
    reference: str | None = Field(
        None, max_length=200, description="The consent form's reference in the school's records."
    )

    @model_validator(mode="after")
    def _guardian_named(self) -> BiometricConsent:
        if self.granted_by == "guardian" and not self.guardian_name:
            raise ValueError("a guardian's consent names the guardian (guardian_name)")
        if len(set(self.scopes)) != len(self.scopes):
            raise ValueError("a consent scope is listed twice")
        return self

    def refusal(self, use: ConsentUse, now: datetime) -> str | None:
        """None when this record allows ``use`` at ``now``; else the reason code:
        ``consent_withdrawn``, ``consent_not_yet`` (granted in the future), ``consent_expired`` or
        ``consent_scope`` (not for this use)."""
        if self.withdrawn_at is not None and self.withdrawn_at <= now:
            return "consent_withdrawn"
        if self.granted_at > now:
            return "consent_not_yet"
        if self.expires_at is not None and self.expires_at <= now:
            return "consent_expired"
        if use not in self.scopes:
            return "consent_scope"
        return None


class Person(_Model):
    """One person: the single identity every event refers to (``subject``)."""

    id: str = Field(pattern=_ID, description="Person id from the central master data.")
    name: str = Field(description="Display name.")
    role: Literal["student", "teacher", "staff", "visitor"] = Field(description="Role on campus.")
    group: str | None = Field(None, description="Class or group, e.g. '7A'.")
    valid_from: datetime | None = Field(None, description="Not valid before (UTC).")
    valid_until: datetime | None = Field(None, description="Not valid after (UTC); visitors, leavers.")
    blocked: bool = Field(False, description="Blocked: every credential of this person is denied.")
    access_groups: list[str] = Field(default_factory=list, description="Access group ids.")
    terminal_user_ids: list[str] = Field(
        default_factory=list,
        description="The user ids this person is enrolled under on the campus's vendor terminals "
        "(ZKTeco user id, Hikvision employee number): `4711` on every terminal, or `zk-office-1:17` "
        "on that terminal only. A terminal record for an id no person holds is `attendance.unmapped`.",
    )
    birth_date: date | None = Field(
        None,
        description="Date of birth, when the school shares it: under 14, only a guardian's consent counts.",
    )
    consent: BiometricConsent | None = Field(
        None, description="Biometric consent; none: no face template is stored or matched for this person."
    )

    def consent_refusal(self, use: ConsentUse, now: datetime) -> str | None:
        """None when this person's face templates may be stored and matched for ``use`` at ``now``;
        else why not: ``consent_missing``, ``consent_guardian_required`` (under 14 and not a
        guardian's), or a reason of :meth:`BiometricConsent.refusal`."""
        if self.consent is None:
            return "consent_missing"
        if self.consent.granted_by != "guardian" and self.birth_date is not None:
            today = now.date()
            fourteenth = _birthday(self.birth_date, self.birth_date.year + 14)
            if today < fourteenth:
                return "consent_guardian_required"
        return self.consent.refusal(use, now)


def _birthday(born: date, year: int) -> date:
    # 29 February: the birthday falls on 1 March in a common year.
    try:
        return born.replace(year=year)
    except ValueError:
        return date(year, 3, 1)


class Credential(_Model):
    """A card (or other token) of a person; a person may have several."""

    credential: str = Field(
        pattern=r"^[0-9A-Za-z:_-]{1,64}$", description="Normalised card number, as the readers report it."
    )
    format: str = Field("any", description="Card format label (em4100, H10301, ...) or 'any'.")
    person_id: str = Field(pattern=_ID, description="Owner.")
    valid_from: datetime | None = Field(None, description="Not valid before (UTC).")
    valid_until: datetime | None = Field(None, description="Not valid after (UTC).")


class Schedule(_Model):
    """Weekly time windows (gateway local time) minus holidays."""

    id: str = Field(pattern=_ID, description="Schedule id.")
    weekly: dict[Weekday, list[TimeWindow]] = Field(
        description="Windows per weekday; a missing day is closed."
    )
    holidays: list[date] = Field(default_factory=list, description="Closed all day.")


class AccessGroup(_Model):
    """Which gates a group may pass, and when."""

    id: str = Field(pattern=_ID, description="Access group id.")
    gates: list[str] = Field(description="Gate ids (as configured on the gateways); '*' for all.")
    schedule: str | None = Field(None, description="Schedule id; none means always.")


class BlockedCredential(_Model):
    credential: str = Field(pattern=r"^[0-9A-Za-z:_-]{1,64}$", description="Card number that is refused.")
    reason: str = Field("", description="Why (lost, stolen, ...).")


class FaceTemplate(_Model):
    """A face template from the centre: an embedding of a named model, or a photo the edge embeds.

    Templates are biometric data of minors: the gateway stores embeddings only, encrypted, and never
    keeps the photo. An embedding of another model than the gateway runs is never compared with
    its faces; it is re-embedded from a photo or reported as unusable.
    """

    id: str = Field(pattern=_ID, description="Template id.")
    person_id: str = Field(pattern=_ID, description="Owner.")
    model_id: str = Field(description="Model that produced the embedding, e.g. 'dlib_resnet_v1'.")
    embedding: list[float] | None = Field(None, description="The embedding vector.")
    photo_jpeg_b64: str | None = Field(None, description="A JPEG photo (base64) the edge embeds instead.")

    @model_validator(mode="after")
    def _one_source(self) -> FaceTemplate:
        if (self.embedding is None) == (self.photo_jpeg_b64 is None):
            raise ValueError("give exactly one of embedding or photo_jpeg_b64")
        if self.embedding is not None and not all(math.isfinite(x) for x in self.embedding):
            raise ValueError("embedding has non-finite values")
        return self


class RosterContent(_Model):
    persons: list[Person] = Field(default_factory=list, description="People.")
    credentials: list[Credential] = Field(default_factory=list, description="Cards.")
    access_groups: list[AccessGroup] = Field(default_factory=list, description="Access groups.")
    schedules: list[Schedule] = Field(default_factory=list, description="Schedules.")
    blocklist: list[BlockedCredential] = Field(default_factory=list, description="Blocked cards.")
    face_templates: list[FaceTemplate] = Field(default_factory=list, description="Face templates.")

    @model_validator(mode="after")
    def _unique(self) -> RosterContent:
        for name, keys in (
            ("person id", [p.id for p in self.persons]),
            ("card number", [c.credential for c in self.credentials]),
            ("access group id", [g.id for g in self.access_groups]),
            ("schedule id", [s.id for s in self.schedules]),
            ("blocked card number", [b.credential for b in self.blocklist]),
            ("face template id", [t.id for t in self.face_templates]),
        ):
            dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
            if dupes:
                raise ValueError(f"duplicate {name}: {', '.join(dupes[:5])}")
        return self


class SnapshotPart(_Model):
    """Where a message stands in a snapshot sent in parts (:func:`split_snapshot`)."""

    id: str = Field(pattern=_ID, description="Snapshot id: the same in every part of one snapshot.")
    index: int = Field(ge=0, description="This part's place, 0 to count - 1; parts are sent in order.")
    count: int = Field(ge=1, description="How many parts the snapshot has.")

    @model_validator(mode="after")
    def _within(self) -> SnapshotPart:
        if self.index >= self.count:
            raise ValueError("part index must be below its count")
        return self


class RosterSnapshot(RosterContent):
    """The whole roster at ``version``; replaces what the gateway holds. With ``part``, one of the
    messages a snapshot is sent in: each carries some of the entries, and the gateway applies the
    whole once the last has arrived."""

    kind: Literal["snapshot"] = Field(description="Message kind.")
    signature: RosterSignatureHeader | None = Field(
        None,
        description="The centre's signature, the message's first member (docs/INTEGRATORS.md, 'Signed "
        "master data'); a gateway refuses a message without a valid one. It signs the topic and the "
        "SHA-256 of the message without it.",
    )
    version: int = Field(ge=1, description="Roster version.")
    part: SnapshotPart | None = Field(
        None,
        description="Set when the snapshot is sent in parts: every part has the same version and "
        "part id; entries are split between the parts, each entry in exactly one.",
    )


class RosterDeletes(_Model):
    persons: list[str] = Field(default_factory=list, description="Person ids (their cards go too).")
    credentials: list[str] = Field(default_factory=list, description="Card numbers.")
    access_groups: list[str] = Field(default_factory=list, description="Access group ids.")
    schedules: list[str] = Field(default_factory=list, description="Schedule ids.")
    blocklist: list[str] = Field(default_factory=list, description="Card numbers taken off the blocklist.")
    face_templates: list[str] = Field(default_factory=list, description="Face template ids.")


class RosterDelta(_Model):
    """Changes from ``from_version`` to ``version`` (= from_version + 1)."""

    kind: Literal["delta"] = Field(description="Message kind.")
    signature: RosterSignatureHeader | None = Field(
        None,
        description="The centre's signature, the message's first member (docs/INTEGRATORS.md, 'Signed "
        "master data'); a gateway refuses a message without a valid one. It signs the topic and the "
        "SHA-256 of the message without it.",
    )
    from_version: int = Field(ge=0, description="The version this delta applies to.")
    version: int = Field(ge=1, description="The version after it.")
    upsert: RosterContent = Field(default_factory=RosterContent, description="Added or replaced entries.")
    delete: RosterDeletes = Field(default_factory=RosterDeletes, description="Removed entries.")

    @model_validator(mode="after")
    def _consecutive(self) -> RosterDelta:
        if self.version != self.from_version + 1:
            raise ValueError("a delta moves exactly one version: version must be from_version + 1")
        return self


class RosterReply(_Model):
    """The gateway's answer to a roster message (on the MQTT 5 response topic or ``roster/reply``).

    Also sent unprompted on ``roster/reply``, with ``result`` ``resync_needed`` and no
    ``requested_version``, when the gateway lost roster versions (a corrupt store restored from its
    last-known-good copy, or none usable): the centre answers it like any ``resync_needed``, by
    republishing the current snapshot.
    """

    gateway: str = Field(description="Gateway id.")
    result: Literal["applied", "ignored", "rejected", "resync_needed"] = Field(description="Outcome.")
    version: int = Field(ge=0, description="The roster version the gateway holds now.")
    requested_version: int | None = Field(
        None, description="Version of the message answered; null for an unprompted resync request."
    )
    reason: str = Field("", description="Why, for anything but 'applied'.")


_SECTIONS = ("persons", "credentials", "access_groups", "schedules", "blocklist", "face_templates")
_COUNT_DIGITS = 9
"""Room reserved in each part's header for its index and count (a snapshot of up to 10^9 parts)."""


def split_snapshot(
    snapshot: RosterSnapshot, *, part_id: str, max_part_bytes: int = 512 * 1024
) -> list[bytes]:
    """The JSON messages that send ``snapshot`` in parts of at most ``max_part_bytes`` each, split
    between entries; publish them in order on ``roster/snapshot``. Brokers cap message size
    (EMQX's default is 1 MB, AWS IoT Core's 128 KB), and a gateway takes a big snapshot in with
    less work per message in parts. Raises ValueError when one entry alone does not fit in a part.
    """
    SnapshotPart(id=part_id, index=0, count=1)  # the id's pattern, before any work
    head_room = len(
        orjson.dumps(
            {
                "kind": "snapshot",
                "version": snapshot.version,
                "part": {"id": part_id, "index": 10**_COUNT_DIGITS, "count": 10**_COUNT_DIGITS},
            }
        )
    )
    parts: list[dict[str, list[bytes]]] = [{}]
    size = head_room
    for name in _SECTIONS:
        overhead = len(name) + 6  # ,"name":[ and ]
        for item in getattr(snapshot, name):
            encoded = item.model_dump_json(exclude_defaults=True).encode()
            grow = len(encoded) + 1 + (overhead if name not in parts[-1] else 0)
            if size + grow > max_part_bytes:
                if head_room + overhead + len(encoded) + 1 > max_part_bytes:
                    raise ValueError(
                        f"a {name} entry of {len(encoded):,} bytes does not fit in a part of "
                        f"{max_part_bytes:,} bytes"
                    )
                parts.append({})
                size = head_room
                grow = len(encoded) + 1 + overhead
            parts[-1].setdefault(name, []).append(encoded)
            size += grow
    count = len(parts)
    messages = []
    for index, sections in enumerate(parts):
        head = orjson.dumps(
            {
                "kind": "snapshot",
                "version": snapshot.version,
                "part": {"id": part_id, "index": index, "count": count},
            }
        )
        body = b"".join(
            b',"' + name.encode() + b'":[' + b",".join(items) + b"]" for name, items in sections.items()
        )
        messages.append(head[:-1] + body + b"}")
    return messages


def templates_digest(person_ids: Iterable[str]) -> str:
    """The digest of a set of person ids, as a gateway's status reports it for the persons it holds
    face templates of (``faces.templates_digest``): ``sha256:`` and the hex SHA-256 of the distinct
    ids, sorted by their UTF-8 bytes, each followed by a newline (no ids: the digest of nothing).

    The centre computes it over the persons it expects a gateway to hold templates of; when the two
    agree, every deletion has landed there. Person ids cannot contain a newline (their pattern), so
    two different sets never give the same input.
    """
    digest = hashlib.sha256()
    for person_id in sorted({p.encode() for p in person_ids}):
        digest.update(person_id + b"\n")
    return "sha256:" + digest.hexdigest()


ROSTER_SCHEMAS: dict[str, type[BaseModel]] = {
    "snapshot": RosterSnapshot,
    "delta": RosterDelta,
    "reply": RosterReply,
}

__all__ = [
    "ROSTER_SCHEMAS",
    "WEEKDAYS",
    "AccessGroup",
    "BiometricConsent",
    "BlockedCredential",
    "ConsentUse",
    "Credential",
    "FaceTemplate",
    "Person",
    "RosterContent",
    "RosterDeletes",
    "RosterDelta",
    "RosterReply",
    "RosterSnapshot",
    "Schedule",
    "SnapshotPart",
    "TimeWindow",
    "Weekday",
    "split_snapshot",
    "templates_digest",
]

"""The data-subject side of the roster: what the gateway holds about a person, and its deletion.

One person has one id everywhere (cards, face templates, attendance, access events). This module
answers for that id:

- :func:`delete_person_data` deletes what the local stores hold of a person: face templates (disk
  and gallery), the local attendance records, and the acknowledged alerts naming them with their
  snapshots (an open alert is evidence the guard on duty still works from: kept until acknowledged,
  then its retention takes it). Each deletion is one :class:`Deletion`, published as a
  ``gateway.audit`` event with what went and why.
- :class:`IdentityService` (a gateway component) applies it when a person leaves the roster (a delta's
  ``delete.persons``, or absent from a new snapshot) and deletes templates whose consent lapsed
  (withdrawn, expired, scope dropped) at the roster change that says so or at the moment it expires;
  it keeps the status digest of the persons holding templates (:func:`sync.templates_digest`)
  and the retention of attendance records. While the roster is empty or restored from an older
  copy, the check deletes nothing (everyone would look like a leaver) until a version is applied.
- :func:`dossier` lists everything held of a person for a data-subject request (``edge-agent roster
  show``); ``edge-agent roster forget`` runs :func:`delete_person_data` on the files and tells a running
  agent (SIGHUP) to drop the person's templates from its gallery.

There are no pending enrollments to delete: enrollment is synchronous (CLI, local API) and templates
from the centre are embedded when their roster message is applied. No raw enrollment photo is ever
written to disk (only embeddings, encrypted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge_agent.clock import sleep_or_wake
from edge_agent.roster import ApplyResult, Roster
from sync import STORES, Event, Person, events_about, format_time, templates_digest

if TYPE_CHECKING:
    from edge_agent.access import AntiPassback
    from edge_agent.alerts import AlertBook
    from edge_agent.attendance import AttendanceBook
    from edge_agent.clock import Clock
    from edge_agent.face_templates import FaceTemplateStore
    from edge_agent.faces import FaceService
    from edge_agent.services import Counters

log = logging.getLogger(__name__)

AUDIT_ACTION = "delete_person_data"
"""The ``action`` of the ``gateway.audit`` event each deletion publishes (``target``: the person id)."""

CONSENT_USE: Literal["attendance"] = "attendance"
"""What templates are used for today (face matching by cameras for attendance): a template is kept
only while the person's consent allows it."""

ROSTER_REASONS = {"snapshot": "roster_snapshot", "delta": "roster_delta"}
"""Why a person's data went when they left the roster, by the kind of message that said so."""

_LOG_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Deletion:
    """What one deletion of a person's data removed, and why.

    ``reason``: ``roster_delta`` / ``roster_snapshot`` (left the roster), ``local_forget``
    (``edge-agent roster forget``), ``not_in_roster`` (templates of a person the roster does not hold),
    or the consent refusal that lapsed the templates (``consent_withdrawn``, ``consent_expired``,
    ``consent_scope``, ``consent_missing``, ``consent_guardian_required``, ``consent_not_yet``)."""

    person_id: str
    reason: str
    templates: int = 0
    attendance_records: int = 0
    alerts: int = 0
    snapshots: int = 0
    open_alerts_kept: int = 0
    templates_only: bool = False
    """A consent that lapsed: only the biometric data was in question (the person stays)."""

    def counts(self) -> dict[str, int]:
        """What was deleted, by kind (only ``templates`` for a :attr:`templates_only` deletion)."""
        if self.templates_only:
            return {"templates": self.templates}
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and not isinstance(v, bool)}

    def audit_data(self, *, actor: str, role: str, via: str) -> dict[str, Any]:
        """The ``gateway.audit`` payload of this deletion."""
        return {
            "actor": actor,
            "role": role,
            "via": via,
            "action": AUDIT_ACTION,
            "target": self.person_id,
            "result": "ok",
            "reason": self.reason,
            "deleted": self.counts(),
        }


def delete_person_data(
    person_id: str,
    reason: str,
    *,
    delete_templates: Callable[[str], int] | None,
    attendance: AttendanceBook | None,
    alerts: AlertBook | None,
    templates_only: bool = False,
    alerts_named: set[str] | None = None,
) -> Deletion:
    """Delete what the stores hold of ``person_id`` (blocking: call it in a worker thread).
    ``delete_templates`` deletes the person's templates and returns how many (the face service's in
    the agent, which drops them from the gallery too; the store's from the CLI). ``templates_only``:
    a consent that lapsed concerns the biometric data alone; the person is still on the roster.
    ``alerts_named``: the persons the alert book names (:meth:`AlertBook.persons_named`), when known,
    so the book is not searched for each of many persons who left at once."""
    templates = delete_templates(person_id) if delete_templates is not None else 0
    if templates_only:
        return Deletion(person_id, reason, templates=templates, templates_only=True)
    records = attendance.forget(person_id) if attendance is not None else 0
    searched = alerts is not None and (alerts_named is None or person_id in alerts_named)
    deleted, snapshots, kept = (
        alerts.forget_person(person_id) if alerts is not None and searched else (0, 0, 0)
    )
    return Deletion(person_id, reason, templates, records, deleted, snapshots, kept)


class IdentityService:
    """The gateway's side of one identity: deletes a leaver's data and templates whose consent lapsed,
    each with an audit event; keeps the templates digest for the status; denies stale ids to cameras.

    Roster changes arrive through :meth:`on_roster_applied` (registered as ``Roster.on_applied``; it
    runs in the thread that applied the roster). :meth:`run` wakes at the next consent expiry of a
    person holding templates (or every ``check_interval_s``) and at each roster change."""

    def __init__(
        self,
        *,
        roster: Roster,
        faces: Callable[[], FaceService | None],
        attendance: AttendanceBook,
        alerts: AlertBook,
        anti_passback: AntiPassback,
        emit: Callable[[Event], None],
        source: str,
        counters: Counters,
        clock: Clock,
        check_interval_s: float,
        attendance_keep_days: int,
        local_today: Callable[[], date],
    ) -> None:
        self.roster = roster
        self._faces = faces
        self.attendance = attendance
        self.alerts = alerts
        self.anti_passback = anti_passback
        self._emit = emit
        self._source = source
        self.counters = counters
        self.clock = clock
        self.check_interval_s = check_interval_s
        self.attendance_keep_days = attendance_keep_days
        self._local_today = local_today
        self._digest: tuple[str, int] | None = None
        self._checking = threading.Lock()  # the roster's thread and the periodic check
        self._trusted = roster.recovery is None and roster.version > 0
        """Whether the roster held is the centre's current one as far as we know. An empty roster,
        or one restored from an older copy after corruption, would make everyone's templates look
        like a leaver's: nothing is deleted by the check until a roster version is applied."""
        self._handled_version = roster.version
        """The last roster version whose leavers :meth:`on_roster_applied` has dealt with. The roster
        swaps in a new version before it calls the follow-ups, so a check in another thread can see a
        leaver gone first: it leaves them alone until then, and the leaver's deletion is one audit
        record with everything in it (not the templates under ``not_in_roster`` and the rest,
        templates 0, under ``roster_delta``)."""
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stale_logged_at: float | None = None
        self._stale_unlogged = 0

    # -- component contract -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        # Before the roster sync runs: no roster change goes by unseen. Templates that lapsed while
        # the agent was down go at the first check below.
        if self.on_roster_applied not in self.roster.on_applied:
            self.roster.on_applied.append(self.on_roster_applied)

    async def run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()  # a wake during the check runs it again at once
            await asyncio.to_thread(self.check)
            wait = self.check_interval_s
            due = await asyncio.to_thread(self.next_lapse)  # reads the face store: off the loop
            if due is not None:
                wait = max(0.0, min(wait, (due - self.clock.now()).total_seconds()))
            await sleep_or_wake(self.clock, wait, self._wake, name="identity-next-check")

    async def stop(self) -> None:
        if self.on_roster_applied in self.roster.on_applied:
            self.roster.on_applied.remove(self.on_roster_applied)

    # -- what happens ---------------------------------------------------------------------------

    def on_roster_applied(self, result: ApplyResult) -> None:
        """A roster version was applied: the persons who left lose everything held of them, then
        templates are checked against the new consent records."""
        reason = ROSTER_REASONS[result.kind]
        with self._checking:
            self._trusted = True
            faces = self._faces()
            removed = result.removed_persons
            # Thousands may leave in one snapshot: the stores are asked once who they hold.
            named = self.alerts.persons_named() if removed else set()
            holding = faces.store.person_ids() if faces is not None and removed else set()
            try:
                for person_id in removed:
                    deletion = delete_person_data(
                        person_id,
                        reason,
                        delete_templates=faces.delete_templates
                        if faces is not None and person_id in holding
                        else None,
                        attendance=self.attendance,
                        alerts=self.alerts,
                        alerts_named=named,
                    )
                    self._audit(deletion)
                if removed:
                    self.anti_passback.forget(set(removed))
            finally:
                # Even after a failure here (logged by the roster): the checks then delete the
                # templates of whoever is left over, as not in the roster.
                self._handled_version = result.version
            self._check()
        self.wake()

    def wake(self) -> None:
        """Run the check now (a roster change, a reload after ``roster forget``); any thread."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def check(self) -> list[Deletion]:
        """Delete the templates the roster no longer allows (person gone, or consent for attendance
        refused now), refresh the digest and apply attendance retention; blocking (a worker thread).
        Returns the deletions (each audited)."""
        with self._checking:
            return self._check()

    def _check(self) -> list[Deletion]:
        faces = self._faces()
        done: list[Deletion] = []
        if faces is not None and not self._trusted:
            self._digest_of(faces.store)
        elif faces is not None:
            index = self.roster.index
            now = self.clock.now()
            # A version whose follow-up has not run yet: its leavers are that follow-up's to delete.
            leavers_handled = index.version == self._handled_version
            for person_id in sorted(faces.store.person_ids()):
                person = index.persons.get(person_id)
                why = "not_in_roster" if person is None else person.consent_refusal(CONSENT_USE, now)
                if why is None or (person is None and not leavers_handled):
                    continue
                deletion = delete_person_data(
                    person_id,
                    why,
                    delete_templates=faces.delete_templates,
                    attendance=None,
                    alerts=None,
                    templates_only=True,
                )
                if deletion.templates:
                    self._audit(deletion)
                    done.append(deletion)
            self._digest_of(faces.store)
        else:
            self._digest = None
        try:
            gone = self.attendance.housekeeping(self._local_today(), self.attendance_keep_days)
        except sqlite3.Error as err:
            self.counters.count("attendance_retention_failed")
            log.warning("attendance retention not applied: %s", err)
        else:
            if gone:
                self.counters.count("attendance_records_expired", gone)
        return done

    def next_lapse(self) -> datetime | None:
        """When the consent of a person holding templates next ends (expiry or a withdrawal dated
        ahead); None when none is due."""
        faces = self._faces()
        if faces is None:
            return None
        now = self.clock.now()
        index = self.roster.index
        due: list[datetime] = []
        for person_id in faces.store.person_ids():
            person = index.persons.get(person_id)
            consent = person.consent if person is not None else None
            if consent is None:
                continue
            due.extend(t for t in (consent.expires_at, consent.withdrawn_at) if t is not None and t > now)
        return min(due, default=None)

    def _audit(self, deletion: Deletion) -> None:
        self.counters.count(f"person_data_deleted_{deletion.reason}")
        log.info(
            "deleted the data of person %s (%s): %s",
            deletion.person_id,
            deletion.reason,
            ", ".join(f"{k} {v}" for k, v in deletion.counts().items() if v),
            extra={"person": deletion.person_id, "code": deletion.reason},
        )
        local = deletion.reason in ("not_in_roster",) or deletion.reason.startswith("consent_")
        self._emit(
            Event(
                "edu.campus.gateway.audit.v1",
                self._source,
                deletion.audit_data(
                    actor="gateway" if local else "centre",
                    role="unknown" if local else "centre",
                    via="gateway" if local else "mqtt",
                ),
                subject=deletion.person_id,
            )
        )

    # -- what the status and the cameras read ------------------------------------------------

    def _digest_of(self, store: FaceTemplateStore) -> None:
        ids = store.person_ids()
        self._digest = (templates_digest(ids), len(ids))

    def status(self) -> dict[str, Any]:
        """``templates_digest`` and ``persons_with_templates`` (None while face recognition is off:
        the gateway cannot tell)."""
        digest, count = self._digest if self._digest is not None else (None, None)
        return {"templates_digest": digest, "persons_with_templates": count}

    def person(self, person_id: str) -> Person | None:
        """The roster's person for a face match, or None (counted, logged at most once a minute) when
        the person left the roster between the match and the record: the match is ignored, never
        attributed to a stale id."""
        person = self.roster.index.persons.get(person_id)
        if person is None:
            self.counters.count("face_match_ignored_person_not_in_roster")
            self._stale_unlogged += 1
            now = time.monotonic()
            if self._stale_logged_at is None or now - self._stale_logged_at >= _LOG_INTERVAL_S:
                log.warning(
                    "face match of %s ignored: person_not_in_roster (%d such since the last line)",
                    person_id,
                    self._stale_unlogged,
                    extra={"code": "person_not_in_roster"},
                )
                self._stale_logged_at, self._stale_unlogged = now, 0
        return person


# -- the data-subject request (CLI) -----------------------------------------------------------


def mask_card(number: str) -> str:
    """A card number as a dossier shows it: its last four characters. Most campus cards (EM4100,
    Wiegand) are bearer credentials read in the clear; a printout handed to a family must not be
    enough to clone one. The full number is in the centre's records."""
    return "*" * max(0, len(number) - 4) + number[-4:]


def outbox_events_naming(data_dir: Path, person_id: str) -> list[dict[str, Any]]:
    """Events in the outbox whose ``subject`` is ``person_id``: queued for the centre (``delivered``
    false) or delivered and kept until ``outbox.delivered_retention_s``; read-only, beside a running
    agent. The outbox is store-and-forward: its rows are the centre's records in transit."""
    return [
        {
            "seq": seq,
            "id": event_id,
            "type": type_,
            "queued_at": _iso(created),
            "delivered": delivered is not None,
            "attachment": bool(attachment),
        }
        for seq, event_id, type_, created, delivered, attachment in events_about(
            data_dir / STORES["outbox"].file, person_id
        )
    ]


def _iso(epoch: float | None) -> str | None:
    return format_time(datetime.fromtimestamp(epoch, UTC)) if epoch is not None else None


def dossier(
    person_id: str,
    *,
    roster: Roster,
    store: FaceTemplateStore | None,
    attendance: AttendanceBook,
    alerts: AlertBook,
    data_dir: Path,
    now: datetime,
) -> dict[str, Any]:
    """Everything the gateway's files hold about ``person_id`` (``edge-agent roster show``): the roster
    record with its consent and what it allows now, cards (masked, :func:`mask_card`), face template
    metadata (never a vector), attendance records, alerts naming them, outbox events naming them, and
    the face crops among those (alert snapshots, outbox attachments)."""
    index = roster.index
    person = index.persons.get(person_id)
    record: dict[str, Any] | None = None
    if person is not None:
        record = person.model_dump(mode="json")
        record["consent_now"] = {
            use: person.consent_refusal(use, now) or "allowed" for use in ("attendance", "access")
        }
    cards = [
        {
            "card": mask_card(c.credential),
            "format": c.format,
            "valid_from": c.valid_from.isoformat() if c.valid_from else None,
            "valid_until": c.valid_until.isoformat() if c.valid_until else None,
            "blocked": c.credential in index.blocklist,
        }
        for c in index.credentials.values()
        if c.person_id == person_id
    ]
    templates = (
        [
            {"id": t.id, "created_at": _iso(t.created_at), "source": t.source, "model_id": t.model_id}
            for t in store.info(person_id)
        ]
        if store is not None
        else None
    )
    named = [
        {
            "id": a.id,
            "type": a.type,
            "time": a.time,
            "acknowledged": a.acknowledged_at is not None,
            "snapshot": a.has_snapshot,
        }
        for a in alerts.naming(person_id)
    ]
    outbox = outbox_events_naming(data_dir, person_id)
    return {
        "person_id": person_id,
        "roster_version": index.version,
        "in_roster": person is not None,
        "person": record,
        "cards": cards,
        "face_templates": templates,
        "attendance_records": attendance.records_of(person_id),
        "alerts": named,
        "outbox_events": outbox,
        "face_crops": {
            "alert_snapshots": sum(1 for a in named if a["snapshot"]),
            "outbox_attachments": sum(1 for e in outbox if e["attachment"]),
        },
    }


def render_dossier(d: dict[str, Any]) -> str:
    """The dossier for a person to read."""
    lines = [f"person {d['person_id']} (roster version {d['roster_version']})"]
    person = d["person"]
    if person is None:
        lines.append("  roster: not in the roster")
    else:
        lines.append(
            f"  roster: {person['name']}, {person['role']}, group {person['group'] or '-'}, "
            f"blocked {person['blocked']}, access groups {', '.join(person['access_groups']) or '-'}"
        )
        if person.get("birth_date"):
            lines.append(f"  born: {person['birth_date']}")
        consent = person.get("consent")
        if consent is None:
            lines.append("  consent: none recorded")
        else:
            who = consent["granted_by"] + (
                f" ({consent['guardian_name']})" if consent["guardian_name"] else ""
            )
            lines.append(
                f"  consent: by {who} at {consent['granted_at']}, scopes {', '.join(consent['scopes'])}, "
                f"expires {consent['expires_at'] or 'never'}, withdrawn {consent['withdrawn_at'] or 'no'}, "
                f"reference {consent['reference'] or '-'}"
            )
        now = person["consent_now"]
        lines.append(f"  consent now: attendance {now['attendance']}, access {now['access']}")
    lines.append(f"  cards ({len(d['cards'])}, masked):")
    lines += [
        f"    {c['card']} {c['format']} valid {c['valid_from'] or '-'} .. {c['valid_until'] or '-'}"
        + (" BLOCKED" if c["blocked"] else "")
        for c in d["cards"]
    ]
    templates = d["face_templates"]
    if templates is None:
        lines.append("  face templates: not read (no face template key here)")
    else:
        lines.append(f"  face templates ({len(templates)}; embeddings only, encrypted, never shown):")
        lines += [f"    {t['id']} {t['source']} {t['model_id']} created {t['created_at']}" for t in templates]
    lines.append(f"  attendance records ({len(d['attendance_records'])}):")
    lines += [f"    {r['day']} {r['point']} {r['session']} at {r['at']}" for r in d["attendance_records"]]
    lines.append(f"  alerts naming them ({len(d['alerts'])}):")
    lines += [
        f"    {a['id']} {a['type']} {a['time']} {'acknowledged' if a['acknowledged'] else 'OPEN'}"
        + (" with snapshot" if a["snapshot"] else "")
        for a in d["alerts"]
    ]
    queued = sum(1 for e in d["outbox_events"] if not e["delivered"])
    lines.append(f"  outbox events naming them ({len(d['outbox_events'])}, {queued} not yet delivered):")
    lines += [
        f"    {e['id']} {e['type']} queued {e['queued_at']} "
        + ("delivered" if e["delivered"] else "QUEUED")
        + (" with attachment" if e["attachment"] else "")
        for e in d["outbox_events"]
    ]
    crops = d["face_crops"]
    lines.append(
        f"  face crops: {crops['alert_snapshots']} alert snapshot(s), "
        f"{crops['outbox_attachments']} outbox attachment(s)"
    )
    return "\n".join(lines)


def signal_running_agent(data_dir: Path) -> int | None:
    """Send SIGHUP to the agent running on ``data_dir`` (its pid is in ``status.json``, and
    ``agent.state`` says ``running``), so it reloads its face gallery and publishes queued audit
    records now; returns the pid, or None when no agent runs there. A pid that is not an edge agent's
    process any more (a stale status after a crash) is never signalled."""
    import json

    try:
        state = (data_dir / "agent.state").read_text().strip()
        status = json.loads((data_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    pid = status.get("pid")
    if state != "running" or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if b"edge_agent" not in cmdline and b"edge-agent" not in cmdline:
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return None
    return pid


__all__ = [
    "AUDIT_ACTION",
    "Deletion",
    "IdentityService",
    "delete_person_data",
    "dossier",
    "mask_card",
    "outbox_events_naming",
    "render_dossier",
    "signal_running_agent",
]

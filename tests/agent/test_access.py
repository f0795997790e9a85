"""Decisions, the roster store and attendance: pure rules over real SQLite files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_agent.access import AntiPassback, DenyReason, decide
from edge_agent.attendance import AttendanceBook, current_session
from edge_agent.config import AntiPassbackConfig, AttendancePointConfig
from edge_agent.roster import Roster, RosterError, parse_roster_message
from sync import RosterDelta, RosterSnapshot
from tests.agent.roster_data import snapshot

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)  # a Monday
TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def roster(tmp_path: Path) -> Roster:
    r = Roster(tmp_path)
    r.apply_snapshot(RosterSnapshot.model_validate(snapshot()))
    return r


def _decide(
    roster: Roster,
    card: str,
    *,
    gate: str = "gate-1",
    direction: str = "entry",
    now: datetime = NOW,
    fmt: str = "em4100",
    apb: AntiPassback | None = None,
    cfg: AntiPassbackConfig | None = None,
    mono: float = 0.0,
):
    return decide(
        roster.index,
        credential=card,
        card_format=fmt,
        gate=gate,
        direction=direction,  # type: ignore[arg-type]
        now=now,
        local_now=now.astimezone(TZ),
        monotonic_now=mono,
        anti_passback=apb or AntiPassback(),
        anti_passback_config=cfg or AntiPassbackConfig(),
    )


def test_every_deny_reason(roster: Roster) -> None:
    assert _decide(roster, "0012AB34CD").granted
    assert _decide(roster, "00FFEE0011", gate="anything").granted  # staff: every gate
    cases = {
        "DEADBEEF00": DenyReason.UNKNOWN_CREDENTIAL,
        "00DEAD0000": DenyReason.BLOCKED,  # on the blocklist
        "0012AB34CF": DenyReason.BLOCKED,  # person blocked
        "0099887766": DenyReason.EXPIRED,  # person no longer valid
        "00CCCCCCCC": DenyReason.EXPIRED,  # card expired, person valid
        "00AAAAAAAA": DenyReason.NOT_IN_GROUP,
    }
    for card, reason in cases.items():
        d = _decide(roster, card)
        assert not d.granted and d.reason == reason, card
    assert _decide(roster, "0012AB34CD", gate="gate-2").reason == DenyReason.NOT_IN_GROUP
    # Registered as em4100, read as a Wiegand number: not the same card.
    assert _decide(roster, "0012AB34CD", fmt="H10301").reason == DenyReason.UNKNOWN_CREDENTIAL
    assert _decide(roster, "00FFEE0011", fmt="H10301").granted  # 'any' format


def test_schedule_uses_local_time_and_holidays(roster: Roster) -> None:
    # Monday 2026-12-14 09:30 in Shanghai is 01:30 UTC.
    monday_morning = datetime(2026, 12, 14, 1, 30, tzinfo=UTC)
    assert _decide(roster, "00BBBBBBBB", now=monday_morning).granted
    # 09:30 UTC is 17:30 in Shanghai: after office hours.
    assert (
        _decide(roster, "00BBBBBBBB", now=datetime(2026, 12, 14, 9, 30, tzinfo=UTC)).reason
        == DenyReason.OUTSIDE_SCHEDULE
    )
    # 2026-12-07 is a holiday in the schedule.
    assert (
        _decide(roster, "00BBBBBBBB", now=datetime(2026, 12, 7, 1, 30, tzinfo=UTC)).reason
        == DenyReason.OUTSIDE_SCHEDULE
    )
    # Tuesday: no window at all.
    assert (
        _decide(roster, "00BBBBBBBB", now=datetime(2026, 12, 15, 1, 30, tzinfo=UTC)).reason
        == DenyReason.OUTSIDE_SCHEDULE
    )


@pytest.mark.parametrize("mode", ["hard", "soft", "timed"])
def test_anti_passback_modes(roster: Roster, mode: str) -> None:
    cfg = AntiPassbackConfig(mode=mode, window_s=60)  # type: ignore[arg-type]
    apb = AntiPassback()
    first = _decide(roster, "0012AB34CD", apb=apb, cfg=cfg)
    assert first.granted and first.anti_passback == "ok"
    apb.record("gate-1", "S1", "entry", 0.0)
    again = _decide(roster, "0012AB34CD", apb=apb, cfg=cfg, mono=10.0)
    if mode == "soft":
        assert again.granted and again.anti_passback == "soft_violation"
    else:
        assert not again.granted and again.reason == DenyReason.ANTI_PASSBACK
    # Leaving is always fine; after leaving, entering is fine again.
    assert _decide(roster, "0012AB34CD", apb=apb, cfg=cfg, direction="exit", mono=10.0).granted
    later = _decide(roster, "0012AB34CD", apb=apb, cfg=cfg, mono=100.0)
    assert later.granted == (mode != "hard")  # timed: the window passed; hard: still inside
    apb.record("gate-1", "S1", "exit", 101.0)
    assert _decide(roster, "0012AB34CD", apb=apb, cfg=cfg, mono=102.0).granted
    # A shared area: another gate of the same perimeter sees the same state.
    shared = AntiPassbackConfig(mode="hard", area="perimeter")
    apb.record("perimeter", "S2", "entry", 0.0)
    assert _decide(roster, "0012AB34CE", apb=apb, cfg=shared).reason == DenyReason.ANTI_PASSBACK


def test_roster_persists_and_applies_deltas_atomically(tmp_path: Path) -> None:
    roster = Roster(tmp_path)
    removed: list[str] = []
    roster.on_person_removed.append(removed.append)
    roster.apply_snapshot(RosterSnapshot.model_validate(snapshot(3)))
    delta = RosterDelta.model_validate(
        {
            "kind": "delta",
            "from_version": 3,
            "version": 4,
            "upsert": {
                "persons": [{"id": "S9", "name": "New", "role": "student", "access_groups": ["students"]}],
                "credentials": [{"credential": "0000000009", "person_id": "S9"}],
            },
            "delete": {"persons": ["S2"]},
        }
    )
    result = roster.apply_delta(delta)
    assert (result.from_version, result.version) == (3, 4)
    assert removed == ["S2"]
    assert "0012AB34CE" not in roster.index.credentials  # S2's card went with S2
    roster.close()
    reopened = Roster(tmp_path)
    assert reopened.version == 4
    assert reopened.index.credentials["0000000009"].person_id == "S9"
    assert "S2" not in reopened.index.persons
    # A gap: nothing changes, and the reply asks for a snapshot.
    gap = RosterDelta.model_validate({"kind": "delta", "from_version": 5, "version": 6})
    with pytest.raises(RosterError) as info:
        reopened.apply_delta(gap)
    assert info.value.result == "resync_needed"
    stale = RosterDelta.model_validate({"kind": "delta", "from_version": 2, "version": 3})
    with pytest.raises(RosterError) as info:
        reopened.apply_delta(stale)
    assert info.value.result == "ignored"
    # A card pointing at nobody: rejected, nothing changed, on disk either.
    bad = RosterDelta.model_validate(
        {
            "kind": "delta",
            "from_version": 4,
            "version": 5,
            "upsert": {"credentials": [{"credential": "0000000010", "person_id": "NOBODY"}]},
        }
    )
    with pytest.raises(RosterError, match="unknown person NOBODY") as info:
        reopened.apply_delta(bad)
    assert info.value.result == "rejected"
    assert reopened.version == 4 and "0000000010" not in reopened.index.credentials
    reopened.close()
    assert Roster(tmp_path).version == 4


def test_bad_roster_messages_are_rejected_with_a_reason() -> None:
    dup = snapshot()
    dup["credentials"].append({"credential": "0012AB34CD", "person_id": "S2"})
    with pytest.raises(RosterError, match="duplicate card number: 0012AB34CD"):
        parse_roster_message(json.dumps(dup).encode())
    with pytest.raises(RosterError, match=r"invalid roster message"):
        parse_roster_message(b"{not json")
    with pytest.raises(RosterError, match="kind"):
        parse_roster_message(b'{"kind": "gossip", "version": 1}')
    with pytest.raises(RosterError, match="exactly one version"):
        parse_roster_message(b'{"kind": "delta", "from_version": 1, "version": 3}')
    unknown_field = snapshot()
    unknown_field["persons"][0]["shoe_size"] = 42
    with pytest.raises(RosterError, match=r"persons\.0\.shoe_size"):
        parse_roster_message(json.dumps(unknown_field).encode())


def test_an_arrival_counts_for_the_session_it_is_for_when_windows_overlap(
    tmp_path: Path, roster: Roster
) -> None:
    # One room, back-to-back lessons: 7B's opens 15 min early, while 7A's is ending; and two half
    # classes sharing the room at the same time. The first matching session used to take every
    # arrival: a 7B student swiping in at 08:42 was dropped (not in 7A) and marked absent.
    point = AttendancePointConfig.model_validate(
        {
            "sessions": [
                {"id": "7a-math", "weekdays": ["mon"], "start": "08:00", "end": "08:45", "groups": ["7A"]},
                {"id": "7b-art", "weekdays": ["mon"], "start": "08:55", "end": "09:40", "groups": ["7B"]},
                {"id": "any-study", "weekdays": ["mon"], "start": "10:00", "end": "10:45"},
                {"id": "7a-lab", "weekdays": ["mon"], "start": "10:00", "end": "10:45", "groups": ["7A"]},
                {"id": "7b-lab", "weekdays": ["mon"], "start": "10:00", "end": "10:45", "groups": ["7B"]},
            ]
        }
    )
    s1, s2 = roster.index.persons["S1"], roster.index.persons["S2"]
    monday = datetime(2026, 12, 7)
    book = AttendanceBook(tmp_path)
    early = book.record("room-9", point, s2, monday.replace(hour=8, minute=42))
    assert early is not None and (early.session.id, early.status) == ("7b-art", "present")
    # 7A's lesson still runs: its own student, coming in now, is late for it.
    late = book.record("room-9", point, s1, monday.replace(hour=8, minute=40))
    assert late is not None and (late.session.id, late.status) == ("7a-math", "late")
    found = current_session(point, monday.replace(hour=8, minute=42), s1)
    assert found is not None and found[0].id == "7a-math"  # the 7B lesson does not expect S1
    found = current_session(point, monday.replace(hour=8, minute=42))
    assert found is not None and found[0].id == "7b-art"  # anyone: the one starting last
    # At the same time, each half class in its own session (not the first listed, open to anyone).
    lab_a = book.record("room-9", point, s1, monday.replace(hour=10, minute=1))
    lab_b = book.record("room-9", point, s2, monday.replace(hour=10, minute=1))
    assert lab_a is not None and lab_a.session.id == "7a-lab"
    assert lab_b is not None and lab_b.session.id == "7b-lab"
    teacher = book.record("room-9", point, roster.index.persons["T1"], monday.replace(hour=10, minute=2))
    assert teacher is not None and teacher.session.id == "any-study"  # no group: the open session


def test_attendance_sessions_late_and_once_per_session(tmp_path: Path, roster: Roster) -> None:
    point = AttendancePointConfig.model_validate(
        {
            "sessions": [
                {
                    "id": "math-1",
                    "weekdays": ["mon"],
                    "start": "08:00",
                    "end": "08:45",
                    "late_after_min": 5,
                    "groups": ["7A"],
                },
                {"id": "math-2", "weekdays": ["mon"], "start": "09:00", "end": "09:45"},
            ]
        }
    )
    s1 = roster.index.persons["S1"]
    s2 = roster.index.persons["S2"]
    monday = datetime(2026, 12, 7)
    assert current_session(point, monday.replace(hour=7, minute=50)) is not None  # opens 15 min early
    assert current_session(point, monday.replace(hour=7, minute=40)) is None
    book = AttendanceBook(tmp_path)
    on_time = book.record("room-7a", point, s1, monday.replace(hour=8, minute=3))
    assert on_time is not None and on_time.status == "present" and on_time.session.id == "math-1"
    assert book.record("room-7a", point, s1, monday.replace(hour=8, minute=20)) is None  # once per session
    assert book.record("room-7a", point, s2, monday.replace(hour=8, minute=20)) is None  # not in 7A
    late = book.record("room-7a", point, s2, monday.replace(hour=9, minute=6))
    assert late is not None and late.status == "late"
    book.close()
    # The de-duplication survives a restart.
    again = AttendanceBook(tmp_path)
    assert again.record("room-7a", point, s1, monday.replace(hour=8, minute=30)) is None
    assert again.record("room-7a", point, s1, monday.replace(hour=9, minute=1)) is not None

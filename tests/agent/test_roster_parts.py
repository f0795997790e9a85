"""A roster snapshot sent in parts: staged in order, applied whole on the last part, and every break
in the sequence refused with the old roster still deciding.

The real agent (in this process, tests/support/agent_harness.py) seeded with roster version 1, a
real Mosquitto, and the centre as a paho client publishing QoS 1 in order. Version 2 adds the
persons ``P00000``... with cards ``5000000000``...: such a card is denied until version 2 is
applied, and granted after.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.roster import Roster, RosterError, SnapshotStaging
from sync.contract import SCHEMA_DIR, validate
from sync.messages.roster import RosterSnapshot, split_snapshot
from tests.agent.roster_data import snapshot
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.roster_signing import signed, trust_roster_keys
from tests.support.wait import until

NEW_CARD = f"{0x5000000000:010X}"  # P00000, from version 2 on
KNOWN_CARD = "0012AB34CD"  # S1, in every version


def parts_of(version: int, part_id: str, *, persons: int = 200, part_bytes: int = 8 * 1024) -> list[bytes]:
    whole = RosterSnapshot.model_validate(snapshot(version, extra_persons=persons))
    return split_snapshot(whole, part_id=part_id, max_part_bytes=part_bytes)


class Centre:
    """The master-data publisher: QoS 1, in order, each publish acknowledged by the broker. It signs
    each message once (tests/support/roster_signing.py): a message published again is the same
    bytes, as a redelivery is."""

    def __init__(self, port: int, site: str) -> None:
        self.site = site
        self._signed: dict[tuple[str, bytes], bytes] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, kind: str, *payloads: bytes) -> None:
        topic = f"campus/v1/{self.site}/roster/{kind}"
        infos = [
            self.client.publish(topic, self._signed.setdefault((topic, p), signed(topic, p)), qos=1)
            for p in payloads
        ]
        for info in infos:
            info.wait_for_publish(20)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def granted(gate: RunningGate, card: str) -> bool:
    """Present ``card``; whether gate-1 granted it."""
    stats = gate.agent.gates["gate-1"].stats
    before = (stats.granted, stats.denied)
    gate.reader.present(card)
    await until(lambda: (stats.granted, stats.denied) != before, f"a decision on {card}")
    return stats.granted > before[0]


def delta(from_version: int, card: str) -> bytes:
    """One step that adds a person with ``card``."""
    pid = f"D{from_version + 1}"
    return json.dumps(
        {
            "kind": "delta",
            "from_version": from_version,
            "version": from_version + 1,
            "upsert": {
                "persons": [{"id": pid, "name": pid, "role": "staff", "access_groups": ["staff"]}],
                "credentials": [{"credential": card, "person_id": pid}],
            },
        }
    ).encode()


def scenario(
    tmp_path: Path, broker: MosquittoBroker, site: str, body: Any, **config: Any
) -> list[dict[str, Any]]:
    """Run ``body(gate, centre, replies)`` against a running gate (``config``: more
    ``running_gate`` settings); returns every roster reply."""
    collector = Collector(broker.url, f"campus/v1/{site}/+/roster/reply")
    centre = Centre(broker.port, site)

    def replies() -> list[dict[str, Any]]:
        return [m.json() for m in collector.snapshot("/roster/reply")]

    async def run() -> None:
        async with running_gate(tmp_path, broker.url, site=site, gateway="gw-parts", **config) as gate:
            await body(gate, centre, replies)

    try:
        with pytest.MonkeyPatch.context() as env:
            trust_roster_keys(env)
            asyncio.run(asyncio.wait_for(run(), 120))
        got = replies()
    finally:
        centre.close()
        collector.close()
    for reply in got:
        validate(reply, SCHEMA_DIR / "roster" / "reply.json")
    return got


def parser_children() -> list[int]:
    """This process's running roster parser children (edge_agent.roster.IsolatedParser)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and b"stage_main" in command:
            found.append(int(entry.name))
    return found


def roster_of(gate: RunningGate) -> Roster:
    assert gate.agent.roster is not None
    return gate.agent.roster


def roster_counts(gate: RunningGate) -> dict[str, int]:
    return {k: v for k, v in gate.agent.counters.snapshot().items() if k.startswith("roster_")}


def test_split_parts_are_bounded_and_carry_every_entry_once() -> None:
    whole = RosterSnapshot.model_validate(snapshot(2, extra_persons=500))
    parts = split_snapshot(whole, part_id="v2", max_part_bytes=4096)
    messages = [RosterSnapshot.model_validate_json(p) for p in parts]
    assert len(parts) > 10 and max(map(len, parts)) <= 4096
    assert [(m.part.index, m.part.count) for m in messages if m.part] == [
        (i, len(parts)) for i in range(len(parts))
    ]
    for name in ("persons", "credentials", "access_groups", "schedules", "blocklist"):
        assert [x for m in messages for x in getattr(m, name)] == getattr(whole, name), name
    with pytest.raises(ValueError, match="does not fit"):
        split_snapshot(whole, part_id="v2", max_part_bytes=200)


def test_parts_are_applied_whole_on_the_last_with_one_answer(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # Parts over ISOLATED_PARSE_BYTES: each is parsed by the child process, which serves them all.
    parts = parts_of(2, "v2-big", persons=3000, part_bytes=64 * 1024)
    assert len(parts) >= 5 and min(map(len, parts[:-1])) > 32 * 1024

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        roster = roster_of(gate)
        # Everything but the last part, one part sent twice (a QoS 1 redelivery).
        centre.publish("snapshot", *parts[:2], parts[1], *parts[2:-1])
        await until(lambda: roster_counts(gate).get("roster_snapshot_part_duplicate") == 1, "the duplicate")
        assert roster.version == 1 and replies() == []
        assert not await granted(gate, NEW_CARD), "the old roster decides until the last part"
        centre.publish("snapshot", parts[-1])
        await until(lambda: roster.version == 2, "version 2")
        assert len(roster.index.persons) == 3007 and await granted(gate, NEW_CARD)
        await until(lambda: replies() != [], "the answer")
        # The last part again, after the whole was applied: ignored, no second answer.
        centre.publish("snapshot", parts[-1])
        await until(lambda: roster_counts(gate).get("roster_snapshot_part_duplicate") == 2, "ignored")
        assert roster_counts(gate) == {"roster_snapshot_part_duplicate": 2}
        assert parser_children() == [], "the parser's child is kept only between the parts"

    got = scenario(tmp_path, mosquitto, "parts-whole", body)
    assert [(r["result"], r["version"], r["requested_version"]) for r in got] == [("applied", 2, 2)]


def test_a_gap_drops_the_staging_asks_for_a_resync_and_the_old_roster_decides(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    parts = parts_of(2, "v2-gap")
    again = parts_of(2, "v2-again")
    assert len(parts) >= 4

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        roster = roster_of(gate)
        centre.publish("snapshot", parts[0], parts[2])  # part 2 of N is missing
        await until(lambda: replies() != [], "the refusal")
        # The rest of the broken snapshot is dropped without an answer of its own.
        centre.publish("snapshot", *parts[3:])
        await until(
            lambda: roster_counts(gate).get("roster_snapshot_part_dropped") == len(parts) - 3, "drops"
        )
        assert roster.version == 1 and len(replies()) == 1
        assert await granted(gate, KNOWN_CARD) and not await granted(gate, NEW_CARD)
        # A part of another snapshot mid-way is a gap too.
        centre.publish("snapshot", again[0], parts[1])
        await until(lambda: len(replies()) == 2, "the second refusal")
        assert roster.version == 1
        # The centre resends the whole: applied.
        centre.publish("snapshot", *again)
        await until(lambda: roster.version == 2, "version 2 resent")
        assert await granted(gate, NEW_CARD)
        assert roster_counts(gate) == {
            "roster_snapshot_part_gap": 2,
            "roster_snapshot_part_dropped": len(parts) - 3,
        }

    got = scenario(tmp_path, mosquitto, "parts-gap", body)
    assert [(r["result"], r["version"]) for r in got] == [("resync_needed", 1)] * 2 + [("applied", 2)]
    assert got[0]["reason"].startswith("snapshot part gap: got part 3 of")
    assert "expected part 2 of" in got[0]["reason"] and got[0]["requested_version"] == 2
    assert "of snapshot 'v2-gap'" in got[1]["reason"] and "expected part 2" in got[1]["reason"]


def test_a_snapshot_whose_next_part_never_comes_times_out_and_asks_for_a_resync(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    parts = parts_of(2, "v2-stalled")
    resent = parts_of(2, "v2-resent")
    assert len(parts) >= 3

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        roster = roster_of(gate)
        centre.publish("snapshot", *parts[:2])  # the centre stops after two parts
        await until(lambda: replies() != [], "the resync request of the timeout", 30)
        assert roster.version == 1
        assert roster_counts(gate) == {"roster_snapshot_part_timeout": 1}
        assert parser_children() == [], "the parser child outlived the dropped snapshot"
        assert await granted(gate, KNOWN_CARD) and not await granted(gate, NEW_CARD)
        centre.publish("snapshot", *resent)
        await until(lambda: roster.version == 2, "version 2 resent")
        assert await granted(gate, NEW_CARD)

    got = scenario(tmp_path, mosquitto, "parts-timeout", body, agent_extra=", roster_part_timeout_s: 1")
    assert [(r["result"], r["version"]) for r in got] == [("resync_needed", 1), ("applied", 2)]
    assert "'v2-stalled' (version 2) timed out after 2 of" in got[0]["reason"]


def test_an_unreadable_part_is_the_snapshots_one_answer(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    parts = parts_of(2, "v2-bad")

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        centre.publish("snapshot", parts[0], b'{"kind": "snapshot", "version": 2, "part": ', *parts[2:])
        await until(
            lambda: roster_counts(gate).get("roster_snapshot_part_dropped") == len(parts) - 2, "the drops"
        )
        assert roster_of(gate).version == 1 and not await granted(gate, NEW_CARD)
        assert roster_counts(gate) == {
            "roster_invalid_roster": 1,
            "roster_snapshot_part_dropped": len(parts) - 2,
        }

    got = scenario(tmp_path, mosquitto, "parts-bad", body)
    assert [(r["result"], r["version"]) for r in got] == [("rejected", 1)]
    assert got[0]["reason"].startswith("invalid roster message")


def test_a_delta_between_parts_is_taken_against_the_roster_held_then(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The rule: a delta that follows the held version is applied at once (a withdrawn card must not
    wait for a big snapshot's last part); one that follows the snapshot being staged does not
    follow what is held and is answered ``resync_needed``. The snapshot, once whole, is applied if
    still newer than the version held."""
    parts = parts_of(3, "v3")
    assert len(parts) >= 3

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        roster = roster_of(gate)
        centre.publish("snapshot", parts[0])
        centre.publish("delta", delta(1, "00D0000002"))
        await until(lambda: roster.version == 2, "the delta 1 -> 2")
        assert await granted(gate, "00D0000002") and not await granted(gate, NEW_CARD)
        centre.publish("delta", delta(3, "00D0000004"))
        centre.publish("snapshot", *parts[1:])
        await until(lambda: roster.version == 3, "the snapshot")
        # Version 3 is the centre's whole roster: the delta's person is not in it.
        assert await granted(gate, NEW_CARD) and not await granted(gate, "00D0000002")
        assert roster_counts(gate) == {"roster_version_gap": 1}

    got = scenario(tmp_path, mosquitto, "parts-delta", body)
    assert [(r["result"], r["requested_version"]) for r in got] == [
        ("applied", 2),
        ("resync_needed", 4),
        ("applied", 3),
    ]


def test_parts_of_a_snapshot_not_newer_are_ignored_with_one_answer(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A retained last part (the broker keeps only the last message of a topic) or a republished
    current snapshot: nothing is staged, and a gateway that holds it asks for nothing."""
    parts = parts_of(1, "v1")

    async def body(gate: RunningGate, centre: Centre, replies: Any) -> None:
        centre.publish("snapshot", parts[-1])
        await until(lambda: len(replies()) == 1, "the lone last part")
        centre.publish("snapshot", *parts)
        await until(lambda: len(replies()) == 2, "the whole")
        assert roster_of(gate).version == 1
        assert roster_counts(gate) == {"roster_stale_snapshot": 2}

    got = scenario(tmp_path, mosquitto, "parts-stale", body)
    assert [(r["result"], r["requested_version"]) for r in got] == [("ignored", 1)] * 2


def test_an_entry_in_two_parts_or_parts_over_the_limit_are_refused(tmp_path: Path) -> None:
    parts = [RosterSnapshot.model_validate_json(p) for p in parts_of(2, "v2")]
    repeated = SnapshotStaging("v2", 2, 3, max_bytes=1_000_000)
    repeated.add(parts[0], None, 1000)
    with pytest.raises(RosterError) as refused:
        repeated.add(parts[0], None, 1000)
    assert refused.value.code == "invalid_roster" and "given in an earlier part" in str(refused.value)
    big = SnapshotStaging("v2", 2, 3, max_bytes=1500)
    big.add(parts[0], None, 1000)
    with pytest.raises(RosterError) as refused:
        big.add(parts[1], None, 1000)
    assert refused.value.code == "too_large" and "1,500 bytes" in str(refused.value)
    # Whole and in order, a staging is applied like the snapshot in one message.
    roster = Roster(tmp_path)
    try:
        staged = SnapshotStaging("v2", 2, len(parts), max_bytes=1_000_000)
        for part in parts:
            staged.add(part, None, 1000)
        assert staged.complete
        result = roster.apply_staged(staged)
        one = Roster(tmp_path / "one")
        try:
            one.apply_snapshot(RosterSnapshot.model_validate(snapshot(2, extra_persons=200)))
            assert roster.index == one.index and result.persons == 207
        finally:
            one.close()
    finally:
        roster.close()

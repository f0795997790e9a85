"""A corrupt ``roster.db`` never keeps the gate down: the roster comes back from its last-known-good
copy (or, when that is unusable too, starts empty and denies every card), the centre is told
(``storage_recovered``) and asked for the snapshot (an unprompted ``resync_needed`` roster reply),
and the snapshot it resends is applied.

The data directory is prepared with the real :class:`~edge_agent.roster.Roster`: version 1 copied
to ``roster.db.last-good``, then version 2 (one more person, ``LATE``) in ``roster.db``, which is
then damaged while nothing runs. Real Mosquitto; the gate cases run the agent in this process
(tests/support/agent_harness.py), the cases without a usable copy run it as a real process
(tests/support/agent_process.py) against simulators on pty pairs.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_agent.roster import LAST_GOOD, ROSTER_DB, IsolatedParser, Roster, RosterError, parse_roster_message
from sync.contract import SCHEMA_DIR, validate, validate_event
from sync.messages.roster import RosterSnapshot, split_snapshot
from tests.agent.roster_data import snapshot
from tests.support.agent_harness import gate_config_text, gate_simulators, running_gate
from tests.support.agent_process import AgentProcess
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector, Received
from tests.support.roster_signing import signed, trust_roster_keys
from tests.support.wait import until, wait_until

KNOWN_CARD = "0012AB34CD"  # S1, in every version
LATE_CARD, LATE = "0000000999", "S9"  # only in version 2
CORRUPTIONS = ["overwrite_middle", "truncate", "zero_length", "random_bytes"]


def version_2() -> dict[str, Any]:
    snap = snapshot(2, extra_persons=300)  # a file of many pages, so "the middle" is a data page
    snap["persons"].append(
        {"id": LATE, "name": "Late joiner", "role": "student", "access_groups": ["students"]}
    )
    snap["credentials"].append({"credential": LATE_CARD, "person_id": LATE})
    return snap


def prepare(data: Path) -> None:
    """roster.db.last-good at version 1, roster.db at version 2, nothing running."""
    roster = Roster(data)
    roster.apply_snapshot(parse_roster_message(json.dumps(snapshot(1, extra_persons=300)).encode()))  # type: ignore[arg-type]
    assert roster.save_last_good() == 1
    roster.apply_snapshot(parse_roster_message(json.dumps(version_2()).encode()))  # type: ignore[arg-type]
    roster.close()
    sql(data / ROSTER_DB, "VACUUM")  # no free pages: every page overwritten below is one SQLite reads
    assert not (data / f"{ROSTER_DB}-wal").exists()


def sql(path: Path, statement: str) -> None:
    """One statement, committed, and the connection closed (which also ends WAL mode's -wal file)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(statement)
    finally:
        conn.close()


def corrupt(path: Path, how: str) -> None:
    rng = random.Random(how)
    size = path.stat().st_size
    if how == "overwrite_middle":
        page = 4096
        with path.open("r+b") as f:
            f.seek((size // page // 2) * page)
            f.write(rng.randbytes(page))
    elif how == "truncate":
        with path.open("r+b") as f:
            f.truncate(size // 2)
    elif how == "zero_length":
        path.write_bytes(b"")
    else:
        path.write_bytes(rng.randbytes(size))


def is_event(m: Received, name: str) -> bool:
    return "/events/" in m.topic and m.json()["type"] == f"edu.campus.{name}"


def recovery_report(collector: Collector) -> dict[str, Any]:
    """The ``storage_recovered`` event the agent published (waited for), checked against its schema."""
    messages = collector.wait_for(lambda m: any(is_event(x, "gateway.storage_recovered.v1") for x in m))
    report: dict[str, Any] = next(x.json() for x in messages if is_event(x, "gateway.storage_recovered.v1"))
    validate_event(report)
    return report


def opens(turnstile: Any) -> int:
    return sum(c.name == "open" for c in turnstile.commands)


@pytest.fixture(autouse=True)
def roster_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway (in this process or an agent process) trusts the centre's test roster key."""
    trust_roster_keys(monkeypatch)


def centre_publish(broker: MosquittoBroker, topic: str, message: dict[str, Any]) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic, "-s"],
        input=signed(topic, json.dumps(message).encode()),
        check=True,
        timeout=30,
    )


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_roster_comes_back_from_the_last_good_copy_and_resyncs(
    how: str, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    data = tmp_path / "data"
    prepare(data)
    corrupt(data / ROSTER_DB, how)
    site, gw = f"rr-{how.replace('_', '-')}", "gw-rr"
    collector = Collector(mosquitto.url, f"campus/v1/{site}/#")

    async def scenario() -> None:
        # The harness waits for roster version 1: that of the last-known-good copy.
        async with running_gate(tmp_path, mosquitto.url, site=site, gateway=gw) as gate:
            roster = gate.agent.roster
            assert roster is not None and roster.recovery is not None
            assert roster.recovery.restored_version == 1
            before = opens(gate.turnstile)
            gate.reader.present(KNOWN_CARD)
            await until(lambda: opens(gate.turnstile) == before + 1, "the known card opens the gate")
            gate.reader.present(LATE_CARD)  # version 2 is lost until the centre resends it
            await until(lambda: gate.agent.gates["gate-1"].stats.denied == 1, "the late card denied")
            request = await asyncio.to_thread(
                collector.wait_for, lambda m: any(x.topic.endswith(f"{gw}/roster/reply") for x in m)
            )
            ask = next(x.json() for x in request if x.topic.endswith(f"{gw}/roster/reply"))
            validate(ask, SCHEMA_DIR / "roster" / "reply.json")
            assert (
                ask["result"] == "resync_needed" and ask["requested_version"] is None and ask["version"] == 1
            )
            await asyncio.to_thread(
                centre_publish, mosquitto, f"campus/v1/{site}/roster/snapshot", version_2()
            )
            await until(lambda: roster.version == 2, "the resent snapshot applied")
            before = opens(gate.turnstile)
            gate.reader.present(LATE_CARD)
            await until(lambda: opens(gate.turnstile) == before + 1, "the late card opens the gate")
            await until(lambda: asyncio.to_thread(lambda: roster.last_good_version() == 2), "the new copy")

    try:
        asyncio.run(scenario())
        report = recovery_report(collector)
    finally:
        collector.close()
    assert report["data"]["store"] == "roster"
    assert report["data"]["restored_version"] == 1 and report["data"]["resync_requested"] is True
    moved = Path(report["data"]["moved_to"])
    assert moved.parent == data and moved.name.startswith(f"{ROSTER_DB}.corrupt-") and moved.exists()


@pytest.mark.parametrize("copy", ["missing", "corrupt"])
def test_without_a_usable_copy_the_agent_starts_empty_denies_and_asks_for_the_snapshot(
    copy: str, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A real agent process: nothing to restore, so every card is denied until the snapshot comes."""
    data = tmp_path / "data"
    prepare(data)
    corrupt(data / ROSTER_DB, "overwrite_middle")
    if copy == "missing":
        (data / LAST_GOOD).unlink()
    else:
        corrupt(data / LAST_GOOD, "random_bytes")
    site, gw = f"rr-empty-{copy}", "gw-rr"
    collector = Collector(mosquitto.url, f"campus/v1/{site}/#")
    status_path = data / "status.json"
    started: list[AgentProcess] = []

    def status(pred: Any, what: str) -> dict[str, Any]:
        agent = started[0]

        def check() -> dict[str, Any] | None:
            assert agent.proc.poll() is None, f"the agent exited:\n{agent.output()[-3000:]}"
            got: dict[str, Any] = json.loads(status_path.read_text())
            return got if pred(got) else None

        found = wait_until(check, 30, 0.05, what=what, ignore=(FileNotFoundError, ValueError))
        assert found is not None
        return found

    async def scenario() -> None:
        reader, turnstile = gate_simulators()
        async with reader, turnstile:
            config = tmp_path / "gateway.yaml"
            config.write_text(
                gate_config_text(
                    tmp_path,
                    mosquitto.url,
                    reader.url,
                    turnstile.url,
                    site=site,
                    gateway=gw,
                    extra="api: {enabled: false}\n",
                )
            )
            started.append(AgentProcess(config, data, mosquitto.url))
            agent = started[0]
            try:
                shown = await asyncio.to_thread(
                    status,
                    lambda s: (
                        s["devices"].get("reader-in", {}).get("online")
                        and s["devices"].get("turnstile-1", {}).get("online")
                    ),
                    "both devices online",
                )
                assert shown["roster_version"] == 0  # empty, and the seed is not applied over a recovery
                recovered = [r for r in shown["stores"]["recovered"] if r["store"] == "roster"]
                assert recovered and recovered[0]["restored_version"] is None
                reader.present(KNOWN_CARD)
                denied = await asyncio.to_thread(
                    collector.wait_for, lambda m: any(is_event(x, "access.denied.v1") for x in m)
                )
                assert (
                    next(x.json() for x in denied if is_event(x, "access.denied.v1"))["data"]["reason"]
                    == "unknown_credential"
                )
                assert opens(turnstile) == 0
                asked = await asyncio.to_thread(
                    collector.wait_for, lambda m: any(x.topic.endswith(f"{gw}/roster/reply") for x in m)
                )
                ask = next(x.json() for x in asked if x.topic.endswith(f"{gw}/roster/reply"))
                assert ask["result"] == "resync_needed" and ask["version"] == 0, ask
                await asyncio.to_thread(
                    centre_publish, mosquitto, f"campus/v1/{site}/roster/snapshot", version_2()
                )
                await asyncio.to_thread(status, lambda s: s["roster_version"] == 2, "the snapshot applied")
                reader.present(KNOWN_CARD)
                await until(lambda: opens(turnstile) == 1, "the known card opens the gate")
            finally:
                agent.signal(signal.SIGTERM)
                assert await asyncio.to_thread(agent.wait, 30) == 0, agent.output()[-3000:]

    try:
        asyncio.run(scenario())
        report = recovery_report(collector)
    finally:
        collector.close()
    assert report["data"]["restored_version"] is None and report["data"]["resync_requested"] is True
    output = started[0].output()
    assert "EMPTY" in output and "Traceback" not in output
    if copy == "corrupt":
        assert list(data.glob(f"{LAST_GOOD}.corrupt-*")), "the unusable copy is kept aside"
    assert Roster(data).last_good_version() == 2  # a fresh copy of what the centre resent


# -- the store on its own ----------------------------------------------------------------------


def test_rows_that_do_not_decode_count_as_corruption(tmp_path: Path) -> None:
    prepare(tmp_path)
    # Valid SQLite, garbled content: what quick_check cannot see.
    sql(tmp_path / ROSTER_DB, "UPDATE persons SET data = '{\"id\": 5}' WHERE id = 'S1'")
    roster = Roster(tmp_path)
    assert roster.recovery is not None and roster.recovery.restored_version == 1
    assert "does not decode" in roster.recovery.storage.error
    assert roster.version == 1 and "S1" in roster.index.persons
    roster.close()
    assert Roster(tmp_path).recovery is None  # the restored file is a sound store


def test_a_copy_that_does_not_decode_is_not_restored(tmp_path: Path) -> None:
    prepare(tmp_path)
    sql(tmp_path / LAST_GOOD, "UPDATE credentials SET data = '[]'")
    corrupt(tmp_path / ROSTER_DB, "truncate")
    roster = Roster(tmp_path)
    assert roster.recovery is not None and roster.recovery.restored_version is None
    assert roster.version == 0 and not roster.index.credentials
    assert roster.recovery.last_good_error and "unusable" in roster.recovery.last_good_error


def test_the_copy_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    prepare(tmp_path)
    roster = Roster(tmp_path)
    assert roster.last_good_version() == 1
    assert roster.save_last_good() == 2
    assert roster.last_good_version() == 2
    assert not (tmp_path / f"{LAST_GOOD}.tmp").exists()
    conn = sqlite3.connect(f"file:{tmp_path / LAST_GOOD}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file, no -wal
    finally:
        conn.close()


# -- the child-process parser -------------------------------------------------------------------


def test_the_child_process_parses_exactly_like_this_process() -> None:
    parser = IsolatedParser()
    snap = version_2()
    snap["face_templates"] = [
        {"id": "F1", "person_id": "S1", "model_id": "m", "embedding": [0.1, -2.5e-7, 3.0]}
    ]
    delta = {
        "kind": "delta",
        "from_version": 2,
        "version": 3,
        "upsert": {
            "persons": [
                {"id": "X1", "name": "x\ty\nz", "role": "staff", "valid_until": "2030-01-01T00:00:00Z"}
            ]
        },
        "delete": {"credentials": [LATE_CARD], "face_templates": ["F1"]},
    }
    parts = split_snapshot(RosterSnapshot.model_validate(snap), part_id="v2", max_part_bytes=8192)
    # One child serves them all (a snapshot in parts), and says where each part stands.
    for payload in [json.dumps(snap).encode(), json.dumps(delta).encode(), *parts]:
        parsed, encoded = parser.parse(payload)
        assert parsed == parse_roster_message(payload)
        # The rows as stored are what this process would have written.
        for name, rows in encoded.items():
            assert rows == {
                k: m.model_dump_json()
                for k, m in zip(
                    rows, getattr(parsed if parsed.kind == "snapshot" else parsed.upsert, name), strict=True
                )
            }
    bad = json.dumps({**delta, "version": 5}).encode()
    with pytest.raises(RosterError) as here:
        parse_roster_message(bad)
    with pytest.raises(RosterError) as there:
        parser.parse(bad)
    assert (there.value.code, there.value.result, str(there.value)) == (
        here.value.code,
        here.value.result,
        str(here.value),
    )
    assert parser.running, "a refused message does not end the child"
    assert parser.parse(parts[-1])[0] == parse_roster_message(parts[-1])
    parser.close()
    assert not parser.running


def test_a_parse_cut_short_changes_nothing_and_says_so() -> None:
    parser = IsolatedParser()
    payload = json.dumps(snapshot(2, extra_persons=20_000)).encode()
    outcome: list[BaseException] = []

    def parse() -> None:
        try:
            parser.parse(payload)
        except RosterError as err:
            outcome.append(err)

    worker = threading.Thread(target=parse)
    worker.start()
    wait_until(lambda: parser.running, 10, 0.001, what="the child started")
    parser.kill()
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], RosterError)
    assert outcome[0].code == "parser_failed" and outcome[0].result == "rejected"

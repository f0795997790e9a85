"""``edge-agent central roster publish``: a school's export (CSV, XLSX, a PostgreSQL query) checked,
stored as a version in the central PostgreSQL, signed, published, and the gateways' convergence
reported, with the real pieces: the CLI as a process, PostgreSQL (tests/central/pg_server.py), a
Mosquitto, and two real gateways in this process (one with a simulated reader and turnstile on pty
pairs, so a new card is swiped for real). The exports are generated from a seeded RNG
(tests/central/school_export.py)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from edge_agent.config import parse_config
from sync.central.roster_export import ExportError, check_export, load_groups, load_mapping, read_source
from sync.central.roster_publish import diff
from sync.messages.roster import RosterContent
from tests.central.helpers import REPO_ROOT, query, scalar
from tests.central.school_export import GROUPS_YAML, edited, school, write_csv, write_xlsx
from tests.support.agent_harness import build_gateway, gate_simulators
from tests.support.broker import MosquittoBroker, free_port
from tests.support.mqtt import Collector
from tests.support.roster_signing import TEST_KEY, TEST_KEY_ID, trust_roster_keys
from tests.support.wait import until

pytestmark = pytest.mark.timeout(240)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``edge-agent central ...`` as an integrator runs it."""
    argv = [sys.executable, "-m", "edge_agent.cli", "central", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, timeout=timeout)


class Centre:
    """The files and flags of one site's publisher."""

    def __init__(self, tmp_path: Path, database: str, broker: MosquittoBroker | None, site: str) -> None:
        self.dir = tmp_path / "centre"
        self.dir.mkdir()
        self.database = database
        self.broker = broker
        self.site = site
        self.groups = self.dir / "groups.yaml"
        self.groups.write_text(GROUPS_YAML)
        self.key = self.dir / "roster-key.pem"
        self.key.write_bytes(TEST_KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))

    def publish(
        self, *source: str, wait: float = 0, dry_run: bool = False
    ) -> subprocess.CompletedProcess[str]:
        args = ["roster", "publish", "--site", self.site, *source, "--groups", str(self.groups)]
        args += ["--database", self.database, "--by", "registrar-wu"]
        if dry_run:
            args.append("--dry-run")
        else:
            assert self.broker is not None
            args += ["--mqtt-url", self.broker.url, "--key-file", str(self.key), "--key-id", TEST_KEY_ID]
            args += ["--wait", str(wait)]
        done = cli(*args)
        print(f"$ roster publish {' '.join(source)}\n{done.stdout}{done.stderr}")  # shown when a test fails
        return done

    def versions(self) -> list[tuple[Any, ...]]:
        if scalar(self.database, "SELECT to_regclass('roster_versions')") is None:
            return []
        return query(
            self.database,
            "SELECT version, created_by, published_at IS NOT NULL, changes FROM roster_versions "
            "WHERE site = %s ORDER BY version",
            (self.site,),
        )


def site_name() -> str:
    return f"pub{uuid.uuid4().hex[:8]}"


def gateway_yaml(tmp: Path, url: str, site: str, name: str, devices: str = "") -> str:
    return f"""
gateway: {{site: {site}, id: {name}, timezone: Asia/Shanghai}}
agent: {{data_dir: {tmp / "data"}, shutdown_timeout_s: 3}}
mqtt: {{url: "{url}", reconnect_min_s: 0.1, reconnect_max_s: 0.5, status_interval_s: 0.5}}
api: {{enabled: false}}
{devices}"""


@asynccontextmanager
async def two_gateways(tmp_path: Path, url: str, site: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """``gw-gate`` (reader + turnstile on gate-1) and ``gw-plain`` (no devices), both with an empty
    roster; yields (gw-gate, gw-plain, the simulated reader)."""
    reader, turnstile = gate_simulators()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(reader)
        await stack.enter_async_context(turnstile)
        devices = f"""devices:
  - {{kind: card_reader, id: reader-in, profile: em4100_id12, port: "{reader.url}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile.url}"}}
gates:
  - {{id: gate-1, readers: [{{device: reader-in, direction: entry}}], turnstile: turnstile-1}}
"""
        agents = []
        for name, extra in (("gw-gate", devices), ("gw-plain", "")):
            tmp = tmp_path / name
            tmp.mkdir()
            config = parse_config(gateway_yaml(tmp, url, site, name, extra))
            agents.append(build_gateway(config, data_dir=tmp / "data"))
        tasks = [asyncio.create_task(a.run()) for a in agents]
        try:
            for agent in agents:
                await until(lambda a=agent: a.roster is not None and a.link.connected.is_set(), "gateway up")
            await until(lambda: agents[0].devices.state.get("reader-in", {}).get("online") is True, "reader")
            await until(lambda: agents[0].devices.state.get("turnstile-1", {}).get("online") is True, "gate")
            yield agents[0], agents[1], reader
        finally:
            for agent in agents:
                agent.request_stop("test")
            await asyncio.wait_for(asyncio.gather(*tasks), 30)


@asynccontextmanager
async def plain_gateway(
    tmp: Path, url: str, site: str, name: str, agent_extra: str = ""
) -> AsyncIterator[Any]:
    """A gateway without devices (its roster in ``tmp``, kept across restarts); ``agent_extra``
    goes into its ``agent:`` section."""
    tmp.mkdir(exist_ok=True)
    text = gateway_yaml(tmp, url, site, name)
    if agent_extra:
        text = text.replace("shutdown_timeout_s: 3}", f"shutdown_timeout_s: 3, {agent_extra}}}")
    agent = build_gateway(parse_config(text), data_dir=tmp / "data")
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: task.done() or (agent.roster is not None and agent.link.connected.is_set()), name)
        assert not task.done(), (
            f"{name} stopped: {task.result() if not task.exception() else task.exception()}"
        )
        yield agent
    finally:
        agent.request_stop("test")
        await asyncio.wait_for(task, 30)


async def swipe(agent: Any, reader: Any, card: str) -> bool:
    """Present ``card`` at gate-1; whether it was granted."""
    stats = agent.gates["gate-1"].stats
    before = (stats.granted, stats.denied)
    reader.present(card)
    await until(lambda: (stats.granted, stats.denied) != before, f"a decision on {card}")
    return bool(stats.granted > before[0])


def held(agent: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    index = agent.roster.index
    return index.version, index.persons, index.credentials


def test_csv_then_xlsx_then_edited_export_reach_both_gateways(
    tmp_path: Path, mosquitto: MosquittoBroker, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_roster_keys(monkeypatch)
    site = site_name()
    centre = Centre(tmp_path, database, mosquitto, site)
    first = school(3000, teachers=40)
    csv_path = write_csv(centre.dir / "students.csv", first.rows)
    xlsx_path = write_xlsx(centre.dir / "students.xlsx", first.rows)
    second = edited(first, transfers=40, leavers=25, joiners=12, new_cards=15, lost_cards=10)
    edited_path = write_xlsx(centre.dir / "students-2.xlsx", second.rows)
    third = edited(second, transfers=3, leavers=2, joiners=0, new_cards=0, lost_cards=0)
    dry_path = write_csv(centre.dir / "students-3.csv", third.rows)
    collector = Collector(mosquitto.url, f"campus/v1/{site}/roster/+")

    async def scenario() -> None:
        async with two_gateways(tmp_path, mosquitto.url, site) as (gate, plain, reader):
            # Version 1 from the CSV: the whole roster, as a snapshot in parts (it is over 512 KiB).
            done = await asyncio.to_thread(centre.publish, "--source", str(csv_path), wait=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "-> version 1" in done.stdout and "joiners 3040" in done.stdout
            assert "gateways at version 1 or later: 2 of 2" in done.stdout, done.stdout
            for agent in (gate, plain):
                version, persons, cards = held(agent)
                assert version == 1 and len(persons) == 3040
                assert len(cards) == sum(len(r["cards"].split(";")) for r in first.rows)
            some = first.rows[7]
            assert await swipe(gate, reader, some["cards"].split(";")[0])

            # The same people as a spreadsheet: nothing changed, no version 2.
            same = await asyncio.to_thread(centre.publish, "--source", str(xlsx_path), wait=10)
            assert same.returncode == 0, same.stdout + same.stderr
            assert "changes nothing" in same.stdout and "2 of 2" in same.stdout

            # The edited export: one delta, both gateways converge to version 2.
            done = await asyncio.to_thread(centre.publish, "--source", str(edited_path), wait=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "version 1 -> version 2" in done.stdout
            for kind, count in (("transfers", 40), ("leavers", 25), ("joiners", 12), ("lost_cards", 10)):
                assert f"{kind} {count}" in done.stdout, done.stdout
            # 15 added to students who stay, and the joiners' cards.
            assert f"new_cards {len(second.edits['new_cards'])}" in done.stdout
            assert len(second.edits["new_cards"]) >= 15 + 12
            assert "gateways at version 2 or later: 2 of 2" in done.stdout, done.stdout
            by_id = {r["person_id"]: r for r in second.rows}
            for agent in (gate, plain):
                version, persons, cards = held(agent)
                assert version == 2
                assert not set(second.edits["leavers"]) & set(persons)
                for pid in second.edits["transfers"]:
                    assert persons[pid].group == by_id[pid]["class_group"]
                assert all(number in cards for number in second.edits["new_cards"])
                assert not set(second.edits["lost_cards"]) & set(cards)
            assert await swipe(gate, reader, second.edits["new_cards"][0])
            assert await swipe(gate, reader, second.edits["new_cards"][-1])  # a joiner's card
            assert not await swipe(gate, reader, second.edits["lost_cards"][0])

            # A dry run prints the next delta and changes nothing anywhere.
            published = len(collector.snapshot())
            dry = await asyncio.to_thread(centre.publish, "--source", str(dry_path), dry_run=True)
            assert dry.returncode == 0, dry.stdout + dry.stderr
            assert "version 2 -> version 3" in dry.stdout and "transfers 3" in dry.stdout
            assert "leavers 2" in dry.stdout and "dry run: nothing stored" in dry.stdout
            for pid in third.edits["leavers"]:
                assert f"leaver {pid}" in dry.stdout
            await asyncio.sleep(1)
            assert len(collector.snapshot()) == published
            assert held(gate)[0] == held(plain)[0] == 2

    try:
        asyncio.run(asyncio.wait_for(scenario(), 200))
    finally:
        collector.close()
    versions = centre.versions()
    assert [(v, by, sent) for v, by, sent, _ in versions] == [
        (1, "registrar-wu", True),
        (2, "registrar-wu", True),
    ]
    assert sorted(versions[1][3]["leavers"]) == second.edits["leavers"]
    # Every message on the wire was signed, the snapshot parts too.
    messages = collector.snapshot()
    assert messages and all(m.payload.startswith(b'{"signature":') for m in messages)
    assert sum(1 for m in messages if m.topic.endswith("/delta")) == 1
    stored = RosterContent.model_validate(
        scalar(database, "SELECT content FROM roster_versions WHERE site = %s AND version = 2", (site,))
    )
    assert len(stored.persons) == len(second.rows)


def test_bad_rows_are_reported_with_their_lines_and_nothing_is_published(
    tmp_path: Path, mosquitto: MosquittoBroker, database: str
) -> None:
    site = site_name()
    centre = Centre(tmp_path, database, mosquitto, site)
    rows = school(30, seed=5).rows
    # Line numbers: the header is line 1, so rows[i] is on line i + 2.
    rows[3]["cards"] = rows[1]["cards"].split(";")[0]  # line 5: a card of line 3
    rows[6]["access_groups"] = "students;chess-club"  # line 8: a group nobody defined
    rows[9]["valid_until"] = "2027-13-40"  # line 11
    rows[12]["person_id"] = "S 12"  # line 14: a space is not allowed in an id
    rows[15]["person_id"] = rows[14]["person_id"]  # line 17: a second row for one person
    rows[18]["consent_granted_by"] = "guardian"  # line 20: ... who is not named
    rows[18]["consent_guardian_name"] = ""
    rows[18]["consent_granted_at"] = "2026-08-01"
    rows[18]["consent_scopes"] = "attendance"
    path = write_csv(centre.dir / "bad.csv", rows)
    with path.open("a") as f:  # line 32: a name with an unquoted comma
        f.write("S9999,Li, Wei,student,7A,00AA00AA00,em4100,,,students,,,,,,,,,,\n")
    collector = Collector(mosquitto.url, f"campus/v1/{site}/roster/+")
    try:
        done = centre.publish("--source", str(path))
        assert done.returncode == 2, done.stdout + done.stderr
        err = done.stderr
        assert "7 problem(s); nothing was published" in err, err
        assert "line 32: 1 cell(s) more than the header has columns" in err
        first_card = rows[1]["cards"].split(";")[0]
        assert f"line 5, column 'cards': card {first_card} is also on line 3" in err
        assert "line 8, column 'access_groups': unknown access group(s) chess-club" in err
        assert "line 11, column 'valid_until': '2027-13-40' is not a date" in err
        assert "line 14, column 'person_id': 'S 12'" in err
        assert f"line 17, column 'person_id': person id {rows[14]['person_id']} also on line 16" in err
        assert "line 20, column 'consent_guardian_name'" in err
        assert centre.versions() == []
        assert collector.snapshot() == []

        # A key file that is not an Ed25519 private key is refused before anything is stored.
        centre.key.write_text("not a key\n")
        good = write_csv(centre.dir / "good.csv", school(4).rows)
        done = centre.publish("--source", str(good))
        assert done.returncode == 2 and "is not an unencrypted PEM private key" in done.stderr, done.stderr
        assert centre.versions() == []

        # A renamed column the mapping does not know about: the message names the mapping.
        mapping = centre.dir / "mapping.yaml"
        mapping.write_text("columns: {person_id: student_no, class_group: klass}\n")
        renamed = write_csv(centre.dir / "renamed.csv", school(5).rows, {"person_id": "student_no"})
        done = centre.publish("--source", str(renamed), "--mapping", str(mapping))
        assert done.returncode == 2
        assert (
            f"header, column 'klass': no such column, yet mapping {mapping} reads class_group" in done.stderr
        )
        # With the mapping right, the renamed export is read.
        mapping.write_text("columns: {person_id: student_no}\n")
        done = centre.publish("--source", str(renamed), "--mapping", str(mapping), dry_run=True)
        assert done.returncode == 0 and "joiners 5" in done.stdout, done.stderr
    finally:
        collector.close()


def test_query_source_and_unreachable_broker_and_database(
    tmp_path: Path, mosquitto: MosquittoBroker, database: str
) -> None:
    site = site_name()
    centre = Centre(tmp_path, database, mosquitto, site)
    # The school information system's table, and a view-like query in the integrator's words.
    execute(
        database,
        "CREATE TABLE sis_students (student_no text, full_name text, klass text, cards text[], "
        "leaves date, born date); "
        "INSERT INTO sis_students VALUES "
        "('S1', 'Li Wei', '7A', ARRAY['0012AB34CD'], '2027-07-15', '2013-03-01'), "
        "('S2', 'Zhang Min', '7B', ARRAY['0012AB34CE', '0012AB34CF'], NULL, '2012-11-30'), "
        "('S3', 'Wang Fang', '7B', ARRAY[]::text[], '2027-07-15', NULL)",
    )
    sql = (
        "SELECT student_no AS person_id, full_name AS name, 'student' AS role, klass AS class_group, "
        "cards, leaves AS valid_until, born AS birth_date, 'students' AS access_groups "
        "FROM sis_students ORDER BY student_no"
    )
    # The broker is down: nothing is stored, the error says which broker.
    down = f"mqtt://127.0.0.1:{_closed_port()}"
    args = ["roster", "publish", "--site", site, "--query", sql, "--groups", str(centre.groups)]
    args += ["--database", database, "--key-file", str(centre.key), "--key-id", TEST_KEY_ID]
    done = cli(*args, "--mqtt-url", down)
    assert done.returncode == 1 and f"broker {down} unreachable" in done.stderr, done.stderr
    assert centre.versions() == []

    done = cli(*args, "--mqtt-url", mosquitto.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "-> version 1" in done.stdout and "joiners 3" in done.stdout
    assert "no gateway of this site is known yet" in done.stdout
    stored = RosterContent.model_validate(
        scalar(database, "SELECT content FROM roster_versions WHERE site = %s", (site,))
    )
    assert [len([c for c in stored.credentials if c.person_id == p]) for p in ("S1", "S2", "S3")] == [1, 2, 0]
    s1 = next(p for p in stored.persons if p.id == "S1")
    # The whole of 15 July in the school's zone (the mapping's timezone; UTC by default).
    assert s1.valid_until is not None and s1.valid_until.isoformat() == "2027-07-16T00:00:00+00:00"

    # A bad query row is named by its place in the result.
    execute(
        database, "INSERT INTO sis_students VALUES ('S4', 'Zhao Lei', '8A', ARRAY['0012AB34CD'], NULL, NULL)"
    )
    done = cli(*args, "--mqtt-url", mosquitto.url)
    assert done.returncode == 2
    assert "query row 4, column 'cards': card 0012AB34CD is also on query row 1 (S1)" in done.stderr

    # The central database is down.
    gone = f"postgresql://postgres@127.0.0.1:{_closed_port()}/none"
    export = str(write_csv(centre.dir / "a.csv", school(3).rows))
    done = cli("roster", "publish", "--site", site, "--source", export,
               "--groups", str(centre.groups), "--database", gone, "--dry-run")  # fmt: skip
    assert done.returncode == 1 and "central database unreachable" in done.stderr, done.stderr


def execute(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


def _closed_port() -> int:
    """A port nothing listens on (free a moment ago)."""
    return free_port()


def test_the_documented_example_export_is_valid(tmp_path: Path) -> None:
    """docs/MASTER_DATA.md's example export, mapping and groups file are what the publisher takes."""
    text = (REPO_ROOT / "docs" / "MASTER_DATA.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.DOTALL)
    export_csv = next(body for lang, body in blocks if lang == "csv")
    mapping_yaml, groups_yaml = (body for lang, body in blocks if lang == "yaml")
    (tmp_path / "groups.yaml").write_text(groups_yaml)
    (tmp_path / "export.csv").write_text(export_csv)
    (tmp_path / "mapping.yaml").write_text(mapping_yaml)
    groups = load_groups(tmp_path / "groups.yaml")
    mapping, name = load_mapping(None)
    checked = check_export(read_source(tmp_path / "export.csv", mapping), mapping, groups, mapping_name=name)
    persons = {p.id: p for p in checked.content.persons}
    assert list(persons) == ["S1001", "S1002", "S1003", "T2001"]
    assert persons["S1003"].blocked and persons["S1002"].consent is None
    assert persons["S1001"].consent is not None and persons["S1001"].consent.guardian_name == "Li Ming"
    assert persons["S1001"].consent_refusal("attendance", persons["S1001"].consent.granted_at) is None
    assert len(checked.content.credentials) == 5
    assert persons["T2001"].terminal_user_ids == ["4711", "zk-office-1:17"]
    assert persons["S1001"].terminal_user_ids == []
    assert load_mapping(tmp_path / "mapping.yaml")[0].columns["person_id"] == "学号"
    # One terminal id on two rows would make a terminal's records ambiguous: refused, with its line.
    twice = export_csv.replace("F-2026-0117,\n", "F-2026-0117,4711\n")
    (tmp_path / "twice.csv").write_text(twice)
    with pytest.raises(ExportError) as err:
        check_export(read_source(tmp_path / "twice.csv", mapping), mapping, groups, mapping_name=name)
    assert [(p.column, p.message) for p in err.value.problems] == [
        ("terminal_user_ids", "terminal user id 4711 is also on line 2 (S1001)")
    ]


def test_an_offline_gateway_and_one_without_the_key_are_reported_then_resend_catches_up(
    tmp_path: Path, mosquitto: MosquittoBroker, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small parts (``--max-message-bytes``) so no snapshot is retained: a gateway that was away
    while version 2 went out stays at version 1 until ``roster resend``."""
    trust_roster_keys(monkeypatch)
    site = site_name()
    centre = Centre(tmp_path, database, mosquitto, site)
    first = school(60, seed=3)
    second = edited(first, transfers=5, leavers=4, joiners=3, new_cards=2, lost_cards=1)
    v1 = write_csv(centre.dir / "v1.csv", first.rows)
    v2 = write_csv(centre.dir / "v2.csv", second.rows)
    small = ["--max-message-bytes", "8192"]
    resend = ["roster", "resend", "--site", site, "--database", database, "--mqtt-url", mosquitto.url]
    resend += ["--key-file", str(centre.key), "--key-id", TEST_KEY_ID, *small]

    async def scenario() -> None:
        async with plain_gateway(tmp_path / "a", mosquitto.url, site, "gw-a") as a:
            async with plain_gateway(tmp_path / "b", mosquitto.url, site, "gw-b") as b:
                done = await asyncio.to_thread(centre.publish, "--source", str(v1), *small, wait=30)
                assert done.returncode == 0 and "2 of 2" in done.stdout, done.stdout + done.stderr
                assert "(parts; the last retained)" in done.stdout
                assert b.roster.version == 1
            # gw-b is away (its status says offline, retained): version 2 reaches gw-a alone. Its
            # shutdown's offline status is on the broker before the publisher reads the statuses.
            await until(lambda: gateway_state("gw-b") == "offline", "gw-b's status says offline")
            done = await asyncio.to_thread(centre.publish, "--source", str(v2), *small, wait=3)
            assert done.returncode == 3, done.stdout + done.stderr
            assert "gw-a: caught up (holds version 2)" in done.stdout
            # Its offline status (the Last Will's or the shutdown's) carries no roster version.
            assert "gw-b: offline (version unknown)" in done.stdout
            assert a.roster.version == 2
            # A gateway that does not trust the centre's key refuses, and the report says why.
            missing = "roster_keys_credential: no_such_keys"
            async with plain_gateway(tmp_path / "c", mosquitto.url, site, "gw-nokey", missing):
                done = await asyncio.to_thread(cli, *resend, "--wait", "3")
                assert done.returncode == 3, done.stdout + done.stderr
                assert "gw-nokey: behind (holds version 0); answered rejected:" in done.stdout, done.stdout
            async with (
                plain_gateway(tmp_path / "b", mosquitto.url, site, "gw-b") as b,
                plain_gateway(tmp_path / "new", mosquitto.url, site, "gw-new") as new,
            ):
                # gw-b's broker session kept the QoS 1 messages sent while it was away.
                await until(lambda: b.roster.version == 2, "gw-b takes version 2 from its session")
                # A gateway installed after version 2 went out has no session; the retained last
                # part alone is not a snapshot: it answers resync_needed and holds nothing.
                await until(
                    lambda: any(
                        m.topic.endswith("/gw-new/roster/reply") and m.json()["result"] == "resync_needed"
                        for m in replies.snapshot()
                    ),
                    "gw-new asks for the snapshot",
                )
                assert new.roster.version == 0
                done = await asyncio.to_thread(cli, *resend, "--wait", "10")  # gw-nokey never will
                assert "sent version 2 again" in done.stdout, done.stdout + done.stderr
                assert "gw-new: caught up (holds version 2)" in done.stdout, done.stdout
                assert "gw-b: caught up (holds version 2)" in done.stdout
                # gw-nokey's retained offline status keeps it on the list, so not all caught up.
                assert "gw-nokey: offline" in done.stdout and done.returncode == 3
                assert set(new.roster.index.persons) == {r["person_id"] for r in second.rows}

    replies = Collector(mosquitto.url, f"campus/v1/{site}/+/roster/reply")
    statuses = Collector(mosquitto.url, f"campus/v1/{site}/+/status")

    def gateway_state(gateway: str) -> str | None:
        latest = [
            m.json() for m in statuses.snapshot() if m.topic.endswith(f"/{gateway}/status") and m.payload
        ]
        return str(latest[-1]["state"]) if latest else None

    try:
        asyncio.run(asyncio.wait_for(scenario(), 150))
    finally:
        replies.close()
        statuses.close()


def test_the_delta_names_each_kind_of_change() -> None:
    """``diff`` between two versions: a card handed from a leaver to a joiner stays granted (the
    gateway deletes the leaver's cards, then upserts), groups and schedules taken out are deleted."""
    old = RosterContent.model_validate(
        {
            "persons": [
                {"id": "S1", "name": "A", "role": "student", "group": "7A", "access_groups": ["students"]},
                {"id": "S2", "name": "B", "role": "student", "group": "7A", "access_groups": ["students"]},
                {"id": "S3", "name": "C", "role": "student", "group": "7B", "access_groups": ["students"]},
            ],
            "credentials": [
                {"credential": "C1", "person_id": "S1"},
                {"credential": "C2", "person_id": "S2"},
                {"credential": "C3", "person_id": "S3"},
                {"credential": "C4", "person_id": "S3"},
            ],
            "access_groups": [{"id": "students", "gates": ["*"]}, {"id": "chess", "gates": ["club"]}],
        }
    )
    new = RosterContent.model_validate(
        {
            "persons": [
                {"id": "S1", "name": "A", "role": "student", "group": "7B", "access_groups": ["students"]},
                {"id": "S3", "name": "C.", "role": "student", "group": "7B", "access_groups": ["students"]},
                {"id": "S4", "name": "D", "role": "student", "group": "7A", "access_groups": ["students"]},
            ],
            "credentials": [
                {"credential": "C1", "person_id": "S1"},
                {"credential": "C2", "person_id": "S4"},
                {"credential": "C3", "person_id": "S3", "format": "em4100"},
            ],
            "access_groups": [{"id": "students", "gates": ["*"]}],
        }
    )
    upsert, delete, changes = diff(old, new)
    assert changes.joiners == ["S4"] and changes.leavers == ["S2"]
    assert changes.transfers == [("S1", "7A", "7B")] and changes.updated == ["S3"]
    assert changes.new_cards == [("C2", "S4")] and changes.lost_cards == [("C4", "S3")]
    assert changes.changed_cards == [("C3", "S3")]
    assert changes.removed_definitions == ["access_group:chess"]
    assert [p.id for p in upsert.persons] == ["S1", "S3", "S4"]
    assert [c.credential for c in upsert.credentials] == ["C2", "C3"]
    assert delete.persons == ["S2"] and delete.credentials == ["C4"] and delete.access_groups == ["chess"]
    assert diff(new, new)[2].empty
    lines = changes.lines(limit=1)
    assert lines[0].startswith("changes: joiners 1, leavers 1, transfers 1, updated 1")
    assert diff(new, new)[2].lines() == ["changes: none"]

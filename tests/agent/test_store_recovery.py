"""Every store recovers: each local store corrupted while the agent is stopped, then a real start.

A real agent process (``edge-agent run``) with a simulated card reader and turnstile on pty pairs,
a face camera, signed commands, and its own Mosquitto. One agent run per worker prepares a data
directory where every store holds rows (a grant, an attendance record, a forced-gate alert, the
seeded roster with face templates, a used command nonce); each case copies it, corrupts one file
the way disks and operators do, and starts the agent on it: the agent must start, the gate must
grant a known card, and ``storage_recovered`` naming the store must reach the broker.

The in-process tests below cover what the integrity check at open cannot see (a row garbled
inside a healthy file) and the nonce cache's replay guard in detail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from device_drivers import load_profile, resolve_profile
from device_drivers._io.sim import PtyEndpoint
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.turnstile.sim import TurnstileSimulator
from edge_agent.alerts import AlertBook
from edge_agent.commands import NONCE_FILE, NonceCache
from edge_agent.face_templates import FaceTemplateStore, parse_key
from sync import Event, Severity
from sync.contract import validate_event
from tests.agent.roster_data import snapshot
from tests.commands.harness import Centre, ed25519_entry, envelope
from tests.support.agent_harness import running_gate
from tests.support.agent_process import AgentProcess
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector, Received
from tests.support.roster_signing import roster_keys_env, signed
from tests.support.wait import wait_until

SITE, GW = "rec-site", "gw-rec"
PREFIX = f"campus/v1/{SITE}/{GW}"
KNOWN_CARD, KNOWN_PERSON = "0012AB34CD", "S1"  # tests/agent/roster_data.py
FACE_MODEL, FACE_DIM = "dlib_resnet_v1", 128
KEY_ID = "centre-ed"

FILES = {
    "alerts": "alerts.db",
    "attendance": "attendance.db",
    "faces": "faces.db",
    "roster": "roster.db",
    "nonces": NONCE_FILE,
}
CORRUPTIONS = ("overwrite_middle", "truncate", "zero_length", "random_bytes")


def corrupt(path: Path, how: str) -> None:
    """Damage ``path`` in place as a failing disk, a power cut or a stray ``dd`` would."""
    size = path.stat().st_size
    if how == "overwrite_middle":
        # One whole page from the middle on: a torn or misdirected write. (Garbage inside one row,
        # which SQLite's checks cannot see, is what the row-level tests below are about.)
        page = 4096 if path.suffix == ".db" else max(8, size // 4)
        at = min(size // 2 // page * page, max(0, size - page)) if path.suffix == ".db" else size // 3
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(b"\xff" + os.urandom(page - 1))  # 0xff: never valid UTF-8 or JSON
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zero_length":
        path.write_bytes(b"")
    elif how == "random_bytes":
        path.write_bytes(b"\xff" + os.urandom(max(size, 4096) - 1))
    else:
        raise ValueError(how)


# -- the agent and its gate -------------------------------------------------------------------


def _with_templates(version: int) -> bytes:
    """A roster snapshot with a face template of our model for two people."""
    roster = snapshot(version)
    vector = [((i * 37) % 101) / 101.0 for i in range(FACE_DIM)]
    roster["face_templates"] = [
        {"id": "t-s1", "person_id": KNOWN_PERSON, "model_id": FACE_MODEL, "embedding": vector},
        {"id": "t-s2", "person_id": "S2", "model_id": FACE_MODEL, "embedding": vector[::-1]},
    ]
    return json.dumps(roster).encode()


def _publish_snapshot(centre: Centre, payload: bytes) -> None:
    """As the centre does: signed and retained, so a gateway gets it whenever it connects (an empty
    payload clears the retained one)."""
    topic = f"campus/v1/{SITE}/roster/snapshot"
    message = signed(topic, payload) if payload else payload
    centre.client.publish(topic, message, qos=1, retain=True).wait_for_publish(10)


def _config(path: Path, reader_url: str, turnstile_url: str, *, seed: Path | None, face_camera: bool) -> Path:
    config: dict[str, Any] = {
        "gateway": {"site": SITE, "id": GW, "timezone": "UTC"},
        "agent": {"log_level": "info", "shutdown_timeout_s": 3, "heartbeat_interval_s": 5},
        "mqtt": {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "status_interval_s": 1.0},
        "outbox": {"synchronous": "normal"},
        "api": {"enabled": False},  # cases run side by side; none needs the local API
        "devices": [
            {
                "kind": "card_reader",
                "id": "reader-in",
                "profile": "em4100_id12",
                "port": reader_url,
                "debounce_s": 0,
            },
            {"kind": "turnstile", "id": "turnstile-1", "profile": "turnstile_stx_xor", "port": turnstile_url},
        ],
        "gates": [
            {
                "id": "gate-1",
                "readers": [{"device": "reader-in", "direction": "entry"}],
                "turnstile": "turnstile-1",
                "passage_timeout_s": 1.5,
                "attendance": {
                    "sessions": [
                        {
                            "id": "all-day",
                            "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                            "start": "00:00",
                            "end": "24:00",
                        }
                    ]
                },
            }
        ],
        # Windows long enough that the command signed while preparing can still be replayed in
        # every case; no skew, so a command signed just after the start is accepted at once.
        "commands": {"enabled": True, "max_age_s": 900, "clock_skew_s": 0},
    }
    if seed is not None:
        config["agent"]["roster_seed"] = str(seed)
    if face_camera:
        config["cameras"] = [
            {
                "device": {
                    "kind": "camera_sim",
                    "id": "cam-1",
                    "width": 64,
                    "height": 64,
                    "clip_seconds": 1,
                    "clip_fps": 2,
                    "analysis_fps": 1,
                },
                "face": {"point": "room-1"},
            }
        ]
    path.write_text(yaml.safe_dump(config))
    return path


class Gate:
    """Simulators on their pty pairs and the agent process on a data directory."""

    def __init__(self, workdir: Path, data: Path, broker: MosquittoBroker, env: dict[str, str]) -> None:
        self.workdir, self.data, self.broker, self.env = workdir, data, broker, env
        self.reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
        self.turnstile = TurnstileSimulator(
            load_profile(resolve_profile("turnstile_stx_xor")),
            PtyEndpoint(),
            passage_delay_s=0.1,
            auto_pass=True,
            passage_window_s=0.5,
        )
        self.agent: AgentProcess | None = None

    async def start(
        self, collector: Collector, since: float, *, seed: Path | None, face_camera: bool
    ) -> None:
        """Start the simulators and the agent; returns once both devices are online."""
        await self.reader.__aenter__()
        await self.turnstile.__aenter__()
        config = _config(
            self.workdir / "agent.yaml",
            self.reader.url,
            self.turnstile.url,
            seed=seed,
            face_camera=face_camera,
        )
        self.agent = AgentProcess(config, self.data, self.broker.url, env=self.env)

        def online(messages: list[Received]) -> bool:
            self.check_running("both devices online")
            sources = {
                m.json()["source"].rsplit("/", 1)[-1]
                for m in messages
                if _is(m, "device.online.v1") and _at(m) >= since
            }
            return sources >= {"reader-in", "turnstile-1"}

        await asyncio.to_thread(collector.wait_for, online, 30)

    def check_running(self, what: str) -> None:
        if self.agent is not None and self.agent.proc.poll() is not None:
            raise AssertionError(
                f"the agent exited ({self.agent.proc.returncode}) before {what}:\n"
                + self.agent.output()[-3000:]
            )

    def status(self) -> dict[str, Any]:
        return json.loads((self.data / "status.json").read_text())  # type: ignore[no-any-return]

    def wait_status(self, pred: Any, what: str, timeout: float = 30) -> dict[str, Any]:
        assert self.agent is not None
        pid = self.agent.proc.pid

        def check() -> dict[str, Any] | None:
            self.check_running(what)
            status = self.status()
            # A copied data dir holds the previous run's status.json: only this process's counts.
            return status if status.get("pid") == pid and pred(status) else None

        result = wait_until(check, timeout, 0.05, what=what, ignore=(FileNotFoundError, ValueError))
        assert result is not None
        return result

    async def grant(self, collector: Collector, since: float) -> dict[str, Any]:
        """Present the known card; returns its ``access.granted`` event once the broker has it."""
        opens_before = sum(c.name == "open" for c in self.turnstile.commands)
        self.reader.present(KNOWN_CARD)

        def granted(messages: list[Received]) -> bool:
            return any(_is(m, "access.granted.v1") and _at(m) >= since for m in messages)

        messages = await asyncio.to_thread(collector.wait_for, granted, 30)
        event = next(m.json() for m in messages if _is(m, "access.granted.v1") and _at(m) >= since)
        assert event["subject"] == KNOWN_PERSON
        assert sum(c.name == "open" for c in self.turnstile.commands) > opens_before, "the gate did not open"
        return event  # type: ignore[no-any-return]

    async def stop(self) -> None:
        try:
            if self.agent is not None and self.agent.proc.poll() is None:
                self.agent.signal(signal.SIGTERM)
                assert await asyncio.to_thread(self.agent.wait, 30) == 0, self.agent.output()[-3000:]
        finally:
            if self.agent is not None:
                self.agent.kill()
            await self.turnstile.__aexit__(None, None, None)
            await self.reader.__aexit__(None, None, None)


def _is(message: Received, suffix: str) -> bool:
    return "/events/" in message.topic and message.json()["type"].endswith(suffix)


def _at(message: Received) -> float:
    return datetime.fromisoformat(message.json()["time"]).timestamp()


# -- the prepared data directory --------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("recovery-broker")) as b:
        yield b


@pytest.fixture(scope="module")
def centre_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def agent_env(centre_key: Ed25519PrivateKey) -> dict[str, str]:
    return {
        "EDGE_AGENT_COMMAND_KEYS": json.dumps({"keys": [ed25519_entry(KEY_ID, centre_key)]}),
        "EDGE_AGENT_FACE_TEMPLATE_KEY": secrets.token_hex(32),
        **roster_keys_env(),
    }


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory,
    broker: MosquittoBroker,
    agent_env: dict[str, str],
    centre_key: Ed25519PrivateKey,
) -> dict[str, Any]:
    """One agent run that leaves rows in every store; returns its data dir and the signed command
    it accepted (still valid for the whole module)."""
    work = tmp_path_factory.mktemp("recovery-prepared")
    data = work / "data"
    seed = work / "roster.json"
    seed.write_text(json.dumps(snapshot(1)))
    centre = Centre(broker.port, v5=True, ed25519=centre_key, key_id=KEY_ID)
    collector = Collector(broker.url, f"campus/v1/{SITE}/#")
    command = centre.sign(envelope("diagnostics", key_id=KEY_ID, valid_s=600), f"{PREFIX}/cmd/diagnostics")

    async def run() -> None:
        gate = Gate(work, data, broker, agent_env)
        try:
            await gate.start(collector, 0, seed=seed, face_camera=True)
            # Templates come from the centre (a seed applied before face recognition starts has
            # nowhere to put them). Cleared once applied, so each case decides from its own disk.
            _publish_snapshot(centre, _with_templates(2))
            await asyncio.to_thread(
                gate.wait_status,
                lambda s: s["roster_version"] == 2 and s["faces"]["templates"] == 2,
                "roster version 2 and its face templates",
            )
            _publish_snapshot(centre, b"")
            await gate.grant(collector, 0)
            gate.turnstile.raise_event("forced", "entry")
            await asyncio.to_thread(
                collector.wait_for, lambda m: any(_is(x, "access.forced.v1") for x in m), 30
            )
            reply = await asyncio.to_thread(
                _request_until_subscribed, centre, command, f"{PREFIX}/cmd/diagnostics"
            )
            assert reply["code"] == "ok", reply
        finally:
            await gate.stop()

    try:
        asyncio.run(run())
    finally:
        collector.close()
        centre.close()
    for name in FILES.values():
        assert (data / name).stat().st_size > 0, f"{name} was not written"
    assert json.loads((data / NONCE_FILE).read_text())["nonces"], "the accepted nonce was not saved"
    with sqlite3.connect(data / "alerts.db") as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone()[0] >= 1
    with sqlite3.connect(data / "attendance.db") as conn:
        assert conn.execute("SELECT count(*) FROM recorded").fetchone()[0] == 1
    return {"data": data, "command": command}


def _request_until_subscribed(centre: Centre, body: dict[str, Any], topic: str) -> dict[str, Any]:
    """The processor subscribes once the link is up: resend the same command until it answers."""

    def answered() -> dict[str, Any] | None:
        try:
            return centre.request(body, topic=topic, timeout=0.5).body
        except AssertionError:
            return None

    reply = wait_until(answered, 30, 0, what="a reply to the command")
    assert reply is not None
    return reply


# -- the cases --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", CORRUPTIONS)
@pytest.mark.parametrize("store", list(FILES))
def test_corrupt_store_is_moved_aside_reported_and_the_gate_grants(
    store: str,
    how: str,
    tmp_path: Path,
    prepared: dict[str, Any],
    broker: MosquittoBroker,
    agent_env: dict[str, str],
    centre_key: Ed25519PrivateKey,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    target = data / FILES[store]
    corrupt(target, how)
    collector = Collector(broker.url, f"campus/v1/{SITE}/#")
    started = time.time()

    async def run() -> Any:
        gate = Gate(tmp_path, data, broker, agent_env)
        try:
            # No seed: the roster the gate decides from is the one on disk (or its last-good copy).
            await gate.start(collector, started, seed=None, face_camera=store == "faces")
            await gate.grant(collector, started)
            messages = await asyncio.to_thread(
                collector.wait_for,
                lambda m: any(
                    _is(x, "storage_recovered.v1") and x.json()["data"]["store"] == store for x in m
                ),
                30,
            )
            report = next(
                x.json()
                for x in messages
                if _is(x, "storage_recovered.v1") and x.json()["data"]["store"] == store
            )
            if store == "faces":
                # The fresh store is empty: the gateway asks for the snapshot it holds (the roster
                # does not keep templates), and takes it once more at the same version.
                await asyncio.to_thread(
                    gate.wait_status,
                    lambda s: s["faces"]["enabled"] is True and s["faces"]["templates"] == 0,
                    "face recognition on an empty store",
                )
                await asyncio.to_thread(
                    collector.wait_for,
                    lambda m: any(
                        x.topic.endswith("/roster/reply")
                        and x.json()["result"] == "resync_needed"
                        and "faces.db" in x.json()["reason"]
                        for x in m
                    ),
                    30,
                )
                await _templates_come_back(gate, broker, centre_key)
            if store == "nonces":
                await _nonce_replay_is_refused(prepared["command"], broker, centre_key)
            return report
        finally:
            await gate.stop()

    try:
        report = asyncio.run(run())
    finally:
        collector.close()
    # What `edge-agent status` shows: the agent writes status.json once more as it stops.
    status = json.loads((data / "status.json").read_text())
    assert [r["store"] for r in status["stores"]["recovered"]] == [store]
    validate_event(report)
    moved = Path(report["data"]["moved_to"])
    assert moved.parent == data and moved.name.startswith(f"{FILES[store]}.corrupt-")
    assert moved.exists(), "the corrupt file must be kept for inspection, never deleted"
    assert report["data"]["error"]
    log = (tmp_path / "agent-data.log").read_text()
    assert "corrupt" in log or "unreadable" in log
    assert "Traceback" not in log


async def _templates_come_back(gate: Gate, broker: MosquittoBroker, key: Ed25519PrivateKey) -> None:
    centre = Centre(broker.port, v5=True, ed25519=key, key_id=KEY_ID)
    try:
        _publish_snapshot(centre, _with_templates(2))
        await asyncio.to_thread(
            gate.wait_status,
            lambda s: s["roster_version"] == 2 and s["faces"]["templates"] == 2,
            "the templates of the snapshot resent at the version held",
        )
    finally:
        _publish_snapshot(centre, b"")
        centre.close()


async def _nonce_replay_is_refused(
    command: dict[str, Any], broker: MosquittoBroker, key: Ed25519PrivateKey
) -> None:
    """With the nonce record lost, the command accepted before is refused (it could be a replay);
    one signed after the start runs."""
    centre = Centre(broker.port, v5=True, ed25519=key, key_id=KEY_ID)
    topic = f"{PREFIX}/cmd/diagnostics"
    try:
        replay = await asyncio.to_thread(_request_until_subscribed, centre, command, topic)
        assert replay["code"] == "replay_unverifiable", replay
        fresh = centre.sign(envelope("diagnostics", key_id=KEY_ID), topic)
        reply = await asyncio.to_thread(centre.request, fresh, topic=topic, timeout=10)
        assert reply.body["code"] == "ok", reply.body
    finally:
        centre.close()


# -- what the check at open cannot see ----------------------------------------------------------


def _alert(n: int) -> Event:
    return Event(
        "edu.campus.access.forced.v1",
        f"campus/s/g/gate-{n}",
        {"gate": f"gate-{n}", "direction": "entry"},
        severity=Severity.CRITICAL,
    )


def test_garbled_alert_rows_are_skipped_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    book = AlertBook(tmp_path)
    alerts = [book.record(_alert(n)) for n in range(20)]
    book.close()
    with sqlite3.connect(tmp_path / "alerts.db") as conn:
        # Bytes changed inside the rows: the file stays a valid database.
        conn.execute("UPDATE alerts SET data = x'ff7b2267617465223a' WHERE rowid % 2 = 0")
        conn.execute("UPDATE alerts SET data = '[1, 2]' WHERE rowid = 1")
        # TEXT that is not UTF-8 used to fail the whole query, not just its row.
        conn.execute("UPDATE alerts SET data = CAST(x'ff7b22' AS TEXT) WHERE rowid = 3")
        conn.execute("UPDATE alerts SET type = CAST(x'c328' AS TEXT) WHERE rowid = 5")
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        damaged = conn.execute(
            "SELECT count(*) FROM alerts WHERE rowid % 2 = 0 OR rowid IN (1, 3, 5)"
        ).fetchone()[0]
    book = AlertBook(tmp_path)
    assert book.recovery is None
    with caplog.at_level(logging.ERROR, logger="edge_agent.alerts"):
        listed = book.list()
        for alert in alerts:
            book.get(alert.id)
    assert len(listed) == len(alerts) - damaged
    assert all(isinstance(a.data, dict) for a in listed)
    assert book.damaged.count == 2 * damaged
    assert len([r for r in caplog.records if "damaged" in r.getMessage()]) == 1
    # What is intact still works: acknowledge one of the readable alerts.
    assert book.acknowledge(listed[0].id, "guard").acknowledged_by == "guard"
    book.close()


def test_a_row_garbled_in_the_face_store_leaves_the_others_usable(tmp_path: Path) -> None:
    key = parse_key(secrets.token_hex(32), "k")
    store = FaceTemplateStore(tmp_path, key)
    for n in range(4):
        store.add(f"p{n}", [float(n + 1)] * FACE_DIM, FACE_MODEL, "centre", f"t-{n}")
    store.close()
    with sqlite3.connect(tmp_path / "faces.db") as conn:
        conn.execute("UPDATE templates SET ciphertext = substr(ciphertext, 2) || x'00' WHERE id = 't-0'")
        conn.execute("UPDATE templates SET nonce = x'0102' WHERE id = 't-1'")
        conn.execute("UPDATE templates SET nonce = 'text' WHERE id = 't-2'")
    store = FaceTemplateStore(tmp_path, key)
    assert store.recovery is None
    assert [t.id for t in store.templates()] == ["t-3"]
    assert store.undecryptable == 3
    store.close()


# -- the nonce cache ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_nonce_file_is_moved_aside_and_older_commands_refused(tmp_path: Path, how: str) -> None:
    path = tmp_path / NONCE_FILE
    now = 1_800_000_000.0
    cache = NonceCache(100, path, wall=lambda: now)
    assert cache.lost_at is None and path.exists()  # written at once: a missing file means loss later
    for n in range(5):
        assert cache.check_and_add("k", f"nonce-{n:02d}-padding", now + 600, now) is None
    cache.save()
    corrupt(path, how)
    later = now + 10
    again = NonceCache(100, path, wall=lambda: later, expect_file=True)
    assert again.moved_to is not None and again.moved_to.exists() and again.lost_error
    assert again.lost_at == later and len(again) == 0
    assert again.issued_before_loss(now, skew_s=5)  # possibly run before the loss
    assert again.issued_before_loss(later + 4, skew_s=5)  # the centre's clock may be ahead
    assert not again.issued_before_loss(later + 5, skew_s=5)
    # The guard outlives the next restart: the fresh file carries it.
    third = NonceCache(100, path, wall=lambda: later + 1, expect_file=True)
    assert third.moved_to is None and third.lost_at == later


def test_missing_nonce_file_guards_only_when_the_agent_ran_before(tmp_path: Path) -> None:
    first = NonceCache(100, tmp_path / "a.json", wall=lambda: 1000.0)
    assert first.lost_at is None
    lost = NonceCache(100, tmp_path / "b.json", wall=lambda: 1000.0, expect_file=True)
    assert lost.lost_at == 1000.0 and lost.moved_to is None and "missing" in lost.lost_error


def test_nonce_file_of_the_previous_format_is_read(tmp_path: Path) -> None:
    path = tmp_path / NONCE_FILE
    path.write_text(json.dumps({"k n1": 2000.0, "k n0": 10.0}))
    cache = NonceCache(100, path, wall=lambda: 1000.0, expect_file=True)
    assert cache.lost_at is None and len(cache) == 1
    assert cache.check_and_add("k", "n1", 2000.0, 1000.0) == "replayed"
    cache.save()
    assert json.loads(path.read_text()) == {"lost_at": None, "nonces": {"k n1": 2000.0}}
    assert not path.with_name(path.name + ".tmp").exists()


def test_nonce_file_wrong_shapes_count_as_corrupt(tmp_path: Path) -> None:
    for n, text in enumerate(['["k n1"]', '{"k n1": "soon"}', '{"nonces": [], "lost_at": null}', "{"]):
        path = tmp_path / f"{n}.json"
        path.write_text(text)
        cache = NonceCache(100, path, wall=lambda: 1000.0, expect_file=True)
        assert cache.moved_to is not None and cache.lost_at == 1000.0, text


# -- durability -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outbox_synchronous", ["normal", "full"])
def test_alerts_and_attendance_are_as_durable_as_the_outbox(
    tmp_path: Path, broker: MosquittoBroker, outbox_synchronous: str
) -> None:
    levels = {0: "off", 1: "normal", 2: "full", 3: "extra"}

    async def scenario() -> dict[str, str]:
        async with running_gate(
            tmp_path, broker.url, extra=f"outbox: {{synchronous: {outbox_synchronous}}}\n"
        ) as gate:
            agent = gate.agent
            assert agent.alert_book is not None and agent.attendance is not None
            assert agent.roster is not None
            stores = {"alerts": agent.alert_book, "attendance": agent.attendance, "roster": agent.roster}
            return {
                name: levels[store._conn.execute("PRAGMA synchronous").fetchone()[0]]
                for name, store in stores.items()
            }

    assert asyncio.run(scenario()) == {
        "alerts": outbox_synchronous,
        "attendance": outbox_synchronous,
        "roster": "full",  # master data: always FULL (sync.storage.STORES)
    }

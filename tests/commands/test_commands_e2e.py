"""Signed commands through a real Mosquitto to a real in-process agent with a simulated turnstile.

The attacks are the ones a broker-side intruder (or a leaked message log) would try: replaying a
captured command, sending it late, unsigned, with a forged or foreign signature, or to another
gateway. Every command, done or refused, must come back as a reply and as a valid audit event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.commands import CommandSettings, RateLimit
from sync.contract import SCHEMA_DIR, validate, validate_event
from tests.commands.harness import (
    GW,
    PREFIX,
    SITE,
    Centre,
    Reply,
    call,
    config_text,
    ed25519_entry,
    envelope,
    hmac_entry,
    now_utc,
    running_agent,
    until,
    wait_subscribed,
)
from tests.conftest import MosquittoBroker, free_port
from tests.mqtt_helpers import Collector
from tests.support.agent_harness import build_gateway

REQUEST_SCHEMA = SCHEMA_DIR / "commands" / "request.json"
REPLY_SCHEMA = SCHEMA_DIR / "commands" / "reply.json"


def audits(collector: Collector) -> list[dict[str, Any]]:
    return [
        m.json()
        for m in collector.snapshot(f"{PREFIX}/events/gateway")
        if m.json()["type"] == "edu.campus.gateway.audit.v1"
    ]


def check_audited(collector: Collector, replies: list[Reply]) -> None:
    """Every reply has its audit event: same request id, result and code; all events valid."""
    collector.wait_for(lambda _: len(audits(collector)) >= len(replies), 20)
    events = audits(collector)
    for event in events:
        validate_event(event)
        assert event["data"]["via"] == "mqtt"
    audited = Counter(
        (e["data"].get("request_id"), e["data"]["result"], e["data"]["reason"].split(":")[0]) for e in events
    )
    answered = Counter((r.body["id"], r.body["result"], r.body["code"]) for r in replies)
    for reply in replies:
        validate(reply.body, REPLY_SCHEMA)
    missing = {k: n for k, n in answered.items() if audited[k] < n}
    assert not missing, (missing, [e["data"] for e in events])


def signed_centre(mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch) -> Centre:
    """The centre with an Ed25519 key the agent trusts (its key set in the environment)."""
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("EDGE_AGENT_COMMAND_KEYS", json.dumps({"keys": [ed25519_entry("centre-ed", key)]}))
    return Centre(mosquitto.port, v5=True, ed25519=key)


def pusher(centre: Centre, replies: list[Reply]) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """``push(yaml)``: a signed push_config and its reply's body (each reply kept in ``replies``)."""

    async def push(text: str) -> dict[str, Any]:
        reply = await call(centre, centre.make("push_config", {"yaml": text}))
        replies.append(reply)
        return reply.body

    return push


def test_ed25519_commands_and_attacks(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    limited = Ed25519PrivateKey.generate()
    stranger = Ed25519PrivateKey.generate()
    monkeypatch.setenv(
        "EDGE_AGENT_COMMAND_KEYS",
        json.dumps(
            {"keys": [ed25519_entry("centre-ed", key), ed25519_entry("noc-ro", limited, ["diagnostics"])]}
        ),
    )
    settings = CommandSettings(enabled=True, open_rate_limit=RateLimit(count=3, per_s=60))
    collector = Collector(mosquitto.url, f"{PREFIX}/events/#")
    centre = Centre(mosquitto.port, v5=True, ed25519=key, key_id="centre-ed")
    replies: list[Reply] = []

    async def scenario() -> None:
        async with running_agent(tmp_path, mosquitto.url, settings) as gw:
            await wait_subscribed(centre)

            async def send(body: dict[str, Any] | bytes, **kw: Any) -> dict[str, Any]:
                reply = await call(centre, body, **kw)
                replies.append(reply)
                return reply.body

            # A signed open reaches the turnstile as its open command, and the reply carries our
            # correlation data on our response topic.
            opened = centre.make("open", {"gate": "gate-1", "direction": "entry"})
            validate(opened, REQUEST_SCHEMA)
            reply = await call(centre, opened)
            replies.append(reply)
            assert reply.topic == centre.response_topic and reply.correlation is not None
            assert reply.body["result"] == "ok" and reply.body["id"] == opened["id"]
            assert reply.body["data"] == {"gate": "gate-1", "confirmed": True}
            assert [(c.name, c.direction) for c in gw.turnstile.commands] == [("open", "entry")]

            # The same message again (a captured command replayed): refused, nothing opened.
            assert (await send(opened))["code"] == "replayed"
            late = centre.make(
                "open", {"gate": "gate-1", "direction": "entry"}, issued=now_utc() - timedelta(seconds=90)
            )
            assert (await send(late))["code"] == "expired"
            early = centre.make(
                "open", {"gate": "gate-1", "direction": "entry"}, issued=now_utc() + timedelta(seconds=60)
            )
            assert (await send(early))["code"] == "not_yet_valid"
            long_lived = centre.make("diagnostics", valid_s=3600)
            assert (await send(long_lived))["code"] == "validity_too_long"
            unsigned = envelope("open", {"gate": "gate-1", "direction": "entry"}, key_id="centre-ed")
            assert (await send(unsigned))["code"] == "unsigned"
            forged = Centre.sign_with(
                stranger,
                envelope("open", {"gate": "gate-1", "direction": "exit"}, key_id="centre-ed"),
                f"{PREFIX}/cmd/open",
            )
            assert (await send(forged))["code"] == "bad_signature"
            tampered = {**centre.make("open", {"gate": "gate-1", "direction": "entry"})}
            tampered["args"] = {"gate": "gate-1", "direction": "exit"}
            assert (await send(tampered))["code"] == "bad_signature"
            unknown_key = Centre.sign_with(
                stranger,
                envelope("open", {"gate": "gate-1", "direction": "entry"}, key_id="nobody"),
                f"{PREFIX}/cmd/open",
            )
            assert (await send(unknown_key))["code"] == "unknown_key"
            # Signed for another gateway, then published to ours: the topic is signed, so refused.
            other = centre.sign(
                envelope("open", {"gate": "gate-1", "direction": "entry"}, key_id="centre-ed"),
                topic=f"campus/v1/{SITE}/gw-other/cmd/open",
            )
            assert (await send(other, topic=f"{PREFIX}/cmd/open"))["code"] == "bad_signature"
            # Signed for lock, published on the open topic.
            renamed = centre.make("lock", {"gate": "gate-1"})
            assert (await send(renamed, topic=f"{PREFIX}/cmd/open"))["code"] == "name_mismatch"
            malformed = await send(b"{not json", name="open")
            assert malformed["code"] == "malformed" and malformed["id"] is None
            floats = await send(b'{"id": "f1", "name": "open", "signature": "AA==", "x": 1.5}', name="open")
            assert floats["code"] == "malformed" and floats["id"] is None
            missing = centre.make("open", {"gate": "gate-1", "direction": "entry"})
            del missing["nonce"]
            assert (await send(missing))["code"] == "schema_invalid"
            assert (await send(centre.make("reboot")))["code"] == "unknown_command"
            sideways = await send(centre.make("open", {"gate": "gate-1", "direction": "sideways"}))
            assert sideways["code"] == "bad_args" and "direction" in sideways["message"]
            assert (await send(centre.make("open", {"gate": "gate-9", "direction": "entry"})))[
                "code"
            ] == "unknown_gate"
            # A key limited to diagnostics may read, not open.
            reader = Centre.sign_with(
                limited,
                envelope("open", {"gate": "gate-1", "direction": "entry"}, key_id="noc-ro"),
                f"{PREFIX}/cmd/open",
            )
            assert (await send(reader))["code"] == "not_permitted"
            diag = Centre.sign_with(
                limited, envelope("diagnostics", key_id="noc-ro"), f"{PREFIX}/cmd/diagnostics"
            )
            assert (await send(diag))["result"] == "ok"
            assert len(gw.turnstile.commands) == 1  # none of the refused commands reached the device

            # Rate limit: 3 opens a minute per gate; the first one above counts.
            for direction in ("exit", "entry"):
                assert (await send(centre.make("open", {"gate": "gate-1", "direction": direction})))[
                    "result"
                ] == "ok"
            limited_reply = await send(centre.make("open", {"gate": "gate-1", "direction": "entry"}))
            assert limited_reply["code"] == "rate_limited" and limited_reply["data"]["retry_after_s"] > 0
            assert sum(c.name == "open" for c in gw.turnstile.commands) == 3

            # hold_open / lock / normal reach the device, and are not rate-limited.
            for name, args in (
                ("hold_open", {"gate": "gate-1", "direction": "exit"}),
                ("lock", {"gate": "gate-1"}),
                ("normal", {"gate": "gate-1"}),
            ):
                body = await send(centre.make(name, args))
                assert body["result"] == "ok", body
            await until(lambda: len(gw.turnstile.commands) == 6, "all device commands")
            assert [c.name for c in gw.turnstile.commands[3:]] == ["hold_open", "lock", "normal"]
            assert gw.turnstile.state == "normal"

            # The turnstile goes silent: the command is attempted and reported failed.
            gw.turnstile.ack = False
            silent = await send(centre.make("lock", {"gate": "gate-1"}))
            assert silent["result"] == "failed" and silent["code"] == "device_error"
            assert silent["data"]["device_code"] == "no_ack"
            assert gw.processor.stats.refused >= 15

    try:
        asyncio.run(scenario())
    finally:
        centre.close()
    check_audited(collector, replies)
    collector.close()
    events = audits(collector)
    unverified = [e for e in events if e["data"]["actor"] == "unknown"]
    assert {e["data"]["reason"].split(":")[0] for e in unverified} == {
        "unsigned",
        "bad_signature",
        "unknown_key",
        "name_mismatch",
        "malformed",
        "schema_invalid",
    }
    assert all(e["data"]["role"] == "unknown" for e in unverified)
    assert {e["data"]["actor"] for e in events} == {"unknown", "centre-ed", "noc-ro"}


def test_hmac_over_mqtt_311_and_management_commands(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HMAC keys, an agent and a centre both on MQTT 3.1.1 (replies on .../cmd/{name}/reply),
    and the commands that manage the gateway rather than a gate."""
    secret = b"s" * 16 + bytes(range(16))
    monkeypatch.setenv("EDGE_AGENT_COMMAND_KEYS", json.dumps({"keys": [hmac_entry("centre-hmac", secret)]}))
    settings = CommandSettings(enabled=True)
    collector = Collector(mosquitto.url, f"{PREFIX}/events/#")
    centre = Centre(mosquitto.port, v5=False, hmac_secret=secret, key_id="centre-hmac")
    replies: list[Reply] = []
    root_level = logging.getLogger().level

    async def scenario() -> None:
        async with running_agent(tmp_path, mosquitto.url, settings, protocol="3.1.1") as gw:
            await wait_subscribed(centre)
            assert gw.agent.link is not None and gw.agent.link.stats.protocol == "3.1.1"

            async def send(body: dict[str, Any] | bytes, **kw: Any) -> dict[str, Any]:
                reply = await call(centre, body, **kw)
                replies.append(reply)
                return reply.body

            opened = centre.make("open", {"gate": "gate-1", "direction": "exit"})
            reply = await call(centre, opened)
            replies.append(reply)
            assert reply.topic == f"{PREFIX}/cmd/open/reply" and reply.body["result"] == "ok"
            assert gw.turnstile.commands[-1].direction == "exit"
            assert (await send(opened))["code"] == "replayed"
            wrong = centre.make("open", {"gate": "gate-1", "direction": "exit"})
            wrong["signature"] = wrong["signature"][:-4] + (
                "AAA=" if wrong["signature"][-4:] != "AAA=" else "BBB="
            )
            assert (await send(wrong))["code"] == "bad_signature"

            diag = await send(centre.make("diagnostics"))
            assert diag["result"] == "ok"
            assert diag["data"]["status"]["gateway"] == GW
            assert diag["data"]["gates"]["gate-1"]["granted"] == 0
            assert (
                diag["data"]["commands"]["ok"] >= 2 and diag["data"]["commands"]["by_code"]["replayed"] == 1
            )

            resync = await send(centre.make("resync_roster", {"centre_version": 5}))
            assert resync["data"]["roster_version"] == 1 and resync["data"]["snapshot_needed"] is True
            assert resync["data"]["snapshot_topic"] == f"campus/v1/{SITE}/roster/snapshot"
            same = await send(centre.make("resync_roster", {"centre_version": 1}))
            assert same["data"]["snapshot_needed"] is False

            level = await send(centre.make("set_log_level", {"level": "debug"}))
            assert level["result"] == "ok" and logging.getLogger().level == logging.DEBUG

            # An alert raised by the turnstile, acknowledged from the centre; twice is refused.
            gw.turnstile.raise_event("forced", "entry")
            alerts = gw.agent.alert_book
            assert alerts is not None
            await until(lambda: bool(alerts.list()), "forced alert in the alert book")
            alert_id = alerts.list()[0].id
            ack = await send(
                centre.make("ack_alert", {"alert_id": alert_id, "by": "Duty officer", "note": "seen"})
            )
            assert ack["result"] == "ok" and ack["data"]["alert_id"] == alert_id
            again = await send(centre.make("ack_alert", {"alert_id": alert_id, "by": "Someone else"}))
            assert again["code"] == "already_acknowledged"
            assert (await send(centre.make("ack_alert", {"alert_id": "nope", "by": "x"})))[
                "code"
            ] == "unknown_alert"

            # reload_config: a broken file is reported and the running configuration kept; a good
            # one is applied (its log level replaces the one set above).
            good = gw.config_path.read_text()
            gw.config_path.write_text(good + "\nnot_a_section: 1\n")
            broken = await send(centre.make("reload_config"))
            assert broken["result"] == "failed" and broken["code"] == "config_invalid"
            assert "not_a_section" in broken["data"]["errors"]
            gw.config_path.write_text(
                config_text(
                    tmp_path,
                    f"mqtt://127.0.0.1:{mosquitto.port}",
                    gw.reader_url,
                    gw.turnstile_url,
                    protocol="3.1.1",
                    log_level="warning",
                )
            )
            reloaded = await send(centre.make("reload_config"))
            assert reloaded["result"] == "ok", reloaded
            assert reloaded["data"]["keys"] == ["centre-hmac"]
            assert gw.agent.config.agent.log_level == "warning"
            assert logging.getLogger().level == logging.WARNING

    try:
        asyncio.run(scenario())
    finally:
        centre.close()
        logging.getLogger().setLevel(root_level)
    check_audited(collector, replies)
    events = [m.json() for m in collector.snapshot("/events/security")]
    collector.close()
    acknowledged = [e for e in events if e["type"] == "edu.campus.security.alert_acknowledged.v1"]
    assert len(acknowledged) == 1 and acknowledged[0]["data"]["via"] == "mqtt"
    assert acknowledged[0]["data"]["by"] == "Duty officer"


def test_remote_open_passage_is_not_tailgating(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector(mosquitto.url, f"{PREFIX}/events/#")
    centre = signed_centre(mosquitto, monkeypatch)

    async def scenario() -> None:
        async with running_agent(
            tmp_path, mosquitto.url, CommandSettings(enabled=True), auto_pass=True
        ) as gw:
            await wait_subscribed(centre)
            reply = await call(centre, centre.make("open", {"gate": "gate-1", "direction": "entry"}))
            assert reply.body["result"] == "ok"
            await until(
                lambda: (
                    gw.agent.gates["gate-1"].stats.passages >= 1
                    or bool(
                        [m for m in collector.snapshot("/events/access") if "tailgating" in m.json()["type"]]
                    )
                ),
                "passage",
            )

    try:
        asyncio.run(scenario())
    finally:
        centre.close()
        collector.close()
    assert not [m for m in collector.snapshot("/events/access") if "tailgating" in m.json()["type"]]
    passages = [
        m.json() for m in collector.snapshot("/events/access") if m.json()["type"].endswith("passage.v1")
    ]
    assert [p["data"]["result"] for p in passages] == ["remote"]


def test_push_config_validated_installed_and_rolled_back(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = Collector(mosquitto.url, f"{PREFIX}/events/#")
    centre = signed_centre(mosquitto, monkeypatch)
    replies: list[Reply] = []
    root_level = logging.getLogger().level

    async def scenario() -> None:
        async with running_agent(tmp_path, mosquitto.url, CommandSettings(enabled=True)) as gw:
            await wait_subscribed(centre)

            push = pusher(centre, replies)
            path = gw.config_path
            original = path.read_text()
            broken = await push(original + "\nnot_a_section: 1\n")
            assert broken["code"] == "config_invalid" and "not_a_section" in broken["data"]["errors"]
            foreign = await push(original.replace(f"id: {GW}", "id: gw-other"))
            assert foreign["code"] == "wrong_gateway"
            assert path.read_text() == original

            # A new log level applies now; a changed mqtt section waits for a restart.
            new = config_text(
                tmp_path,
                mosquitto.url,
                gw.reader_url,
                gw.turnstile_url,
                log_level="warning",
                commands=CommandSettings(enabled=True),
            ).replace("reconnect_max_s: 0.5", "reconnect_max_s: 0.7")
            applied = await push(new)
            assert applied["result"] == "ok", applied
            assert applied["data"]["changed"] == ["agent", "mqtt"]
            assert applied["data"]["restart_required"] == ["mqtt"]
            assert path.read_text() == new
            assert Path(applied["data"]["previous"]).read_text() == original
            assert gw.agent.config.agent.log_level == "warning"

            # The agent fails while applying the next one (fault injected): the file goes back.
            async def failing_reload() -> None:
                raise RuntimeError("simulated failure while applying")

            # Commands reach the reload through their services, not the gateway object.
            assert gw.agent.services is not None
            monkeypatch.setattr(gw.agent.services.config, "reload", failing_reload)
            failed = await push(new.replace("log_level: warning", "log_level: error"))
            assert failed["result"] == "failed" and failed["code"] == "rolled_back"
            assert "simulated failure" in failed["data"]["error"]
            assert path.read_text() == new
            assert gw.agent.config.agent.log_level == "warning"

    try:
        asyncio.run(scenario())
    finally:
        centre.close()
        logging.getLogger().setLevel(root_level)
    check_audited(collector, replies)
    collector.close()


def _mount(*args: str | Path) -> bool:
    return subprocess.run(["mount", *map(str, args)], capture_output=True).returncode == 0


def test_push_config_through_a_link_into_the_agents_own_directory_and_to_a_read_only_file(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/OPERATIONS.md: the shipped unit keeps the configuration read-only to the agent, and an
    administrator who allows pushes gives it a directory of its own, linking the file from where
    the unit reads it. Here the box is a read-only mount with two writable ones inside: the data
    and that directory. A push installs behind the link (the link stays, the previous file is in
    the writable directory), a rollback puts it back there; once the directory is read-only too, a
    push is refused as ``config_read_only`` with what to do, and nothing changes."""
    box = tmp_path / "box"
    site, data = box / "site", box / "data"
    for directory in (site, data):
        directory.mkdir(parents=True)
    if not (_mount("--bind", data, data) and _mount("--bind", site, site)):
        pytest.skip("cannot bind-mount here; needs root")
    centre = signed_centre(mosquitto, monkeypatch)
    replies: list[Reply] = []
    root_level = logging.getLogger().level

    async def scenario() -> None:
        async with running_agent(box, mosquitto.url, CommandSettings(enabled=True)) as gw:
            await wait_subscribed(centre)

            push = pusher(centre, replies)
            link = gw.config_path
            original = link.read_text()
            (site / link.name).write_text(original)
            link.unlink()
            link.symlink_to(Path("site") / link.name)
            # The box again on top of itself with its two mounts, then only the top made read-only.
            assert _mount("--rbind", box, box) and _mount("-o", "remount,bind,ro", box)
            try:
                with pytest.raises(OSError):
                    (box / "probe").write_text("")  # the box is read-only to everyone here
                new = original.replace("log_level: info", "log_level: warning")
                assert new != original
                applied = await push(new)
                assert applied["result"] == "ok", applied
                assert link.is_symlink() and (site / link.name).read_text() == new
                assert Path(applied["data"]["previous"]) == site / f"{link.name}.previous"
                assert Path(applied["data"]["previous"]).read_text() == original
                assert gw.agent.config.agent.log_level == "warning"

                async def failing_reload() -> None:
                    raise RuntimeError("simulated failure while applying")

                assert gw.agent.services is not None
                reload = gw.agent.services.config.reload
                monkeypatch.setattr(gw.agent.services.config, "reload", failing_reload)
                failed = await push(new.replace("log_level: warning", "log_level: error"))
                assert failed["code"] == "rolled_back", failed
                assert link.is_symlink() and (site / link.name).read_text() == new
                monkeypatch.setattr(gw.agent.services.config, "reload", reload)

                assert _mount("-o", "remount,bind,ro", site)
                refused = await push(original)
                assert (refused["result"], refused["code"]) == ("refused", "config_read_only"), refused
                assert "OPERATIONS" in refused["message"]
                assert link.is_symlink() and (site / link.name).read_text() == new
                assert gw.agent.config.agent.log_level == "warning"
            finally:
                subprocess.run(["umount", "-l", str(box)], capture_output=True)

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        for directory in (site, data):
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
        centre.close()
        logging.getLogger().setLevel(root_level)
    assert [(r.body["result"], r.body["code"]) for r in replies] == [
        ("ok", "ok"),
        ("failed", "rolled_back"),
        ("refused", "config_read_only"),
    ]


def test_pushed_config_that_cannot_reach_the_broker_is_rolled_back_on_restart(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The centre pushes a configuration whose broker is wrong. It installs (it is valid), and the
    next start runs on probation: the broker never answers, so the previous file comes back and the
    agent exits non-zero for systemd to restart it on the configuration that worked. A good push is
    confirmed by the start that reaches the broker."""
    from edge_agent.config import load_config, pending_marker, previous_config

    centre = signed_centre(mosquitto, monkeypatch)
    settings = CommandSettings(enabled=True, push_probation_s=2.0)
    paths: dict[str, Any] = {}

    async def push(new_url: str, keepalive: int) -> None:
        async with running_agent(tmp_path, mosquitto.url, settings) as gw:
            await wait_subscribed(centre)
            paths["config"] = gw.config_path
            paths["original"] = gw.config_path.read_text()
            pushed = config_text(
                tmp_path, new_url, gw.reader_url, gw.turnstile_url, commands=settings
            ).replace("reconnect_min_s: 0.1", f"reconnect_min_s: 0.1, keepalive_s: {keepalive}")
            paths["pushed"] = pushed
            reply = await call(centre, centre.make("push_config", {"yaml": pushed}))
            assert reply.body["result"] == "ok" and reply.body["data"]["restart_required"] == ["mqtt"]
            assert pending_marker(gw.config_path).exists()

    async def restart_bad() -> int:
        await push(f"mqtt://127.0.0.1:{free_port()}", 30)
        # systemd restarts the service: a fresh agent on the installed file.
        config = paths["config"]
        agent = build_gateway(load_config(config), data_dir=tmp_path / "data", config_path=config)
        return await asyncio.wait_for(agent.run(), 60)

    async def restart_good() -> int:
        await push(mosquitto.url, 40)
        config = paths["config"]
        agent = build_gateway(load_config(config), data_dir=tmp_path / "data", config_path=config)
        task = asyncio.create_task(agent.run())
        await until(lambda: not pending_marker(paths["config"]).exists(), "pushed configuration confirmed")
        agent.request_stop("test")
        return await asyncio.wait_for(task, 30)

    async def restart_bad_with_a_damaged_previous() -> tuple[int, int, bool]:
        await push(f"mqtt://127.0.0.1:{free_port()}", 30)
        config = paths["config"]
        previous_config(config).write_text("gateway: [cut short by a power failure\n")
        agent = build_gateway(load_config(config), data_dir=tmp_path / "data", config_path=config)
        task = asyncio.create_task(agent.run())
        await until(lambda: not pending_marker(config).exists(), "the probation over")
        await asyncio.sleep(1.0)
        running = not task.done()
        agent.request_stop("test")
        return await asyncio.wait_for(task, 30), agent.counters.get("pushed_config_kept"), running

    try:
        assert asyncio.run(restart_bad()) == 1
        config = paths["config"]
        assert config.read_text() == paths["original"]  # the previous file is back
        assert not pending_marker(config).exists() and not previous_config(config).exists()
        assert asyncio.run(restart_good()) == 0
        assert config.read_text() == paths["pushed"]  # kept: it reached the broker
        # The same wrong broker, with the previous file damaged meanwhile: putting it back would
        # leave an agent that cannot start. It goes on with the pushed file instead.
        exit_code, kept, running = asyncio.run(restart_bad_with_a_damaged_previous())
        assert (exit_code, kept, running) == (0, 1, True)
        assert config.read_text() == paths["pushed"] and not pending_marker(config).exists()
    finally:
        centre.close()

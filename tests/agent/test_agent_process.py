"""The agent as a process: kill -9 and restart, SIGTERM, SIGHUP, sd_notify, no broker, corrupt files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from sync.contract import SCHEMA_DIR, validate, validate_event
from tests.conftest import MosquittoBroker, free_port
from tests.mqtt_helpers import Collector
from tests.support.agent_process import AgentProcess, write_config
from tests.support.notify import NotifySocket


def _events(collector: Collector) -> list[dict]:
    return [m.json() for m in collector.snapshot("/events/")]


def test_sigkill_mid_stream_then_restart_loses_nothing_and_leaves_no_seq_gap(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = write_config(tmp_path / "agent.yaml", site="kill-site", interval_s=0.002, devices=2)
    data = tmp_path / "data"
    collector = Collector(mosquitto.url, "campus/v1/kill-site/#")
    agent = AgentProcess(config, data, mosquitto.url)
    try:
        collector.wait_for(lambda m: sum("/events/" in x.topic for x in m) >= 1500, 60)
        agent.proc.kill()  # SIGKILL: no clean-up at all
        agent.wait()
        # The broker publishes the Last Will: the gateway is offline.
        collector.wait_for(
            lambda m: any(x.topic.endswith("/status") and x.json()["state"] == "offline" for x in m), 30
        )
        conn = sqlite3.connect(data / "outbox.db")
        committed_before = dict(conn.execute("SELECT seq, id FROM events"))
        conn.close()
        restarted = AgentProcess(config, data, mosquitto.url)
        try:
            target = max(committed_before) + 1000
            collector.wait_for(
                lambda m: max((x.json()["seq"] for x in m if "/events/" in x.topic), default=0) >= target, 60
            )
            restarted.signal(signal.SIGTERM)
            assert restarted.wait(30) == 0
        finally:
            restarted.kill()
    finally:
        agent.kill()
    collector.wait_for(
        lambda m: any(x.topic.endswith("/status") and x.json().get("reason") == "shutdown" for x in m), 30
    )
    collector.close()
    events = _events(collector)
    conn = sqlite3.connect(data / "outbox.db")
    committed = dict(conn.execute("SELECT seq, id FROM events"))
    pending = conn.execute("SELECT count(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]
    conn.close()
    assert pending == 0
    received = {}
    for e in events:
        validate_event(e)
        assert received.setdefault(e["seq"], e["id"]) == e["id"], "a duplicate must carry the same id"
    # No gap: every seq from 1 to the last is there, and it is exactly what the outbox committed.
    assert sorted(received) == list(range(1, max(received) + 1))
    assert received == committed
    assert {k: v for k, v in committed_before.items()} == {k: received[k] for k in committed_before}
    starts = [e for e in events if e["type"] == "edu.campus.gateway.started.v1"]
    assert [s["data"]["previous_shutdown"] for s in starts] == ["first_start", "unclean"]
    assert any(e["type"] == "edu.campus.gateway.stopped.v1" for e in events)


def test_sd_notify_ready_watchdog_stopping_and_clean_sigterm(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path / "agent.yaml", site="notify-site", interval_s=0.05)
    collector = Collector(mosquitto.url, "campus/v1/notify-site/#")
    agent = AgentProcess(
        config,
        tmp_path / "data",
        mosquitto.url,
        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": ""},
    )
    try:
        ready = notify.read_until("READY=1")
        assert any("STATUS=broker" in m for m in ready)
        notify.read_until("WATCHDOG=1")
        collector.wait_for(lambda m: sum("/events/" in x.topic for x in m) >= 20)
        started = time.monotonic()
        agent.signal(signal.SIGTERM)
        stopping = notify.read_until("STOPPING=1")
        assert stopping
        assert agent.wait(30) == 0
        # The shutdown bound in the config is 5 s.
        assert time.monotonic() - started < 10
        # The outbox was closed, last: its writer committed what was queued and the database was
        # checkpointed on the way out (a writer thread killed with the process leaves its WAL).
        wal = tmp_path / "data" / "outbox.db-wal"
        assert not wal.exists() or wal.stat().st_size == 0, wal.stat().st_size
    finally:
        agent.kill()
        notify.close()
    msgs = collector.wait_for(
        lambda m: any(x.topic.endswith("/status") and x.json()["state"] == "offline" for x in m), 20
    )
    collector.close()
    status = [m for m in msgs if m.topic.endswith("/status")]
    for m in status:
        validate(m.json(), SCHEMA_DIR / "status.json")
    assert status[-1].json()["reason"] == "shutdown"
    events = [m.json() for m in msgs if "/events/" in m.topic]
    # The last event the gateway made (by seq: lanes deliver in their own order, so a heartbeat
    # committed before it may arrive after it) is its stopped event.
    last = max(events, key=lambda e: int(e["seq"]))
    assert last["type"] == "edu.campus.gateway.stopped.v1"
    assert last["data"]["reason"] == "SIGTERM"


def test_sighup_reloads_devices_and_keeps_running_on_a_bad_file(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    config = write_config(tmp_path / "agent.yaml", site="hup-site", interval_s=0.1, devices=1)
    collector = Collector(mosquitto.url, "campus/v1/hup-site/#")
    agent = AgentProcess(config, tmp_path / "data", mosquitto.url)
    try:
        agent.wait_for_output("running")
        write_config(config, site="hup-site", interval_s=0.1, devices=2)
        agent.signal(signal.SIGHUP)
        collector.wait_for(
            lambda m: any("/events/" in x.topic and x.json()["source"].endswith("/sim-1") for x in m), 20
        )
        config.write_text("gateway: [broken\n")
        agent.signal(signal.SIGHUP)
        agent.wait_for_output("reload refused")
        before = len(collector.snapshot("/events/"))
        collector.wait_for(lambda m: sum("/events/" in x.topic for x in m) > before + 10, 20)
        assert agent.proc.poll() is None
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        collector.close()


def test_unreachable_broker_agent_runs_buffers_and_reports(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "agent.yaml", site="nobroker", interval_s=0.02)
    data = tmp_path / "data"
    agent = AgentProcess(config, data, f"mqtt://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        status = {}
        while time.monotonic() < deadline:
            try:
                status = json.loads((data / "status.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                status = {}
            if status and status["outbox"]["pending"] > 50 and status["broker"]["connect_failures"] >= 2:
                break
            time.sleep(0.1)
        assert status["broker"]["state"] in ("connecting", "disconnected")
        assert "Connection refused" in status["broker"]["last_error"]
        assert status["outbox"]["pending"] > 50
        cli = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "status", "--data-dir", str(data)],
            capture_output=True,
            text=True,
        )
        assert cli.returncode == 0 and '"pending"' in cli.stdout
        # Now a broker appears on that port: the backlog goes out.
        broker = MosquittoBroker(tmp_path)
        broker.port = port
        broker.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    status = json.loads((data / "status.json").read_text())
                if status["broker"]["state"] == "connected" and status["outbox"]["pending"] < 10:
                    break
                time.sleep(0.1)
            assert status["broker"]["state"] == "connected"
            assert status["outbox"]["delivered"] > 50
        finally:
            agent.signal(signal.SIGTERM)
            assert agent.wait(30) == 0
            broker.stop()
        conn = sqlite3.connect(data / "outbox.db")
        assert conn.execute("SELECT count(*) FROM events WHERE delivered_at IS NULL").fetchone()[0] == 0
        conn.close()
    finally:
        agent.kill()


def test_corrupt_outbox_file_is_moved_aside_and_reported(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "outbox.db").write_bytes(os.urandom(64 * 1024))
    config = write_config(tmp_path / "agent.yaml", site="corrupt-site", interval_s=0.2)
    collector = Collector(mosquitto.url, "campus/v1/corrupt-site/#")
    agent = AgentProcess(config, data, mosquitto.url)
    try:
        msgs = collector.wait_for(
            lambda m: any(
                "/events/" in x.topic and x.json()["type"].endswith("storage_recovered.v1") for x in m
            ),
            30,
        )
        report = next(
            x.json()
            for x in msgs
            if "/events/" in x.topic and x.json()["type"].endswith("storage_recovered.v1")
        )
        validate_event(report)
        assert Path(report["data"]["moved_to"]).exists()
        agent.wait_for_output("is corrupt")
        agent.signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        agent.kill()
        collector.close()


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  site: s\n  id: g\nmqtt:\n  url: ftp://x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"{bad}:5: mqtt.url" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text("gateway:\n  site: s\n  id: g\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(good), "--mqtt-url", "http://nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "mqtt://" in proc.stderr


def test_environment_overrides_are_used(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = write_config(tmp_path / "agent.yaml", site="env-site", interval_s=0.2)
    collector = Collector(mosquitto.url, "campus/v1/env-site/#")
    data = tmp_path / "envdata"
    env = {**os.environ, "EDGE_AGENT_MQTT_URL": mosquitto.url, "EDGE_AGENT_DATA_DIR": str(data)}
    with open(tmp_path / "env.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            collector.wait_for(lambda m: any("/events/" in x.topic for x in m), 30)
            assert (data / "outbox.db").exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            collector.close()
    assert orjson.loads((data / "status.json").read_bytes())["site"] == "env-site"


def test_watchdog_is_withheld_when_a_fatal_component_fails(
    tmp_path: Path, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent pings systemd's watchdog only while healthy. The outbox writer is the one way to
    disk, so its failure is FATAL: the pings stop at once and the agent exits 1 for systemd to
    restart it (a device loop that dies is restarted instead: see test_components.py)."""
    import asyncio

    from edge_agent.config import load_config
    from edge_agent.gateway import Gateway
    from edge_agent.sdnotify import Notifier

    notify = NotifySocket(tmp_path / "notify.sock")
    sock = notify.sock
    sock.settimeout(1.0)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config = load_config(write_config(tmp_path / "agent.yaml", site="wd-site", interval_s=0.5))

    def pings(seconds: float) -> int:
        count, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                count += sock.recv(4096).decode().count("WATCHDOG=1")
        return count

    async def scenario() -> tuple[int, int, int]:
        agent = Gateway(config, data_dir=tmp_path / "data", notifier=Notifier(notify.path))
        task = asyncio.create_task(agent.run())
        try:
            healthy = await asyncio.to_thread(pings, 1.5)
            # A Python thread cannot be killed from outside: stand in for the writer thread's death
            # at the one place the gateway asks about it.
            monkeypatch.setattr(agent.outbox, "writer_alive", lambda: False)
            await asyncio.to_thread(pings, 0.2)  # what was already on its way
            dead = await asyncio.to_thread(pings, 1.5)
            exit_code = await asyncio.wait_for(task, 30)
            return healthy, dead, exit_code
        finally:
            agent.request_stop("test")
            if not task.done():
                await asyncio.wait_for(task, 30)

    healthy, dead, exit_code = asyncio.run(scenario())
    sock.close()
    assert healthy >= 5  # every 0.1 s while healthy
    assert dead == 0
    assert exit_code == 1

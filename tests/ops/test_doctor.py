"""edge-agent doctor: every check against real parts, in an ok and a failing case.

Real parts: config files, temp dirs and the file system's real free space, pty pairs for serial
ports, /dev/null as a character device, a video file written by OpenCV, Mosquitto processes
(anonymous, with a password file, with TLS), the shipped ONNX models, SQLite files written by the
real outbox. Permission failures run the check as the unprivileged 'nobody' user in a child
process, because root opens everything. Only ``timedatectl`` is replaced by small scripts: without
systemd as PID 1 (build machines, containers) it cannot answer at all.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import serial
import yaml

from device_drivers.camera.ffmpeg_limits import allocation_bound
from edge_agent.config import load_config, parse_config
from edge_agent.doctor import (
    CheckResult,
    Status,
    check_agent_status,
    check_broker,
    check_broker_auth,
    check_camera,
    check_cameras,
    check_clock,
    check_config,
    check_credentials,
    check_data_dir,
    check_database,
    check_device_node,
    check_devices,
    check_execution_providers,
    check_models,
    check_osdp_keys,
    check_serial_port,
)
from edge_agent.face_templates import FACES_DB, FaceTemplateStore, parse_key
from sync.envelope import Event
from sync.outbox import Outbox, OutboxConfig
from tests.conftest import MosquittoBroker, free_port
from tests.ops.unit_file import REPO_ROOT
from tests.sync.test_mqtt_link import _make_tls

DEMO = REPO_ROOT / "config" / "demo.yaml"
running_as_root = os.geteuid() == 0


def write_config(path: Path, **sections: object) -> Path:
    config: dict[str, object] = {"gateway": {"site": "doc-site", "id": "gw-doc"}}
    config.update(sections)
    path.write_text(yaml.safe_dump(config))
    return path


def as_nobody(check: Callable[..., CheckResult], *args: object) -> CheckResult:
    """Run ``check(*args)`` in a forked child that dropped to 'nobody' (uid/gid 65534, no extra
    groups): permission failures that root never sees. Forked rather than a new interpreter,
    because the interpreter may live where 'nobody' cannot read (pyenv under /root)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = check(*args)
            os.write(write, json.dumps([result.status.value, result.detail]).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 0 and data, "the unprivileged check crashed"
    value, detail = json.loads(data)
    return CheckResult("as nobody", Status(value), detail)


needs_root = pytest.mark.skipif(not running_as_root, reason="switching to 'nobody' needs root")


# -- config ----------------------------------------------------------------------------------------


def test_config_ok_names_the_gateway() -> None:
    result, config = check_config(DEMO)
    assert result.status is Status.OK and config is not None
    assert "demo-campus" in result.detail and "gw-demo-1" in result.detail


def test_config_errors_point_at_yaml_lines(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("gateway:\n  site: s\n  id: g\nagent:\n  data_dir: /tmp/x\n  colour: red\n")
    result, config = check_config(path)
    assert result.failed and config is None
    assert f"{path}:6:" in result.detail and "colour" in result.detail
    path.write_text("gateway:\n  site: s\n   id: [\n")
    result, _ = check_config(path)
    assert result.failed and "not valid YAML" in result.detail and f"{path}:3:" in result.detail


# -- data dir --------------------------------------------------------------------------------------


def floor_at(n: int) -> OutboxConfig:
    """An outbox whose free-space floor is ``n`` bytes on any file system larger than ``n``."""
    return OutboxConfig(min_free_bytes=n, min_free_percent=100, min_free_min_bytes=0)


def test_data_dir_ok_warn_and_fail_against_real_free_space(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    assert check_data_dir(tmp_path, floor_at(1 << 20)).status is Status.OK
    assert not list(tmp_path.iterdir()), "the write probe must not leave files behind"
    # The floor between half and all of the free space: still above it, but close.
    assert check_data_dir(tmp_path, floor_at(int(free * 0.7))).status is Status.WARN
    low = check_data_dir(tmp_path, floor_at(free * 4))
    assert low.failed and "free-space floor" in low.detail
    not_yet = check_data_dir(tmp_path / "state" / "edge-agent", floor_at(1 << 20))
    assert not_yet.status is Status.OK and "not created yet" in not_yet.detail
    (tmp_path / "file").write_text("x")
    assert check_data_dir(tmp_path / "file", floor_at(0)).failed


@needs_root
def test_data_dir_not_writable_for_the_service_user() -> None:
    # pytest's tmp_path sits under a 0700 directory that 'nobody' cannot even traverse.
    top = Path(tempfile.mkdtemp(prefix="doctor-", dir="/tmp"))
    top.chmod(0o755)
    locked = top / "locked"
    locked.mkdir(mode=0o755)
    open_dir = top / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    result = as_nobody(check_data_dir, locked, floor_at(0))
    assert result.failed and "not writable" in result.detail
    try:
        assert as_nobody(check_data_dir, open_dir, floor_at(0)).status is Status.OK  # the probe itself works
    finally:
        shutil.rmtree(top)


# -- devices ---------------------------------------------------------------------------------------


@pytest.fixture
def pty_port() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def test_serial_port_on_a_pty_opens_and_a_missing_one_fails(pty_port: tuple[int, str]) -> None:
    master, path = pty_port
    assert check_serial_port("reader-1", path).status is Status.OK
    os.write(master, b"\x0212AB\x03")  # the check must not eat bytes meant for the agent
    assert check_serial_port("reader-1", path).status is Status.OK
    missing = check_serial_port("reader-2", "/dev/ttyUSB-edge-doctor-none")
    assert missing.failed and "cannot open" in missing.detail and "reader-2" in missing.name
    assert check_serial_port("reader-3", f"socket://127.0.0.1:{free_port()}").failed


def test_serial_port_held_by_the_agent_is_in_use_not_broken(pty_port: tuple[int, str]) -> None:
    _, path = pty_port
    # The agent's drivers open their ports exclusively; this stands in for the running agent.
    held = serial.Serial(path, exclusive=True)
    try:
        result = check_serial_port("reader-1", path)
        assert result.status is Status.WARN and "in use" in result.detail
    finally:
        held.close()
    assert check_serial_port("reader-1", path).status is Status.OK


@needs_root
def test_serial_port_without_permission_names_the_group(pty_port: tuple[int, str]) -> None:
    _, path = pty_port
    os.chmod(path, 0o600)
    result = as_nobody(check_serial_port, "r", path)
    assert result.failed and "dialout" in result.detail
    os.chmod(path, 0o666)
    assert as_nobody(check_serial_port, "r", path).status is Status.OK


def test_devices_from_config_skip_simulated_and_open_real_ports(
    tmp_path: Path, pty_port: tuple[int, str]
) -> None:
    _, path = pty_port
    config = load_config(
        write_config(
            tmp_path / "gateway.yaml",
            devices=[
                {"kind": "card_reader", "id": "sim-reader", "profile": "em4100_id12", "simulated": True},
                {"kind": "card_reader", "id": "pty-reader", "profile": "em4100_id12", "port": path},
                {"kind": "turnstile", "id": "gone", "profile": "turnstile_stx_xor", "port": "/dev/ttyNOPE9"},
            ],
        )
    )
    results = {r.name: r for r in check_devices(config)}
    assert results["device sim-reader"].status is Status.OK
    assert "simulated" in results["device sim-reader"].detail
    assert results["device pty-reader"].status is Status.OK
    assert results["device gone"].failed


def test_osdp_reader_keys_from_the_credentials_dir(tmp_path: Path, pty_port: tuple[int, str]) -> None:
    _, path = pty_port
    bus = {
        "kind": "osdp",
        "id": "bus-1",
        "port": path,
        "readers": [
            {"id": "door-a", "address": 1, "scbk_secret": "door_a_scbk"},
            {"id": "door-b", "address": 2, "scbk_secret": "door_b_scbk"},
            {"id": "door-c", "address": 3, "scbk_secret": "door_c_scbk"},
        ],
    }
    config = load_config(write_config(tmp_path / "g.yaml", devices=[bus]))
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "door_a_scbk").write_text(os.urandom(16).hex() + "\n")
    (creds / "door_b_scbk").write_text("not-hex\n")
    results = {r.name: r for r in check_osdp_keys(config, creds)}
    assert results["osdp key door-a"].status is Status.OK
    assert results["osdp key door-b"].failed and "not hex" in results["osdp key door-b"].detail
    assert results["osdp key door-c"].failed and "not found" in results["osdp key door-c"].detail
    assert check_devices(config)[0].status is Status.OK  # the bus's port: the pty


def test_device_node_must_be_a_character_device(tmp_path: Path) -> None:
    # /dev/null stands in for /dev/gpiochip0: no GPIO chip on build machines, and the check only
    # asks "is it a character device that opens", which /dev/null really is.
    assert check_device_node("door", "/dev/null", write=True).status is Status.OK
    plain = tmp_path / "gpiochip0"
    plain.write_text("")
    assert "not a character device" in check_device_node("door", str(plain), write=True).detail
    assert check_device_node("door", str(tmp_path / "none"), write=True).failed


# -- camera ----------------------------------------------------------------------------------------


def test_camera_file_gives_a_frame_and_bad_sources_fail(tmp_path: Path) -> None:
    video = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for i in range(5):
        writer.write(np.full((120, 160, 3), i * 40, np.uint8))
    writer.release()
    ok = check_camera("cam-1", str(video))
    assert ok.status is Status.OK and "160x120" in ok.detail
    assert check_camera("cam-2", str(tmp_path / "missing.avi")).failed
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(4096))
    assert check_camera("cam-3", str(garbage)).failed
    assert check_camera("cam-4", "ftp://10.0.0.1/x").failed


def test_the_camera_allocation_bound_is_reported_for_real_cameras() -> None:
    config = parse_config(
        "gateway: {site: s, id: g}\ncameras:\n"
        "  - device: {kind: camera, id: cam-1, url: 'rtsp://10.0.0.5/1', max_frame_pixels: 50000000}\n"
        "  - device: {kind: camera_sim, id: cam-2}\n"
    )
    [*_, bound] = check_cameras(config)
    assert bound.name == "camera allocation bound" and bound.status is Status.OK, bound
    assert f"at most {allocation_bound(50_000_000) >> 20} MiB" in bound.detail
    simulated = parse_config("gateway: {site: s, id: g}\ncameras:\n  - device: {kind: camera_sim, id: c}\n")
    assert [r.name for r in check_cameras(simulated)] == ["camera c"]


def test_execution_providers_name_a_missing_provider_and_what_the_running_agent_uses(tmp_path: Path) -> None:
    camera = {"device": {"kind": "camera_sim", "id": "cam-1"}}
    wanted = load_config(
        write_config(tmp_path / "g.yaml", cameras=[camera], vision={"execution_providers": ["cuda", "cpu"]})
    )
    data = tmp_path / "data"
    data.mkdir()
    missing = check_execution_providers(wanted, data)
    # This onnxruntime build is the CPU one: CUDA is named, and the models run on the CPU.
    assert missing.status is Status.WARN and missing.detail.startswith("cuda not in this onnxruntime build")
    assert "models run on cpu (configured: cuda, cpu)" in missing.detail
    plain = load_config(write_config(tmp_path / "p.yaml", cameras=[camera]))
    (data / "status.json").write_text(
        json.dumps({"vision": {"models": [{"model": "nanodet_m_416", "provider": "cpu"}], "inference": {}}})
    )
    ok = check_execution_providers(plain, data)
    assert ok.status is Status.OK
    assert ok.detail == "models run on cpu (configured: cpu); the running agent: nanodet_m_416 on cpu"


# -- broker ----------------------------------------------------------------------------------------


def test_broker_reachable_and_anonymous_connack(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = load_config(write_config(tmp_path / "g.yaml", mqtt={"url": mosquitto.url}))
    results = check_broker(config)
    assert [r.name for r in results] == ["broker reachable", "broker auth"]
    assert all(r.status is Status.OK for r in results), results
    assert "CONNACK accepted" in results[1].detail


def test_broker_unreachable_fails(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "g.yaml", mqtt={"url": f"mqtt://127.0.0.1:{free_port()}"}))
    results = check_broker(config, timeout_s=2)
    assert len(results) == 1 and results[0].failed and results[0].name == "broker reachable"


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    pwfile = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "gw-doc", "right-pass"], check=True)
    pwfile.chmod(0o600)
    broker = MosquittoBroker(tmp_path, extra_conf=f"password_file {pwfile}", anonymous=False)
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_broker_auth_with_credentials_dir(
    tmp_path: Path, password_broker: MosquittoBroker, protocol: str
) -> None:
    config = load_config(
        write_config(
            tmp_path / "g.yaml",
            mqtt={"url": password_broker.url, "username": "gw-doc", "protocol": protocol},
        )
    )
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt_password").write_text("right-pass\n")
    results = check_broker(config, credentials_dir=creds)
    assert results[-1].status is Status.OK, results
    (creds / "mqtt_password").write_text("wrong-pass\n")
    refused = check_broker(config, credentials_dir=creds)[-1]
    assert refused.failed and "refused" in refused.detail
    # Mosquitto's reason: "Bad user name or password" (3.1.1 code 4) / "Not authorized" (5).
    assert "password" in refused.detail.lower() or "not authorized" in refused.detail.lower()
    (creds / "mqtt_password").write_text("")
    empty = check_broker(config, credentials_dir=creds)[-1]
    assert empty.failed and "missing or empty" in empty.detail


def test_broker_auth_reads_the_credential_like_the_agent(
    tmp_path: Path, password_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        write_config(tmp_path / "g.yaml", mqtt={"url": password_broker.url, "username": "gw-doc"})
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", "right-pass")
    assert check_broker(config)[-1].status is Status.OK
    monkeypatch.setenv("EDGE_AGENT_MQTT_PASSWORD", "nope")
    assert check_broker(config)[-1].failed
    # Without a user name, a broker that demands one refuses the anonymous CONNECT.
    anonymous = load_config(write_config(tmp_path / "a.yaml", mqtt={"url": password_broker.url}))
    assert check_broker_auth(anonymous, None).failed


def test_broker_tls_handshake_and_client_certificate(tmp_path: Path) -> None:
    pki = _make_tls(tmp_path)
    broker = MosquittoBroker(
        tmp_path,
        listener_conf=f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
        "require_certificate true",
    )
    broker.start()
    try:
        url = f"mqtts://localhost:{broker.port}"
        creds = tmp_path / "credentials"
        creds.mkdir()
        shutil.copy(pki["client_key"], creds / "mqtt_client_key")
        tls = {
            "ca_file": str(pki["ca"]),
            "cert_file": str(pki["client"]),
            "key_credential": "mqtt_client_key",
        }
        good = load_config(write_config(tmp_path / "g.yaml", mqtt={"url": url, "tls": tls}))
        results = check_broker(good, credentials_dir=creds)
        assert [r.name for r in results] == ["broker reachable", "broker TLS", "broker auth"]
        assert all(r.status is Status.OK for r in results), results
        assert "TLS" in results[1].detail
        # The system CAs do not know the test CA: the handshake check says so.
        no_ca = load_config(write_config(tmp_path / "n.yaml", mqtt={"url": url}))
        tls_result = check_broker(no_ca, credentials_dir=creds)[-1]
        assert tls_result.name == "broker TLS" and tls_result.failed
        assert "certificate" in tls_result.detail
        # The right CA, the wrong name: the certificate is for 'localhost'.
        by_ip = load_config(
            write_config(tmp_path / "i.yaml", mqtt={"url": f"mqtts://127.0.0.1:{broker.port}", "tls": tls})
        )
        mismatch = check_broker(by_ip, credentials_dir=creds)[-1]
        assert mismatch.name == "broker TLS" and "mismatch" in mismatch.detail, mismatch
        # A client key credential that is not there.
        (creds / "mqtt_client_key").write_text("")
        missing_key = check_broker(good, credentials_dir=creds)[-1]
        assert missing_key.failed and "mqtt_client_key" in missing_key.detail
        # No client certificate at all: the broker (require_certificate) refuses it, with TLS 1.3
        # only after the client has finished its side of the handshake; the TLS line says so.
        no_cert = load_config(
            write_config(tmp_path / "c.yaml", mqtt={"url": url, "tls": {"ca_file": str(pki["ca"])}})
        )
        refused = check_broker(no_cert, credentials_dir=creds, timeout_s=3)[-1]
        assert refused.name == "broker TLS" and refused.failed, refused
    finally:
        broker.stop()


# -- models ----------------------------------------------------------------------------------------


def test_shipped_models_match_the_manifest() -> None:
    results = check_models()
    assert results and all(r.status is Status.OK for r in results), results


def test_model_missing_truncated_or_altered_fails(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(4096)
    (tmp_path / "m.onnx").write_bytes(data)
    entry = {
        "id": "m",
        "file": "m.onnx",
        "task": "face_detection",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "license": "MIT",
        "source": "test",
        "inputs": [{"name": "x", "shape": [1], "warmup_shape": [1]}],
        "outputs": ["y"],
    }
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"schema_version": 1, "models": [entry]}))
    assert check_models(manifest)[0].status is Status.OK
    (tmp_path / "m.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    altered = check_models(manifest)[0]
    assert altered.failed and "sha256" in altered.detail
    (tmp_path / "m.onnx").write_bytes(data[:100])
    assert "truncated" in check_models(manifest)[0].detail
    (tmp_path / "m.onnx").unlink()
    assert check_models(manifest)[0].failed
    manifest.write_text("{not json")
    assert check_models(manifest)[0].failed


# -- clock -----------------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "timedatectl"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return [str(script), "show", "-p", "NTPSynchronized", "--value"]


def test_clock_sync_yes_no_and_unknown(tmp_path: Path) -> None:
    assert check_clock(_script(tmp_path, "echo yes")).status is Status.OK
    assert check_clock(_script(tmp_path, "echo no")).failed
    unknown = check_clock(_script(tmp_path, "echo 'Failed to connect to bus' >&2; exit 1"))
    assert unknown.status is Status.WARN and "unknown" in unknown.detail and "bus" in unknown.detail
    assert check_clock([str(tmp_path / "no-such-timedatectl")]).status is Status.WARN


def test_clock_sync_real_timedatectl_answers_something() -> None:
    if shutil.which("timedatectl") is None:
        pytest.skip("timedatectl is not installed (Debian package 'systemd')")
    result = check_clock()
    # Here (no systemd as PID 1) it is "unknown"; on a real box "yes" or "no". Never a crash.
    assert result.status in (Status.OK, Status.WARN, Status.FAIL)
    assert result.detail.startswith(("NTP", "unknown"))


# -- databases and the running agent ----------------------------------------------------------------


def _real_outbox(data_dir: Path, events: int) -> None:
    async def fill() -> None:
        outbox = Outbox(data_dir, OutboxConfig(), report_source="campus/doc-site/gw-doc/gateway")
        await outbox.open()
        for i in range(events):
            await outbox.append(
                Event(
                    "edu.campus.device.heartbeat.v1",
                    "campus/doc-site/gw-doc/sim",
                    {"device": "sim", "kind": "simulated", "uptime_s": float(i), "counter": i, "errors": 0},
                )
            )
        await outbox.close()

    asyncio.run(fill())


def test_outbox_quick_check_ok_with_backlog_and_migrations(tmp_path: Path) -> None:
    _real_outbox(tmp_path, 3)
    result = check_database(tmp_path / "outbox.db")
    assert result.status is Status.OK, result
    assert "3 undelivered" in result.detail and "migrations" in result.detail
    assert check_database(tmp_path / "roster.db").detail.startswith("not created")


def test_database_that_is_not_sqlite_or_is_damaged_fails(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").write_bytes(b"this is no database" * 300)
    assert check_database(tmp_path / "outbox.db").failed
    _real_outbox(tmp_path / "d", 400)
    db = tmp_path / "d" / "outbox.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    raw = bytearray(db.read_bytes())
    page = 4096
    assert len(raw) >= 4 * page, "the test needs a few b-tree pages to damage"
    raw[2 * page + 8 : 3 * page] = b"\xff" * (page - 8)  # a page's cell pointers and cells
    db.write_bytes(bytes(raw))
    damaged = check_database(db)
    assert damaged.failed, damaged


def test_agent_status_fresh_or_stale(tmp_path: Path) -> None:
    assert check_agent_status(tmp_path).status is Status.WARN
    status = {"pid": 42, "broker": {"state": "connected"}, "outbox": {"pending": 7}}
    (tmp_path / "status.json").write_text(json.dumps(status))
    fresh = check_agent_status(tmp_path)
    assert fresh.status is Status.OK and "pid 42" in fresh.detail and "backlog 7" in fresh.detail
    old = (tmp_path / "status.json").stat().st_mtime
    stale = check_agent_status(tmp_path, now=old + 60)
    assert stale.status is Status.WARN and "not running" in stale.detail


# -- the command -----------------------------------------------------------------------------------


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import argparse, sys\n"
        "from edge_agent.doctor import add_doctor_cli\n"
        "p = argparse.ArgumentParser(prog='edge-agent')\n"
        "add_doctor_cli(p.add_subparsers(dest='command', required=True))\n"
        "a = p.parse_args(sys.argv[1:])\n"
        "sys.exit(a.func(a))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    return subprocess.run(
        [sys.executable, "-c", code, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )


def test_doctor_command_one_line_per_check_and_exit_code(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    demo = yaml.safe_load(DEMO.read_text())
    demo["agent"]["roster_seed"] = str(REPO_ROOT / "config" / "demo-roster.json")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(demo))
    data = tmp_path / "data"
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {site: s}\n")
    # Three independent runs of the command, side by side: each is mostly interpreter start-up.
    with ThreadPoolExecutor(3) as pool:
        runs = [
            pool.submit(
                _doctor, "--config", str(config), "--data-dir", str(data), "--mqtt-url", mosquitto.url
            ),
            pool.submit(
                _doctor,
                "--config",
                str(config),
                "--data-dir",
                str(tmp_path / "data-2"),
                "--mqtt-url",
                f"mqtt://127.0.0.1:{free_port()}",
            ),
            pool.submit(_doctor, "--config", str(bad)),
        ]
        out, broken, invalid = (run.result() for run in runs)
    lines = out.stdout.splitlines()
    assert all(line.split()[0] in ("ok", "warn", "FAIL") for line in lines), out.stdout
    by_name = {line[6:34].strip(): line.split()[0] for line in lines}
    for name in ("config", "data dir", "broker reachable", "broker auth", "device main-gate-reader-in"):
        assert by_name[name] == "ok", out.stdout
    # The clock may legitimately fail on a box whose NTP is not synchronised; the exit code
    # follows whatever failed.
    assert out.returncode == (1 if "FAIL" in by_name.values() else 0), out.stdout + out.stderr
    assert "checks:" in out.stderr

    assert broken.returncode == 1
    assert any(line.startswith("FAIL") and "broker reachable" in line for line in broken.stdout.splitlines())

    assert invalid.returncode == 1
    assert invalid.stdout.splitlines()[0].startswith("FAIL  config")
    assert "gateway.id" in invalid.stdout


# -- credentials -------------------------------------------------------------------------------------

NEEDS_EVERY_CREDENTIAL = {
    "mqtt": {"username": "gw"},
    "commands": {"enabled": True},
    "cameras": [{"device": {"kind": "camera_sim", "id": "cam-7a"}, "face": {}}],
}


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name.removeprefix("credential "): r for r in results if r.name.startswith("credential ")}


def _hmac_keys(key_id: str) -> str:
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    return json.dumps({"keys": [{"id": key_id, "algorithm": "hmac-sha256", "secret": secret}]})


def test_credentials_missing_say_what_they_are_for_and_where_they_go(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "face_template_key").write_text("")  # install-service leaves the files empty
    found = _by_name(check_credentials(config, creds))
    assert set(found) == {"mqtt_password", "face_template_key", "api_tokens", "command_keys", "roster_keys"}
    # The API without tokens still runs the gates: a warning; the others cannot work: failures.
    assert {name: r.status for name, r in found.items()} == {
        "mqtt_password": Status.FAIL,
        "face_template_key": Status.FAIL,
        "api_tokens": Status.WARN,
        "command_keys": Status.FAIL,
        "roster_keys": Status.FAIL,
    }
    assert "every roster message from the centre is refused" in found["roster_keys"].detail
    assert found["face_template_key"].detail.startswith("empty: the key that encrypts face templates")
    assert found["mqtt_password"].detail.startswith("missing: the broker password of mqtt.username 'gw'")
    for name, result in found.items():
        assert f"/etc/edge-agent/credentials/{name} (the service loads it" in result.detail
        assert f"$CREDENTIALS_DIRECTORY/{name}" in result.detail
        assert f"the environment variable EDGE_AGENT_{name.upper()}" in result.detail
    assert "openssl rand -hex 32 > /etc/edge-agent/credentials/face_template_key" in (
        found["face_template_key"].detail
    )
    assert "only /health, /ready and /metrics answer" in found["api_tokens"].detail


def test_credentials_present_but_unusable_fail_with_the_reason(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret\n")
    (creds / "face_template_key").write_text("not-a-key\n")
    (creds / "api_tokens").write_text("viewer:short\n")
    (creds / "command_keys").write_text('{"keys": [{"id": "k1"}]}')
    # A command key (limited to some commands) is no roster key.
    (creds / "roster_keys").write_text(
        json.dumps({"keys": [{**json.loads(_hmac_keys("ops-1"))["keys"][0], "commands": ["open"]}]})
    )
    found = _by_name(check_credentials(config, creds))
    assert found["mqtt_password"].status is Status.OK
    for name, reason in {
        "face_template_key": "neither hex nor base64",
        "api_tokens": "tokens line 1: token shorter than",
        "command_keys": "the command keys credential is invalid",
        "roster_keys": "a roster key signs all master data",
    }.items():
        assert found[name].status is Status.FAIL, found[name]
        assert found[name].detail.startswith("present but unusable:"), found[name]
        assert reason in found[name].detail, found[name]
    (creds / "face_template_key").write_text(secrets.token_hex(31))  # a digit pair short
    (creds / "api_tokens").write_text("# nobody yet\n")
    (creds / "command_keys").write_text('{"keys": []}')
    (creds / "roster_keys").write_text('{"keys": []}')
    found = _by_name(check_credentials(config, creds))
    assert "62 hex digits; the key is 64 (32 bytes)" in found["face_template_key"].detail
    (creds / "face_template_key").write_text(base64.b64encode(secrets.token_bytes(31)).decode())
    assert (
        "must be 32 bytes, not 31" in _by_name(check_credentials(config, creds))["face_template_key"].detail
    )
    assert "no 'role:token' line" in found["api_tokens"].detail
    assert "every command would be refused" in found["command_keys"].detail
    assert "every roster message would be refused" in found["roster_keys"].detail


def test_credentials_good_ones_pass_from_the_dir_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret\n")
    (creds / "face_template_key").write_text(secrets.token_hex(32) + "\n")
    (creds / "api_tokens").write_text(
        f"admin:{secrets.token_hex(24)}:it-office\nviewer:{secrets.token_hex(16)}\n"
    )
    (creds / "command_keys").write_text(_hmac_keys("centre-1"))
    (creds / "roster_keys").write_text(_hmac_keys("centre-roster-1"))
    found = _by_name(check_credentials(config, creds))
    assert all(r.status is Status.OK for r in found.values()), found
    assert found["roster_keys"].detail == "1 roster signing key(s): centre-roster-1"
    assert found["api_tokens"].detail == "2 API token(s)"
    assert found["command_keys"].detail == "1 trusted key(s): centre-1"

    # As the agent reads them: $CREDENTIALS_DIRECTORY first, then EDGE_AGENT_<NAME>.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    for name in found:
        monkeypatch.setenv(f"EDGE_AGENT_{name.upper()}", (creds / name).read_text())
    from_env = _by_name(check_credentials(config))
    assert all(r.status is Status.OK for r in from_env.values()), from_env
    monkeypatch.setenv("EDGE_AGENT_FACE_TEMPLATE_KEY", "")
    assert _by_name(check_credentials(config))["face_template_key"].status is Status.FAIL


def test_credentials_only_those_the_config_needs(tmp_path: Path) -> None:
    plain = load_config(write_config(tmp_path / "plain.yaml"))
    # Signed master data is required by default, so the roster keys are always needed.
    assert list(_by_name(check_credentials(plain, tmp_path))) == ["api_tokens", "roster_keys"]
    lab = {"roster_signatures": "optional"}
    no_api = load_config(write_config(tmp_path / "no-api.yaml", api={"enabled": False}, agent=lab))
    assert _by_name(check_credentials(no_api, tmp_path)) == {}


def test_credentials_tls_client_key_must_be_a_pem_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(
        write_config(
            tmp_path / "g.yaml",
            mqtt={"url": "mqtts://broker.example:8883", "tls": {"key_credential": "mqtt_client_key"}},
            api={"enabled": False},
        )
    )
    creds = tmp_path / "creds"
    creds.mkdir()
    # A TLS library reads the key from a file: the environment is no place for it.
    monkeypatch.setenv("EDGE_AGENT_MQTT_CLIENT_KEY", "-----BEGIN PRIVATE KEY-----")
    missing = _by_name(check_credentials(config, creds))["mqtt_client_key"]
    assert missing.status is Status.FAIL and "EDGE_AGENT_MQTT_CLIENT_KEY" not in missing.detail
    (creds / "mqtt_client_key").write_text("hello\n")
    assert "not a PEM private key" in _by_name(check_credentials(config, creds))["mqtt_client_key"].detail
    with tempfile.TemporaryDirectory() as tls_dir:
        files = _make_tls(Path(tls_dir))
        shutil.copy(files["client_key"], creds / "mqtt_client_key")
        good = _by_name(check_credentials(config, creds))["mqtt_client_key"]
    assert good.status is Status.OK and good.detail == "a PEM private key"


def test_credentials_with_another_name_need_a_drop_in(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path / "g.yaml",
            cameras=NEEDS_EVERY_CREDENTIAL["cameras"],
            faces={"template_key_credential": "faces_key_2027"},
        )
    )
    found = _by_name(check_credentials(config, tmp_path))["faces_key_2027"]
    assert "LoadCredential=faces_key_2027:/etc/edge-agent/credentials/faces_key_2027" in found.detail
    assert "which the shipped unit does not have" in found.detail


def test_doctor_command_names_the_missing_face_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL)
    creds = tmp_path / "creds"
    creds.mkdir()
    out = _doctor(
        "--config", str(config), "--data-dir", str(tmp_path / "data"), "--credentials-dir", str(creds)
    )
    lines = [line for line in out.stdout.splitlines() if "credential face_template_key" in line]
    assert len(lines) == 1 and lines[0].startswith("FAIL"), out.stdout
    assert "/etc/edge-agent/credentials/face_template_key" in lines[0]
    assert out.returncode == 1


def test_doctor_says_when_the_face_key_does_not_open_the_gallery(tmp_path: Path) -> None:
    """The agent would start with face recognition off, and enroll would refuse: doctor says it first,
    reading the gallery without writing to it."""
    config = write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL)
    data, creds = tmp_path / "data", tmp_path / "creds"
    creds.mkdir()
    made_with = secrets.token_hex(32)
    FaceTemplateStore(data, parse_key(made_with, "k")).close()  # an (empty) gallery under one key
    before = (data / FACES_DB).read_bytes()

    def face_key_line(key: str) -> str:
        (creds / "face_template_key").write_text(key + "\n")
        out = _doctor("--config", str(config), "--data-dir", str(data), "--credentials-dir", str(creds))
        (line,) = [x for x in out.stdout.splitlines() if x[6:].startswith("face template key ")]
        return line

    wrong = face_key_line(secrets.token_hex(32))
    assert wrong.startswith("FAIL") and "does not open the gallery" in wrong and "rotate-key" in wrong
    assert face_key_line(made_with).startswith("ok")
    assert (data / FACES_DB).read_bytes() == before


def test_credentials_the_service_user_cannot_read_are_not_called_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Doctor run from a shell as the service user: the credentials directory is root's alone (the
    service gets its files through LoadCredential=), so a credential there cannot be checked, and
    doctor says that instead of "missing"."""
    top = Path(tempfile.mkdtemp(prefix="doctor-creds-", dir="/tmp"))
    top.chmod(0o755)
    try:
        creds = top / "credentials"
        creds.mkdir(mode=0o700)
        (creds / "face_template_key").write_text(secrets.token_hex(32))
        monkeypatch.setattr("edge_agent.doctor.CREDENTIALS_DIR", str(creds))
        for name in ("CREDENTIALS_DIRECTORY", "EDGE_AGENT_FACE_TEMPLATE_KEY"):
            monkeypatch.delenv(name, raising=False)
        config = load_config(write_config(tmp_path / "g.yaml", **NEEDS_EVERY_CREDENTIAL))

        def face_key_check() -> CheckResult:
            return _by_name(check_credentials(config))["face_template_key"]

        as_service_user = as_nobody(face_key_check)
        assert as_service_user.status is Status.WARN, as_service_user
        assert "not checked" in as_service_user.detail and "run doctor as root" in as_service_user.detail
        # Root reads the same directory (cmd_doctor hands it over) and finds the key good.
        assert _by_name(check_credentials(config, creds))["face_template_key"].status is Status.OK
    finally:
        shutil.rmtree(top)

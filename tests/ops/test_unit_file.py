"""The systemd unit: verified by the real systemd-analyze, scored for exposure, and its seccomp
sandbox (MemoryDenyWriteExecute=, SystemCallFilter=) tried on the agent and its native libraries
under the same filters systemd would install (tests/ops/seccomp_sandbox.py)."""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_agent.api.server import LISTEN_BACKLOG
from edge_agent.config import AgentConfig, ApiSettings
from edge_agent.doctor import OPEN_FILES_FIXED, SELECT_LIMIT
from tests.conftest import MosquittoBroker
from tests.ops.unit_file import EXEC_BINARY, REPO_ROOT, UNIT, exposure, parse_unit, systemd_analyze, verify
from tests.support.notify import NotifySocket
from tests.support.wait import wait_until

needs_systemd_analyze = pytest.mark.skipif(
    systemd_analyze() is None,
    reason="systemd-analyze is missing: install the Debian 'systemd' package to verify the unit files",
)
SANDBOX = REPO_ROOT / "tests" / "ops" / "seccomp_sandbox.py"
needs_libseccomp = pytest.mark.skipif(
    ctypes.util.find_library("seccomp") is None
    and not Path("/usr/lib/x86_64-linux-gnu/libseccomp.so.2").exists(),
    reason="libseccomp is missing: install the Debian 'libseccomp2' package to try the unit's sandbox",
)


def sandbox_args() -> list[str]:
    """The seccomp part of the unit as arguments of seccomp_sandbox.py: the test follows the unit."""
    service = {k: v[-1] for k, v in parse_unit(UNIT.read_text())["Service"].items()}
    args = [sys.executable, str(SANDBOX)]
    if service.get("MemoryDenyWriteExecute") == "yes":
        args.append("--mdwe")
    if service.get("SystemCallFilter"):
        assert service.get("SystemCallErrorNumber") == "EPERM", "the sandbox helper denies with EPERM"
        args += ["--syscall-filter", service["SystemCallFilter"]]
    return [*args, "--"]


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    result = verify(UNIT.read_text(), tmp_path)
    # verify exits 0 even when it ignores a line it cannot parse; only silence means clean.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
    assert result.stdout.strip() == ""


@needs_systemd_analyze
def test_verify_reports_a_broken_directive(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("DevicePolicy=closed", "DevicePolicy=bogus")
    result = verify(broken, tmp_path)
    assert "device policy" in result.stderr.lower()


@needs_systemd_analyze
def test_verify_reports_a_missing_executable(tmp_path: Path) -> None:
    text = UNIT.read_text().replace("ExecReload=/bin/kill", "ExecReload=/nonexistent/kill")
    result = verify(text, tmp_path)
    assert result.returncode != 0
    assert "/nonexistent/kill" in result.stderr


@needs_systemd_analyze
def test_exposure_stays_low(tmp_path: Path) -> None:
    # 1.9 with systemd 252 when written ("OK" is below 2); newer systemd versions score more
    # settings, hence the margin. Dropping a few hardening lines must show up as a clear rise.
    shipped = exposure(UNIT.read_text(), tmp_path)
    assert shipped <= 2.5
    weakened = "\n".join(
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(("ProtectSystem", "CapabilityBoundingSet", "SystemCallFilter", "PrivateTmp"))
    )
    assert exposure(weakened, tmp_path) >= shipped + 2.0


def test_unit_settings_match_the_agent() -> None:
    unit = parse_unit(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"].split()[0] == EXEC_BINARY
    assert service["ExecStart"].split()[1:] == ["run", "--config", "/etc/edge-agent/gateway.yaml"]
    assert service["User"] == "edge-agent" and service["DynamicUser"] == "no"
    assert service["Environment"] or unit["Service"]["Environment"]
    assert "EDGE_AGENT_DATA_DIR=%S/edge-agent" in unit["Service"]["Environment"]
    assert service["StateDirectory"] == "edge-agent"
    # The stop timeout must leave the agent its own shutdown bound, or systemd SIGKILLs it
    # while it is still publishing the backlog.
    default_bound = AgentConfig.model_fields["shutdown_timeout_s"].default
    stop = float(service["TimeoutStopSec"].rstrip("s"))
    assert default_bound < stop <= default_bound + 15
    # The agent pings at WATCHDOG_USEC/2; a watchdog under a few seconds would trip on a busy box.
    assert float(service["WatchdogSec"].rstrip("s")) >= 10
    credentials = [c.split(":", 1)[0] for c in unit["Service"]["LoadCredential"]]
    assert "mqtt_password" in credentials
    assert set(unit["Service"]["DeviceAllow"]) >= {"char-ttyUSB rw", "char-ttyACM rw", "char-gpiochip rw"}
    assert service["DevicePolicy"] == "closed"
    # docs/OPERATIONS.md "API connection limits and open files": the large box there (16 serial
    # devices, 8 cameras) with the API at the largest cap the config allows; and no more than
    # pyserial's select() can take.
    api_cap = max(m.le for m in ApiSettings.model_fields["max_connections"].metadata if hasattr(m, "le"))
    large_box = OPEN_FILES_FIXED + 5 * 16 + 4 * 8 + api_cap + 4 * LISTEN_BACKLOG
    assert large_box <= int(service["LimitNOFILE"]) <= SELECT_LIMIT


@needs_systemd_analyze
@needs_libseccomp
def test_sandbox_filters_are_active() -> None:
    """The probes below only mean something if the filters really refuse what systemd refuses:
    W+X memory (MemoryDenyWriteExecute=) and mincore(2), an unprivileged call outside
    @system-service (SystemCallFilter=)."""
    assert "--mdwe" in sandbox_args() and "--syscall-filter" in sandbox_args()
    probe = (
        "import ctypes, mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('wx allowed')\n"
        "except PermissionError:\n"
        "    print('wx denied')\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "page = mmap.mmap(-1, 4096)\n"
        "vec = (ctypes.c_ubyte * 1)()\n"
        "address = ctypes.addressof(ctypes.c_char.from_buffer(page))\n"
        "rc = libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(4096), vec)\n"
        "print('mincore denied' if rc != 0 and ctypes.get_errno() == 1 else 'mincore allowed')\n"
    )
    free = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    filtered = subprocess.run(
        [*sandbox_args(), sys.executable, "-c", probe], capture_output=True, text=True, timeout=30
    )
    assert free.stdout.split("\n")[:2] == ["wx allowed", "mincore allowed"], free.stderr
    assert filtered.stdout.split("\n")[:2] == ["wx denied", "mincore denied"], filtered.stderr


@needs_systemd_analyze
@needs_libseccomp
def test_native_libraries_work_in_the_unit_sandbox() -> None:
    """ONNX Runtime loads and runs every shipped model, OpenCV codes a JPEG, cryptography signs."""
    probe = (
        "import numpy as np, cv2\n"
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
        "from vision.manifest import load_manifest\n"
        "from vision.runtime import OnnxModel\n"
        "import osdp\n"
        "for e in load_manifest().models:\n"
        "    OnnxModel(e.id)\n"  # loads, checks, warms up: a real inference run
        "    print('model', e.id)\n"
        "ok, buf = cv2.imencode('.jpg', np.full((64, 64, 3), 128, np.uint8))\n"
        "assert ok and cv2.imdecode(buf, cv2.IMREAD_COLOR).shape == (64, 64, 3)\n"
        "key = Ed25519PrivateKey.generate()\n"
        "key.public_key().verify(key.sign(b'x'), b'x')\n"
        "print('done')\n"
    )
    result = subprocess.run(
        [*sandbox_args(), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "done"
    assert sum(line.startswith("model ") for line in result.stdout.splitlines()) >= 1


@needs_systemd_analyze
@needs_libseccomp
def test_agent_runs_and_stops_cleanly_in_the_unit_sandbox(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    """The demo configuration (pty simulators, drivers, outbox, MQTT) under the unit's seccomp filters:
    READY arrives on a real notify socket, SIGTERM ends it with exit code 0."""
    demo = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    demo["agent"]["roster_seed"] = str(REPO_ROOT / "config" / "demo-roster.json")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(demo))
    notify = NotifySocket(tmp_path / "notify.sock")
    log = tmp_path / "agent.log"
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "EDGE_AGENT_DATA_DIR": str(tmp_path / "state")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *sandbox_args(),
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "--config",
                str(config),
                "--mqtt-url",
                mosquitto.url,
            ],
            stdout=out,
            stderr=out,
            env=env,
            cwd=REPO_ROOT,
        )
        try:

            def running() -> None:
                assert proc.poll() is None, log.read_text()

            notify.read_until("READY=1", 60, alive=running)
            # Card traffic flows through the simulators and the outbox while the agent runs sandboxed.
            status_path = tmp_path / "state" / "status.json"

            def traffic_delivered() -> bool:
                assert proc.poll() is None, log.read_text()
                running = json.loads(status_path.read_text())
                return running["outbox"]["appended"] >= 3 and running["broker"]["acked"] >= 1

            wait_until(
                traffic_delivered, 30, 0.1, what="events appended and acked", ignore=(OSError, ValueError)
            )
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.close()
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    # Started, card decisions from the simulated readers, heartbeats: committed and delivered.
    assert status["outbox"]["appended"] >= 3, status
    assert status["broker"]["acked"] >= 1, status
    assert "Operation not permitted" not in log.read_text()

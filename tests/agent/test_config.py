"""Configuration: validation errors point at YAML lines; the CLI exits 2 on a bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import ConfigFileError, config_json_schema, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
gateway:
  site: north
  id: gw-1
"""


def test_demo_config_is_valid() -> None:
    config = load_config(REPO / "config" / "demo.yaml")
    assert config.simulated and config.gateway.site == "demo-campus"


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(GOOD)
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.outbox.synchronous == "full"


def test_every_error_is_reported_with_its_line() -> None:
    text = (
        GOOD
        + """\
mqtt:
  url: http://broker
  inflight_window: 0
  password: hunter2
outbox:
  max_batch: lots
simulated:
  - id: a
    interval_s: -1
  - id: b
    colour: red
"""
    )
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, "x.yaml")
    found = {(i.path, i.line) for i in info.value.issues}
    assert found == {
        ("mqtt.url", 5),
        ("mqtt.inflight_window", 6),
        ("mqtt.password", 7),
        ("outbox.max_batch", 9),
        ("simulated.0.interval_s", 12),
        ("simulated.1.colour", 14),
    }
    password = next(i for i in info.value.issues if i.path == "mqtt.password")
    assert "secrets never go in the YAML" in password.message
    assert "x.yaml:7: mqtt.password" in str(info.value)


def test_missing_required_and_duplicate_keys() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config("gateway:\n  site: north\n")
    assert [(i.path, i.line) for i in info.value.issues] == [("gateway.id", 2)]
    with pytest.raises(ConfigFileError, match="duplicate key 'site'"):
        parse_config("gateway:\n  site: a\n  site: b\n  id: g\n")
    with pytest.raises(ConfigFileError, match="not valid YAML"):
        parse_config("gateway: [unclosed\n")
    with pytest.raises(ConfigFileError, match="empty"):
        parse_config("")
    with pytest.raises(ConfigFileError, match="device ids must be unique; used twice: a"):
        parse_config(GOOD + "simulated:\n  - id: a\n  - id: a\n")


def test_config_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "mqtt:\n  keepalive_s: 1\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: mqtt.keepalive_s" in err
    assert main(["config", "check", str(tmp_path / "missing.yaml")]) == 2


def test_config_check_runs_as_the_installed_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  site: north\n  id: g\nagent:\n  log_level: loud\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "check", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert f"{bad}:5: agent.log_level" in proc.stderr


def test_json_schema_of_the_config_describes_every_field() -> None:
    schema = config_json_schema()
    json.dumps(schema)

    defs = schema.get("$defs", {})

    def described(prop: dict) -> bool:
        # pydantic leaves out a field's description when it repeats the referenced model's own.
        ref = prop.get("$ref", "")
        return "description" in prop or (ref.startswith("#/$defs/") and "description" in defs[ref[8:]])

    def check(node: object, path: str) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name, prop in props.items():
                    assert described(prop), f"{path}.{name} has no description"
            for key, value in node.items():
                check(value, f"{path}.{key}")

    check(schema, "$")
    assert schema["additionalProperties"] is False


def test_simulate_command_speaks_the_reader_protocol_on_tcp(tmp_path: Path) -> None:
    """`edge-agent simulate` presents cards over TCP; the real driver codec decodes them."""
    import socket
    import time as _time

    from device_drivers import CardCodec, drain, load_profile, resolve_profile
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "simulate",
            "card_reader",
            "em4100_id12",
            f"127.0.0.1:{port}",
            "--card",
            "0012AB34CD",
            "--interval",
            "0.2",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = _time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert _time.monotonic() < deadline, "the simulator never listened"
                _time.sleep(0.1)
        buffer = bytearray()
        codec = CardCodec(load_profile(resolve_profile("em4100_id12")))
        cards: list[str] = []
        with sock:
            sock.settimeout(5)
            while not cards:
                buffer += sock.recv(1024)
                cards += [c.credential for c in drain(codec, buffer) if hasattr(c, "credential")]
        assert cards[0] == "0012AB34CD"
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "simulate", "card_reader", "em4100_id12", "nowhere"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 1 and "not a listen address" in bad.stderr

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
    # A file that is not UTF-8 (damaged, or saved in another encoding) is a clear problem, not a traceback.
    damaged = tmp_path / "damaged.yaml"
    damaged.write_bytes(b"gateway:\n  site: \xff\xfe\n")
    capsys.readouterr()
    assert main(["config", "check", str(damaged)]) == 2
    assert "not UTF-8 text: byte 0xff at offset 17" in capsys.readouterr().err


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


# -- day-one errors: each at its line, all at once, in our words ------------------------------------

PYDANTIC_PHRASES = (
    "Value error",
    "Assertion failed",
    "Input should",
    "Extra inputs",
    "Field required",
    "[type=",
)


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line of ``text`` that contains ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} times"
    return hits[occurrence - 1]


def config_check(path: Path) -> subprocess.CompletedProcess[str]:
    """``edge-agent config check FILE`` as a separate process, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


CROSS_REFERENCES = """\
gateway:
  site: north
  id: gw-1
devices:
  - kind: card_reader
    id: main-reader
    profile: em4100_id12
    simulated: true
  - kind: turnstile
    id: main-turnstile
    profile: turnstile_stx_xor
    simulated: true
  - kind: card_reader
    id: main-turnstile
    profile: em4100_id12
    simulated: true
  - kind: card_reader
    id: side-reader
    profile: em4100_id12
    simulated: true
gates:
  - id: main
    readers:
      - device: main-readr
    turnstile: main-turnstle
  - id: side
    readers:
      - device: side-reader
    turnstile: side-reader
  - id: main
    readers:
      - device: side-reader
cameras:
  - device: {kind: camera_sim, id: cam-1}
    face:
      card_gate: mian
    security:
      zones:
        - {id: courtyard, points: [[0, 0], [100, 0], [100, 100]]}
      lines:
        - {id: gate-line, start: [0, 50], end: [100, 50]}
      rules:
        - {kind: intrusion, id: after-hours, zone: courtyrd}
        - {kind: line_crossing, id: after-hours, line: courtyard}
        - {kind: tailgating, id: tail, line: gate-line, direction: a_to_b, gate: sdie}
        - {kind: loitering, id: linger, zone: playground, dwell_s: 30}
"""


def test_every_cross_reference_error_at_the_line_of_its_field(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CROSS_REFERENCES)
    proc = config_check(config)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    text = CROSS_REFERENCES
    expected = [
        (
            line_of(text, "id: main-turnstile", 2),
            "devices.2.id: device ids must be unique; used twice: "
            f"main-turnstile (first at line {line_of(text, 'id: main-turnstile')})",
        ),
        (
            line_of(text, "device: main-readr"),
            "gates.0.readers.0.device: gate main: unknown card reader "
            "'main-readr' (did you mean 'main-reader'?)",
        ),
        (
            line_of(text, "turnstile: main-turnstle"),
            "gates.0.turnstile: gate main: unknown turnstile or relay "
            "door 'main-turnstle' (did you mean 'main-turnstile'?)",
        ),
        (
            line_of(text, "turnstile: side-reader"),
            "gates.1.turnstile: gate side: 'side-reader' is a card reader, not a turnstile or relay door",
        ),
        (
            line_of(text, "- id: main", 2),
            "gates.2.id: gate ids must be unique; used twice: main "
            f"(first at line {line_of(text, '- id: main')})",
        ),
        (
            line_of(text, "device: side-reader", 2),
            "gates.2.readers.0.device: reader 'side-reader' feeds both "
            f"gate side and main (first at line {line_of(text, 'device: side-reader')})",
        ),
        (
            line_of(text, "card_gate: mian"),
            "cameras.0.face.card_gate: camera cam-1: card_gate: unknown gate 'mian' (did you mean 'main'?)",
        ),
        (
            line_of(text, "zone: courtyrd"),
            "cameras.0.security.rules.0.zone: rule after-hours: unknown zone "
            "'courtyrd' (did you mean 'courtyard'?)",
        ),
        (
            line_of(text, "line: courtyard"),
            "cameras.0.security.rules.1.id: rule ids must be unique; used "
            f"twice: after-hours (first at line {line_of(text, 'zone: courtyrd')})",
        ),
        (
            line_of(text, "line: courtyard"),
            "cameras.0.security.rules.1.line: rule after-hours: 'courtyard' is a zone, not a line",
        ),
        (
            line_of(text, "gate: sdie"),
            "cameras.0.security.rules.2.gate: camera cam-1: rule tail: unknown gate "
            "'sdie' (did you mean 'side'?)",
        ),
        (
            line_of(text, "zone: playground"),
            "cameras.0.security.rules.3.zone: rule linger: unknown zone "
            "'playground'; this camera has: courtyard",
        ),
    ]
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{config}: {len(expected)} problem(s)", proc.stderr
    assert lines[1:] == [f"{config}:{line}: {message}" for line, message in expected], proc.stderr
    assert not [phrase for phrase in PYDANTIC_PHRASES if phrase in proc.stderr], proc.stderr


def test_unknown_keys_and_values_get_a_did_you_mean_in_our_words(tmp_path: Path) -> None:
    text = """\
gateway:
  site: north
  id: gw-1
  timezon: Europe/Paris
agent:
  log_level: warn
  heartbeat_interval: 5
mqtt:
  keepalive_s: soon
devices:
  - kind: card_readr
    id: r0
  - id: r1
cameras:
  - device: {kind: camera_sim, id: cam-1}
    security:
      rules:
        - {kind: intrusion, id: r, zone: z, colr: 1}
"""
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    proc = config_check(config)
    assert proc.returncode == 2
    found = proc.stderr.splitlines()[1:]
    assert found == [
        f"{config}:{line_of(text, 'timezon')}: gateway.timezon: unknown key 'timezon' "
        "(did you mean 'timezone'?)",
        f"{config}:{line_of(text, 'log_level')}: agent.log_level: must be one of 'debug', 'info', "
        "'warning' or 'error' (got 'warn') (did you mean 'warning'?)",
        f"{config}:{line_of(text, 'heartbeat_interval')}: agent.heartbeat_interval: unknown key "
        "'heartbeat_interval' (did you mean 'heartbeat_interval_s'?)",
        f"{config}:{line_of(text, 'keepalive_s')}: mqtt.keepalive_s: must be a whole number (got 'soon')",
        f"{config}:{line_of(text, 'card_readr')}: devices.0: unknown kind 'card_readr' (did you mean "
        "'card_reader'?); kinds: card_reader, turnstile, relay_door, osdp, keyboard_wedge, gpio_wiegand, "
        "zkteco, zkteco_push, hikvision, onvif, modbus_io",
        f"{config}:{line_of(text, 'id: r1')}: devices.1: needs a 'kind' key saying what this is: one of "
        "card_reader, turnstile, relay_door, osdp, keyboard_wedge, gpio_wiegand, zkteco, zkteco_push, "
        "hikvision, onvif, modbus_io",
        f"{config}:{line_of(text, 'colr')}: cameras.0.security.rules.0.colr: unknown key 'colr'; this block "
        "takes: id, severity, cooldown_s, schedule, kind, zone",
    ], proc.stderr
    assert not [phrase for phrase in PYDANTIC_PHRASES if phrase in proc.stderr], proc.stderr


def test_field_errors_are_phrased_as_ours(tmp_path: Path) -> None:
    text = """\
gateway:
  site: north
  id: "bad id"
outbox: [1]
simulated:
  - id: a
    interval_s: -1
gates:
  - id: g
    readers: []
    attendance:
      sessions:
        - {id: s, weekdays: [], start: "08:00", end: "09:00"}
  - id: h
    readers: [{device: r}]
    attendance:
      sessions:
        - {id: s1, weekdays: [mon], start: "08:00", end: "09:00"}
        - {id: s1, weekdays: [tue], start: "08:00", end: "09:00"}
"""
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    proc = config_check(config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[1:] == [
        f"{config}:{line_of(text, 'bad id')}: gateway.id: must be 1-64 letters, digits, '_', '.', '-' and "
        "start with a letter or digit",
        f"{config}:{line_of(text, 'outbox')}: outbox: must be a block of 'key: value' lines, not list",
        f"{config}:{line_of(text, 'interval_s')}: simulated.0.interval_s: must be greater than 0 (got -1)",
        f"{config}:{line_of(text, 'readers')}: gates.0.readers: needs at least 1 item(s), has 0",
        f"{config}:{line_of(text, 'weekdays')}: gates.0.attendance.sessions.0: a session needs at least one "
        "weekday",
        f"{config}:{line_of(text, 'id: s1')}: gates.1.attendance.sessions: session ids must be unique within "
        "a point; used twice: s1",
    ], proc.stderr
    assert not [phrase for phrase in PYDANTIC_PHRASES if phrase in proc.stderr], proc.stderr


def test_the_models_on_their_own_still_refuse_every_bad_reference() -> None:
    """Without the loader (a library user, a test), validation raises with every problem of the
    model that found them, each with its path."""
    import yaml
    from pydantic import ValidationError

    from edge_agent.config import GatewayConfig, SecurityConfig

    data = yaml.safe_load(CROSS_REFERENCES)
    security = data["cameras"][0].pop("security")
    with pytest.raises(ValidationError) as info:
        GatewayConfig.model_validate(data)
    text = str(info.value)
    for path in ("devices.2.id", "gates.0.readers.0.device", "gates.0.turnstile", "cameras.0.face.card_gate"):
        assert f"{path}: " in text
    assert "(first at devices.1.id)" in text
    with pytest.raises(ValidationError) as info:
        SecurityConfig.model_validate(security)
    text = str(info.value)
    for path in ("rules.0.zone", "rules.1.id", "rules.1.line", "rules.3.zone"):
        assert f"{path}: " in text


def test_unknown_keys_and_wrong_references_are_reported_together(tmp_path: Path) -> None:
    """The usual first file: a misspelt key and a gate naming a device that is spelt otherwise. Both
    show at once, by line; a value that does not validate still holds the references back."""
    text = """\
gateway: {site: north, id: gw-1}
devices:
  - kind: card_reader
    id: gate-reader
    profile: em4100_id12
    simulated: true
    sim_intervl_s: 2
gates:
  - id: main
    readers: [{device: gate-reder}]
"""
    config = tmp_path / "gateway.yaml"
    config.write_text(text)
    proc = config_check(config)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[1:] == [
        f"{config}:{line_of(text, 'sim_intervl_s')}: devices.0.sim_intervl_s: unknown key 'sim_intervl_s' "
        "(did you mean 'sim_interval_s'?)",
        f"{config}:{line_of(text, 'gate-reder')}: gates.0.readers.0.device: gate main: unknown card reader "
        "'gate-reder' (did you mean 'gate-reader'?)",
    ], proc.stderr
    # A wrong value (not a key) leaves the section unreadable: its references wait for the fix.
    config.write_text(text.replace("sim_intervl_s: 2", "sim_interval_s: soon"))
    proc = config_check(config)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()[1:]
    assert len(lines) == 1 and "sim_interval_s" in lines[0] and "gate-reder" not in proc.stderr, proc.stderr


def test_analysis_width_needs_the_size_pixel_zones_were_drawn_on() -> None:
    """A shrunk frame would put pixel zones elsewhere: refused without reference_size, accepted with
    it (the zones are then scaled to the analysed frame) or with normalized coordinates."""
    camera = """
cameras:
  - device: {{kind: camera, id: cam-1, url: /srv/clip.avi, analysis_width: 640}}
    security:
      {extra}
      zones:
        - {{id: yard, {coords} points: [[10, 10], [300, 10], [300, 200]]}}
      rules: [{{id: r1, kind: intrusion, zone: yard}}]
"""
    head = "gateway:\n  site: north\n  id: gw-1\n"
    with pytest.raises(ConfigFileError, match=r"need security\.reference_size"):
        parse_config(head + camera.format(extra="", coords=""))
    parse_config(head + camera.format(extra="reference_size: [1280, 720]", coords=""))
    normalized = camera.replace("[[10, 10], [300, 10], [300, 200]]", "[[0.1, 0.1], [0.5, 0.1], [0.5, 0.4]]")
    parse_config(head + normalized.format(extra="", coords="coords: normalized,"))

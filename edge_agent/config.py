"""The gateway's configuration: one YAML file, one root pydantic model composed of the components'.

Components keep their own models next to them (``sync.outbox.OutboxConfig``,
``sync.mqtt_link.MqttConfig``, ...); this module composes them, reads the YAML with line numbers,
and turns validation errors into messages that point at the YAML line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from device_drivers.config import CardReaderConfig, DeviceConfig, RelayDoorConfig, TurnstileConfig
from device_drivers.osdp import OsdpBusConfig
from edge_agent.api.settings import ApiSettings
from edge_agent.cameras import CameraSetup
from edge_agent.commands import CommandSettings
from edge_agent.errors import ConfigError
from edge_agent.faces import FaceSettings
from edge_agent.gates import GateConfig
from sync.mqtt_link import MqttConfig
from sync.outbox import OutboxConfig

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_WORDS = ("password", "secret", "token", "private_key", "psk", "scbk")


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("must be 1-64 letters, digits, '_', '.', '-' and start with a letter or digit")
    return value


class GatewayIdentity(BaseModel):
    """Who this gateway is; these name every topic and every event ``source``."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(description="Campus/site id, e.g. 'north-campus'.")
    id: str = Field(description="Gateway id, unique within the site, e.g. 'gw-gate-1'.")
    name: str = Field("", description="Human-readable name shown on consoles.")
    timezone: str = Field(
        "UTC",
        description="IANA time zone of the campus (e.g. 'Asia/Shanghai'); schedules and timetables use it.",
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    _site = field_validator("site")(classmethod(lambda cls, v: _check_id(v)))
    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))


class AgentConfig(BaseModel):
    """Process-level settings of the agent."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str = Field(
        "/var/lib/edge-agent",
        description="Where the SQLite files live; overridden by --data-dir or EDGE_AGENT_DATA_DIR.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level; SIGHUP reloads it."
    )
    shutdown_timeout_s: float = Field(
        10.0, gt=0, le=300, description="On SIGTERM, how long to keep publishing the backlog before leaving."
    )
    heartbeat_interval_s: float = Field(
        30.0, gt=0, description="How often the gateway reports its own heartbeat event."
    )
    alert_snapshot_retention_s: float = Field(
        86400.0,
        ge=0,
        description="How long the local alert book keeps alert snapshots (they may show faces) for the "
        "console; 0 keeps none. The centre's copy is its own retention.",
    )
    alert_retention_s: float = Field(
        30 * 86400.0, gt=0, description="How long the local alert book keeps alerts."
    )
    telemetry_interval_s: float = Field(
        60.0, gt=0, description="How often counters go to the `telemetry` topic (not stored while offline)."
    )
    roster_seed: str | None = Field(
        None,
        description="A roster snapshot (JSON file, the format the centre publishes) applied at start when "
        "the local roster is empty: first install, demo. A relative path is relative to the config file.",
    )


class SimulatedSourceConfig(BaseModel):
    """A simulated device for demos and tests: it reports heartbeats (and optional test alerts)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Device id; becomes the last part of the event source.")
    kind: Literal["heartbeat"] = Field("heartbeat", description="What the simulated device does.")
    interval_s: float = Field(1.0, gt=0, description="Seconds between heartbeat events.")
    test_alert_interval_s: float | None = Field(
        None, gt=0, description="If set, raise a security test alert this often (to exercise the alert lane)."
    )

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))


class GatewayConfig(BaseModel):
    """The root of the configuration file."""

    model_config = ConfigDict(extra="forbid")

    gateway: GatewayIdentity = Field(description="Identity of this gateway.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Process settings.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Broker connection.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Store-and-forward.")
    simulated: list[SimulatedSourceConfig] = Field(
        default_factory=list,
        description="Simulated heartbeat devices (demo and tests); simulated card readers present cards "
        "through their own `sim_cards`.",
    )
    devices: list[DeviceConfig] = Field(
        default_factory=list,
        description="Card readers, OSDP buses, turnstiles and doors; `kind` selects the driver.",
    )
    gates: list[GateConfig] = Field(default_factory=list, description="Gates, doors and classroom readers.")
    cameras: list[CameraSetup] = Field(default_factory=list, description="Cameras and their analysis.")
    faces: FaceSettings = Field(default_factory=FaceSettings, description="Face recognition settings.")
    api: ApiSettings = Field(default_factory=ApiSettings, description="Local API, metrics and console.")
    commands: CommandSettings = Field(
        default_factory=CommandSettings,
        description="Remote management over MQTT: signed commands (docs/COMMANDS.md).",
    )

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        ids: list[str] = [s.id for s in self.simulated]
        readers: set[str] = set()
        openers: set[str] = set()
        for device in self.devices:
            if isinstance(device, OsdpBusConfig):
                ids.append(device.id)
                ids.extend(r.id for r in device.readers)
                readers.update(r.id for r in device.readers)
            else:
                ids.append(device.id)
                if isinstance(device, CardReaderConfig):
                    readers.add(device.id)
                elif isinstance(device, TurnstileConfig | RelayDoorConfig):
                    openers.add(device.id)
        ids.extend(c.id for c in self.cameras)
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"device ids must be unique; used twice: {', '.join(dupes)}")
        used: dict[str, str] = {}
        for gate in self.gates:
            for reader in gate.readers:
                if reader.device not in readers:
                    raise ValueError(
                        f"gate {gate.id}: reader {reader.device!r} is not a configured card reader"
                    )
                if reader.device in used:
                    raise ValueError(
                        f"reader {reader.device!r} feeds both gate {used[reader.device]} and {gate.id}"
                    )
                used[reader.device] = gate.id
            if gate.turnstile is not None and gate.turnstile not in openers:
                raise ValueError(
                    f"gate {gate.id}: {gate.turnstile!r} is not a configured turnstile or relay door"
                )
        gate_ids = [g.id for g in self.gates]
        if len(gate_ids) != len(set(gate_ids)):
            raise ValueError("gate ids must be unique")
        for camera in self.cameras:
            for rule in camera.security.rules if camera.security else []:
                rule_gate = getattr(rule, "gate", None)
                if rule_gate is not None and rule_gate not in gate_ids:
                    raise ValueError(f"camera {camera.id}: rule {rule.id} names unknown gate {rule_gate!r}")
            if camera.face and camera.face.card_gate and camera.face.card_gate not in gate_ids:
                raise ValueError(
                    f"camera {camera.id}: card_gate {camera.face.card_gate!r} is not a configured gate"
                )
        return self


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located by YAML line where possible."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"

    def located(self, source: str) -> str:
        """``file:line: path: message``, the form editors and CI logs link to."""
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self}"


class ConfigFileError(ConfigError):
    """A configuration file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.path))
        super().__init__(
            f"{source}: {len(self.issues)} problem(s)\n" + "\n".join(i.located(source) for i in self.issues),
            code="bad_config",
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys: silently keeping the last one hides mistakes."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _mapping_keys(node: yaml.Node | None) -> set[str]:
    if isinstance(node, yaml.MappingNode):
        return {str(k.value) for k, _ in node.value}
    return set()


def _clean_loc(root: yaml.Node | None, loc: Sequence[int | str]) -> list[int | str]:
    """Drop the tags that discriminated unions add to an error path ('card_reader', 'heartbeat')."""
    out: list[int | str] = []
    current = root
    for i, part in enumerate(loc):
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            keys = _mapping_keys(current)
            if part not in keys and i + 1 < len(loc) and str(loc[i + 1]) in keys:
                continue
            current = next((v for k, v in current.value if k.value == part), None)
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
        else:
            current = None
        out.append(part)
    return out


def _node_at(node: yaml.Node | None, loc: Sequence[int | str]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at a (cleaned) error location, or the deepest parent found (exact=False)."""
    current = node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if key_node.value == part:
                    current = value_node
                    break
            else:
                return current, False
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
        else:
            return current, False
    return current, True


def _key_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if key_node.value == key:
                return key_node  # type: ignore[no-any-return]
    return None


def _issues(err: ValidationError, root: yaml.Node | None) -> Iterator[ConfigIssue]:
    for e in err.errors():
        loc = _clean_loc(root, e["loc"])
        node, exact = _node_at(root, loc)
        message = e["msg"]
        if e["type"] == "extra_forbidden" and loc:
            parent, _ = _node_at(root, loc[:-1])
            key = _key_node(parent, str(loc[-1]))
            node = key or node
            if any(word in str(loc[-1]).lower() for word in _SECRET_WORDS):
                message += (
                    "; secrets never go in the YAML: put them in $CREDENTIALS_DIRECTORY or the environment "
                    "(see the *_credential settings)"
                )
        elif e["type"] == "missing":
            message = f"{message} (required)"
        line = node.start_mark.line + 1 if node is not None else None
        if not exact and node is not None and e["type"] != "extra_forbidden":
            message += " (in this block)"
        yield ConfigIssue(".".join(str(p) for p in loc), line, message)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate configuration text; raises :class:`ConfigFileError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigFileError(
            source, [ConfigIssue("", line, f"not valid YAML: {err.problem or err}")]
        ) from err
    except yaml.YAMLError as err:
        raise ConfigFileError(source, [ConfigIssue("", None, f"not valid YAML: {err}")]) from err
    if data is None:
        raise ConfigFileError(source, [ConfigIssue("", 1, "the file is empty")])
    if not isinstance(data, dict):
        raise ConfigFileError(source, [ConfigIssue("", 1, "the top level must be a mapping")])
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigFileError(source, list(_issues(err, root))) from err


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigFileError(str(p), [ConfigIssue("", None, f"cannot read: {err.strerror}")]) from err
    return parse_config(text, str(p))


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file (for editors and CI of configuration repositories)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Campus edge gateway configuration"
    return schema


__all__ = [
    "AgentConfig",
    "ConfigFileError",
    "ConfigIssue",
    "GatewayConfig",
    "GatewayIdentity",
    "SimulatedSourceConfig",
    "config_json_schema",
    "load_config",
    "parse_config",
]

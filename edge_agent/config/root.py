"""The root of the configuration file: composes the components' leaf models and checks the
references between them (a gate naming a reader, a rule naming a gate)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator

from device_drivers import CardReaderConfig, DeviceConfig, OsdpBusConfig, RelayDoorConfig, TurnstileConfig
from edge_agent.config.access import GateConfig
from edge_agent.config.api import ApiSettings
from edge_agent.config.cameras import CameraSetup, FaceSettings, VisionSettings
from edge_agent.config.commands import CommandSettings
from edge_agent.config.identity import AgentConfig, GatewayIdentity, SimulatedSourceConfig
from edge_agent.config.references import (
    Loc,
    ReferenceProblem,
    door_problems,
    duplicates,
    raise_unless_deferred,
    unknown,
)
from edge_agent.config.terminals import TerminalSetup
from sync import MqttConfig, OutboxConfig

TERMINAL_KINDS = frozenset({"zkteco", "hikvision"})
"""Device kinds whose records go through ``terminals:`` (a ``zkteco_push`` listener's terminals too)."""


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
    terminals: list[TerminalSetup] = Field(
        default_factory=list,
        description="Vendor terminals' records: attendance point, timetable and gate of each (optional: "
        "a terminal not listed counts for a point named after it, with no timetable).",
    )
    faces: FaceSettings = Field(default_factory=FaceSettings, description="Face recognition settings.")
    vision: VisionSettings = Field(
        default_factory=VisionSettings, description="Model runtime: execution providers of every model."
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="Local API, metrics and console.")
    commands: CommandSettings = Field(
        default_factory=CommandSettings,
        description="Remote management over MQTT: signed commands (docs/COMMANDS.md).",
    )

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> GatewayConfig:
        raise_unless_deferred(self.reference_problems(), info)
        return self

    def reference_problems(self) -> list[ReferenceProblem]:
        """Every wrong reference between the sections, each at the field holding the bad value:
        ids used twice, gates naming a missing reader or turnstile, a reader feeding two gates,
        cameras naming a missing gate, and each camera's own zones, lines and rules."""
        ids: list[tuple[str, Loc]] = [
            (sim.id, ("simulated", i, "id")) for i, sim in enumerate(self.simulated)
        ]
        kinds: dict[str, str] = {}
        readers: set[str] = set()
        openers: set[str] = set()
        terminals: set[str] = set()
        for i, device in enumerate(self.devices):
            ids.append((device.id, ("devices", i, "id")))
            kinds.setdefault(
                device.id, "OSDP bus" if device.kind == "osdp" else device.kind.replace("_", " ")
            )
            if device.kind in TERMINAL_KINDS:
                terminals.add(device.id)
            # A push listener's terminals are devices of their own (each its own event source).
            for j, pushing in enumerate(getattr(device, "terminals", None) or ()):
                ids.append((pushing.id, ("devices", i, "terminals", j, "id")))
                kinds.setdefault(pushing.id, f"{device.kind.replace('_', ' ')} terminal")
                terminals.add(pushing.id)
            if isinstance(device, OsdpBusConfig):
                for j, osdp_reader in enumerate(device.readers):
                    ids.append((osdp_reader.id, ("devices", i, "readers", j, "id")))
                    kinds.setdefault(osdp_reader.id, "OSDP reader")
                    readers.add(osdp_reader.id)
            elif isinstance(device, CardReaderConfig):
                readers.add(device.id)
            elif isinstance(device, TurnstileConfig | RelayDoorConfig):
                openers.add(device.id)
        ids += [(camera.id, ("cameras", i, "device", "id")) for i, camera in enumerate(self.cameras)]
        for camera in self.cameras:
            kinds.setdefault(camera.id, "camera")
        problems = duplicates(ids, "device ids")
        problems += duplicates([(g.id, ("gates", i, "id")) for i, g in enumerate(self.gates)], "gate ids")

        def not_a(value: str, what: str, choices: set[str]) -> str:
            if value in kinds:
                article = "an" if kinds[value][0] in "aeiouAEIOU" else "a"
                return f"{value!r} is {article} {kinds[value]}, not a {what}"
            return unknown(what, value, choices, "`devices`")

        used: dict[str, tuple[str, Loc]] = {}
        for i, gate in enumerate(self.gates):
            for j, reader in enumerate(gate.readers):
                loc: Loc = ("gates", i, "readers", j, "device")
                if reader.device not in readers:
                    message = not_a(reader.device, "card reader", readers)
                    problems.append(ReferenceProblem(loc, f"gate {gate.id}: {message}"))
                elif reader.device in used:
                    other, first = used[reader.device]
                    problems.append(
                        ReferenceProblem(
                            loc, f"reader {reader.device!r} feeds both gate {other} and {gate.id}", first
                        )
                    )
                else:
                    used[reader.device] = (gate.id, loc)
            if gate.turnstile is not None and gate.turnstile not in openers:
                message = not_a(gate.turnstile, "turnstile or relay door", openers)
                problems.append(ReferenceProblem(("gates", i, "turnstile"), f"gate {gate.id}: {message}"))
        problems += duplicates(
            [(t.device, ("terminals", i, "device")) for i, t in enumerate(self.terminals)], "terminals"
        )
        for i, setup in enumerate(self.terminals):
            if setup.device not in terminals:
                message = not_a(setup.device, "ZKTeco or Hikvision terminal", terminals)
                problems.append(ReferenceProblem(("terminals", i, "device"), f"terminals: {message}"))
        gate_ids = {g.id for g in self.gates}
        for i, camera in enumerate(self.cameras):
            security = camera.security
            if security is not None:
                problems += [p.under("cameras", i, "security") for p in security.reference_problems()]
                for j, rule in enumerate(security.rules):
                    rule_gate = getattr(rule, "gate", None)
                    if rule_gate is not None and rule_gate not in gate_ids:
                        message = unknown("gate", rule_gate, gate_ids, "`gates`")
                        loc = ("cameras", i, "security", "rules", j, "gate")
                        problems.append(
                            ReferenceProblem(loc, f"camera {camera.id}: rule {rule.id}: {message}")
                        )
            card_gate = camera.face.card_gate if camera.face else None
            if card_gate is not None and card_gate not in gate_ids:
                message = unknown("gate", card_gate, gate_ids, "`gates`")
                loc = ("cameras", i, "face", "card_gate")
                problems.append(ReferenceProblem(loc, f"camera {camera.id}: card_gate: {message}"))
        problems += door_problems(self.devices, self.gates)
        return problems

"""The root of the configuration file: composes the components' leaf models and checks the
references between them (a gate naming a reader, a rule naming a gate)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers import CardReaderConfig, DeviceConfig, OsdpBusConfig, RelayDoorConfig, TurnstileConfig
from edge_agent.config.access import GateConfig
from edge_agent.config.api import ApiSettings
from edge_agent.config.cameras import CameraSetup, FaceSettings
from edge_agent.config.commands import CommandSettings
from edge_agent.config.identity import AgentConfig, GatewayIdentity, SimulatedSourceConfig
from sync import MqttConfig, OutboxConfig


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

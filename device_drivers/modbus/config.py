"""Configuration of Modbus I/O modules. A leaf: pydantic and device_drivers._io.config only.

That ``profile`` names a Modbus I/O profile, and that every input and output channel exists in
it, is checked where profiles can be read (:func:`device_drivers.modbus.profile.check_config`)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_drivers._io.config import NetworkDeviceConfig

InputRole = Literal["door_contact", "fire_alarm", "generic"]


class ModbusInputConfig(BaseModel):
    """One digital input of the module: what it is wired to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Input name, unique on this device.")
    address: int = Field(
        ge=0,
        description="Input channel of the module, from 0 (the profile maps it to a Modbus address: a "
        "discrete input, a coil or a bit of a register).",
    )
    role: InputRole = Field(
        "generic", description="door_contact (open = active), fire_alarm (in alarm = active) or generic."
    )
    active_low: bool = Field(
        False,
        description="The input reads 0 when active (a normally closed door contact reads 1 while closed: "
        "set this to make 'open' the active state).",
    )
    door: str | None = Field(
        None,
        description="For a door contact: the door it watches, as a gate names it (`gates[].door`, a "
        "Modbus output's `door`, or `gates[].turnstile`, a relay door's device id).",
    )
    zone: str | None = Field(None, description="For a fire alarm: the zone it covers (`gates[].zone`).")
    debounce_ms: int = Field(
        50, ge=0, le=60_000, description="A change counts once the input held it this long."
    )

    @model_validator(mode="after")
    def _target(self) -> Self:
        if self.role == "door_contact" and not self.door:
            raise ValueError(f"input {self.name}: a door_contact needs `door`")
        if self.role == "fire_alarm" and not self.zone:
            raise ValueError(f"input {self.name}: a fire_alarm needs `zone`")
        return self

    @property
    def target(self) -> str | None:
        """What the input's readings name: the door of a contact, the zone of a fire alarm."""
        if self.role == "fire_alarm":
            return self.zone
        return self.door or self.zone


class ModbusOutputConfig(BaseModel):
    """One relay (coil) of the module: the door it opens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Output name, unique on this device.")
    coil: int = Field(ge=0, description="Output channel of the module, from 0 (the profile maps it).")
    door: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Door id this relay opens; a gate opens it with `door: <this id>`.",
    )
    pulse_ms: int = Field(500, gt=0, le=600_000, description="How long an open closes the relay.")


class ModbusIoConfig(NetworkDeviceConfig):
    """A Modbus TCP or RTU digital I/O module: door contacts and fire-alarm inputs, door relays."""

    kind: Literal["modbus_io"] = Field(description="Selects this driver.")
    transport: Literal["tcp", "rtu"] = Field(
        "tcp", description="tcp: Modbus TCP to `host`:`port` (502); rtu: Modbus RTU on `serial_port`."
    )
    serial_port: str | None = Field(
        None,
        description="RTU: pyserial port URL (`/dev/ttyUSB0`, `/dev/serial/by-id/...`, "
        "`socket://host:port` for a serial-to-Ethernet converter).",
    )
    baudrate: int = Field(9600, gt=0, description="RTU: line speed.")
    parity: Literal["N", "E", "O"] = Field("N", description="RTU: parity (N, E or O).")
    stopbits: Literal[1, 2] = Field(1, description="RTU: stop bits.")
    unit: int = Field(1, ge=0, le=247, description="Modbus unit (slave) id of the module.")
    profile: str = Field(
        description="I/O-module profile: a shipped id (`generic_8di_8do`...) or a path to a YAML file."
    )
    poll_interval_s: float = Field(0.1, gt=0, le=60, description="How often the inputs are read.")
    failures_before_offline: int = Field(
        3,
        ge=1,
        le=100,
        description="Consecutive timeouts (no answer) after which the link is dropped, reported offline "
        "and reconnected with the backoff. Exception responses do not count: the module answered.",
    )
    inputs: list[ModbusInputConfig] = Field(default_factory=list, description="Inputs in use.")
    outputs: list[ModbusOutputConfig] = Field(default_factory=list, description="Relays in use.")
    sim_door_follows_relay: bool = Field(
        False,
        description="Simulated module only (demo traffic): when a relay with a `door` closes, someone "
        "opens that door (its door contacts open 0.5 s later, for `sim_door_open_s`).",
    )
    sim_door_open_s: float = Field(
        2.0, gt=0, le=3600, description="Simulated module: how long a simulated door opening lasts."
    )
    sim_forced_every_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Simulated module only: this often a door contact opens with no relay before it (a "
        "forced door), the module's door contacts in turn. None (default): never.",
    )
    sim_fire_alarm_every_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Simulated module only: this often its `fire_alarm` inputs become active (the first "
        "time after that long), and clear `sim_fire_alarm_s` later. None (default): never.",
    )
    sim_fire_alarm_s: float = Field(
        10.0, gt=0, le=3600, description="Simulated module: how long each simulated fire alarm lasts."
    )

    @model_validator(mode="after")
    def _check_host(self) -> Self:
        # Overrides the base check of the same name: an RTU module has a serial port, no host.
        if not self.simulated:
            if self.transport == "tcp" and self.host is None:
                raise ValueError("give a host, or set simulated: true")
            if self.transport == "rtu" and self.serial_port is None:
                raise ValueError("an RTU module needs `serial_port`, or set simulated: true")
        return self

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for what, names in (
            ("input names", [i.name for i in self.inputs]),
            ("output names", [o.name for o in self.outputs]),
            ("input channels", [str(i.address) for i in self.inputs]),
            ("output channels", [str(o.coil) for o in self.outputs]),
            ("output doors", [o.door for o in self.outputs if o.door]),
        ):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what} must be unique; used twice: {', '.join(twice)}")
        return self

    def output_for_door(self, door: str) -> ModbusOutputConfig | None:
        """The relay that opens ``door``, if this module has it."""
        return next((o for o in self.outputs if o.door == door), None)


__all__ = ["InputRole", "ModbusInputConfig", "ModbusIoConfig", "ModbusOutputConfig"]

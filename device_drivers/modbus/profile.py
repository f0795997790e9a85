"""I/O-module profiles: where a module keeps its digital inputs and its relays. Data, validated by
:class:`ModbusProfile`; the shipped ones are YAML files in ``firmware_profiles/modbus/``.

Channels are numbered from 0 in the config (``inputs[].address``, ``outputs[].coil``); the profile
turns a channel into the Modbus request that reads or writes it, so a config does not change when a
module keeps its inputs in a register instead of as discrete inputs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device_drivers.errors import ProfileError
from device_drivers.modbus.config import ModbusIoConfig
from firmware_profiles import PROFILE_DIR

MODBUS_PROFILE_DIR = PROFILE_DIR / "modbus"

BitTable = Literal["discrete_inputs", "coils", "input_registers", "holding_registers"]


class InputBlock(BaseModel):
    """Where the inputs are: a run of bits (discrete inputs, coils) or bits packed in registers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: BitTable = Field(
        description="discrete_inputs (FC 02), coils (FC 01), input_registers (FC 04) or "
        "holding_registers (FC 03, 16 inputs per register)."
    )
    start: int = Field(0, ge=0, le=65535, description="Modbus address of input 0 (or of its register).")
    count: int = Field(gt=0, le=2000, description="Number of inputs.")
    bit_order: Literal["lsb_first", "msb_first"] = Field(
        "lsb_first", description="Registers only: input 0 is the least (or most) significant bit."
    )


class OutputBlock(BaseModel):
    """Where the relays are: coils from ``start``, written one at a time (FC 05)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Literal["coils"] = Field("coils", description="Relays are coils (FC 01 read, FC 05 write).")
    start: int = Field(0, ge=0, le=65535, description="Coil address of relay 0.")
    count: int = Field(gt=0, le=2000, description="Number of relays.")


class ModbusProfile(BaseModel):
    """One I/O module model's register map."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]+$", description="Profile id (the file name without .yaml).")
    family: Literal["modbus_io"] = Field(description="Always modbus_io.")
    name: str = Field("", description="Display name.")
    inputs: InputBlock = Field(description="The digital inputs.")
    outputs: OutputBlock | None = Field(None, description="The relays, if the module has any.")

    @property
    def packed(self) -> bool:
        """Whether the inputs are bits of registers."""
        return self.inputs.table in ("input_registers", "holding_registers")

    def read_span(self) -> tuple[int, int]:
        """``(address, count)`` of the one request that reads every input."""
        if self.packed:
            return self.inputs.start, (self.inputs.count + 15) // 16
        return self.inputs.start, self.inputs.count

    def bits_of(self, values: list[int] | list[bool]) -> list[bool]:
        """The inputs' raw levels from the answer to :meth:`read_span`'s request."""
        if not self.packed:
            return [bool(v) for v in values[: self.inputs.count]]
        bits: list[bool] = []
        for register in values:
            order = range(16) if self.inputs.bit_order == "lsb_first" else range(15, -1, -1)
            bits.extend(bool((int(register) >> b) & 1) for b in order)
        return bits[: self.inputs.count]

    def input_location(self, channel: int) -> tuple[int, int | None]:
        """``(address, bit)`` of input ``channel``; ``bit`` is None for a plain bit table."""
        if not self.packed:
            return self.inputs.start + channel, None
        register, offset = divmod(channel, 16)
        bit = offset if self.inputs.bit_order == "lsb_first" else 15 - offset
        return self.inputs.start + register, bit

    def coil_address(self, channel: int) -> int:
        """Coil address of relay ``channel``."""
        if self.outputs is None:
            raise ValueError(f"profile {self.id} has no relays")
        return self.outputs.start + channel


def profile_paths() -> list[Path]:
    """Every shipped Modbus I/O profile, sorted by name."""
    return sorted(MODBUS_PROFILE_DIR.glob("*.yaml"))


def resolve_modbus_profile(name: str) -> Path:
    """A shipped profile id, or a path to a YAML file."""
    shipped = MODBUS_PROFILE_DIR / f"{name}.yaml"
    if "/" not in name and not name.endswith((".yaml", ".yml")):
        if not shipped.exists():
            known = ", ".join(p.stem for p in profile_paths())
            raise ProfileError(f"unknown Modbus I/O profile {name!r}; shipped: {known}", path=shipped)
        return shipped
    return Path(name)


@functools.lru_cache(maxsize=32)
def _load(path: Path, mtime_ns: int) -> ModbusProfile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ProfileError(f"{path}: cannot read: {err.strerror}", path=path) from err
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}", path=path) from err
    try:
        return ModbusProfile.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in err.errors())
        raise ProfileError(f"{path}: {problems}", path=path) from err


def load_modbus_profile(name: str) -> ModbusProfile:
    """Load and validate a profile by id or path (cached while the file is unchanged)."""
    path = resolve_modbus_profile(name).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise ProfileError(f"{path}: cannot read: {err.strerror}", path=path) from err
    return _load(path, mtime)


@dataclass(frozen=True, slots=True)
class ChannelProblem:
    """An input or output of a config that its profile does not have."""

    field: str
    index: int
    message: str


def check_config(config: ModbusIoConfig, profile: ModbusProfile) -> list[ChannelProblem]:
    """Inputs and outputs of ``config`` beyond what ``profile`` has."""
    problems = []
    for i, item in enumerate(config.inputs):
        if item.address >= profile.inputs.count:
            problems.append(
                ChannelProblem(
                    "inputs",
                    i,
                    f"input {item.name}: channel {item.address} is beyond the {profile.inputs.count} "
                    f"inputs of profile {profile.id}",
                )
            )
    relays = profile.outputs.count if profile.outputs is not None else 0
    for i, out in enumerate(config.outputs):
        if out.coil >= relays:
            problems.append(
                ChannelProblem(
                    "outputs",
                    i,
                    f"output {out.name}: relay {out.coil} is beyond the {relays} of {profile.id}",
                )
            )
    return problems


def check_modbus_io(config: ModbusIoConfig) -> None:
    """The registry's check of a ``modbus_io`` device: its profile loads, and has every channel it
    uses; ``ValueError`` otherwise (reported by ``edge-agent config check`` at the device)."""
    try:
        profile = load_modbus_profile(config.profile)
    except ProfileError as err:
        raise ValueError(str(err)) from None
    problems = check_config(config, profile)
    if problems:
        raise ValueError("; ".join(p.message for p in problems))


__all__ = [
    "MODBUS_PROFILE_DIR",
    "ChannelProblem",
    "InputBlock",
    "ModbusProfile",
    "OutputBlock",
    "check_config",
    "check_modbus_io",
    "load_modbus_profile",
    "profile_paths",
    "resolve_modbus_profile",
]

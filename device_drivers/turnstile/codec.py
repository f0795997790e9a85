"""Sans-I/O codec for turnstiles and door controllers whose protocol a firmware profile describes:
commands (open A/B, hold open, lock, normal) and events (passage done, timeout, forced, tailgating,
fire alarm, fault, ack/nak) as byte templates over the profile's framing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from device_drivers.errors import MalformedFrame
from device_drivers.profiles.config import Direction, FirmwareProfile, MessageSpec
from device_drivers.profiles.framing import Frame, FrameCodec


@dataclass(frozen=True, slots=True)
class TurnstileMessage:
    """A decoded command or event.

    ``name`` is a command name (``open``, ``hold_open``, ``lock``, ``normal``) when ``kind`` is
    ``command``, an event name (``passage_done``, ``forced``...) when it is ``event``. ``value`` is the
    template's ``{value}`` byte (fault code, acknowledged command code...), ``address`` the RS-485
    address where the framing has one.
    """

    kind: Literal["command", "event"]
    name: str
    direction: Direction | None = None
    value: int | None = None
    address: int | None = None


class TurnstileCodec:
    """Decode and encode a turnstile protocol described by a profile (family turnstile).

    ``address`` is put into encoded frames of addressed protocols; by default the profile's RS-485
    address.
    """

    def __init__(self, profile: FirmwareProfile, address: int | None = None) -> None:
        if profile.turnstile is None:
            raise ValueError(f"profile {profile.id} is a {profile.family}, not a turnstile")
        self.profile = profile
        self.spec = profile.turnstile
        self.frames = FrameCodec(profile.framing, self.spec.code_sizes())
        rs485 = profile.transport.rs485
        self.address = address if address is not None else (rs485.address if rs485 else None)
        if profile.framing.address and self.address is None:
            raise ValueError(f"profile {profile.id} frames carry an address: give one")
        self._by_code: dict[int, list[tuple[Literal["command", "event"], MessageSpec]]] = {}
        for kind, specs in (("command", self.spec.commands), ("event", self.spec.events)):
            for spec in specs:
                self._by_code.setdefault(spec.code, []).append((kind, spec))  # type: ignore[arg-type]
        self._direction_of = {byte: name for name, byte in self.spec.directions.items()}

    def decode(self, buffer: bytes | bytearray | memoryview, start: int = 0) -> tuple[TurnstileMessage, int]:
        """The first message in ``buffer[start:]`` and the bytes it took (see :meth:`FrameCodec.decode`)."""
        frame, consumed = self.frames.decode(buffer, start)
        assert frame.code is not None
        candidates = self._by_code.get(frame.code)
        if not candidates:
            raise MalformedFrame(
                f"unknown code 0x{frame.code:02X}",
                code="unknown_code",
                consumed=consumed,
                raw=bytes(buffer[start : start + consumed]),
            )
        for kind, spec in candidates:
            message = self._match(kind, spec, frame)
            if message is not None:
                return message, consumed
        raise MalformedFrame(
            f"code 0x{frame.code:02X}: payload {frame.data.hex()} fits no template",
            code="bad_data",
            consumed=consumed,
            raw=bytes(buffer[start : start + consumed]),
        )

    def _match(
        self, kind: Literal["command", "event"], spec: MessageSpec, frame: Frame
    ) -> TurnstileMessage | None:
        direction: Direction | None = spec.direction
        value = None
        if len(frame.data) != len(spec.tokens):
            return None
        for token, byte in zip(spec.tokens, frame.data, strict=True):
            if token == "{direction}":
                direction = self._direction_of.get(byte)
                if direction is None:
                    return None
            elif token == "{value}":
                value = byte
            elif int(token, 16) != byte:
                return None
        return TurnstileMessage(kind, spec.name, direction, value, frame.address)

    def spec_for(
        self, kind: Literal["command", "event"], name: str, direction: Direction | None = None
    ) -> MessageSpec:
        """The profile entry that says ``name`` in ``direction``; ``ValueError`` if there is none.
        A code fixed to the direction wins over a ``{direction}`` placeholder."""
        specs = self.spec.commands if kind == "command" else self.spec.events
        named = [s for s in specs if s.name == name]
        if not named:
            raise ValueError(f"profile {self.profile.id} has no {kind} {name}")
        spec = next((s for s in named if s.direction is not None and s.direction == direction), None)
        if spec is None:
            spec = next((s for s in named if s.direction is None), None)
        if spec is None:
            raise ValueError(f"{name} has no code for direction {direction}")
        return spec

    def encode(self, message: TurnstileMessage) -> bytes:
        """The frame for ``message``; raises ``ValueError`` if the profile cannot express it."""
        spec = self.spec_for(message.kind, message.name, message.direction)
        data = bytearray()
        for token in spec.tokens:
            if token == "{direction}":
                if message.direction is None:
                    raise ValueError(f"{message.name} needs a direction")
                data.append(self.spec.directions[message.direction])
            elif token == "{value}":
                if message.value is None:
                    raise ValueError(f"{message.name} needs a value")
                data.append(message.value)
            else:
                data.append(int(token, 16))
        address = message.address if message.address is not None else self.address
        if not self.profile.framing.address:
            address = None
        return self.frames.encode(Frame(data=bytes(data), code=spec.code, address=address))

    def command(self, name: str, direction: Direction | None = None, value: int | None = None) -> bytes:
        """The frame of a command to this device."""
        return self.encode(TurnstileMessage("command", name, direction, value))

    def event(self, name: str, direction: Direction | None = None, value: int | None = None) -> bytes:
        """The frame of an event from this device (simulators)."""
        return self.encode(TurnstileMessage("event", name, direction, value))

    def fault_name(self, value: int | None) -> str | None:
        """The profile's name of a fault code."""
        if value is None:
            return None
        return self.spec.fault_codes.get(value, f"fault_0x{value:02X}")


__all__ = ["TurnstileCodec", "TurnstileMessage"]

"""Turnstile / door controller driver over a pyserial port URL, speaking the protocol its firmware
profile describes (:class:`~device_drivers.turnstile_codec.TurnstileCodec`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from device_drivers.profile import Direction, FirmwareProfile
from device_drivers.serial_driver import BackoffConfig, SerialDeviceConfig, SerialDriver
from device_drivers.simulators import PtyEndpoint, TurnstileSimulator
from device_drivers.turnstile_codec import TurnstileCodec, TurnstileMessage
from device_drivers.types import TurnstileEvent

logger = logging.getLogger(__name__)


class TurnstileConfig(SerialDeviceConfig):
    """A turnstile, speed gate or door controller on a serial (RS-485/RS-232) line."""

    kind: Literal["turnstile"] = Field(description="Selects this driver.")
    address: int | None = Field(
        default=None, ge=0, le=255, description="RS-485 address; default: the profile's."
    )
    sim_passage_delay_s: float = Field(
        default=0.5, ge=0, description="With `simulated`: how long the simulated person takes to pass."
    )

    families: ClassVar[tuple[str, ...]] = ("turnstile",)


class TurnstileDriver(SerialDriver):
    """Commands a turnstile (:meth:`open`, :meth:`hold_open`, :meth:`lock`, :meth:`normal`) and yields
    :class:`TurnstileEvent` readings (plus online/offline).

    Acks are counted, not yielded; a ``nak`` is yielded. Frames from other RS-485 addresses and our
    own commands echoed by a half-duplex adapter are ignored (and counted).
    """

    def __init__(
        self,
        device_id: str,
        url: str | None,
        profile: FirmwareProfile,
        *,
        address: int | None = None,
        backoff: BackoffConfig | None = None,
        simulated: bool = False,
        sim_passage_delay_s: float = 0.5,
    ) -> None:
        if url is None and not simulated:
            raise ValueError("a port URL is needed unless simulated")
        self.turnstile = TurnstileCodec(profile, address)
        self.simulator = (
            TurnstileSimulator(profile, PtyEndpoint(), address=address, passage_delay_s=sim_passage_delay_s)
            if simulated
            else None
        )
        super().__init__(
            device_id,
            url or "",
            profile.transport,
            self.turnstile,
            backoff=backoff,
            inter_byte_timeout_s=profile.timing.inter_byte_timeout_ms / 1000,
            simulator=self.simulator,
        )
        self.profile = profile

    @classmethod
    def from_config(cls, config: TurnstileConfig) -> TurnstileDriver:
        return cls(
            config.id,
            config.port,
            config.load_profile(),
            address=config.address,
            backoff=config.backoff,
            simulated=config.simulated,
            sim_passage_delay_s=config.sim_passage_delay_s,
        )

    async def open(self, direction: Direction) -> None:
        """Let one person through in ``direction`` (open A = entry, open B = exit).

        Returns once the command is written; the passage arrives later as a ``passage_done`` (or
        ``passage_timeout``) event. Raises :class:`DeviceError` (``offline``...) if it cannot be sent.
        """
        await self.write(self.turnstile.command("open", direction))

    async def hold_open(self, direction: Direction = "entry") -> None:
        """Keep the passage open (events, evacuation) until :meth:`normal` or :meth:`lock`."""
        await self.write(self.turnstile.command("hold_open", direction))

    async def lock(self) -> None:
        """Refuse every passage."""
        await self.write(self.turnstile.command("lock"))

    async def normal(self) -> None:
        """Back to normal operation (closed, opened per passage)."""
        await self.write(self.turnstile.command("normal"))

    def _on_value(self, value: TurnstileMessage, at: datetime, received_ns: int) -> None:
        if value.address is not None and value.address != self.turnstile.address:
            self._count("other_address")
            return
        if value.kind == "command":
            self._count("echo")
            return
        if value.name == "ack":
            self._count("ack")
            return
        self._count(value.name)
        detail = self.turnstile.fault_name(value.value) if value.name == "fault" else None
        if value.name == "nak":
            logger.warning("device %s: command 0x%02X refused (nak)", self.device_id, value.value or 0)
        self._emit(
            TurnstileEvent(
                device_id=self.device_id,
                kind=value.name,  # type: ignore[arg-type]
                direction=value.direction,
                at=at,
                detail=detail,
                value=value.value,
                received_ns=received_ns,
            )
        )


__all__ = ["TurnstileConfig", "TurnstileDriver"]

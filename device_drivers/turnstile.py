"""Turnstile / door controller driver over a pyserial port URL, speaking the protocol its firmware
profile describes (:class:`~device_drivers.turnstile_codec.TurnstileCodec`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from device_drivers.errors import DeviceError
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
    retries: int = Field(
        default=1, ge=0, le=5, description="Resends of a confirmed command the device did not acknowledge."
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
        retries: int = 1,
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
        self.retries = retries
        self.response_timeout_s = profile.timing.response_timeout_ms / 1000
        self._awaiting: list[tuple[int, asyncio.Future[bool]]] = []

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
            retries=config.retries,
        )

    async def open(self, direction: Direction, *, confirm: bool = False) -> None:
        """Let one person through in ``direction`` (open A = entry, open B = exit).

        Returns once the command is written; the passage arrives later as a ``passage_done`` (or
        ``passage_timeout``) event. With ``confirm`` it returns once the device acknowledged,
        resending up to ``retries`` times after the profile's response timeout. Raises
        :class:`DeviceError`: ``offline``, ``write_failed``, ``nak``, ``no_ack``.
        """
        await self._command("open", direction, confirm)

    async def hold_open(self, direction: Direction = "entry", *, confirm: bool = False) -> None:
        """Keep the passage open (events, evacuation) until :meth:`normal` or :meth:`lock`."""
        await self._command("hold_open", direction, confirm)

    async def lock(self, *, confirm: bool = False) -> None:
        """Refuse every passage."""
        await self._command("lock", None, confirm)

    async def normal(self, *, confirm: bool = False) -> None:
        """Back to normal operation (closed, opened per passage)."""
        await self._command("normal", None, confirm)

    async def _command(self, name: str, direction: Direction | None, confirm: bool) -> None:
        frame = self.turnstile.command(name, direction)
        if not confirm:
            await self.write(frame)
            return
        code = self.turnstile.spec_for("command", name, direction).code
        loop = asyncio.get_running_loop()
        for _ in range(1 + self.retries):
            answer: asyncio.Future[bool] = loop.create_future()
            pending = (code, answer)
            self._awaiting.append(pending)
            try:
                await self.write(frame)
                accepted = await asyncio.wait_for(answer, self.response_timeout_s)
            except TimeoutError:
                self._count("no_ack")
                continue
            finally:
                self._awaiting.remove(pending)
            if accepted:
                return
            raise DeviceError(f"device {self.device_id} refused {name}", device_id=self.device_id, code="nak")
        raise DeviceError(
            f"device {self.device_id} did not acknowledge {name}", device_id=self.device_id, code="no_ack"
        )

    def _answer(self, value: int | None, accepted: bool) -> bool:
        """Resolve the oldest command waiting for this ack/nak; whether one was waiting."""
        for code, answer in self._awaiting:
            if (value is None or value == code) and not answer.done():
                answer.set_result(accepted)
                return True
        return False

    def _on_value(self, value: TurnstileMessage, at: datetime, received_ns: int) -> None:
        if value.address is not None and value.address != self.turnstile.address:
            self._count("other_address")
            return
        if value.kind == "command":
            self._count("echo")
            return
        if value.name == "ack":
            self._count("ack")
            self._answer(value.value, True)
            return
        if value.name == "nak":
            self._answer(value.value, False)
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

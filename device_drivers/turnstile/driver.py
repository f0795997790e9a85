"""Turnstile / door controller driver over a pyserial port URL, speaking the protocol its firmware
profile describes (:class:`~device_drivers.turnstile.codec.TurnstileCodec`)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from device_drivers._io.backoff import BackoffParameters
from device_drivers._io.serial import SerialDriver
from device_drivers._io.source import AttachedSimulator
from device_drivers.errors import DeviceError
from device_drivers.profiles.config import Direction, FirmwareProfile
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import TurnstileEvent
from device_drivers.turnstile.codec import TurnstileCodec, TurnstileMessage
from device_drivers.turnstile.config import TurnstileConfig

logger = logging.getLogger(__name__)


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
        backoff: BackoffParameters | None = None,
        noise_log_interval_s: float = 10.0,
        simulator: AttachedSimulator | None = None,
        retries: int = 1,
    ) -> None:
        if url is None and simulator is None:
            raise ValueError("a port URL is needed unless simulated")
        self.turnstile = TurnstileCodec(profile, address)
        super().__init__(
            device_id,
            url or "",
            profile.transport,
            self.turnstile,
            backoff=backoff,
            inter_byte_timeout_s=profile.timing.inter_byte_timeout_ms / 1000,
            noise_log_interval_s=noise_log_interval_s,
            simulator=simulator,
        )
        self.profile = profile
        self.retries = retries
        self.response_timeout_s = profile.timing.response_timeout_ms / 1000
        self._awaiting: list[tuple[int, asyncio.Future[bool]]] = []

    @classmethod
    def from_config(
        cls, config: TurnstileConfig, *, simulator: AttachedSimulator | None = None
    ) -> TurnstileDriver:
        """The driver of ``config``; a ``simulated`` device gets its simulator from the registry."""
        return cls(
            config.id,
            config.port,
            load_profile(resolve_profile(config.profile)),
            address=config.address,
            backoff=config.backoff,
            noise_log_interval_s=config.noise_log_interval_s,
            simulator=simulator,
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

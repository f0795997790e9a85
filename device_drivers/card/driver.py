"""Serial card reader driver: EM4100/UID readers and Wiegand-to-serial converters over a pyserial
port URL, decoding with the profile's :class:`~device_drivers.card.codec.CardCodec`."""

from __future__ import annotations

import logging
from datetime import datetime

from device_drivers._io.backoff import BackoffParameters
from device_drivers._io.serial import SerialDriver
from device_drivers._io.source import AttachedSimulator
from device_drivers.card.codec import CardCodec, CardData
from device_drivers.card.config import CardReaderConfig
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.loader import load_profile, resolve_profile

logger = logging.getLogger(__name__)


class CardReaderDriver(SerialDriver):
    """Reads cards; yields :class:`CardRead`, :class:`DeviceOnline` and :class:`DeviceOffline`.

    ``simulator`` (attached by the registry for a ``simulated`` device) is started when the driver
    is entered and gives the port URL; ``url`` is then not needed.
    """

    def __init__(
        self,
        device_id: str,
        url: str | None,
        profile: FirmwareProfile,
        *,
        debounce_s: float = 1.0,
        backoff: BackoffParameters | None = None,
        noise_log_interval_s: float = 10.0,
        simulator: AttachedSimulator | None = None,
    ) -> None:
        if url is None and simulator is None:
            raise ValueError("a port URL is needed unless simulated")
        super().__init__(
            device_id,
            url or "",
            profile.transport,
            CardCodec(profile),
            backoff=backoff,
            inter_byte_timeout_s=profile.timing.inter_byte_timeout_ms / 1000,
            noise_log_interval_s=noise_log_interval_s,
            simulator=simulator,
        )
        self.profile = profile
        self.debounce_ns = int(debounce_s * 1e9)
        self._last: tuple[str, int] = ("", 0)

    @classmethod
    def from_config(
        cls, config: CardReaderConfig, *, simulator: AttachedSimulator | None = None
    ) -> CardReaderDriver:
        """The driver of ``config``; a ``simulated`` device gets its simulator from the registry."""
        return cls(
            config.id,
            config.port,
            load_profile(resolve_profile(config.profile)),
            debounce_s=config.debounce_s,
            backoff=config.backoff,
            noise_log_interval_s=config.noise_log_interval_s,
            simulator=simulator,
        )

    def _on_value(self, value: CardData, at: datetime, received_ns: int) -> None:
        last_credential, last_ns = self._last
        self._last = (value.credential, received_ns)
        if value.credential == last_credential and received_ns - last_ns < self.debounce_ns:
            self._count("repeats")
            return
        self._count("cards")
        self._emit(value.to_read(self.device_id, at, received_ns))


__all__ = ["CardReaderConfig", "CardReaderDriver"]

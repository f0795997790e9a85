"""Serial card reader driver: EM4100/UID readers and Wiegand-to-serial converters over a pyserial
port URL, decoding with the profile's :class:`~device_drivers.card_codec.CardCodec`."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from device_drivers.card_codec import CardCodec, CardData
from device_drivers.profile import FirmwareProfile
from device_drivers.serial_driver import BackoffConfig, SerialDeviceConfig, SerialDriver
from device_drivers.simulators import CardReaderSimulator, PtyEndpoint, card_from_text

logger = logging.getLogger(__name__)


class CardReaderConfig(SerialDeviceConfig):
    """A serial card reader (EM4100 ASCII, UID lines) or a Wiegand-to-serial converter."""

    kind: Literal["card_reader"] = Field(description="Selects this driver.")
    debounce_s: float = Field(
        default=1.0,
        ge=0,
        description="The same card again within this time is one presentation (readers repeat while the "
        "card stays in the field).",
    )

    sim_cards: list[str] = Field(
        default_factory=list,
        description="With `simulated`: cards the simulator presents in turn (hex, or `FC:NUMBER[/BITS]` "
        "for Wiegand).",
    )
    sim_interval_s: float = Field(
        default=5.0, gt=0, description="With `simulated`: time between those cards."
    )

    families: ClassVar[tuple[str, ...]] = ("card_reader", "wiegand_converter")

    @model_validator(mode="after")
    def _sim_cards(self) -> Self:
        if self.sim_cards:
            if not self.simulated:
                raise ValueError("sim_cards needs simulated: true")
            codec = CardCodec(self.load_profile())
            for text in self.sim_cards:
                try:
                    card_from_text(codec, text)
                except ValueError as err:
                    raise ValueError(f"sim_cards: {text!r}: {err}") from None
        return self


class CardReaderDriver(SerialDriver):
    """Reads cards; yields :class:`CardRead`, :class:`DeviceOnline` and :class:`DeviceOffline`.

    With ``simulated`` the driver starts a :class:`CardReaderSimulator` on a pty when entered and
    exposes it as ``simulator``.
    """

    def __init__(
        self,
        device_id: str,
        url: str | None,
        profile: FirmwareProfile,
        *,
        debounce_s: float = 1.0,
        backoff: BackoffConfig | None = None,
        simulated: bool = False,
        sim_cards: list[str] | None = None,
        sim_interval_s: float = 5.0,
    ) -> None:
        if url is None and not simulated:
            raise ValueError("a port URL is needed unless simulated")
        self.simulator = (
            CardReaderSimulator(profile, PtyEndpoint(), cards=sim_cards, interval_s=sim_interval_s)
            if simulated
            else None
        )
        super().__init__(
            device_id,
            url or "",
            profile.transport,
            CardCodec(profile),
            backoff=backoff,
            inter_byte_timeout_s=profile.timing.inter_byte_timeout_ms / 1000,
            simulator=self.simulator,
        )
        self.profile = profile
        self.debounce_ns = int(debounce_s * 1e9)
        self._last: tuple[str, int] = ("", 0)

    @classmethod
    def from_config(cls, config: CardReaderConfig) -> CardReaderDriver:
        return cls(
            config.id,
            config.port,
            config.load_profile(),
            debounce_s=config.debounce_s,
            backoff=config.backoff,
            simulated=config.simulated,
            sim_cards=config.sim_cards,
            sim_interval_s=config.sim_interval_s,
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

"""Configuration of serial card readers. A leaf: pydantic and the shared serial config only."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from device_drivers._io.config import SerialDeviceConfig


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
        if self.sim_cards and not self.simulated:
            raise ValueError("sim_cards needs simulated: true")
        # Whether each card fits the profile is checked by the registry, which reads the profile.
        return self


__all__ = ["CardReaderConfig"]

"""Device configuration: the discriminated union of every driver's config, and the factory.

The agent's root config holds ``devices: list[DeviceConfig]``; ``kind`` selects the driver.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from device_drivers.card_reader import CardReaderConfig, CardReaderDriver
from device_drivers.keyboard_wedge import KeyboardWedgeConfig, KeyboardWedgeReader
from device_drivers.osdp import OsdpBusConfig, OsdpControlPanel
from device_drivers.relay import RelayDoor, RelayDoorConfig
from device_drivers.turnstile import TurnstileConfig, TurnstileDriver
from device_drivers.wiegand_gpio import GpioWiegandConfig, GpioWiegandReader

AnyDeviceConfig = (
    CardReaderConfig
    | TurnstileConfig
    | RelayDoorConfig
    | OsdpBusConfig
    | KeyboardWedgeConfig
    | GpioWiegandConfig
)

DeviceConfig = Annotated[AnyDeviceConfig, Field(discriminator="kind")]
"""Any device's configuration, selected by its ``kind``."""

Driver = (
    CardReaderDriver
    | TurnstileDriver
    | RelayDoor
    | OsdpControlPanel
    | KeyboardWedgeReader
    | GpioWiegandReader
)
"""Any driver: each is an async context manager with ``readings()``."""


def create_driver(config: AnyDeviceConfig) -> Driver:
    """The driver for ``config`` (not started: enter it with ``async with``)."""
    if isinstance(config, CardReaderConfig):
        return CardReaderDriver.from_config(config)
    if isinstance(config, TurnstileConfig):
        return TurnstileDriver.from_config(config)
    if isinstance(config, OsdpBusConfig):
        return OsdpControlPanel.from_config(config)
    if isinstance(config, KeyboardWedgeConfig):
        return KeyboardWedgeReader.from_config(config)
    if isinstance(config, GpioWiegandConfig):
        return GpioWiegandReader.from_config(config)
    return RelayDoor.from_config(config)


__all__ = [
    "CardReaderConfig",
    "DeviceConfig",
    "Driver",
    "RelayDoorConfig",
    "TurnstileConfig",
    "create_driver",
]

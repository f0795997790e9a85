"""Device protocols: sans-I/O codecs, drivers over pyserial port URLs, and simulators."""

from device_drivers.card_codec import CardCodec, CardData, normalise_hex, wiegand_credential
from device_drivers.card_reader import CardReaderConfig, CardReaderDriver
from device_drivers.codecs import codec_for, drain
from device_drivers.config import DeviceConfig, Driver, create_driver
from device_drivers.errors import DeviceError, IncompleteFrame, MalformedFrame
from device_drivers.keyboard_wedge import KeyboardWedgeConfig, KeyboardWedgeReader, KeystrokeDecoder
from device_drivers.osdp import (
    OsdpBusConfig,
    OsdpBusSimulator,
    OsdpControlPanel,
    OsdpReaderConfig,
    OsdpReaderSimulator,
)
from device_drivers.profile import FirmwareProfile, ProfileError, load_profile, resolve_profile
from device_drivers.relay import GpioRelay, MemoryPin, Relay, RelayDoor, RelayDoorConfig
from device_drivers.serial_driver import BackoffConfig
from device_drivers.simulators import (
    CardReaderSimulator,
    PtyEndpoint,
    TcpEndpoint,
    TurnstileSimulator,
    make_simulator,
    run_simulator,
    serve_simulator,
)
from device_drivers.turnstile import TurnstileConfig, TurnstileDriver
from device_drivers.turnstile_codec import TurnstileCodec, TurnstileMessage
from device_drivers.types import CardRead, DeviceOffline, DeviceOnline, DeviceTamper, Reading, TurnstileEvent
from device_drivers.wiegand_gpio import GpioWiegandConfig, GpioWiegandReader, WiegandBitCollector

__all__ = [
    "BackoffConfig",
    "CardCodec",
    "CardData",
    "CardRead",
    "CardReaderConfig",
    "CardReaderDriver",
    "CardReaderSimulator",
    "DeviceConfig",
    "DeviceError",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceTamper",
    "Driver",
    "FirmwareProfile",
    "GpioRelay",
    "GpioWiegandConfig",
    "GpioWiegandReader",
    "IncompleteFrame",
    "KeyboardWedgeConfig",
    "KeyboardWedgeReader",
    "KeystrokeDecoder",
    "MalformedFrame",
    "MemoryPin",
    "OsdpBusConfig",
    "OsdpBusSimulator",
    "OsdpControlPanel",
    "OsdpReaderConfig",
    "OsdpReaderSimulator",
    "ProfileError",
    "PtyEndpoint",
    "Reading",
    "Relay",
    "RelayDoor",
    "RelayDoorConfig",
    "TcpEndpoint",
    "TurnstileCodec",
    "TurnstileConfig",
    "TurnstileDriver",
    "TurnstileEvent",
    "TurnstileMessage",
    "TurnstileSimulator",
    "WiegandBitCollector",
    "codec_for",
    "create_driver",
    "drain",
    "load_profile",
    "make_simulator",
    "normalise_hex",
    "resolve_profile",
    "run_simulator",
    "serve_simulator",
    "wiegand_credential",
]

"""Device protocols as a library: one subpackage per device family (config, sans-I/O codec, driver,
simulator), a registry keyed by ``kind``, typed readings and one root exception.

The agent opens devices with :func:`open_driver` / :func:`open_camera`; simulated devices
(``simulated: true``, ``kind: camera_sim``) are resolved there, so nothing here hands out a
simulator class. Simulators themselves live in each family's ``sim`` module (test and demo
equipment); ``edge-agent simulate`` runs one through :func:`run_simulator`.
"""

from device_drivers._io.backoff import Backoff, BackoffPolicy
from device_drivers._io.config import BackoffConfig, NetworkDeviceConfig
from device_drivers._io.probe import ProbeResult
from device_drivers._io.threads import lower_thread_priority, show_thread_name
from device_drivers.camera.config import CameraConfig, SimulatedCameraConfig, parse_source, redact_url
from device_drivers.camera.driver import Camera
from device_drivers.camera.ffmpeg_limits import bound_allocations
from device_drivers.card.codec import CardCodec, CardData
from device_drivers.card.config import CardReaderConfig
from device_drivers.card.credentials import normalise_hex, wiegand_credential
from device_drivers.card.driver import CardReaderDriver
from device_drivers.errors import CameraError, DeviceError, IncompleteFrame, MalformedFrame, ProfileError
from device_drivers.gpio.codec import WiegandBitCollector
from device_drivers.gpio.config import GpioWiegandConfig
from device_drivers.gpio.driver import GpioWiegandReader
from device_drivers.onvif.discovery import describe as describe_camera
from device_drivers.onvif.discovery import discover as discover_cameras
from device_drivers.onvif.discovery import parse_target as parse_discovery_target
from device_drivers.onvif.discovery import snippet as camera_snippet
from device_drivers.osdp.config import OsdpBusConfig, OsdpReaderConfig
from device_drivers.osdp.driver import OsdpControlPanel
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.framing import drain
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.readings import (
    AttendanceMethod,
    CameraFrame,
    CameraItem,
    CameraOffline,
    CameraOnline,
    CardRead,
    DeviceOffline,
    DeviceOnline,
    DeviceTamper,
    DigitalInput,
    MotionDetected,
    Reading,
    TerminalAccess,
    TerminalAttendance,
    TurnstileEvent,
)
from device_drivers.registry import (
    FAMILIES,
    AnyDeviceConfig,
    CameraDeviceConfig,
    DeviceConfig,
    DeviceFamily,
    Driver,
    SimulatorKind,
    codec_for,
    make_simulator,
    open_camera,
    open_driver,
    run_simulator,
    serve_simulator,
)
from device_drivers.relay.config import RelayDoorConfig
from device_drivers.relay.driver import GpioRelay, Relay, RelayDoor
from device_drivers.secrets import load_password, load_secret
from device_drivers.turnstile.codec import TurnstileCodec, TurnstileMessage
from device_drivers.turnstile.config import TurnstileConfig
from device_drivers.turnstile.driver import TurnstileDriver
from device_drivers.wedge.codec import KeystrokeDecoder
from device_drivers.wedge.config import KeyboardWedgeConfig
from device_drivers.wedge.driver import KeyboardWedgeReader
from device_drivers.zkteco.codec import parse_comm_key

__all__ = [
    "FAMILIES",
    "AnyDeviceConfig",
    "AttendanceMethod",
    "Backoff",
    "BackoffConfig",
    "BackoffPolicy",
    "Camera",
    "CameraConfig",
    "CameraDeviceConfig",
    "CameraError",
    "CameraFrame",
    "CameraItem",
    "CameraOffline",
    "CameraOnline",
    "CardCodec",
    "CardData",
    "CardRead",
    "CardReaderConfig",
    "CardReaderDriver",
    "DeviceConfig",
    "DeviceError",
    "DeviceFamily",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceTamper",
    "DigitalInput",
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
    "MotionDetected",
    "NetworkDeviceConfig",
    "OsdpBusConfig",
    "OsdpControlPanel",
    "OsdpReaderConfig",
    "ProbeResult",
    "ProfileError",
    "Reading",
    "Relay",
    "RelayDoor",
    "RelayDoorConfig",
    "SimulatedCameraConfig",
    "SimulatorKind",
    "TerminalAccess",
    "TerminalAttendance",
    "TurnstileCodec",
    "TurnstileConfig",
    "TurnstileDriver",
    "TurnstileEvent",
    "TurnstileMessage",
    "WiegandBitCollector",
    "bound_allocations",
    "camera_snippet",
    "codec_for",
    "describe_camera",
    "discover_cameras",
    "drain",
    "load_password",
    "load_profile",
    "load_secret",
    "lower_thread_priority",
    "make_simulator",
    "normalise_hex",
    "open_camera",
    "open_driver",
    "parse_comm_key",
    "parse_discovery_target",
    "parse_source",
    "redact_url",
    "resolve_profile",
    "run_simulator",
    "serve_simulator",
    "show_thread_name",
    "wiegand_credential",
]

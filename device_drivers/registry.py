"""The device registry: every family's ``kind`` with its config model, driver and simulator; the
discriminated :data:`DeviceConfig` union built from it; and the one place that turns a config into
a running device, real or simulated.

Simulators are test and demo equipment: no driver imports one. A device configured with
``simulated: true`` is resolved here: :func:`open_driver` builds the family's simulator (on a pty,
as a demo needs no hardware) and hands it to the real driver, which starts it when entered, opens
the simulator's port URL like any other, and stops it when left. Cameras likewise
(:func:`open_camera`), and ``edge-agent simulate`` runs a simulator on its own (:func:`run_simulator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TextIO, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, Field

from device_drivers._io.config import SerialDeviceConfig
from device_drivers._io.probe import ProbeResult
from device_drivers._io.sim import PtyEndpoint, SimEndpoint, parse_listen
from device_drivers.camera.config import CameraConfig, SimulatedCameraConfig
from device_drivers.camera.driver import Camera
from device_drivers.camera.sim import SimulatedCamera
from device_drivers.card.codec import CardCodec, card_from_text
from device_drivers.card.config import CardReaderConfig
from device_drivers.card.driver import CardReaderDriver
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.errors import DeviceError, ProfileError
from device_drivers.gpio.config import GpioWiegandConfig
from device_drivers.gpio.driver import GpioWiegandReader
from device_drivers.gpio.sim import SimulatedWiegandLines
from device_drivers.hikvision.config import HikvisionConfig
from device_drivers.hikvision.driver import HikvisionDriver, probe_hikvision
from device_drivers.hikvision.sim import IsapiSimulator
from device_drivers.modbus.config import ModbusIoConfig
from device_drivers.modbus.driver import ModbusIoDriver, probe_modbus_io
from device_drivers.modbus.profile import check_modbus_io
from device_drivers.modbus.sim import ModbusIoSimulator
from device_drivers.onvif.config import OnvifConfig
from device_drivers.onvif.driver import OnvifEventsDriver, probe_onvif
from device_drivers.onvif.sim import OnvifSimulator
from device_drivers.osdp.config import OsdpBusConfig
from device_drivers.osdp.driver import OsdpControlPanel, reader_keys
from device_drivers.osdp.sim import OsdpBusSimulator, OsdpReaderSimulator
from device_drivers.profiles.config import FirmwareProfile
from device_drivers.profiles.loader import load_profile, resolve_profile
from device_drivers.relay.config import RelayDoorConfig
from device_drivers.relay.driver import RelayDoor
from device_drivers.relay.sim import MemoryPin
from device_drivers.turnstile.codec import TurnstileCodec
from device_drivers.turnstile.config import TurnstileConfig
from device_drivers.turnstile.driver import TurnstileDriver
from device_drivers.turnstile.sim import TurnstileSimulator
from device_drivers.wedge.config import KeyboardWedgeConfig
from device_drivers.wedge.driver import KeyboardWedgeReader
from device_drivers.wedge.sim import SimulatedKeyboard
from device_drivers.zkteco.config import ZktecoConfig, ZktecoPushConfig
from device_drivers.zkteco.driver import ZkPullDriver, ZkPushServer, probe_zkteco, probe_zkteco_push
from device_drivers.zkteco.sim import ZkDeviceSimulator, ZkPushTerminalSimulator

logger = logging.getLogger(__name__)

AnyDeviceConfig = (
    CardReaderConfig
    | TurnstileConfig
    | RelayDoorConfig
    | OsdpBusConfig
    | KeyboardWedgeConfig
    | GpioWiegandConfig
    | ZktecoConfig
    | ZktecoPushConfig
    | HikvisionConfig
    | OnvifConfig
    | ModbusIoConfig
)


def _check_device(config: AnyDeviceConfig) -> AnyDeviceConfig:
    check = FAMILIES[config.kind].check
    if check is not None:
        check(config)
    return config


DeviceConfig = Annotated[AnyDeviceConfig, Field(discriminator="kind"), AfterValidator(_check_device)]
"""Any device's configuration, selected by its ``kind``, and checked against what it refers to
(its firmware profile, its demo cards): the config models are leaves and cannot read profiles."""

Driver = (
    CardReaderDriver
    | TurnstileDriver
    | RelayDoor
    | OsdpControlPanel
    | KeyboardWedgeReader
    | GpioWiegandReader
    | ZkPullDriver
    | ZkPushServer
    | HikvisionDriver
    | OnvifEventsDriver
    | ModbusIoDriver
)
"""Any driver: each is a reusable async context manager with ``readings()`` and ``counters``."""

CameraDeviceConfig = Annotated[CameraConfig | SimulatedCameraConfig, Field(discriminator="kind")]
"""A camera's configuration: ``kind: camera`` (RTSP/USB/file) or ``kind: camera_sim``."""

C = TypeVar("C", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class DeviceFamily(Generic[C]):
    """One ``kind`` of device: its config model, its driver class, the class of its simulator, and
    how to open a device of this kind from its config."""

    config: type[C]
    driver: type[Driver]
    simulator: type[Any]
    open: Callable[[C], Driver] | None = None
    """How to open a device of this kind. None: the network families' one way, which also hands the
    driver its state directory (:func:`_open_network`)."""
    check: Callable[[C], None] | None = None
    """Raises ``ValueError`` when the config does not fit what it refers to (a profile file...)."""
    probe: Callable[[C], Coroutine[Any, Any, list[ProbeResult]]] | None = None
    """``doctor``'s checks of a real device of this kind: reachable, authenticated, clock skew..."""


def _profile_of(config: SerialDeviceConfig) -> FirmwareProfile:
    """The device's firmware profile; ``ValueError`` if it is missing or of the wrong family."""
    try:
        profile = load_profile(resolve_profile(config.profile))
    except ProfileError as err:
        raise ValueError(str(err)) from None
    if profile.family not in config.families:
        raise ValueError(
            f"profile {profile.id} is a {profile.family}; this device needs {' or '.join(config.families)}"
        )
    return profile


def _check_card_reader(config: CardReaderConfig) -> None:
    codec = CardCodec(_profile_of(config))
    for text in config.sim_cards:
        try:
            card_from_text(codec, text)
        except ValueError as err:
            raise ValueError(f"sim_cards: {text!r}: {err}") from None


def _check_turnstile(config: TurnstileConfig) -> None:
    _profile_of(config)


def _open_card_reader(config: CardReaderConfig) -> CardReaderDriver:
    simulator = None
    if config.simulated:
        simulator = CardReaderSimulator(
            load_profile(resolve_profile(config.profile)),
            PtyEndpoint(),
            cards=config.sim_cards,
            interval_s=config.sim_interval_s,
        )
    return CardReaderDriver.from_config(config, simulator=simulator)


def _open_turnstile(config: TurnstileConfig) -> TurnstileDriver:
    simulator = None
    if config.simulated:
        simulator = TurnstileSimulator(
            load_profile(resolve_profile(config.profile)),
            PtyEndpoint(),
            address=config.address,
            passage_delay_s=config.sim_passage_delay_s,
        )
    return TurnstileDriver.from_config(config, simulator=simulator)


def _open_osdp_bus(config: OsdpBusConfig) -> OsdpControlPanel:
    if not config.simulated:
        return OsdpControlPanel.from_config(config)
    # The simulated readers must hold the keys the control panel uses.
    keys = reader_keys(config)
    simulator = OsdpBusSimulator(
        {r.address: keys[r.id] for r in config.readers},
        secure_channel=config.secure_channel,
        wiegand=CardCodec(load_profile(resolve_profile(config.wiegand_profile))),
    )
    return OsdpControlPanel.from_config(config, keys=keys, simulator=simulator)


def _open_network(family: DeviceFamily[Any], config: Any, state_dir: Path | None) -> Driver:
    # Terminals, ONVIF events and Modbus I/O: the simulator from the config, the driver with its
    # state directory (a terminal's high-water mark lives there).
    simulator = family.simulator.from_config(config) if config.simulated else None
    driver: Any = family.driver
    opened: Driver = driver.from_config(config, simulator=simulator, state_dir=state_dir)
    return opened


def _open_relay_door(config: RelayDoorConfig) -> RelayDoor:
    if config.simulated:
        return RelayDoor.from_config(config, open_pin=lambda line: MemoryPin())
    return RelayDoor.from_config(config)


FAMILIES: dict[str, DeviceFamily[Any]] = {
    "card_reader": DeviceFamily(
        CardReaderConfig, CardReaderDriver, CardReaderSimulator, _open_card_reader, _check_card_reader
    ),
    "turnstile": DeviceFamily(
        TurnstileConfig, TurnstileDriver, TurnstileSimulator, _open_turnstile, _check_turnstile
    ),
    "relay_door": DeviceFamily(RelayDoorConfig, RelayDoor, MemoryPin, _open_relay_door),
    "osdp": DeviceFamily(OsdpBusConfig, OsdpControlPanel, OsdpBusSimulator, _open_osdp_bus),
    # No `simulated` flag in their configs yet: their simulators stand in for evdev / libgpiod in tests.
    "keyboard_wedge": DeviceFamily(
        KeyboardWedgeConfig, KeyboardWedgeReader, SimulatedKeyboard, KeyboardWedgeReader.from_config
    ),
    "gpio_wiegand": DeviceFamily(
        GpioWiegandConfig, GpioWiegandReader, SimulatedWiegandLines, GpioWiegandReader.from_config
    ),
    # Vendor terminals, ONVIF cameras' events and Modbus I/O: reached over the network, opened the
    # one way (_open_network).
    "zkteco": DeviceFamily(ZktecoConfig, ZkPullDriver, ZkDeviceSimulator, probe=probe_zkteco),
    "zkteco_push": DeviceFamily(
        ZktecoPushConfig, ZkPushServer, ZkPushTerminalSimulator, probe=probe_zkteco_push
    ),
    "hikvision": DeviceFamily(HikvisionConfig, HikvisionDriver, IsapiSimulator, probe=probe_hikvision),
    "onvif": DeviceFamily(OnvifConfig, OnvifEventsDriver, OnvifSimulator, probe=probe_onvif),
    "modbus_io": DeviceFamily(
        ModbusIoConfig, ModbusIoDriver, ModbusIoSimulator, check=check_modbus_io, probe=probe_modbus_io
    ),
}
"""``{kind: family}`` for every device a gateway's ``devices:`` list may hold."""


def _check_families() -> None:
    # mypy needs DeviceConfig spelled out; this keeps the spelling and the table from drifting apart.
    for kind, family in FAMILIES.items():
        declared = get_args(family.config.model_fields["kind"].annotation)
        if declared != (kind,):
            raise RuntimeError(f"registry: {family.config.__name__} has kind {declared}, listed as {kind}")
    if set(get_args(AnyDeviceConfig)) != {f.config for f in FAMILIES.values()}:
        raise RuntimeError("registry: DeviceConfig and FAMILIES list different configs")


_check_families()


def open_driver(config: AnyDeviceConfig, *, state_dir: Path | None = None) -> Driver:
    """The driver for ``config``, not started: enter it with ``async with``. For a ``simulated``
    device the driver comes with its simulator attached (``driver.simulator``), which runs exactly
    as long as the driver does. ``state_dir`` is the device's own directory for what it keeps
    across restarts (created by the caller); drivers that keep nothing ignore it, and without one a
    stateful driver keeps its state in memory only."""
    family = FAMILIES[config.kind]
    if family.open is None:
        return _open_network(family, config, state_dir)
    return family.open(config)


def open_camera(config: CameraConfig | SimulatedCameraConfig, *, workdir: Path | None = None) -> Camera:
    """The camera for ``config``, not started: a real one, or for ``kind: camera_sim`` a camera
    playing the configured video (or a clip generated into ``workdir``) as a live feed."""
    if isinstance(config, SimulatedCameraConfig):
        return SimulatedCamera(config, workdir=workdir)
    return Camera(config)


def codec_for(profile: FirmwareProfile, address: int | None = None) -> CardCodec | TurnstileCodec:
    """The codec for ``profile``'s family; ``address`` overrides a turnstile profile's RS-485 address."""
    if profile.family == "turnstile":
        return TurnstileCodec(profile, address)
    return CardCodec(profile)


SimulatorKind = Literal["card_reader", "wiegand", "turnstile", "osdp"]


def make_simulator(
    kind: SimulatorKind, profile: FirmwareProfile | str, endpoint: SimEndpoint | None = None
) -> CardReaderSimulator | TurnstileSimulator:
    """A simulator of ``kind`` for ``profile`` (a profile, a shipped profile id or a YAML path)."""
    if kind == "osdp":
        raise ValueError("an OSDP reader is simulated by device_drivers.osdp.sim.OsdpReaderSimulator")
    if isinstance(profile, str):
        profile = load_profile(resolve_profile(profile))
    if kind == "turnstile":
        if profile.family != "turnstile":
            raise ValueError(f"profile {profile.id} is a {profile.family}, not a turnstile")
        return TurnstileSimulator(profile, endpoint)
    if profile.family == "turnstile":
        raise ValueError(f"profile {profile.id} is a turnstile, not a {kind}")
    return CardReaderSimulator(profile, endpoint)


async def serve_simulator(
    kind: SimulatorKind,
    profile: FirmwareProfile | str,
    listen: str,
    *,
    cards: list[str] | None = None,
    interval_s: float = 2.0,
    ready: Callable[[str], None] | None = None,
    lines: asyncio.Queue[str] | None = None,
    osdp_address: int = 1,
) -> None:
    """Run a simulator until cancelled. Card readers present ``cards`` in turn every ``interval_s``
    and every card text put on ``lines``; turnstiles raise the events put on ``lines``; ``ready``
    gets the URL drivers should open.

    ``osdp`` is a libosdp reader on a pty (``profile``: the Wiegand profile of its cards), at
    ``osdp_address``, with the secure channel keyed by ``$OSDP_SCBK`` (32 hex digits) or, if unset,
    a fresh key logged at start for the control panel's secret.
    """
    sim: Any
    act: Callable[[str], object]
    if kind == "osdp":
        endpoint = parse_listen(listen)
        if not isinstance(endpoint, PtyEndpoint):
            raise ValueError("the OSDP simulator listens on a pty (pty or pty:/path)")
        if isinstance(profile, str):
            profile = load_profile(resolve_profile(profile))
        key_hex = os.environ.get("OSDP_SCBK")
        key = bytes.fromhex(key_hex) if key_hex else os.urandom(16)
        if not key_hex:
            logger.warning("OSDP simulator: no $OSDP_SCBK, using the fresh key %s", key.hex())
        osdp_sim = OsdpReaderSimulator(osdp_address, key, wiegand=CardCodec(profile), link=endpoint.link)

        def act_osdp(text: str) -> object:
            if text in ("tamper", "untamper"):
                osdp_sim.tamper(text == "tamper")
                return text
            return osdp_sim.present(text)

        sim, act = osdp_sim, act_osdp
    else:
        plain = make_simulator(kind, profile, parse_listen(listen))
        if isinstance(plain, CardReaderSimulator):
            act = plain.present
        else:
            turnstile = plain

            def act_turnstile(text: str) -> object:
                name, _, direction = text.partition(" ")
                return turnstile.raise_event(name, direction or None)  # type: ignore[arg-type]

            act = act_turnstile
        sim = plain
    async with sim:
        if ready is not None:
            ready(sim.url)
        index = 0
        while True:
            text = None
            if lines is not None:
                with contextlib.suppress(TimeoutError):
                    text = await asyncio.wait_for(lines.get(), interval_s if cards else None)
            else:
                await asyncio.sleep(interval_s if cards else 3600)
            if text is None and cards:
                text = cards[index % len(cards)]
                index += 1
            if text and text.strip():
                try:
                    result = act(text.strip())
                    logger.info("simulator %s: %s -> %s", sim.url, text.strip(), result)
                except (ValueError, DeviceError) as err:
                    logger.warning("simulator %s: cannot do %r: %s", sim.url, text, err)


def stdin_ends_the_run(stdin: TextIO | None = None) -> bool:
    """Whether end of input on ``stdin`` stops ``edge-agent simulate``.

    A terminal (Ctrl-D) or a pipe (a script feeding cards) ends the session when it ends. Anything
    else - ``/dev/null`` (systemd, ``nohup``, ``&`` in a script), a regular file of cards, a closed
    or unreadable descriptor - is not someone talking to the simulator: its cards are read, and the
    simulator keeps running until SIGTERM or SIGINT.
    """
    stream = sys.stdin if stdin is None else stdin
    if stream is None or stream.closed:
        return False
    try:
        if stream.isatty():
            return True
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def run_simulator(
    kind: SimulatorKind,
    profile: str,
    port_or_listen_addr: str,
    *,
    cards: list[str] | None = None,
    interval_s: float = 2.0,
) -> None:
    """CLI entry point (``edge-agent simulate KIND PROFILE ADDR``): run a simulator in the foreground.

    Prints the URL to configure the driver with. Each line on standard input is a card to present
    (card readers: hex, or ``FC:NUMBER[/BITS]`` for Wiegand and OSDP) or an event to raise
    (turnstiles: ``forced entry``, ``fire_alarm``...; OSDP: ``tamper``, ``untamper``). Stops on
    SIGTERM or SIGINT (Ctrl-C), and on end of input when :func:`stdin_ends_the_run` says so; either
    way the simulator is closed (its pty symlink removed) before it returns.
    """
    stdin = sys.stdin
    ends_with_input = stdin_ends_the_run(stdin)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()
        stop = asyncio.Event()

        def on_signal(signum: signal.Signals) -> None:
            logger.info("simulator: %s, stopping", signum.name)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            # Only the main thread gets signals; run from another one, the caller stops it.
            with contextlib.suppress(ValueError, RuntimeError):
                loop.add_signal_handler(signum, on_signal, signum)

        def read_stdin() -> None:
            assert stdin is not None
            try:
                for line in stdin:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            except (OSError, ValueError) as err:
                # nohup hands over a descriptor opened write-only: nothing to read, not a failure.
                logger.info("simulator: standard input is not readable (%s); cards only from --card", err)
            if ends_with_input:
                loop.call_soon_threadsafe(stop.set)
            else:
                logger.info("simulator: end of standard input; running until SIGTERM or Ctrl-C")

        def ready(url: str) -> None:
            print(f"{kind} simulator for {profile}: open {url}", flush=True)
            if stdin is not None and not stdin.closed:
                threading.Thread(target=read_stdin, name="simulator-stdin", daemon=True).start()

        serving = asyncio.create_task(
            serve_simulator(
                kind,
                profile,
                port_or_listen_addr,
                cards=cards,
                interval_s=interval_s,
                ready=ready,
                lines=lines,
            )
        )
        waiting = asyncio.create_task(stop.wait())
        try:
            finished, _ = await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if serving in finished:
                serving.result()
            # Give the last presented card a moment to be read.
            await asyncio.sleep(0.2)
        finally:
            serving.cancel()
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

    asyncio.run(main())


__all__ = [
    "FAMILIES",
    "AnyDeviceConfig",
    "CameraDeviceConfig",
    "DeviceConfig",
    "DeviceFamily",
    "Driver",
    "SimulatorKind",
    "codec_for",
    "make_simulator",
    "open_camera",
    "open_driver",
    "parse_listen",
    "run_simulator",
    "serve_simulator",
    "stdin_ends_the_run",
]

"""The supervisor: one asyncio process that starts the components in order and stops them in reverse.

Start: outbox → MQTT link → ``gateway.started`` → devices → READY. Stop (SIGTERM/SIGINT): STOPPING
→ devices → ``gateway.stopped`` → publish the backlog for at most ``shutdown_timeout_s`` → retained
``offline`` → outbox closed. Whatever was not published stays committed and goes out after the
next start. SIGHUP reloads what can change without a restart.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from paho.mqtt.properties import Properties

from device_drivers.camera import Camera, CameraFrame
from device_drivers.config import Driver, create_driver
from device_drivers.errors import DeviceError
from device_drivers.osdp import OsdpBusConfig, OsdpControlPanel
from device_drivers.types import CardRead, DeviceOffline, DeviceOnline, DeviceTamper, Reading, TurnstileEvent
from edge_agent import __version__
from edge_agent.access import AntiPassback
from edge_agent.alerts import AlertBook, AlertError, AlertRecord
from edge_agent.api.server import serve_api
from edge_agent.attendance import AttendanceBook
from edge_agent.cameras import CameraWorker, SecurityWorker, open_camera
from edge_agent.commands import CommandProcessor, pending_marker, previous_config
from edge_agent.config import ConfigFileError, GatewayConfig, load_config
from edge_agent.face_templates import FaceTemplateStore, TemplateKeyError, parse_key
from edge_agent.faces import FaceService
from edge_agent.gates import Feedback, GateController
from edge_agent.logs import setup_logging
from edge_agent.roster import Roster, RosterError, parse_roster_message
from edge_agent.sdnotify import Notifier
from edge_agent.secrets import credential_path, read_credential
from edge_agent.simulated import SimulatedDevice
from sync.envelope import Event, format_time, make_source, utc_now
from sync.event_types import Severity
from sync.mqtt_link import MqttLink, reply_properties, response_properties
from sync.outbox import Outbox, OutboxError
from sync.roster_messages import RosterReply
from vision.errors import VisionError
from vision.person import PersonDetector

log = logging.getLogger(__name__)

STATE_FILE = "agent.state"
STATUS_FILE = "status.json"


class Agent:
    """The running gateway. Build it with a validated config and a data directory, then :meth:`run`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        data_dir: Path,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.data_dir = data_dir
        self.notifier = notifier or Notifier()
        self.started_at = time.monotonic()
        self.outbox = Outbox(data_dir, config.outbox, report_source=self.source("gateway"))
        self.link: MqttLink | None = None
        self._stop = asyncio.Event()
        self._stop_reason = "signal"
        self.exit_code = 0
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[Any]] = []
        self.roster: Roster | None = None
        self.attendance: AttendanceBook | None = None
        self.anti_passback = AntiPassback()
        self.timezone = ZoneInfo(config.gateway.timezone)
        self.drivers: dict[str, Driver] = {}
        self.gates: dict[str, GateController] = {}
        self._reader_gate: dict[str, GateController] = {}
        self._opener_gate: dict[str, GateController] = {}
        self.device_state: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, int] = {}
        self._driver_stack = AsyncExitStack()
        self.faces: FaceService | None = None
        self.alerts: AlertBook | None = None
        self.commands: CommandProcessor | None = None
        self._api_task: asyncio.Task[None] | None = None
        self._link_task: asyncio.Task[None] | None = None
        self.face_error = ""
        self.camera_workers: dict[str, CameraWorker] = {}
        self.security_workers: dict[str, SecurityWorker] = {}
        self._person_detector: PersonDetector | None = None
        self._recent_grants: dict[tuple[str, str], float] = {}
        self._grant_times: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def source(self, device: str) -> str:
        return make_source(self.config.gateway.site, self.config.gateway.id, device)

    # -- events ------------------------------------------------------------------------------

    def emit(self, event: Event, attachment: bytes | None = None) -> None:
        """Hand an event (and its snapshot) to the outbox. Never blocks: nobody waits for the commit.

        Alerts also go to the local alert book, so the console shows them with the network down.
        """
        self.outbox.submit(event, attachment)
        if event.spec.alert and self.alerts is not None:
            try:
                self.alerts.record(event, attachment)
            except sqlite3.Error as err:
                self._count("alert_book_failed")
                log.error("alert %s not kept in the local alert book: %s", event.id, err)

    def acknowledge_alert(self, alert_id: str, by: str, via: str, note: str = "") -> AlertRecord:
        """Security staff acknowledge an alert; audited as an event. Raises :class:`AlertError`."""
        if self.alerts is None:
            raise AlertError("the alert book is not open yet", code="not_ready")
        record = self.alerts.acknowledge(alert_id, by, note)
        data: dict[str, Any] = {
            "alert_id": record.id,
            "alert_type": record.type,
            "by": by,
            "via": via,
            "at": record.acknowledged_at or "",
        }
        if note:
            data["note"] = note
        self.emit(
            Event("edu.campus.security.alert_acknowledged.v1", self.source("gateway"), data, subject=None)
        )
        return record

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`; returns the process exit code."""
        loop = asyncio.get_running_loop()
        # The reader threads, the outbox writer and the event loop hand the GIL to each other; with
        # Python's default 5 ms switch interval a card read could wait that long per hand-off.
        sys.setswitchinterval(0.001)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        cfg = self.config
        previous = self._read_state()
        self._write_state("running")
        try:
            await self.outbox.open()
        except OutboxError as err:
            log.critical("cannot open the outbox: %s", err)
            return 1
        self.roster = await asyncio.to_thread(Roster, self.data_dir)
        await self._seed_roster()
        self.attendance = await asyncio.to_thread(AttendanceBook, self.data_dir)
        agent_cfg = cfg.agent
        self.alerts = await asyncio.to_thread(
            AlertBook, self.data_dir, agent_cfg.alert_snapshot_retention_s, agent_cfg.alert_retention_s
        )
        # The API comes up early, so /health and /ready answer while models and devices start.
        self._api_task = asyncio.create_task(serve_api(self, cfg.api), name="api")
        self._api_task.add_done_callback(self._api_ended)
        await self._start_faces()
        mqtt = cfg.mqtt
        self.link = MqttLink(
            mqtt,
            self.outbox,
            site=cfg.gateway.site,
            gateway=cfg.gateway.id,
            version=__version__,
            password=read_credential(mqtt.password_credential) if mqtt.username else None,
            client_key_file=credential_path(mqtt.tls.key_credential)
            if mqtt.tls and mqtt.tls.key_credential
            else None,
            status_extra=self.status_extra,
        )
        self.link.subscribe(self.link.topics.roster_filter, self._on_roster_message)
        if cfg.commands.enabled:
            self.commands = CommandProcessor(self, cfg.commands)
            self.link.subscribe(self.link.topics.command_filter, self.commands.handle)
        link_task = asyncio.create_task(self.link.run(), name="mqtt-link")
        self._link_task = link_task
        self.emit(
            Event(
                "edu.campus.gateway.started.v1",
                self.source("gateway"),
                {
                    "version": __version__,
                    "hostname": socket.gethostname(),
                    "outbox_backlog": self.outbox.pending_total,
                    "previous_shutdown": previous,
                },
            )
        )
        self._start_devices()
        await self._start_drivers()
        await self._start_cameras()
        self._background = [
            asyncio.create_task(self._expire_passages(), name="gate-timeouts"),
            asyncio.create_task(self._heartbeat(), name="gateway-heartbeat"),
            asyncio.create_task(self._status_file_loop(), name="status-file"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
            asyncio.create_task(self._telemetry(), name="telemetry"),
        ]
        if self.config_path is not None and pending_marker(self.config_path).exists():
            self._background.append(
                asyncio.create_task(self._confirm_pushed_config(self.config_path), name="config-probation")
            )
        self.notifier.ready(self.one_line_status())
        log.info(
            "agent %s running: site %s gateway %s, data in %s, broker %s",
            __version__,
            cfg.gateway.site,
            cfg.gateway.id,
            self.data_dir,
            mqtt.url,
        )
        await self._stop.wait()
        await self._shutdown(link_task)
        return self.exit_code

    async def _shutdown(self, link_task: asyncio.Task[None]) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.agent.shutdown_timeout_s
        log.info("stopping (%s)", self._stop_reason)
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        await self._stop_devices()
        await self._stop_drivers()
        if self._api_task is not None:
            self._api_task.cancel()
            await asyncio.gather(self._api_task, return_exceptions=True)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.outbox.append(
                    Event(
                        "edu.campus.gateway.stopped.v1",
                        self.source("gateway"),
                        {
                            "version": __version__,
                            "reason": self._stop_reason,
                            "uptime_s": round(time.monotonic() - self.started_at, 3),
                        },
                    )
                ),
                max(0.1, deadline - time.monotonic()),
            )
        assert self.link is not None
        # Publish the backlog while the time allows; what is left stays committed for next start.
        while (
            self.link.connected.is_set() and self.outbox.pending_total > 0 and time.monotonic() < deadline - 1
        ):
            await asyncio.sleep(0.05)
        await self.link.shutdown(drain_timeout_s=max(0.1, min(2.0, deadline - time.monotonic())))
        try:
            await asyncio.wait_for(link_task, max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            log.warning("the MQTT link did not stop in time")
        await self.outbox.close()
        if self.roster is not None:
            self.roster.close()
        if self.attendance is not None:
            self.attendance.close()
        if self.alerts is not None:
            self.alerts.close()
        self._write_status()
        self._write_state("clean")
        left = self.outbox.pending_total
        log.info("stopped; %d events left in the outbox for the next start", left)

    def _start_devices(self) -> None:
        for sim in self.config.simulated:
            task = asyncio.create_task(
                SimulatedDevice(sim, self.source(sim.id), self.emit).run(), name=f"device-{sim.id}"
            )
            self._device_tasks[sim.id] = task

    async def _seed_roster(self) -> None:
        seed = self.config.agent.roster_seed
        if seed is None or self.roster is None or self.roster.version > 0:
            return
        path = Path(seed)
        if not path.is_absolute() and self.config_path is not None:
            path = self.config_path.parent / path
        try:
            message = parse_roster_message(path.read_bytes())
            if message.kind != "snapshot":
                raise RosterError(
                    "a roster seed must be a snapshot", result="rejected", code="seed_not_snapshot"
                )
            await asyncio.to_thread(self.roster.apply_snapshot, message)
        except (OSError, RosterError) as err:
            log.error("roster seed %s not applied: %s", seed, err)

    async def _stop_devices(self) -> None:
        """Stop the simulated heartbeat devices (SIGHUP restarts them)."""
        tasks = [t for dev_id, t in self._device_tasks.items() if dev_id not in self.drivers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._device_tasks = {k: t for k, t in self._device_tasks.items() if k in self.drivers}

    # -- devices and gates --------------------------------------------------------------------

    async def _start_drivers(self) -> None:
        """Open every configured device, build the gates over them, and pump their readings."""
        assert self.roster is not None
        for device in self.config.devices:
            driver = create_driver(device)
            try:
                await self._driver_stack.enter_async_context(driver)
            except Exception as err:
                # One broken device must not keep the others (or the gates) down.
                self._count("device_start_failed")
                log.error("device %s could not start: %s", device.id, err)
                self.device_state[device.id] = {"kind": device.kind, "online": False}
                continue
            self.drivers[device.id] = driver
            self.device_state.setdefault(device.id, {"kind": device.kind, "online": False})
            if isinstance(device, OsdpBusConfig):
                for reader in device.readers:
                    self.device_state.setdefault(reader.id, {"kind": "osdp_reader", "online": False})
            self._device_tasks[device.id] = asyncio.create_task(
                self._pump(driver), name=f"device-{device.id}"
            )
        feedback_by_reader: dict[str, Feedback] = {}
        for device in self.config.devices:
            driver_ = self.drivers.get(device.id)
            if isinstance(device, OsdpBusConfig) and isinstance(driver_, OsdpControlPanel):
                for reader in device.readers:
                    feedback_by_reader[reader.id] = driver_.feedback
        for gate_cfg in self.config.gates:
            opener_driver = self.drivers.get(gate_cfg.turnstile) if gate_cfg.turnstile else None
            reader_ids = [r.device for r in gate_cfg.readers]
            feedback = next((feedback_by_reader[r] for r in reader_ids if r in feedback_by_reader), None)
            gate = GateController(
                gate_cfg,
                roster=self.roster,
                emit=self.emit,
                source=self.source,
                timezone=self.timezone,
                anti_passback=self.anti_passback,
                attendance=self.attendance,
                opener=getattr(opener_driver, "open", None),
                feedback=feedback,
                on_grant=self._note_grant,
            )
            self.gates[gate_cfg.id] = gate
            for reader_id in reader_ids:
                self._reader_gate[reader_id] = gate
            if gate_cfg.turnstile:
                self._opener_gate[gate_cfg.turnstile] = gate

    async def _confirm_pushed_config(self, path: Path) -> None:
        """A configuration pushed by the centre proves itself by reaching the broker; if it does not
        within the probation, the previous file goes back and the agent exits non-zero, so systemd
        restarts it on the configuration that worked."""
        assert self.link is not None
        probation = self.config.commands.push_probation_s
        marker = pending_marker(path)
        try:
            await asyncio.wait_for(self.link.connected.wait(), probation)
        except TimeoutError:
            previous = previous_config(path)
            if previous.exists():
                os.replace(previous, path)
            marker.unlink(missing_ok=True)
            self._count("pushed_config_rolled_back")
            log.error(
                "the pushed configuration did not reach the broker in %.0f s; the previous file is "
                "back at %s, restarting with it",
                probation,
                path,
            )
            self.exit_code = 1
            self.request_stop("pushed configuration rolled back")
            return
        marker.unlink(missing_ok=True)
        log.info("the pushed configuration reached the broker; it is confirmed")

    def _api_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        err = task.exception()
        # A port in use or a bad token file: the API stays off, the gates keep working.
        self._count(f"api_failed_{getattr(err, 'code', 'error')}")
        log.error("the local API is not running: %s", err)

    def _note_grant(self, gate_id: str, person_id: str) -> None:
        now = time.monotonic()
        self._recent_grants[(gate_id, person_id)] = now
        times = self._grant_times[gate_id]
        times.append(now)
        while times and now - times[0] > 300:
            times.popleft()

    def grants_within(self, gate_id: str, window_s: float) -> int:
        """Grants at a gate in the last ``window_s`` seconds (video tailgating compares against it)."""
        now = time.monotonic()
        return sum(1 for t in self._grant_times.get(gate_id, ()) if now - t <= window_s)

    def _recent_card(self, gate_id: str, person_id: str, window_s: float) -> bool:
        at = self._recent_grants.get((gate_id, person_id))
        return at is not None and time.monotonic() - at <= window_s

    async def _start_faces(self) -> None:
        """Load the face models and templates when a camera does face recognition.

        Without a usable template key, face recognition stays off (logged, in the status) and
        everything else runs: a configuration mistake must not close the gates.
        """
        if not any(c.face for c in self.config.cameras) or self.roster is None:
            return
        settings = self.config.faces
        try:
            key = parse_key(
                read_credential(settings.template_key_credential), settings.template_key_credential
            )
            store = await asyncio.to_thread(FaceTemplateStore, self.data_dir, key)
            self.faces = await asyncio.to_thread(FaceService, store, settings)
        except (TemplateKeyError, VisionError) as err:
            self.face_error = str(err)
            self._count(f"faces_disabled_{err.code}")
            log.error("face recognition is off: %s", err)
            return
        faces = self.faces
        self.roster.on_face_templates.append(faces.apply_roster)
        self.roster.on_person_removed.append(faces.person_removed)

    async def _start_cameras(self) -> None:
        assert self.roster is not None and self.attendance is not None
        for setup in self.config.cameras:
            try:
                camera = open_camera(setup)
                await self._driver_stack.enter_async_context(camera)
            except DeviceError as err:
                self._count("camera_start_failed")
                log.error("camera %s could not start: %s", setup.id, err)
                self.device_state[setup.id] = {"kind": "camera", "online": False}
                continue
            self.device_state.setdefault(setup.id, {"kind": "camera", "online": False})
            security = None
            if setup.security is not None:
                try:
                    if self._person_detector is None:
                        self._person_detector = await asyncio.to_thread(PersonDetector)
                    security = SecurityWorker(
                        setup,
                        detector=self._person_detector,
                        emit=self.emit,
                        source=self.source,
                        timezone=self.timezone,
                        grants=self.grants_within,
                    )
                    self.security_workers[setup.id] = security
                except VisionError as err:
                    self._count(f"security_disabled_{err.code}")
                    log.error("camera %s: security analysis is off: %s", setup.id, err)
            worker = None
            if setup.face is not None and self.faces is not None:
                worker = CameraWorker(
                    setup,
                    faces=self.faces,
                    roster=self.roster,
                    attendance=self.attendance,
                    emit=self.emit,
                    source=self.source,
                    timezone=self.timezone,
                    recent_card=self._recent_card,
                )
                self.camera_workers[setup.id] = worker
            self.drivers[setup.id] = camera  # type: ignore[assignment]
            self._device_tasks[setup.id] = asyncio.create_task(
                self._pump_camera(camera, worker, security), name=f"camera-{setup.id}"
            )

    async def _pump_camera(
        self, camera: Camera, worker: CameraWorker | None, security: SecurityWorker | None
    ) -> None:
        setup = next(c for c in self.config.cameras if c.id == camera.config.id)
        workers = [w for w in (worker, security) if w is not None]
        idle = False
        async for item in camera.frames():
            try:
                if isinstance(item, CameraFrame):
                    # Faces and persons run in their own threads, side by side on the two cores.
                    if workers:
                        await asyncio.gather(*(w.on_frame(item) for w in workers))
                        # A still, empty scene is analysed at the idle rate; the first motion restores
                        # the full rate for the frames that follow.
                        still_for = time.monotonic() - max(w.last_activity for w in workers)
                        should_idle = setup.idle_analysis_fps is not None and still_for >= setup.idle_after_s
                        if should_idle != idle:
                            idle = should_idle
                            camera.set_analysis_fps(setup.idle_analysis_fps if idle else None)
                else:
                    await self.on_reading(item)
            except Exception:
                self._count("camera_handler_failed")
                log.exception("camera %s: handling %r failed", camera.config.id, type(item).__name__)

    async def _stop_drivers(self) -> None:
        try:
            await self._driver_stack.aclose()
        except Exception:
            log.exception("a device did not close cleanly")
        pumps = [
            self._device_tasks.pop(dev_id) for dev_id in list(self.drivers) if dev_id in self._device_tasks
        ]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        self.drivers.clear()

    async def _pump(self, driver: Driver) -> None:
        async for reading in driver.readings():
            try:
                await self.on_reading(reading)
            except Exception:
                # A bug in handling one reading must not stop the device's stream.
                self._count("reading_handler_failed")
                log.exception("handling %r failed", reading)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _device_kind(self, device_id: str) -> str:
        return str(self.device_state.get(device_id, {}).get("kind", "device"))

    async def on_reading(self, reading: Reading) -> None:
        """Route one device reading: cards to their gate, turnstile events to theirs, health to events."""
        if isinstance(reading, CardRead):
            gate = self._reader_gate.get(reading.device_id)
            if gate is None:
                self._count("card_at_unassigned_reader")
                log.warning(
                    "card %s read at %s, which feeds no gate; ignored", reading.credential, reading.device_id
                )
                return
            await gate.on_card(reading)
        elif isinstance(reading, TurnstileEvent):
            gate = self._opener_gate.get(reading.device_id)
            if gate is None:
                self._count("turnstile_event_without_gate")
                log.warning("%s from %s, which belongs to no gate", reading.kind, reading.device_id)
                return
            gate.on_turnstile(reading)
        elif isinstance(reading, DeviceOnline | DeviceOffline):
            online = isinstance(reading, DeviceOnline)
            state = self.device_state.setdefault(reading.device_id, {"kind": "device"})
            state["online"] = online
            data: dict[str, Any] = {
                "device": reading.device_id,
                "kind": self._device_kind(reading.device_id),
                "reason": reading.reason,
            }
            event_type = "edu.campus.device.online.v1" if online else "edu.campus.device.offline.v1"
            self.emit(Event(event_type, self.source(reading.device_id), data, time=reading.at))
        elif isinstance(reading, DeviceTamper):
            self.emit(
                Event(
                    "edu.campus.device.tamper.v1",
                    self.source(reading.device_id),
                    {
                        "device": reading.device_id,
                        "kind": self._device_kind(reading.device_id),
                        "tampered": reading.tampered,
                        "power_failure": reading.power_failure,
                    },
                    time=reading.at,
                    severity=Severity.WARNING if reading.tampered or reading.power_failure else Severity.INFO,
                )
            )

    async def _expire_passages(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            for gate in self.gates.values():
                gate.expire(now, utc_now())
            for security in self.security_workers.values():
                security.poll(now)

    # -- roster from the centre ----------------------------------------------------------------

    async def _on_roster_message(self, topic: str, payload: bytes, props: Properties | None) -> None:
        assert self.roster is not None and self.link is not None
        roster = self.roster
        held = roster.version
        kind = "unknown"
        requested: int | None = None
        try:
            message = parse_roster_message(payload)
            kind, requested = message.kind, message.version
            if message.kind == "snapshot":
                if message.version <= held:
                    raise RosterError(
                        f"snapshot version {message.version} is not newer than {held}",
                        result="ignored",
                        code="stale_snapshot",
                    )
                result = await asyncio.to_thread(roster.apply_snapshot, message)
            else:
                result = await asyncio.to_thread(roster.apply_delta, message)
        except RosterError as err:
            self._count(f"roster_{err.code}")
            log.warning("roster message on %s not applied: %s", topic, err)
            reply = RosterReply(
                gateway=self.config.gateway.id,
                result=err.result,
                version=roster.version,
                requested_version=requested,
                reason=str(err),
            )
            self.emit(
                Event(
                    "edu.campus.gateway.roster_rejected.v1",
                    self.source("gateway"),
                    {
                        "kind": kind,
                        "held_version": roster.version,
                        "requested_version": requested,
                        "result": err.result,
                        "reason": str(err),
                    },
                )
            )
        else:
            reply = RosterReply(
                gateway=self.config.gateway.id,
                result="applied",
                version=result.version,
                requested_version=requested,
            )
            self.emit(
                Event(
                    "edu.campus.gateway.roster_applied.v1",
                    self.source("gateway"),
                    {
                        "kind": result.kind,
                        "from_version": result.from_version,
                        "version": result.version,
                        "persons": result.persons,
                        "credentials": result.credentials,
                    },
                )
            )
        response_topic, correlation = response_properties(props)
        self.link.publish_nowait(
            response_topic or self.link.topics.roster_reply,
            reply.model_dump_json().encode(),
            properties=reply_properties(correlation),
        )

    async def reload(self) -> None:
        """SIGHUP: re-read the config; apply the log level and devices, keep the rest until restart."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the agent was not started from a config file")
            return
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigFileError as err:
            log.error("reload refused, keeping the running configuration:\n%s", err)
            # systemd holds the unit in "reloading" until READY=1, refused or not.
            self.notifier.ready(f"reload refused; {self.one_line_status()}")
            return
        for section in ("gateway", "mqtt", "outbox"):
            if getattr(new, section) != getattr(self.config, section):
                log.warning("reload: changes to '%s' take effect after a restart", section)
        setup_logging(new.agent.log_level)
        if self.faces is not None:
            # Enrollments made with `edge-agent enroll` while we ran are picked up here.
            await asyncio.to_thread(self.faces.reload)
        if self.commands is not None:
            self.commands.reload_keys()
        self.config = self.config.model_copy(update={"agent": new.agent, "simulated": new.simulated})
        await self._stop_devices()
        self._start_devices()
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready(self.one_line_status())

    # -- health ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True while every loop the agent relies on is alive; gates the systemd watchdog."""
        writer = self.outbox._writer
        if writer is None or not writer.is_alive():
            return False
        if self._link_task is None or self._link_task.done():
            return False
        return all(not t.done() for t in self._device_tasks.values())

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        if interval is None or not self.notifier.enabled:
            return
        while True:
            if self.healthy():
                self.notifier.watchdog()
            else:
                log.error("a component is not running; withholding the watchdog ping")
            await asyncio.sleep(interval)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.heartbeat_interval_s)
            if self.alerts is not None:
                # Snapshots (faces of strangers) go after their retention; old alerts after theirs.
                self.alerts.housekeeping()
            self.emit(
                Event(
                    "edu.campus.device.heartbeat.v1",
                    self.source("gateway"),
                    {
                        "device": "gateway",
                        "kind": "gateway",
                        "uptime_s": round(time.monotonic() - self.started_at, 3),
                        "counter": self.outbox.stats.appended,
                        "errors": self.outbox.stats.commit_failures,
                    },
                )
            )
            self.notifier.status(self.one_line_status())

    def telemetry(self) -> dict[str, Any]:
        """Counters for the central dashboards: state, not events, so it is not kept while offline."""
        link = self.link
        return {
            "site": self.config.gateway.site,
            "gateway": self.config.gateway.id,
            "version": __version__,
            "at": format_time(utc_now()),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "outbox": {
                "pending": self.outbox.pending_total,
                "appended": self.outbox.stats.appended,
                "delivered": self.outbox.stats.delivered,
                "commit_failures": self.outbox.stats.commit_failures,
                "dropped_undelivered": sum(self.outbox.stats.dropped_undelivered.values()),
            },
            "mqtt": {
                "published": link.stats.published if link else 0,
                "acked": link.stats.acked if link else 0,
                "connects": link.stats.connects if link else 0,
                "refused_publishes": link.stats.refused_publishes if link else 0,
            },
            "gates": {gid: dataclasses.asdict(g.stats) for gid, g in self.gates.items()},
            "devices": {
                dev_id: {k: int(v) for k, v in getattr(driver, "counters", {}).items()}
                for dev_id, driver in self.drivers.items()
            },
            "agent": dict(self.counters),
        }

    async def _telemetry(self) -> None:
        while True:
            await asyncio.sleep(self.config.agent.telemetry_interval_s)
            if self.link is None or not self.link.connected.is_set():
                continue
            try:
                self.link.publish_nowait(self.link.topics.telemetry, orjson.dumps(self.telemetry()))
            except (TypeError, ValueError, orjson.JSONEncodeError):
                # A counter that is not JSON must not end telemetry for the rest of the run.
                self._count("telemetry_failed")
                log.exception("telemetry not published")

    def status_extra(self) -> dict[str, Any]:
        devices: dict[str, dict[str, Any]] = {
            dev_id: {"kind": "simulated", "running": not task.done()}
            for dev_id, task in self._device_tasks.items()
            if dev_id not in self.drivers
        }
        for dev_id, state in self.device_state.items():
            devices[dev_id] = {"kind": state.get("kind", "device"), "online": bool(state.get("online"))}
        extra: dict[str, Any] = {
            "devices": devices,
            "roster_version": self.roster.version if self.roster else 0,
        }
        if self.config.cameras:
            extra["faces"] = {
                "enabled": self.faces is not None,
                "error": self.face_error,
                "templates": self.faces.gallery.template_count if self.faces else 0,
            }
        return extra

    def status(self) -> dict[str, Any]:
        """What ``edge-agent status`` and (later) the local API show."""
        link = self.link
        return {
            "version": __version__,
            "site": self.config.gateway.site,
            "gateway": self.config.gateway.id,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "broker": {
                "url": self.config.mqtt.url,
                "state": link.state if link else "starting",
                "last_error": link.stats.last_error if link else "",
                "connect_failures": link.stats.connect_failures if link else 0,
                "auth_failures": link.stats.auth_failures if link else 0,
                "published": link.stats.published if link else 0,
                "acked": link.stats.acked if link else 0,
            },
            "outbox": {
                "last_seq": self.outbox.last_seq,
                "pending": self.outbox.pending_total,
                "appended": self.outbox.stats.appended,
                "delivered": self.outbox.stats.delivered,
                "dropped_undelivered": self.outbox.stats.dropped_undelivered,
                "commit_failures": self.outbox.stats.commit_failures,
                "recovered_from": str(self.outbox.recovered_from) if self.outbox.recovered_from else None,
            },
            **self.status_extra(),
        }

    def one_line_status(self) -> str:
        state = self.link.state if self.link else "starting"
        return f"broker {state}; backlog {self.outbox.pending_total}; last seq {self.outbox.last_seq}"

    async def _status_file_loop(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(2.0)

    def _write_status(self) -> None:
        tmp = self.data_dir / (STATUS_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=2))
            tmp.replace(self.data_dir / STATUS_FILE)
        except OSError as err:
            log.warning("cannot write %s: %s", STATUS_FILE, err)

    def _read_state(self) -> str:
        try:
            state = (self.data_dir / STATE_FILE).read_text().strip()
        except FileNotFoundError:
            return "first_start"
        return "clean" if state == "clean" else "unclean"

    def _write_state(self, state: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / STATE_FILE).write_text(state + "\n")

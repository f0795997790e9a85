"""The gateway: one ``asyncio.TaskGroup`` of components, started in the order of one table.

:meth:`Gateway.components` is that table — what runs, in which order it starts (stop is the
reverse), and what happens when each fails (edge_agent/components.py explains the policies). Read
it to know the gateway. In short: the outbox, then the local stores, the API (so /health answers
while models load), face models, the MQTT link, roster sync and commands (subscriptions made before
the link connects), ``gateway.started``, the gates, the devices, the cameras, and the periodic
jobs. On SIGTERM/SIGINT each stops in reverse: devices first, then ``gateway.stopped``, then the
link publishes what the shutdown bound allows, and the outbox closes last. Whatever was not
published stays committed and goes out after the next start. SIGHUP reloads what can change
without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from device_drivers import (
    Backoff,
    BackoffConfig,
    Camera,
    CameraFrame,
    DeviceConfig,
    DeviceError,
    OsdpBusConfig,
    open_camera,
)
from edge_agent import __version__
from edge_agent.access import AntiPassback
from edge_agent.alerts import AlertBook
from edge_agent.api import serve_api
from edge_agent.attendance import AttendanceBook
from edge_agent.cameras import CameraWorker, SecurityWorker
from edge_agent.clock import Clock, SystemClock
from edge_agent.commands import CommandProcessor
from edge_agent.components import ComponentSpec, FatalComponentError, OnFailure, Supervisor
from edge_agent.config import (
    ConfigFileError,
    GatewayConfig,
    load_config,
    pending_marker,
    restore_previous_config,
)
from edge_agent.config.cameras import CameraSetup, SecurityConfig
from edge_agent.devices import DeviceComponent, ReadingRouter
from edge_agent.doors import Doors
from edge_agent.face_templates import FaceTemplateStore, TemplateKeyError, parse_key
from edge_agent.faces import FaceService
from edge_agent.gates import Feedback, GateController, GrantLog
from edge_agent.identity import IdentityService
from edge_agent.inference import InferenceService
from edge_agent.install import needed_credentials, where_to_put
from edge_agent.logs import setup_logging
from edge_agent.rollcall import RollCall, attendance_points
from edge_agent.roster import Roster
from edge_agent.roster_sync import NONCE_FILE as ROSTER_NONCE_FILE
from edge_agent.roster_sync import RosterSignatures, RosterSync, seed_roster
from edge_agent.sdnotify import Notifier
from edge_agent.secrets import credential_path, read_credential
from edge_agent.services import (
    AlertDesk,
    CameraDirectory,
    ConfigAccess,
    Counters,
    DeviceDirectory,
    Emitter,
    Services,
    StatusView,
)
from edge_agent.simulated import SimulatedDevice
from edge_agent.terminal_roster import TerminalRosterSync
from edge_agent.terminals import TerminalRecords
from sync import Event, MqttLink, Outbox, OutboxError, SyncError, format_time, synchronous_of
from vision import FaceDetectorConfig, PersonDetector, PersonDetectorConfig, VisionError

log = logging.getLogger(__name__)

STATE_FILE = "agent.state"
STATUS_FILE = "status.json"
GATE_TIMER_S = 0.5
STATUS_FILE_INTERVAL_S = 2.0
STORAGE_ALARM_INTERVAL_S = 0.5
INFERENCE_EXIT_WAIT_S = 3.0
"""How long the exit waits for the analyses under way (a 4 MP roll-call frame takes under 1 s)."""


DEVICE_STATE_DIR = "devices"
"""Under the data dir: one directory per device for what its driver keeps (a terminal's high-water mark)."""


class _Task:
    """A component that is only a loop (heartbeat, telemetry, status file, watchdog)."""

    def __init__(
        self,
        loop: Callable[[], Awaitable[None]],
        start: Callable[[], Awaitable[None]] | None = None,
        stop: Callable[[], Awaitable[None]] | None = None,
    ):
        self._loop = loop
        self._start = start
        self._stop = stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def run(self) -> None:
        await self._loop()

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()


class Gateway:
    """The running gateway. Build it with a validated config and a data directory, then :meth:`run`."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        data_dir: Path,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.data_dir = data_dir
        self.notifier = notifier or Notifier()
        self.clock: Clock = clock or SystemClock()
        self.started_at = self.clock.monotonic()
        self.exit_code = 0
        self._stop = asyncio.Event()
        self._stop_reason = "signal"
        self._stop_deadline: float | None = None
        self._reload_requested = asyncio.Event()
        self._previous_shutdown = "first_start"
        self.timezone = ZoneInfo(config.gateway.timezone)
        self.counters = Counters()
        gw = config.gateway
        self.outbox = Outbox(data_dir, config.outbox, report_source=f"campus/{gw.site}/{gw.id}/gateway")
        self.emitter = Emitter(self.outbox, gw.site, gw.id, self.counters)
        mqtt = config.mqtt
        self.link = MqttLink(
            mqtt,
            self.outbox,
            site=gw.site,
            gateway=gw.id,
            version=__version__,
            password=read_credential(mqtt.password_credential) if mqtt.username else None,
            client_key_file=credential_path(mqtt.tls.key_credential)
            if mqtt.tls and mqtt.tls.key_credential
            else None,
            status_extra=self.status_extra,
            backoff=Backoff(
                BackoffConfig(
                    initial_s=mqtt.reconnect_min_s, max_s=mqtt.reconnect_max_s, jitter=mqtt.reconnect_jitter
                )
            ),
            on_reply_expired=self._reply_expired,
            monotonic=self.clock.monotonic,
            now=self.clock.now,
            sleep=self.clock.sleep,
        )
        self.devices = DeviceDirectory()
        self.gates: dict[str, GateController] = {}
        vision = config.vision
        # One pool of inference threads for every camera (edge_agent.inference): security first,
        # each camera its share, no backlog.
        self.cameras = CameraDirectory(
            inference=InferenceService(
                workers=vision.threads,
                max_batch=vision.max_batch,
                attendance_max_wait_s=vision.attendance_max_wait_s,
                attendance_max_share=vision.attendance_max_share,
                monotonic=self.clock.monotonic,
            )
        )
        self.grants = GrantLog(self.clock)
        self.anti_passback = AntiPassback()
        self.router = ReadingRouter(self.devices, self.emitter, self.counters)
        # Door contacts and fire alarms of I/O modules; Modbus relays as door openers.
        self.doors = Doors(config, devices=self.devices, emitter=self.emitter, counters=self.counters)
        self.router.inputs = self.doors
        # Opened by the "stores" component; every later component may rely on them.
        self.roster: Roster | None = None
        self.attendance: AttendanceBook | None = None
        self.alert_book: AlertBook | None = None
        self.store_recoveries: list[dict[str, object]] = []
        """Stores found corrupt at this start (storage_recovered payloads), for the status."""
        self.services: Services | None = None
        self.commands: CommandProcessor | None = None
        self.roster_signatures: RosterSignatures | None = None
        """Who may sign master data (keys re-read on SIGHUP) and the roster nonces taken."""
        self.identity: IdentityService | None = None
        """Deletes leavers' data and lapsed templates, with audit events; the templates digest."""
        self.simulated = _SimulatedDevices(self)
        self.supervisor = Supervisor(
            self.components(), clock=self.clock, counters=self.counters, backoff=BackoffConfig()
        )

    # -- the component table ------------------------------------------------------------------

    def components(self) -> list[ComponentSpec]:
        """What runs, in start order (stop is the reverse), and each one's failure policy."""
        cfg = self.config
        restart, fatal, leave_off = OnFailure.RESTART, OnFailure.FATAL, OnFailure.LEAVE_OFF
        specs = [
            # Last to stop: what was submitted until then is committed, and its writer thread ends
            # with the gateway (a daemon thread would otherwise die with the process mid-commit).
            ComponentSpec("outbox", _Task(self._watch_outbox, self._open_outbox, self.outbox.close), fatal),
            ComponentSpec("stores", _Stores(self), fatal),
            ComponentSpec(
                "api", _Task(self._serve_api), leave_off, stop_timeout_s=cfg.api.shutdown_grace_s + 1
            ),
            ComponentSpec("faces", _Task(_idle, self._start_faces), leave_off),
            # Before the roster sync: every roster change it applies is seen (edge_agent.identity).
            ComponentSpec("identity", _Deferred(self._identity_service), restart),
            ComponentSpec("roster-sync", _Deferred(self._roster_sync), fatal),
        ]
        if cfg.commands.enabled:
            specs.append(ComponentSpec("commands", _Deferred(self._command_processor), fatal))
        specs += [
            ComponentSpec(
                "link", _Link(self), restart, stop_timeout_s=cfg.agent.shutdown_timeout_s, stop_first=True
            ),
            ComponentSpec("storage-alarm", _StorageAlarm(self), restart),
            ComponentSpec("lifecycle", _Lifecycle(self), leave_off),
            ComponentSpec("gates", _Task(self._gate_timers, self._build_gates), restart),
            ComponentSpec("rollcall", _Deferred(self._rollcall), restart),
            ComponentSpec("simulated", self.simulated, restart),
            *(
                ComponentSpec(
                    f"device-{dev.id}",
                    DeviceComponent(
                        _on_gateway_clock(dev, cfg.gateway.timezone),
                        self.devices,
                        self.router,
                        state_dir=self.data_dir / DEVICE_STATE_DIR / dev.id,
                    ),
                    restart,
                )
                for dev in cfg.devices
            ),
            ComponentSpec(
                "terminal-roster",
                TerminalRosterSync(
                    cfg,
                    roster=lambda: self.roster,
                    devices=self.devices,
                    clock=self.clock,
                    counters=self.counters,
                ),
                restart,
            ),
            *(ComponentSpec(f"camera-{cam.id}", _CameraComponent(self, cam), restart) for cam in cfg.cameras),
            ComponentSpec("heartbeat", _Task(self._heartbeat), restart),
            ComponentSpec("telemetry", _Task(self._telemetry), restart),
            ComponentSpec("status-file", _Task(self._status_file_loop), restart),
            ComponentSpec("reload", _Task(self._reload_on_signal), restart),
        ]
        if self.notifier.enabled and self.notifier.watchdog_interval_s() is not None:
            specs.append(ComponentSpec("watchdog", _Task(self._watchdog), restart))
        if self.config_path is not None and pending_marker(self.config_path).exists():
            specs.append(ComponentSpec("config-probation", _Task(self._confirm_pushed_config), leave_off))
        return specs

    # -- lifecycle ---------------------------------------------------------------------------

    def source(self, device: str) -> str:
        return self.emitter.source(device)

    def emit(self, event: Event, attachment: bytes | None = None) -> None:
        self.emitter.emit(event, attachment)

    def request_stop(self, reason: str = "signal") -> None:
        if not self._stop.is_set():
            self._stop_deadline = self.clock.monotonic() + self.config.agent.shutdown_timeout_s
        self._stop_reason = reason
        self._stop.set()

    @property
    def stop_deadline(self) -> float:
        """Until when the components' stop steps may publish (the shutdown bound)."""
        if self._stop_deadline is None:  # stopping for a failed component, not a request
            self._stop_deadline = self.clock.monotonic() + self.config.agent.shutdown_timeout_s
        return self._stop_deadline

    async def _reload_on_signal(self) -> None:
        """SIGHUP sets an event (a signal handler cannot await); the reload runs here, one at a time."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            await self.reload()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`; returns the process exit code."""
        loop = asyncio.get_running_loop()
        # The reader threads, the outbox writer and the event loop hand the GIL to each other; with
        # Python's default 5 ms switch interval a card read could wait that long per hand-off.
        sys.setswitchinterval(0.001)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def _run(self) -> int:
        previous = self._read_state()
        self._write_state("running")
        self._previous_shutdown = previous
        try:
            await self.supervisor.run(self._stop)
        except FatalComponentError as err:
            log.critical("the gateway stops: %s", err)
            self.exit_code = self.exit_code or 1
        finally:
            # The analyses under way end before the process does (see InferenceService.close).
            if not await asyncio.to_thread(self.cameras.inference.close, INFERENCE_EXIT_WAIT_S):
                log.warning(
                    "an analysis still running %.0f s after the stop: exiting without it",
                    INFERENCE_EXIT_WAIT_S,
                )
        self._write_status()
        if self.supervisor.fatal_reason is None:
            self._write_state("clean")
        log.info("stopped; %d events left in the outbox for the next start", self.outbox.pending_total)
        return self.exit_code

    # -- components' steps ----------------------------------------------------------------------

    async def _open_outbox(self) -> None:
        try:
            await self.outbox.open()
        except OutboxError as err:
            log.critical("cannot open the outbox: %s", err)
            raise

    async def _watch_outbox(self) -> None:
        """The outbox's writer thread is the only way to disk; if it dies the gateway is unhealthy."""
        while self.outbox.writer_alive():
            await self.clock.sleep(1.0)
        raise OutboxError("the outbox writer stopped")

    async def _serve_api(self) -> None:
        assert self.services is not None
        await serve_api(self.services, self.config.api)

    async def _start_faces(self) -> None:
        """Load the face models and templates when a camera does face recognition.

        Without a usable template key, face recognition stays off (logged, in the status) and
        everything else runs: a configuration mistake must not close the gates.
        """
        if not any(c.face for c in self.config.cameras):
            return
        assert self.roster is not None
        roster, emitter = self.roster, self.emitter
        settings = self.config.faces

        def publish_audit(data: dict[str, Any]) -> None:
            # What the CLI did to the gallery (`enroll --force`, `roster forget`) is audited here; a
            # deletion names its person as the subject, like the agent's own deletions.
            subject = data.get("target") if data.get("action") == "delete_person_data" else None
            emitter.emit(
                Event("edu.campus.gateway.audit.v1", emitter.source("gateway"), data, subject=subject)
            )

        try:
            key = parse_key(
                read_credential(settings.template_key_credential), settings.template_key_credential
            )
            store = await asyncio.to_thread(
                FaceTemplateStore,
                self.data_dir,
                key,
                synchronous=synchronous_of("faces", self.config.outbox.synchronous),
                now=self.clock.now,
            )
            if store.recovery is not None:
                _report_recovery(self, store.recovery.event_data())
            faces = await asyncio.to_thread(
                FaceService,
                store,
                settings,
                roster=lambda: roster.index,
                now=self.clock.now,
                publish_audit=publish_audit,
                runtime=self.config.vision.runtime(),
                detector=FaceDetectorConfig(max_batch=self.config.vision.detector_batch),
            )
        except (TemplateKeyError, VisionError) as err:
            self.cameras.face_error = (
                _face_key_help(self.config, err) if isinstance(err, TemplateKeyError) else str(err)
            )
            self.counters.count(f"faces_disabled_{err.code}")
            log.error("face recognition is off: %s", self.cameras.face_error)
            raise
        self.cameras.faces = faces
        self.roster.on_face_templates.append(faces.apply_roster)

    def _identity_service(self) -> IdentityService:
        assert self.roster is not None and self.attendance is not None and self.alert_book is not None
        cameras, cfg = self.cameras, self.config.agent
        self.identity = IdentityService(
            roster=self.roster,
            faces=lambda: cameras.faces,
            attendance=self.attendance,
            alerts=self.alert_book,
            anti_passback=self.anti_passback,
            emit=self.emitter.emit,
            source=self.emitter.source("gateway"),
            counters=self.counters,
            clock=self.clock,
            check_interval_s=cfg.consent_check_interval_s,
            attendance_keep_days=cfg.attendance_record_retention_days,
            local_today=lambda: self.clock.now().astimezone(self.timezone).date(),
        )
        return self.identity

    def _roster_signatures(self) -> RosterSignatures:
        agent = self.config.agent
        signatures = RosterSignatures(
            keys_credential=agent.roster_keys_credential,
            required=agent.roster_signatures == "required",
            max_age_s=agent.roster_signature_max_age_s,
            clock_skew_s=agent.roster_clock_skew_s,
            nonce_path=self.data_dir / ROSTER_NONCE_FILE,
            now=self.clock.now,
            nonce_file_expected=self._previous_shutdown != "first_start",
        )
        nonces = signatures.nonces
        if nonces.moved_to is not None:
            _report_recovery(
                self, {"store": "nonces", "moved_to": str(nonces.moved_to), "error": nonces.lost_error}
            )
        elif nonces.lost_error:  # missing though the agent ran before: logged, nothing was moved
            self.counters.count("store_lost_roster_nonces")
        self.roster_signatures = signatures
        return signatures

    def _roster_sync(self) -> RosterSync:
        assert self.roster is not None
        sync = RosterSync(
            self.roster,
            self.link,
            self.emitter,
            self.counters,
            self.config.gateway.id,
            clock=self.clock,
            max_message_bytes=self.config.agent.roster_max_message_bytes,
            signatures=self._roster_signatures(),
            part_timeout_s=self.config.agent.roster_part_timeout_s,
            # The faces component started first: a recovered faces.db lost the templates.
            refill_faces=self.cameras.faces is not None and self.cameras.faces.store.recovery is not None,
        )
        recovered = sync.request_resync()
        if recovered is not None:
            _report_recovery(self, recovered)
        return sync

    def _command_processor(self) -> _Subscriber:
        assert self.services is not None
        self.commands = CommandProcessor(
            self.services,
            self.config.commands,
            nonce_file_expected=self._previous_shutdown != "first_start",
        )
        self.services.commands = self.commands
        nonces = self.commands.nonces
        if nonces.moved_to is not None:
            _report_recovery(
                self, {"store": "nonces", "moved_to": str(nonces.moved_to), "error": nonces.lost_error}
            )
        elif nonces.lost_error:  # missing: guarded and logged the same way, but nothing was moved
            self.counters.count("store_lost_nonces")
        return _Subscriber(self.link, self.link.topics.command_filter, self.commands.handle)

    async def _build_gates(self) -> None:
        """Build every gate; openers and LED feedback look their driver up at the moment of use, so
        a device restarted by the supervisor is used again without rebuilding its gate."""
        assert self.roster is not None
        roster = self.roster
        self.router.terminals = TerminalRecords(
            self.config,
            roster=lambda: roster.index,
            attendance=self.attendance,
            emitter=self.emitter,
            counters=self.counters,
        )
        feedback_reader: dict[str, str] = {}
        for device in self.config.devices:
            if isinstance(device, OsdpBusConfig):
                for reader in device.readers:
                    feedback_reader[reader.id] = device.id
        for gate_cfg in self.config.gates:
            if gate_cfg.id in self.gates:
                continue
            bus = next(
                (feedback_reader[r.device] for r in gate_cfg.readers if r.device in feedback_reader), None
            )
            gate = GateController(
                gate_cfg,
                roster=self.roster,
                emit=self.emitter.emit,
                source=self.emitter.source,
                timezone=self.timezone,
                anti_passback=self.anti_passback,
                attendance=self.attendance,
                opener=self._opener(gate_cfg.turnstile)
                if gate_cfg.turnstile
                else self.doors.opener(gate_cfg),
                feedback=self._feedback(bus) if bus else None,
                on_grant=self.grants.note,
                clock=self.clock,
                holder=self.doors.holder(gate_cfg),
            )
            self.gates[gate_cfg.id] = gate
            self.router.add_gate(gate)
            self.doors.add_gate(gate)

    def _rollcall(self) -> RollCall:
        """Closes each attendance point's sessions (edge_agent/rollcall.py); the API shows them."""
        assert self.roster is not None and self.attendance is not None and self.services is not None
        roster = self.roster
        rollcall = RollCall(
            attendance_points(self.config),
            book=self.attendance,
            persons=lambda: roster.index.persons,
            emitter=self.emitter,
            clock=self.clock,
            timezone=self.timezone,
            counters=self.counters,
        )
        self.services.rollcall = rollcall
        return rollcall

    def _opener(self, device_id: str) -> Callable[[Any], Awaitable[None]]:
        async def open_(direction: Any) -> None:
            driver = self.devices.drivers.get(device_id)
            opener = getattr(driver, "open", None)
            if opener is None:
                raise _device_not_running(device_id)
            await opener(direction)

        return open_

    def _feedback(self, bus_id: str) -> Feedback:
        async def feedback(reader_id: str, granted: bool) -> None:
            driver = self.devices.drivers.get(bus_id)
            give = getattr(driver, "feedback", None)
            if give is not None:
                await give(reader_id, granted)

        return feedback

    async def _gate_timers(self) -> None:
        """Passages that were granted but never happened time out; judged on the gateway's clock."""
        while True:
            await self.clock.sleep(GATE_TIMER_S)
            now, at = self.clock.monotonic(), self.clock.now()
            for gate in self.gates.values():
                gate.expire(now, at)

    async def person_detector(self) -> PersonDetector:
        """The person detector, loaded once and shared by every camera."""
        if self.cameras.person_detector is None:
            runtime = self.config.vision.runtime()
            self.cameras.person_detector = await asyncio.to_thread(
                PersonDetector, PersonDetectorConfig(runtime=runtime)
            )
        return self.cameras.person_detector

    async def _confirm_pushed_config(self) -> None:
        """A configuration pushed by the centre proves itself by reaching the broker; if it does not
        within the probation, the previous file goes back and the agent exits non-zero, so systemd
        restarts it on the configuration that worked (unless that file is gone or does not load:
        then the agent goes on with the pushed one)."""
        assert self.config_path is not None
        path = self.config_path
        probation = self.config.commands.push_probation_s
        marker = pending_marker(path)
        try:
            await asyncio.wait_for(self.link.connected.wait(), probation)
        except TimeoutError:
            restored = await asyncio.to_thread(restore_previous_config, path)
            marker.unlink(missing_ok=True)
            if not restored:
                # Nothing that would start to go back to: the gates go on with the pushed file.
                self.counters.count("pushed_config_kept")
                log.critical(
                    "the pushed configuration did not reach the broker in %.0f s, and there is no "
                    "previous file that loads to put back: going on with %s (the gates decide "
                    "offline; fix the broker settings and push again)",
                    probation,
                    path,
                )
                return
            self.counters.count("pushed_config_rolled_back")
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

    async def reload(self) -> None:
        """SIGHUP: re-read the config; apply the log level and simulated devices, keep the rest until
        restart."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the agent was not started from a config file")
            return
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigFileError as err:
            log.error("reload refused, keeping the running configuration:\n%s", err)
            # systemd holds the unit in "reloading" until READY=1, refused or not.
            self.notifier.ready(f"reload refused; {self.one_line_status()}")
            return
        for section in ("gateway", "mqtt", "outbox", "devices", "gates", "cameras", "vision"):
            if getattr(new, section) != getattr(self.config, section):
                log.warning("reload: changes to '%s' take effect after a restart", section)
        setup_logging(new.agent.log_level)
        if self.cameras.faces is not None:
            # Enrollments made with `edge-agent enroll` while we ran are picked up here.
            await asyncio.to_thread(self.cameras.faces.reload)
        if self.identity is not None:
            self.identity.wake()  # `edge-agent roster forget` changed the gallery: a new digest now
        if self.commands is not None:
            self.commands.reload_keys()
        if self.roster_signatures is not None:
            self.roster_signatures.reload_keys()  # a rotated roster key (docs/INTEGRATORS.md)
        self.config = self.config.model_copy(update={"agent": new.agent, "simulated": new.simulated})
        self.simulated.replace()
        log.info("configuration reloaded from %s", self.config_path)
        self.notifier.ready(self.one_line_status())

    def redraw_zones(self, camera_id: str, security: SecurityConfig) -> bool:
        """Camera ``camera_id``'s security settings replaced by ``security``: the same but for its
        zones and lines (the console's zone editor). Its analysis, when it runs, judges by them
        from its next frame; returns whether it runs."""
        cameras = [
            setup.model_copy(update={"security": security}) if setup.id == camera_id else setup
            for setup in self.config.cameras
        ]
        worker = self.cameras.security_workers.get(camera_id)
        if worker is not None:
            worker.replace_zones(security)  # refuses anything but zones and lines
        self.config = self.config.model_copy(update={"cameras": cameras})
        return worker is not None

    def _reply_expired(self, topic: str, reason: str) -> None:
        """A command or roster reply the link could not deliver in time: the centre sees it as an
        audited failure (events, unlike replies, are kept until delivered)."""
        self.counters.count(f"reply_expired_{reason}")
        self.emitter.emit(
            Event(
                "edu.campus.gateway.audit.v1",
                self.emitter.source("gateway"),
                {
                    "actor": "gateway",
                    "role": "unknown",
                    "via": "mqtt",
                    "action": "reply",
                    "target": topic,
                    "result": "failed",
                    "reason": f"reply not delivered: {reason}",
                },
            )
        )

    # -- health ------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True while no component has failed for good; gates the systemd watchdog.

        A full disk (outbox storage ``critical``) does not make the gateway unhealthy: a restart would
        lose the events held in memory and free no space; it shows in the status and as an alert."""
        return self.supervisor.healthy() and self.outbox.writer_alive()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s()
        assert interval is not None  # only in the table when systemd asked for a watchdog
        while True:
            if self.healthy():
                self.notifier.watchdog()
            else:
                log.error("a component has failed; withholding the watchdog ping")
            await self.clock.sleep(interval)

    async def _heartbeat(self) -> None:
        while True:
            await self.clock.sleep(self.config.agent.heartbeat_interval_s)
            if self.alert_book is not None:
                # Snapshots (faces of strangers) go after their retention; old alerts after theirs.
                await asyncio.to_thread(self.alert_book.housekeeping)
            self.emitter.emit(
                Event(
                    "edu.campus.device.heartbeat.v1",
                    self.emitter.source("gateway"),
                    {
                        "device": "gateway",
                        "kind": "gateway",
                        "uptime_s": self.uptime_s(3),
                        "counter": self.outbox.stats.appended,
                        "errors": self.outbox.stats.commit_failures,
                    },
                )
            )
            self.notifier.status(self.one_line_status())

    def uptime_s(self, digits: int = 1) -> float:
        return round(self.clock.monotonic() - self.started_at, digits)

    def telemetry(self) -> dict[str, Any]:
        """Counters for the central dashboards: state, not events, so it is not kept while offline."""
        link = self.link
        return {
            "site": self.config.gateway.site,
            "gateway": self.config.gateway.id,
            "version": __version__,
            "at": format_time(self.clock.now()),
            "uptime_s": self.uptime_s(),
            "outbox": {
                "pending": self.outbox.pending_total,
                "appended": self.outbox.stats.appended,
                "delivered": self.outbox.stats.delivered,
                "commit_failures": self.outbox.stats.commit_failures,
                "dropped_undelivered": sum(self.outbox.stats.dropped_undelivered.values()),
            },
            "mqtt": {
                "published": link.stats.published,
                "acked": link.stats.acked,
                "connects": link.stats.connects,
                "refused_publishes": link.stats.refused_publishes,
            },
            "gates": {gid: g.stats.__dict__.copy() for gid, g in self.gates.items()},
            "devices": {
                dev_id: {k: int(v) for k, v in getattr(driver, "counters", {}).items()}
                for dev_id, driver in self.devices.drivers.items()
            },
            "agent": self.counters.snapshot(),
        }

    async def _telemetry(self) -> None:
        while True:
            await self.clock.sleep(self.config.agent.telemetry_interval_s)
            if not self.link.connected.is_set():
                continue  # state, not events: nothing to keep while offline
            try:
                await self.link.publish(self.link.topics.telemetry, orjson.dumps(self.telemetry()))
            except (TypeError, ValueError, orjson.JSONEncodeError):
                # A counter that is not JSON must not end telemetry for the rest of the run.
                self.counters.count("telemetry_failed")
                log.exception("telemetry not published")
            except SyncError as err:  # the link went away between the check and the publish
                self.counters.count("telemetry_not_published")
                log.info("telemetry not published: %s", err)

    def status_extra(self) -> dict[str, Any]:
        devices: dict[str, dict[str, Any]] = {
            sim_id: {"kind": "simulated", "running": running}
            for sim_id, running in self.simulated.running().items()
        }
        for dev_id, state in self.devices.state.items():
            devices[dev_id] = {"kind": state.get("kind", "device"), "online": bool(state.get("online"))}
        extra: dict[str, Any] = {
            "devices": devices,
            "roster_version": self.roster.version if self.roster else 0,
            "components": self.supervisor.snapshot(),
        }
        if self.roster_signatures is not None:
            extra["roster_signatures"] = self.roster_signatures.status()
        if self.config.cameras:
            faces = self.cameras.faces
            extra["faces"] = {
                "enabled": faces is not None,
                "error": self.cameras.face_error,
                "templates": faces.gallery.template_count if faces else 0,
                **(self.identity.status() if self.identity is not None else {}),
            }
            extra["vision"] = self._vision_status()
        return extra

    def _vision_status(self) -> dict[str, Any]:
        inference = self.cameras.inference
        return {
            "models": [
                {"model": m.model_id, "provider": m.provider, "fallback": m.fallback_reason}
                for m in self.cameras.models()
            ],
            "inference": {
                "threads": inference.workers,
                "max_batch": inference.max_batch,
                "attendance_share": round(inference.attendance_share(), 3),
                "attendance_max_share": inference.attendance_max_share,
                "lanes": [
                    {
                        "camera": lane.camera_id,
                        "analysis": lane.analysis,
                        "analysed": lane.counters["analysed"],
                        "replaced": lane.counters["replaced"],
                        "failed": lane.counters["failed"],
                        "last_lag_s": round(lane.last_lag_s, 4),
                    }
                    for lane in inference.lanes
                ],
            },
        }

    def status(self) -> dict[str, Any]:
        """What ``edge-agent status`` and the local API show."""
        link = self.link
        return {
            "version": __version__,
            "site": self.config.gateway.site,
            "gateway": self.config.gateway.id,
            "pid": os.getpid(),
            "uptime_s": self.uptime_s(),
            "broker": {
                "url": self.config.mqtt.url,
                "state": link.state,
                "last_error": link.stats.last_error,
                "connect_failures": link.stats.connect_failures,
                "auth_failures": link.stats.auth_failures,
                "published": link.stats.published,
                "acked": link.stats.acked,
            },
            "outbox": {
                "last_seq": self.outbox.last_seq,
                "pending": self.outbox.pending_total,
                "appended": self.outbox.stats.appended,
                "delivered": self.outbox.stats.delivered,
                "dropped_undelivered": self.outbox.stats.dropped_undelivered,
                "commit_failures": self.outbox.stats.commit_failures,
                "recovered_from": str(self.outbox.recovered_from) if self.outbox.recovered_from else None,
                "never_committed": self.outbox.stats.never_committed,
                # "critical": alerts and access wait in memory (docs/OPERATIONS.md, "Full disk").
                "storage": dataclasses.asdict(self.outbox.storage),
            },
            "stores": _stores_status(self),
            **self.status_extra(),
        }

    def one_line_status(self) -> str:
        line = (
            f"broker {self.link.state}; backlog {self.outbox.pending_total}; last seq {self.outbox.last_seq}"
        )
        if self.cameras.face_error:
            # systemctl status shows this line: a day-one key mistake must be seen without the journal.
            line += "; face recognition off (edge-agent status says why)"
        return line

    async def _status_file_loop(self) -> None:
        while True:
            await asyncio.to_thread(self._write_status)
            await self.clock.sleep(STATUS_FILE_INTERVAL_S)

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

    def build_services(self) -> Services:
        assert self.roster is not None and self.alert_book is not None
        return Services(
            clock=self.clock,
            data_dir=self.data_dir,
            counters=self.counters,
            emitter=self.emitter,
            outbox=self.outbox,
            link=self.link,
            roster=self.roster,
            alerts=AlertDesk(self.alert_book, self.emitter),
            devices=self.devices,
            gates=self.gates,
            cameras=self.cameras,
            config=ConfigAccess(
                current=lambda: self.config,
                path=self.config_path,
                reload=self.reload,
                redraw=self.redraw_zones,
            ),
            report=StatusView(
                status=self.status,
                one_line=self.one_line_status,
                healthy=self.healthy,
                telemetry=self.telemetry,
            ),
        )


def _on_gateway_clock(device: DeviceConfig, timezone: str) -> DeviceConfig:
    """A network device whose clock's timezone is not configured keeps the gateway's local time
    (its timestamps are read in the gateway's timezone)."""
    if "timezone" in type(device).model_fields and getattr(device, "timezone", None) is None:
        return device.model_copy(update={"timezone": timezone})
    return device


async def _idle() -> None:
    """A component whose work is all in ``start()``."""


def _device_not_running(device_id: str) -> Exception:
    return DeviceError(f"device {device_id} is not running", device_id=device_id, code="not_running")


class _Deferred:
    """A component built when it starts, from what earlier components opened (the roster, the link)."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._inner: Any = None

    async def start(self) -> None:
        self._inner = self._build()
        await self._inner.start()

    async def run(self) -> None:
        await self._inner.run()

    async def stop(self) -> None:
        if self._inner is not None:
            await self._inner.stop()


class _Subscriber:
    """Hands one subscription of the link to a handler; the link delivers its messages in order."""

    def __init__(self, link: MqttLink, topic_filter: str, handler: Any) -> None:
        self.link, self.topic_filter, self.handler = link, topic_filter, handler

    async def start(self) -> None:
        self.link.subscribe(self.topic_filter, self.handler)

    async def run(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class _SimulatedDevices:
    """The simulated heartbeat devices (demo and tests), one task each in the component's own group;
    a reload replaces the list without touching the rest of the gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._replace = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def replace(self) -> None:
        self._replace.set()

    def running(self) -> dict[str, bool]:
        return {sim_id: not task.done() for sim_id, task in self._tasks.items()}

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        gw = self.gateway
        while True:
            self._replace.clear()
            async with asyncio.TaskGroup() as group:
                self._tasks = {
                    sim.id: group.create_task(
                        SimulatedDevice(sim, gw.emitter.source(sim.id), gw.emitter.emit, gw.clock).run(),
                        name=f"simulated-{sim.id}",
                    )
                    for sim in gw.config.simulated
                }
                await self._replace.wait()
                for task in self._tasks.values():
                    task.cancel()

    async def stop(self) -> None:
        pass


def _report_recovery(gw: Gateway, data: dict[str, object]) -> None:
    """A store was found corrupt and replaced (the store itself logged how): tell the centre, count
    it, and keep it for the status. The outbox is open by then, so the event is kept until sent."""
    gw.counters.count(f"store_recovered_{data['store']}")
    gw.store_recoveries.append(data)
    gw.emitter.emit(Event("edu.campus.gateway.storage_recovered.v1", gw.emitter.source("gateway"), data))


def _face_key_help(config: GatewayConfig, err: TemplateKeyError) -> str:
    """What is wrong with the face template key, where the agent looks for it and how to make one."""
    name = config.faces.template_key_credential
    need = next((need for need in needed_credentials(config) if need.name == name), None)
    what = f"credential {name!r} is missing" if err.code == "template_key_missing" else str(err)
    if err.code == "template_key_mismatch":
        # A new key would not help: the gallery needs the key it was made with.
        return f"{what}. {where_to_put(name)}; then restart the agent"
    if need is None:
        return f"{what}. {where_to_put(name)}"
    return f"{what}: {need.why}. {where_to_put(name)}; e.g. {need.how}; then restart the agent"


def _stores_status(gw: Gateway) -> dict[str, Any]:
    """What ``edge-agent status`` shows of the local stores: recoveries at this start, damaged rows."""
    damaged: dict[str, int] = {}
    if gw.alert_book is not None:
        damaged["alerts"] = gw.alert_book.damaged.count
    if gw.attendance is not None:
        damaged["attendance_unrecorded"] = gw.attendance.unrecorded.count
    if gw.cameras.faces is not None:
        damaged["faces"] = gw.cameras.faces.store.damaged.count
    return {"recovered": list(gw.store_recoveries), "damaged_rows": damaged}


class _Stores:
    """The local SQLite stores other than the outbox: roster, attendance, alert book. Each checks its
    file at open; a corrupt one is moved aside, replaced, and reported here (sync.storage)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def start(self) -> None:
        gw = self.gateway
        cfg = gw.config.agent
        outbox_sync = gw.config.outbox.synchronous
        gw.roster = await asyncio.to_thread(Roster, gw.data_dir, now=gw.clock.now)
        await seed_roster(gw.roster, cfg.roster_seed, gw.config_path)
        gw.attendance = await asyncio.to_thread(
            AttendanceBook,
            gw.data_dir,
            synchronous=synchronous_of("attendance", outbox_sync),
            now=gw.clock.now,
        )
        gw.alert_book = await asyncio.to_thread(
            AlertBook,
            gw.data_dir,
            cfg.alert_snapshot_retention_s,
            cfg.alert_retention_s,
            synchronous=synchronous_of("alerts", outbox_sync),
            now=gw.clock.now,
        )
        for store in (gw.attendance, gw.alert_book):
            if store.recovery is not None:
                _report_recovery(gw, store.recovery.event_data())
        gw.emitter.alerts = gw.alert_book
        gw.services = gw.build_services()

    async def run(self) -> None:
        pass

    async def stop(self) -> None:
        gw = self.gateway
        gw.emitter.alerts = None
        # The face store too (opened by the faces component, which has stopped by now): closing
        # checkpoints the WAL into faces.db, so a stopped agent leaves every store whole in its file.
        faces = gw.cameras.faces.store if gw.cameras.faces is not None else None
        for store in (gw.roster, gw.attendance, gw.alert_book, faces):
            if store is not None:
                store.close()


class _Link:
    """The MQTT link; at stop it publishes the backlog while the shutdown bound allows."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        await self.gateway.link.run()

    async def stop(self) -> None:
        gw = self.gateway
        clock = gw.clock
        deadline = gw.stop_deadline
        while gw.link.connected.is_set() and gw.outbox.pending_total > 0 and clock.monotonic() < deadline - 1:
            await clock.sleep(0.05)
        await gw.link.shutdown(drain_timeout_s=max(0.1, min(2.0, deadline - clock.monotonic())))


class _StorageAlarm:
    """The outbox's ``storage_critical`` alert cannot wait in the full outbox. While it lasts, this
    publishes it straight to the broker (with the id and seq the outbox commits it with once space
    returns, so the centre de-duplicates the later copy) and puts it in the local alert book for the
    console (when the book's own file can still take it)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def start(self) -> None:
        pass

    async def run(self) -> None:
        gw = self.gateway
        published = booked = failed = ""
        while True:
            critical = gw.outbox.critical_alert
            if critical is not None:
                event, seq = critical
                if booked != event.id and gw.alert_book is not None:
                    # Once per alert: live console subscribers get it even when the book's insert
                    # fails (same full disk); a retry would only repeat it to them.
                    booked = event.id
                    try:
                        gw.alert_book.record(event)
                    except sqlite3.Error:
                        gw.counters.count("storage_alert_not_in_book")
                if published != event.id and gw.link.connected.is_set():
                    severity = event.severity.value if event.severity else None
                    try:
                        for topic in gw.link.topics.for_event(event.type, severity):
                            await gw.link.publish(topic, event.to_json(seq))
                        published = event.id
                        log.warning("storage critical alert %s published directly (seq %d)", event.id, seq)
                    except SyncError as err:
                        if failed != event.id:  # once per alert, not every retry
                            failed = event.id
                            log.warning("storage critical alert not published yet (retrying): %s", err)
            await gw.clock.sleep(STORAGE_ALARM_INTERVAL_S)

    async def stop(self) -> None:
        pass


class _Lifecycle:
    """``gateway.started`` once the link can carry it; ``gateway.stopped`` once devices are down."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def start(self) -> None:
        gw = self.gateway
        gw.emitter.emit(
            Event(
                "edu.campus.gateway.started.v1",
                gw.emitter.source("gateway"),
                {
                    "version": __version__,
                    "hostname": socket.gethostname(),
                    "outbox_backlog": gw.outbox.pending_total,
                    "previous_shutdown": gw._previous_shutdown,
                },
            )
        )
        gw.notifier.ready(gw.one_line_status())
        cfg = gw.config
        log.info(
            "agent %s running: site %s gateway %s, data in %s, broker %s",
            __version__,
            cfg.gateway.site,
            cfg.gateway.id,
            gw.data_dir,
            cfg.mqtt.url,
        )

    async def run(self) -> None:
        pass

    async def stop(self) -> None:
        gw = self.gateway
        log.info("stopping (%s)", gw._stop_reason)
        gw.notifier.stopping(f"stopping: {gw._stop_reason}")
        event = Event(
            "edu.campus.gateway.stopped.v1",
            gw.emitter.source("gateway"),
            {"version": __version__, "reason": gw._stop_reason, "uptime_s": gw.uptime_s(3)},
        )
        await asyncio.wait_for(gw.outbox.append(event), max(0.1, gw.stop_deadline - gw.clock.monotonic()))


class _CameraComponent:
    """One camera: open it (through the device registry), run its face and security workers on
    each frame, idle the analysis rate on a still scene, close it."""

    def __init__(self, gateway: Gateway, setup: CameraSetup) -> None:
        self.gateway = gateway
        self.setup = setup
        self._stack: AsyncExitStack | None = None
        self.camera: Camera | None = None
        self.workers: list[CameraWorker | SecurityWorker] = []
        gateway.devices.known(setup.id, "camera")

    async def start(self) -> None:
        gw, setup = self.gateway, self.setup
        stack = AsyncExitStack()
        try:
            self.camera = await stack.enter_async_context(open_camera(setup.device))
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self.workers = []
        assert gw.roster is not None and gw.attendance is not None
        if setup.security is not None:
            try:
                security = SecurityWorker(
                    setup,
                    detector=await gw.person_detector(),
                    grants=gw.grants.grants_within,
                    emit=gw.emitter.emit,
                    source=gw.emitter.source,
                    timezone=gw.timezone,
                    monotonic=gw.clock.monotonic,
                    now=gw.clock.now,
                    sleep=gw.clock.sleep,
                    inference=gw.cameras.inference,
                )
            except VisionError as err:
                gw.counters.count(f"security_disabled_{err.code}")
                log.error("camera %s: security analysis is off: %s", setup.id, err)
            else:
                gw.cameras.security_workers[setup.id] = security
                self.workers.append(security)
        faces = gw.cameras.faces
        if setup.face is not None and faces is not None:
            roster = gw.roster
            face = CameraWorker(
                setup,
                models=faces.models,
                # Counts and logs a match of a person who left the roster since (edge_agent.identity).
                person=gw.identity.person
                if gw.identity is not None
                else lambda person_id: roster.index.persons.get(person_id),
                attendance=gw.attendance,
                recent_card=gw.grants.recent_card,
                emit=gw.emitter.emit,
                source=gw.emitter.source,
                timezone=gw.timezone,
                monotonic=gw.clock.monotonic,
                inference=gw.cameras.inference,
            )
            gw.cameras.face_workers[setup.id] = face
            self.workers.append(face)
        gw.devices.drivers[setup.id] = self.camera

    async def run(self) -> None:
        camera, setup, gw = self.camera, self.setup, self.gateway
        assert camera is not None
        async with asyncio.TaskGroup() as workers:
            # The workers hand frames to the shared inference service: each camera's newest frame
            # waits there for a thread (a slow model skips frames, never lags).
            tasks = [workers.create_task(w.run(), name=f"{w.kind}-{setup.id}") for w in self.workers]
            idle = False
            async for item in camera.frames():
                if not isinstance(item, CameraFrame):
                    await gw.router.on_reading(item)
                    continue
                gw.cameras.latest_frames[setup.id] = item
                if not self.workers:
                    continue
                for worker in self.workers:
                    worker.submit(item)
                # A still, empty scene is analysed at the idle rate; the first motion restores the
                # full rate. Judged on capture times, the frames' own clock.
                still_for = item.monotonic_s - max(w.last_activity for w in self.workers)
                should_idle = setup.idle_analysis_fps is not None and still_for >= setup.idle_after_s
                if should_idle != idle:
                    idle = should_idle
                    camera.set_analysis_fps(setup.idle_analysis_fps if idle else None)
            for task in tasks:  # the camera closed: nothing more to analyse
                task.cancel()

    async def stop(self) -> None:
        gw = self.gateway
        for worker in self.workers:
            await worker.stop()
        gw.devices.drivers.pop(self.setup.id, None)
        gw.cameras.face_workers.pop(self.setup.id, None)
        gw.cameras.security_workers.pop(self.setup.id, None)
        gw.cameras.latest_frames.pop(self.setup.id, None)
        self.workers = []
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


__all__ = ["Gateway"]

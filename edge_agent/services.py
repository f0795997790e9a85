"""The narrow handles the gateway's components are given, instead of the gateway itself.

Each is one concept with one owner: :class:`Counters` (the agent's own counters), :class:`Emitter`
(the only way an event leaves a component: the outbox, and the local alert book for alerts),
:class:`DeviceDirectory` (open drivers and what is known of each device),
:class:`CameraDirectory`, :class:`AlertDesk` (the alert book and acknowledgement), :class:`ConfigAccess`
(the running configuration and reload). The gateway builds them once; :class:`Services` bundles them
for the two edges that serve people — the local API and remote commands — which need to read most
of the state. Components that decide (gates, cameras, roster sync) take only the handles they use.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_drivers import Camera, CameraFrame, Driver
from edge_agent.alerts import AlertBook, AlertError, AlertRecord
from edge_agent.clock import Clock
from edge_agent.config import GatewayConfig, SecurityConfig
from edge_agent.inference import InferenceService
from edge_agent.roster import Roster
from sync import Committed, Event, MqttLink, Outbox, make_source

if TYPE_CHECKING:
    # Type-only: these modules take the handles defined here, so importing them would be a cycle.
    from edge_agent.cameras import CameraWorker, SecurityWorker
    from edge_agent.commands import CommandProcessor
    from edge_agent.faces import FaceService
    from edge_agent.gates import GateController
    from edge_agent.rollcall import RollCall
    from vision import OnnxModel, PersonDetector

log = logging.getLogger(__name__)


class Counters:
    """The agent's own counters (failed handlers, refused messages, ...), by stable name."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}

    def count(self, key: str, n: int = 1) -> None:
        self._values[key] = self._values.get(key, 0) + n

    def get(self, key: str) -> int:
        return self._values.get(key, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._values.items()))


@dataclass
class Emitter:
    """Hands events to the outbox without waiting for the commit; alerts also to the local alert book,
    so the console shows them with the network down."""

    outbox: Outbox
    site: str
    gateway: str
    counters: Counters
    alerts: AlertBook | None = None

    def source(self, device: str) -> str:
        return make_source(self.site, self.gateway, device)

    def emit(self, event: Event, attachment: bytes | None = None) -> None:
        self.outbox.submit(event, attachment)
        self._book(event, attachment)

    def commit(self, event: Event) -> asyncio.Future[Committed]:
        """Emit ``event`` and return its commit: for a device that may forget a record only once
        its event is durable (a terminal's log position)."""
        committed = self.outbox.append_nowait(event)
        self._book(event, None)
        return committed

    def _book(self, event: Event, attachment: bytes | None) -> None:
        if event.spec.alert and self.alerts is not None:
            try:
                self.alerts.record(event, attachment)
            except sqlite3.Error as err:
                # The outbox still carries it; on a full disk this fails for every alert, so the
                # book's damage log (one line a minute) says it, not a line per alert.
                self.counters.count("alert_book_failed")
                self.alerts.damaged.note(event.id, err)


@dataclass
class DeviceDirectory:
    """Open drivers (and cameras) by device id, and the last known state of every device."""

    drivers: dict[str, Driver | Camera] = field(default_factory=dict)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kind(self, device_id: str) -> str:
        return str(self.state.get(device_id, {}).get("kind", "device"))

    def known(self, device_id: str, kind: str) -> None:
        self.state.setdefault(device_id, {"kind": kind, "online": False})

    def set_online(self, device_id: str, online: bool) -> None:
        self.state.setdefault(device_id, {"kind": "device"})["online"] = online


@dataclass
class CameraDirectory:
    """The face service (when face recognition runs), the person detector (once a camera needs it),
    the inference service every camera's analysis runs on, and the analysis workers of every camera."""

    inference: InferenceService = field(default_factory=InferenceService)
    faces: FaceService | None = None
    person_detector: PersonDetector | None = None
    face_error: str = ""
    face_workers: dict[str, CameraWorker] = field(default_factory=dict)
    security_workers: dict[str, SecurityWorker] = field(default_factory=dict)
    latest_frames: dict[str, CameraFrame] = field(default_factory=dict)
    """The newest frame of every open camera (the console draws zones on it)."""

    def models(self) -> list[OnnxModel]:
        """The models loaded so far (for the providers they run on, in metrics, status and doctor)."""
        loaded = []
        if self.faces is not None:
            loaded += [self.faces.models.detector.model, self.faces.models.embedder.model]
        if self.person_detector is not None:
            loaded.append(self.person_detector.model)
        return loaded


@dataclass
class AlertDesk:
    """The local alert book and the acknowledgement of alerts by security staff (audited)."""

    book: AlertBook
    emitter: Emitter

    def acknowledge(self, alert_id: str, by: str, via: str, note: str = "") -> AlertRecord:
        """Raises :class:`AlertError` for an unknown or already acknowledged alert."""
        record = self.book.acknowledge(alert_id, by, note)
        data: dict[str, Any] = {
            "alert_id": record.id,
            "alert_type": record.type,
            "by": by,
            "via": via,
            "at": record.acknowledged_at or "",
        }
        if note:
            data["note"] = note
        self.emitter.emit(
            Event(
                "edu.campus.security.alert_acknowledged.v1",
                self.emitter.source("gateway"),
                data,
                subject=None,
            )
        )
        return record


@dataclass
class ConfigAccess:
    """The running configuration (it changes on reload), where it came from, how to reload it, and
    ``redraw(camera_id, security)``: that camera's security settings replaced by ``security`` (its
    own with other zones and lines), its analysis judging by them from its next frame (returns
    whether its analysis runs, so took them now)."""

    current: Callable[[], GatewayConfig]
    path: Path | None
    reload: Callable[[], Awaitable[None]]
    redraw: Callable[[str, SecurityConfig], bool]
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by whatever writes the file (``push_config``, the console's zone editor): one writer at
    a time, so neither installs a file made from one the other has just replaced."""


@dataclass
class StatusView:
    """What the gateway reports about itself: the status document, one line, health, telemetry."""

    status: Callable[[], dict[str, Any]]
    one_line: Callable[[], str]
    healthy: Callable[[], bool]
    telemetry: Callable[[], dict[str, Any]]


@dataclass
class Services:
    """The handles the local API and remote commands are given (never the gateway itself)."""

    clock: Clock
    data_dir: Path
    counters: Counters
    emitter: Emitter
    outbox: Outbox
    link: MqttLink
    roster: Roster
    alerts: AlertDesk
    devices: DeviceDirectory
    gates: Mapping[str, GateController]
    cameras: CameraDirectory
    config: ConfigAccess
    report: StatusView
    commands: CommandProcessor | None = None
    """Set once remote commands run (they start after the API); metrics read their counters."""
    rollcall: RollCall | None = None
    """Set once the roll-call component runs (it starts after the API)."""


__all__ = [
    "AlertDesk",
    "AlertError",
    "CameraDirectory",
    "ConfigAccess",
    "Counters",
    "DeviceDirectory",
    "Emitter",
    "Services",
    "StatusView",
]

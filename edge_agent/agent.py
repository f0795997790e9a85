"""The supervisor: one asyncio process that starts the components in order and stops them in reverse.

Start: outbox → MQTT link → ``gateway.started`` → devices → READY. Stop (SIGTERM/SIGINT): STOPPING
→ devices → ``gateway.stopped`` → publish the backlog for at most ``shutdown_timeout_s`` → retained
``offline`` → outbox closed. Whatever was not published stays committed and goes out after the
next start. SIGHUP reloads what can change without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.config import ConfigFileError, GatewayConfig, load_config
from edge_agent.logs import setup_logging
from edge_agent.sdnotify import Notifier
from edge_agent.secrets import credential_path, read_credential
from edge_agent.simulated import SimulatedDevice
from sync.envelope import Event, make_source
from sync.mqtt_link import MqttLink
from sync.outbox import Outbox, OutboxError

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
        self._device_tasks: dict[str, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[Any]] = []

    def source(self, device: str) -> str:
        return make_source(self.config.gateway.site, self.config.gateway.id, device)

    # -- events ------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Hand an event to the outbox. Never blocks: the hot path does not wait for the commit."""
        self.outbox.submit(event)

    # -- lifecycle ---------------------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        self._stop_reason = reason
        self._stop.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`request_stop`; returns the process exit code."""
        loop = asyncio.get_running_loop()
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
        link_task = asyncio.create_task(self.link.run(), name="mqtt-link")
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
        self._background = [
            asyncio.create_task(self._heartbeat(), name="gateway-heartbeat"),
            asyncio.create_task(self._status_file_loop(), name="status-file"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        ]
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
        return 0

    async def _shutdown(self, link_task: asyncio.Task[None]) -> None:
        cfg = self.config
        deadline = time.monotonic() + cfg.agent.shutdown_timeout_s
        log.info("stopping (%s)", self._stop_reason)
        self.notifier.stopping(f"stopping: {self._stop_reason}")
        await self._stop_devices()
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
        self._write_status()
        self._write_state("clean")
        left = self.outbox.pending_total
        log.info("stopped; %d events left in the outbox for the next start", left)

    def _start_devices(self) -> None:
        for sim in self.config.simulated:
            device = SimulatedDevice(sim, self.source(sim.id), self.emit)
            self._device_tasks[sim.id] = asyncio.create_task(device.run(), name=f"device-{sim.id}")

    async def _stop_devices(self) -> None:
        tasks = list(self._device_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._device_tasks.clear()

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
            self.notifier.status(self.one_line_status())
            return
        for section in ("gateway", "mqtt", "outbox"):
            if getattr(new, section) != getattr(self.config, section):
                log.warning("reload: changes to '%s' take effect after a restart", section)
        setup_logging(new.agent.log_level)
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

    def status_extra(self) -> dict[str, Any]:
        return {
            "devices": {
                dev_id: {"kind": "simulated", "running": not task.done()}
                for dev_id, task in self._device_tasks.items()
            }
        }

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

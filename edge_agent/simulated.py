"""Simulated devices for the demo and the tests: real events through the real outbox and link."""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_agent.clock import Clock
from edge_agent.config import SimulatedSourceConfig
from sync import Event, Severity

log = logging.getLogger(__name__)


class SimulatedDevice:
    """Reports ``device.online``, then a heartbeat every ``interval_s`` with a counter that never
    skips, and optionally a security test alert every ``test_alert_interval_s``."""

    def __init__(
        self, config: SimulatedSourceConfig, source: str, emit: Callable[[Event], object], clock: Clock
    ) -> None:
        self.config = config
        self.source = source
        self.emit = emit
        self.clock = clock
        self.counter = 0
        self.started = clock.monotonic()

    async def run(self) -> None:
        cfg = self.config
        self.emit(
            Event(
                "edu.campus.device.online.v1",
                self.source,
                {"device": cfg.id, "kind": "simulated", "reason": "started"},
            )
        )
        next_alert = self.clock.monotonic() + (cfg.test_alert_interval_s or 0)
        while True:
            self.counter += 1
            self.emit(
                Event(
                    "edu.campus.device.heartbeat.v1",
                    self.source,
                    {
                        "device": cfg.id,
                        "kind": "simulated",
                        "uptime_s": round(self.clock.monotonic() - self.started, 3),
                        "counter": self.counter,
                    },
                )
            )
            if cfg.test_alert_interval_s is not None and self.clock.monotonic() >= next_alert:
                next_alert += cfg.test_alert_interval_s
                self.emit(
                    Event(
                        "edu.campus.security.test_alert.v1",
                        self.source,
                        {"device": cfg.id, "reason": "scheduled test of the alarm chain"},
                        severity=Severity.INFO,
                    )
                )
            await self.clock.sleep(cfg.interval_s)

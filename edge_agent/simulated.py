"""Simulated devices for the demo and the tests: real events through the real outbox and link."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from edge_agent.config import SimulatedSourceConfig
from sync.envelope import Event
from sync.event_types import Severity

log = logging.getLogger(__name__)


class SimulatedDevice:
    """Reports ``device.online``, then a heartbeat every ``interval_s`` with a counter that never
    skips, and optionally a security test alert every ``test_alert_interval_s``."""

    def __init__(self, config: SimulatedSourceConfig, source: str, emit: Callable[[Event], object]) -> None:
        self.config = config
        self.source = source
        self.emit = emit
        self.counter = 0
        self.started = time.monotonic()

    async def run(self) -> None:
        cfg = self.config
        self.emit(
            Event(
                "edu.campus.device.online.v1",
                self.source,
                {"device": cfg.id, "kind": "simulated", "reason": "started"},
            )
        )
        next_alert = time.monotonic() + (cfg.test_alert_interval_s or 0)
        while True:
            self.counter += 1
            self.emit(
                Event(
                    "edu.campus.device.heartbeat.v1",
                    self.source,
                    {
                        "device": cfg.id,
                        "kind": "simulated",
                        "uptime_s": round(time.monotonic() - self.started, 3),
                        "counter": self.counter,
                    },
                )
            )
            if cfg.test_alert_interval_s is not None and time.monotonic() >= next_alert:
                next_alert += cfg.test_alert_interval_s
                self.emit(
                    Event(
                        "edu.campus.security.test_alert.v1",
                        self.source,
                        {"device": cfg.id, "reason": "scheduled test of the alarm chain"},
                        severity=Severity.INFO,
                    )
                )
            await asyncio.sleep(cfg.interval_s)

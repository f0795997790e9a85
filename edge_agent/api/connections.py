"""Bounds on the API's connections: how many may be open, and how long each may stall.

uvicorn (h11, the protocol installed here) arms no timer until a first response is complete: a client
that connects and sends nothing, half a request line or half a body holds a file descriptor for as
long as it likes, and ``limit_concurrency`` answers 503 only once a whole request has arrived, so it
does not bound connections either. The agent's serial ports, SQLite files and MQTT link share the
process's descriptor limit with these connections, so here every connection is held to a cap on open
connections (the one over it is closed as soon as it is accepted) and to a deadline per stage: the
request line and headers, then the body, then uvicorn's keep-alive timeout between requests.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

import h11
from prometheus_client.core import GaugeMetricFamily, Metric
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_agent.clock import Clock
from edge_agent.config import ApiSettings
from edge_agent.services import Counters

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 10.0
"""At most one log line per this many seconds about refused and timed-out connections: a flood of
half-open connections must not become a flood of log lines."""


class Closed(enum.Enum):
    """Why the API closed a connection; ``api_connections_<value>`` in the agent's counters."""

    REFUSED = "refused"
    HEADER_TIMEOUT = "header_timeout"
    BODY_TIMEOUT = "body_timeout"
    IDLE = "idle_closed"


class ConnectionGuard:
    """Admits connections up to ``settings.max_connections``, counts the ones refused or closed for
    stalling, and reports them in one rate-limited log line. Shared by every connection of a server."""

    def __init__(self, settings: ApiSettings, counters: Counters, clock: Clock) -> None:
        self.settings = settings
        self.counters = counters
        self.clock = clock
        self.open = 0
        self._unreported: Counter[Closed] = Counter()
        self._last_report = float("-inf")
        self._report_pending: asyncio.TimerHandle | None = None

    def admit(self) -> bool:
        """Whether a connection just accepted may stay; counted as open when it may."""
        if self.open >= self.settings.max_connections:
            self.closed(Closed.REFUSED)
            return False
        self.open += 1
        return True

    def released(self) -> None:
        """An admitted connection is gone."""
        self.open -= 1

    def closed(self, reason: Closed) -> None:
        """Count a connection refused or closed for stalling; refusals and timeouts also go into the
        next summary line (at once when none was logged in the last interval)."""
        self.counters.count(f"api_connections_{reason.value}")
        if reason is Closed.IDLE:
            return  # browsers leave idle connections open all the time: counted, not worth a line
        self._unreported[reason] += 1
        if self._report_pending is not None:
            return
        wait = self._last_report + REPORT_INTERVAL_S - self.clock.monotonic()
        if wait <= 0:
            self._report()
        else:
            self._report_pending = asyncio.get_running_loop().call_later(wait, self._report)

    def _report(self) -> None:
        self._report_pending = None
        self._last_report = self.clock.monotonic()
        counts = self._unreported
        self._unreported = Counter()
        s = self.settings
        log.warning(
            "local API closed connections: %d over the cap of %d open, %d without complete headers "
            "within %g s, %d without their body within %g s (at most one such line per %g s)",
            counts[Closed.REFUSED],
            s.max_connections,
            counts[Closed.HEADER_TIMEOUT],
            s.header_timeout_s,
            counts[Closed.BODY_TIMEOUT],
            s.body_timeout_s,
            REPORT_INTERVAL_S,
        )

    def cancel_report(self) -> None:
        """Drop a pending log line (the server is stopping; the counters keep the figures)."""
        if self._report_pending is not None:
            self._report_pending.cancel()
            self._report_pending = None

    def collect(self) -> Iterator[Metric]:
        """Prometheus: the open connections and their cap (the closed ones are agent counters)."""
        yield GaugeMetricFamily("edge_api_connections_open", "Open local API connections.", value=self.open)
        cap = self.settings.max_connections
        yield GaugeMetricFamily("edge_api_connections_max", "Cap on open local API connections.", value=cap)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the guard's cap and a deadline for each stage of a request.

    One timer per connection, re-armed as the request advances (h11's ``their_state``): armed when the
    connection opens and when bytes of a next request arrive, moved to the body deadline once the
    headers are in, and cancelled once the whole request is in (the handler's own time, a live alert
    stream included, is not bounded here). A stage's deadline is never extended by more bytes, so a
    client trickling one byte a second gains nothing.
    """

    guard: ClassVar[ConnectionGuard]
    _admitted = False
    _stage: Closed | None = None
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def for_guard(cls, guard: ConnectionGuard) -> type[GuardedH11Protocol]:
        """The protocol class for one server (uvicorn builds protocols from a class and its config)."""
        return type(cls.__name__, (cls,), {"guard": guard})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit():
            # abort, not close: nothing to flush, and the descriptor is released at once.
            self.transport = transport
            transport.abort()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm(Closed.HEADER_TIMEOUT, self.guard.settings.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._admitted:
            return
        self._admitted = False
        self.guard.released()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow_request()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.guard.closed(Closed.IDLE)
        super().timeout_keep_alive_handler()

    def _follow_request(self) -> None:
        if self.transport.is_closing():
            self._disarm()
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            # Between requests uvicorn's keep-alive timer runs until the next one's first bytes
            # arrive (it cancels that timer then); from those bytes on, the headers' deadline.
            if self._stage is not Closed.HEADER_TIMEOUT and self.timeout_keep_alive_task is None:
                self._arm(Closed.HEADER_TIMEOUT, self.guard.settings.header_timeout_s)
        elif state is h11.SEND_BODY:
            if self._stage is not Closed.BODY_TIMEOUT:
                self._arm(Closed.BODY_TIMEOUT, self.guard.settings.body_timeout_s)
        else:
            self._disarm()

    def _arm(self, stage: Closed, timeout_s: float) -> None:
        self._disarm()
        self._stage = stage
        self._deadline = self.loop.call_later(timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._stage = None

    def _expired(self) -> None:
        stage = self._stage
        self._deadline = None
        self._stage = None
        if stage is None or self.transport.is_closing():
            return
        self.guard.closed(stage)
        # abort: a client that stalls its request may stall reading too, and close() would wait on it.
        self.transport.abort()


__all__ = ["Closed", "ConnectionGuard", "GuardedH11Protocol"]

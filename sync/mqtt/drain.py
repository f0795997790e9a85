"""The outbox → broker drain: a bounded window of QoS 1 publishes, a row marked delivered on PUBACK.

Rules it keeps (DESIGN.md): a row is marked delivered only on PUBACK (every message of it: the
event on each of its topics, and its snapshot); a new alert goes out ahead of any backlog; within a
lane rows go out in ``seq`` order; after a reconnect whatever was in flight is published again, in
order, with its original id. Built on paho's own publish (no future per message): this path moves
tens of thousands of events a second.

An optional :class:`~sync.mqtt.ratelimit.DrainLimit` paces the access/attendance and telemetry lanes
(the backlog a gateway replays after an outage); the alert lane is never held back by it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from paho.mqtt.enums import MQTTErrorCode

from sync.event_types import Lane
from sync.mqtt.ratelimit import DrainLimit
from sync.mqtt.session import Session
from sync.mqtt.stats import LinkStats
from sync.outbox import Outbox, PendingRow
from sync.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class _InFlight:
    seq: int
    remaining: int


class Drain:
    def __init__(
        self,
        outbox: Outbox,
        topics: Topics,
        stats: LinkStats,
        window: int,
        *,
        limit: DrainLimit,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.outbox = outbox
        self.topics = topics
        self.stats = stats
        self.window = window
        self.limit = limit
        self._monotonic = monotonic
        self._sleep = sleep
        # Seconds until the rate limit lets the next backlog row go; 0 while it does not hold us.
        self._throttle_wait = 0.0
        self._inflight: dict[int, _InFlight] = {}
        self.inflight_rows = 0
        self._cursors = dict.fromkeys(Lane, 0)
        # One buffer per lane: a lower lane is always published first, and within a lane rows go
        # out in seq order however they were fetched.
        self._buffers: dict[Lane, collections.deque[PendingRow]] = {
            lane: collections.deque() for lane in Lane
        }
        self._acked: list[int] = []

    @property
    def busy(self) -> bool:
        """Publishes of rows are waiting for their PUBACK."""
        return bool(self._inflight)

    def new_session(self, window: int) -> None:
        """Forget the last connection's window: its rows are read again from the outbox. ``window``:
        the new connection's (ours, or less if the broker said so)."""
        self.window = window
        self.stats.window = window
        self.stats.republished_after_reconnect += self.inflight_rows
        self._inflight.clear()
        self.inflight_rows = 0
        self._cursors = dict.fromkeys(Lane, 0)
        for buffer in self._buffers.values():
            buffer.clear()

    async def run(self, session: Session) -> None:
        outbox = self.outbox
        while True:
            session.acks_ready.clear()
            self._flush_acks()
            # The window counts messages (a row is one per topic, plus its snapshot), as the broker's
            # Receive Maximum does.
            room = self.window - len(self._inflight)
            self._throttle_wait = 0.0
            sent = self._fill(session, room) if room > 0 else 0
            self.stats.drain_throttled = self._throttle_wait > 0
            if self._throttle_wait > 0:
                # Held by the rate limit: wake when it lets the next row go, or for a new alert
                # (which bypasses it), or an ack; not for every commit of the backlog lanes.
                self.stats.drain_throttle_waits += 1
                held_at = self._monotonic()
                waiters = [
                    asyncio.ensure_future(session.acks_ready.wait()),
                    asyncio.ensure_future(outbox.alert_committed.wait()),
                    asyncio.ensure_future(self._sleep(self._throttle_wait)),
                ]
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
                    self.stats.drain_throttled_s += self._monotonic() - held_at
            elif sent == 0:
                # Nothing to send or no room: wait for an ack or a commit. A short timeout covers
                # rows committed while we were between checking and waiting.
                outbox.committed.clear()
                waiters = [asyncio.ensure_future(session.acks_ready.wait())]
                if room > 0:
                    waiters.append(asyncio.ensure_future(outbox.committed.wait()))
                try:
                    await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waiters:
                        w.cancel()
            else:
                # Let the socket callbacks and other tasks run between bursts.
                await asyncio.sleep(0)

    def _fill(self, session: Session, room: int) -> int:
        outbox = self.outbox
        if outbox.alert_committed.is_set():
            # New alerts jump whatever backlog of the other lanes is buffered.
            outbox.alert_committed.clear()
            self._fetch(Lane.ALERT, max(room, 1))
        sent = 0
        while sent < room:
            buffer = self._next_buffer()
            if buffer is None:
                break
            row = buffer.popleft()
            published = self._publish_row(session, row)
            if not published:
                buffer.appendleft(row)
                break
            sent += published
        return sent

    def _next_buffer(self) -> collections.deque[PendingRow] | None:
        for lane in Lane:
            if self._buffers[lane]:
                return self._buffers[lane]
        for lane in Lane:
            if self._fetch(lane, 500):
                return self._buffers[lane]
        return None

    def _fetch(self, lane: Lane, limit: int) -> bool:
        rows = self.outbox.fetch_pending(lane, self._cursors[lane], limit)
        if rows:
            self._cursors[lane] = rows[-1].seq
            self._buffers[lane].extend(rows)
        return bool(rows)

    def _publish_row(self, session: Session, row: PendingRow) -> int:
        """How many messages the row took; 0 when it was not published (connection going away, or
        held by the rate limit: then ``_throttle_wait`` says for how long)."""
        messages = [(topic, row.payload) for topic in self.topics.for_event(row.type, row.severity)]
        if row.attachment is not None:
            messages.append((self.topics.snapshot(row.event_id), row.attachment))
        if self.limit.enabled and row.lane is not Lane.ALERT:
            wait = self.limit.acquire(sum(len(payload) for _, payload in messages), self._monotonic())
            if wait > 0:
                self._throttle_wait = wait
                return 0
        mids = []
        for topic, payload in messages:
            info = session.client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # The connection is going away; the row stays pending and is sent again.
                return 0
            mids.append(info.mid)
        tracker = _InFlight(row.seq, len(mids))
        for mid in mids:
            self._inflight[mid] = tracker
        self.inflight_rows += 1
        self.stats.published += 1
        return len(mids)

    def on_ack(self, mid: int, code: int) -> bool:
        """Account a PUBACK; False if ``mid`` is not one of the drain's publishes."""
        tracker = self._inflight.pop(mid, None)
        if tracker is None:
            return False
        if tracker.remaining < 0:
            return True  # another message of a row already refused
        if code >= 0x80:
            # The broker refused this publish (e.g. its ACL). Keep the row pending: it is sent
            # again on the next connection, and never marked delivered.
            self.stats.refused_publishes += 1
            log.error("broker refused publish of seq %d (reason code %#x)", tracker.seq, code)
            tracker.remaining = -1
            self.inflight_rows -= 1
            return True
        tracker.remaining -= 1
        if tracker.remaining == 0:
            self._acked.append(tracker.seq)
            self.inflight_rows -= 1
        return True

    def _flush_acks(self) -> None:
        # Marks go to the outbox writer in batches: one queue item per drain pass, not per PUBACK.
        if self._acked:
            self.stats.acked += len(self._acked)
            self.outbox.mark_delivered(self._acked)
            self._acked = []


__all__ = ["Drain"]

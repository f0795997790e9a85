"""The link over a real campus uplink: a fault proxy (its own thread) between a real MqttLink and a
real Mosquitto, a real subscriber on the broker's side. Added latency, a bandwidth cap, a blackhole,
resets and a 30 s partition: nothing lost, order per lane, alerts first, a dead link found by
keep-alive within its bound, and the drain's rate limit honoured with alerts bypassing it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from device_drivers import Backoff, BackoffConfig
from sync import EVENT_TYPES, Event, Lane, MqttConfig, MqttLink, Outbox, OutboxConfig
from tests.support.backoff import QuickBackoff
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.proxy import ProxyThread
from tests.support.wait import async_wait_until
from tests.sync.test_mqtt_link import SITE, alert, heartbeat, lifecycle

# A gateway id of its own: the session's broker keeps other tests' retained statuses.
GW = "gw-uplink"
SOURCE = f"campus/{SITE}/{GW}/gateway"
EVENTS = f"campus/v1/{SITE}/{GW}/events/#"


@pytest.fixture
def proxy(mosquitto: MosquittoBroker) -> Iterator[ProxyThread]:
    # Its own loop: the proxy's timing (latency, pacing) must not wait on the link under test.
    with ProxyThread(mosquitto.port) as p:
        yield p


@pytest.fixture
def collector(mosquitto: MosquittoBroker) -> Iterator[Collector]:
    c = Collector(mosquitto.url, EVENTS)
    yield c
    c.close()


def config(url: str, **kw: Any) -> MqttConfig:
    return MqttConfig(url=url, connect_timeout_s=3, status_interval_s=300, **kw)


@asynccontextmanager
async def running_link(
    tmp_path: Path, cfg: MqttConfig, *, backoff: Any = None, name: str = "data"
) -> AsyncIterator[tuple[Outbox, MqttLink]]:
    async with Outbox(tmp_path / name, OutboxConfig(), SOURCE) as outbox:
        link = MqttLink(cfg, outbox, site=SITE, gateway=GW, version="t", backoff=backoff or QuickBackoff(0.2))
        task = asyncio.create_task(link.run(), name="link under test")
        try:
            yield outbox, link
        finally:
            await link.shutdown(1.0)
            await asyncio.wait_for(task, 15)


def received(collector: Collector, total: int) -> list[dict[str, Any]]:
    """The events the subscriber got, once it has ``total`` distinct ones."""
    # Parsed only once enough messages are there: the subscriber's thread and the link need the CPU.
    msgs = collector.wait_for(lambda m: len(m) >= total and len({x.json()["seq"] for x in m}) >= total)
    return [m.json() for m in msgs]


def mixed(i: int) -> Event:
    return alert(i, GW) if i % 40 == 0 else lifecycle(i, GW) if i % 5 == 0 else heartbeat(i, GW)


def check_delivery(events: list[dict[str, Any]], total: int) -> None:
    """Every seq 1..total arrived, a duplicate carries its original's id, and each lane's first
    arrivals are in seq order."""
    seqs = {e["seq"] for e in events}
    missing = sorted(set(range(1, total + 1)) - seqs)
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    ids: dict[int, str] = {}
    for e in events:
        assert ids.setdefault(e["seq"], e["id"]) == e["id"], f"seq {e['seq']} resent with a new id"
    for lane in Lane:
        first = [seq for seq in first_arrivals(events) if EVENT_TYPES[by_seq(events)[seq]].lane == lane]
        assert first == sorted(first), f"lane {lane.name} out of order"


def first_arrivals(events: list[dict[str, Any]]) -> list[int]:
    seen: set[int] = set()
    order = []
    for e in events:
        if e["seq"] not in seen:
            seen.add(e["seq"])
            order.append(e["seq"])
    return order


def by_seq(events: list[dict[str, Any]]) -> dict[int, str]:
    return {e["seq"]: e["type"] for e in events}


def alerts_before_backlog(events: list[dict[str, Any]], down: tuple[int, int]) -> None:
    """Of what was committed while the link was down (seqs after ``down[0]`` up to ``down[1]``),
    every alert arrived before the first access or telemetry event."""
    types = by_seq(events)
    later = [s for s in first_arrivals(events) if down[0] < s <= down[1]]
    alerts = [i for i, s in enumerate(later) if EVENT_TYPES[types[s]].lane == Lane.ALERT]
    others = [i for i, s in enumerate(later) if EVENT_TYPES[types[s]].lane != Lane.ALERT]
    assert alerts and others, "the scenario committed alerts and other events while down"
    assert max(alerts) < min(others), "an alert waited behind the backlog"


async def drain_rate(
    link: MqttLink, start_at: int, total: int, timeout: float, *, counter: str = "acked"
) -> float:
    """Rows per second between ``start_at`` and ``total`` of ``link.stats.<counter>`` (``acked``,
    or ``published``: what the rate limit paces, without the lag of the acks)."""

    def count() -> int:
        value: int = getattr(link.stats, counter)
        return value

    await async_wait_until(lambda: count() >= start_at, timeout, 0.005, what="drain started")
    t0, a0 = time.monotonic(), count()
    await async_wait_until(lambda: count() >= total, timeout, 0.005, what="drain finished")
    return (count() - a0) / (time.monotonic() - t0)


@pytest.mark.parametrize("rtt_s", [0.1, 0.3])
def test_drain_over_a_long_link_stays_near_window_over_rtt(
    tmp_path: Path, proxy: ProxyThread, collector: Collector, rtt_s: float
) -> None:
    window = 100
    bound = window / rtt_s
    total = int(bound * 3)  # about 3 s of drain
    proxy.set(latency=rtt_s / 2)

    async def scenario() -> float:
        async with running_link(tmp_path, config(proxy.url, inflight_window=window)) as (outbox, link):
            for i in range(total):
                outbox.append_nowait(mixed(i))
            # Timed from the first full window acked: connect and subscribe are not the drain.
            return await drain_rate(link, window, total, 60)

    rate = asyncio.run(scenario())
    print(
        f"RTT {rtt_s * 1000:.0f} ms, window {window}: {rate:.0f} rows/s of {bound:.0f} ({rate / bound:.2f})"
    )
    # A window's worth per round trip, at most (the proxy really adds the RTT) and near it.
    assert rate <= bound * 1.1, (rate, bound)
    assert rate >= bound * 0.6, (rate, bound)
    check_delivery(received(collector, total), total)


def test_drain_fills_a_capped_link_and_loses_nothing(
    tmp_path: Path, proxy: ProxyThread, collector: Collector
) -> None:
    cap = 150_000  # bytes/s each way: a thin uplink
    total = 1500
    proxy.set(latency=0.05, rate=cap)

    async def scenario() -> float:
        async with running_link(tmp_path, config(proxy.url)) as (outbox, link):
            for i in range(total):
                outbox.append_nowait(heartbeat(i, GW))
            return await drain_rate(link, 200, total, 60)

    rows_s = asyncio.run(scenario())
    msgs = collector.wait_for(lambda m: len(m) >= total and len({x.json()["seq"] for x in m}) >= total)
    # On the wire a PUBLISH is its topic, payload, packet id and a few header bytes.
    per_row = sum(len(m.payload) + len(m.topic) + 6 for m in msgs) / len(msgs)
    rate = rows_s * per_row
    print(f"capped at {cap} B/s: {rate:.0f} B/s ({rate / cap:.2f})")
    assert rate <= cap * 1.1, (rate, cap)
    assert rate >= cap * 0.6, (rate, cap)
    check_delivery([m.json() for m in msgs], total)


def test_blackholed_link_is_found_by_keepalive_and_the_backlog_follows(
    tmp_path: Path, proxy: ProxyThread, collector: Collector
) -> None:
    keepalive = 5
    # paho 2.2 (client.py _check_keepalive / loop_misc): a PINGREQ once keepalive_s passed without
    # a byte from the broker, the connection dropped keepalive_s after that PINGREQ without its
    # PINGRESP; the link calls loop_misc once a second.
    bound = 2 * keepalive + 1.0
    proxy.set(latency=0.05)
    produced = 0

    async def scenario() -> tuple[float, tuple[int, int]]:
        nonlocal produced
        cfg = config(proxy.url, keepalive_s=keepalive)
        async with running_link(tmp_path, cfg) as (outbox, link):
            await async_wait_until(link.connected.is_set, 10, what="connected")

            async def produce() -> None:
                # A steady stream, so the last byte from the broker comes right before the blackhole.
                nonlocal produced
                while True:
                    outbox.append_nowait(mixed(produced + 1))
                    produced += 1
                    await asyncio.sleep(0.02)

            producer = asyncio.create_task(produce())
            await async_wait_until(lambda: link.stats.acked >= 100, 20, what="streaming")
            proxy.blackhole()
            start = time.monotonic()
            before = outbox.last_seq
            await async_wait_until(
                lambda: not link.connected.is_set(), bound + 5, 0.05, what="dead link found"
            )
            detected = time.monotonic() - start
            down = (before, outbox.last_seq)
            proxy.pass_through()
            await async_wait_until(link.connected.is_set, 30, what="reconnected")
            producer.cancel()
            await async_wait_until(lambda: outbox.pending_total == 0, 30, what="backlog delivered")
            return detected, down

    detected, down = asyncio.run(scenario())
    print(f"keepalive {keepalive}s: blackhole found after {detected:.1f}s (bound {bound:.0f}s)")
    assert keepalive <= detected <= bound + 0.5, detected  # by keep-alive, and within its bound
    events = received(collector, produced)
    check_delivery(events, produced)
    alerts_before_backlog(events, down)


def test_resets_and_refusals_mid_drain_lose_nothing_and_keep_order(
    tmp_path: Path, proxy: ProxyThread, collector: Collector
) -> None:
    total = 4500
    proxy.set(latency=0.05)

    async def scenario() -> int:
        async with running_link(tmp_path, config(proxy.url, inflight_window=200)) as (outbox, link):
            for i in range(total):
                outbox.append_nowait(mixed(i))
            for k in range(1, 4):
                await async_wait_until(lambda: link.stats.acked >= k * 1000, 30, what=f"part {k}")  # noqa: B023
                proxy.reset()
                await async_wait_until(lambda: link.stats.connects > k, 30, what=f"reconnect {k}")  # noqa: B023
            # Then a short outage with the port refusing: connects fail until it is over.
            failures = link.stats.connect_failures
            proxy.partition(1.0, "refuse")
            await async_wait_until(lambda: link.stats.connect_failures > failures, 10, what="refused")
            await async_wait_until(lambda: link.stats.connects > 4, 30, what="back after the outage")
            await async_wait_until(lambda: outbox.pending_total == 0, 60, what="drained")
            return link.stats.republished_after_reconnect

    republished = asyncio.run(scenario())
    events = received(collector, total)
    check_delivery(events, total)
    # Duplicates are only what was in flight at each cut, sent again with the same id.
    assert len(events) - total <= republished <= 4 * 200


def test_partition_then_rate_limited_replay_with_alerts_bypassing(
    tmp_path: Path, proxy: ProxyThread, collector: Collector
) -> None:
    limit = 500.0  # events/s
    partition_s = 30.0
    produced = 0
    # 50 ms RTT and a window of 500: the link alone would allow 10,000 rows/s, so the limit binds.
    proxy.set(latency=0.025)

    async def scenario() -> tuple[float, tuple[int, int], int, float]:
        nonlocal produced
        cfg = config(proxy.url, drain_rate_events_s=limit, inflight_window=500, keepalive_s=5)
        async with running_link(tmp_path, cfg) as (outbox, link):
            await async_wait_until(link.connected.is_set, 10, what="connected")
            # A dead link for 30 s: nothing forwarded, nothing closed. Keep-alive finds it, and the
            # reconnects meanwhile go nowhere.
            proxy.partition(partition_s, "blackhole")
            start = time.monotonic()
            before, published = outbox.last_seq, link.stats.published
            # The backlog of the outage: 60 events/s for its length, alerts among them. A fixed count,
            # committed early in the partition, so a loaded machine cannot make the backlog smaller
            # than the replay needs (the new alert must come while the limit still holds it back).
            while produced < partition_s * 60:
                for _ in range(30):
                    outbox.append_nowait(mixed(produced))
                    produced += 1
                await asyncio.sleep(0.01)
            while proxy.partitioned:
                await asyncio.sleep(0.05)
            assert time.monotonic() - start >= partition_s * 0.95
            assert link.stats.connect_failures > 0, "no reconnect went into the partition"
            backlog = outbox.pending_total
            down = (before, outbox.last_seq)
            await async_wait_until(link.connected.is_set, 30, what="reconnected after the partition")
            end = published + backlog + 1
            # Mid-replay (its one-second burst spent), a new alert goes out at once, ahead of the
            # throttled backlog.
            await async_wait_until(lambda: link.stats.drain_throttled, 10, 0.005, what="throttled")
            seq = (await outbox.append(alert(-1, GW))).seq
            produced += 1
            t_alert = time.monotonic()
            await async_wait_until(
                lambda: any(m.json()["seq"] == seq for m in collector.snapshot("/events/security")),
                5,
                0.005,
                what="the new alert",
            )
            alert_latency = time.monotonic() - t_alert
            assert outbox.pending_total > limit, "the replay was over: the alert bypassed nothing"
            rate = await drain_rate(link, link.stats.published, end, 60, counter="published")
            return rate, down, backlog, alert_latency

    rate, down, backlog, alert_latency = asyncio.run(scenario())
    print(
        f"replay of {backlog} at {limit:.0f}/s: {rate:.0f}/s; a new alert took {alert_latency * 1e3:.0f} ms"
    )
    assert rate <= limit * 1.05, rate
    assert rate >= limit * 0.8, rate
    assert alert_latency < 1.0
    events = received(collector, produced)
    check_delivery(events, produced)
    alerts_before_backlog(events, down)


def test_first_reconnects_of_a_fleet_are_jittered(tmp_path: Path, proxy: ProxyThread) -> None:
    # Eight gateways behind one uplink lose it together; each waits its own jittered delay (seeded,
    # so the expected delays are known) before its first reconnect.
    fleet = 8
    ceiling = 2.0
    params = BackoffConfig(initial_s=ceiling, max_s=ceiling, jitter=1.0)
    expected = [Backoff(params, random.Random(i)).next_delay() for i in range(fleet)]

    async def scenario() -> list[float]:
        async with AsyncExitStack() as stack:
            links = []
            for i in range(fleet):
                cfg = config(proxy.url, client_id=f"fleet-{i}")
                backoff = Backoff(params, random.Random(i))
                running = running_link(tmp_path, cfg, backoff=backoff, name=f"gw{i}")
                links.append((await stack.enter_async_context(running))[1])
            for link in links:
                await async_wait_until(link.connected.is_set, 10, what="fleet connected")
            proxy.reset()
            lost = time.monotonic()
            back: list[float] = [0.0] * fleet

            async def watch(i: int, link: MqttLink) -> None:
                await async_wait_until(lambda: link.stats.connects >= 2, 10, 0.005, what="reconnect")
                back[i] = time.monotonic() - lost

            await asyncio.gather(*(watch(i, link) for i, link in enumerate(links)))
            return back

    back = asyncio.run(scenario())
    print("expected", [f"{d:.2f}" for d in expected], "reconnected", [f"{b:.2f}" for b in back])
    for want, got in zip(expected, back, strict=True):
        assert want <= got <= want + 0.5, (want, got)
    assert max(back) - min(back) >= 0.25 * ceiling  # spread, not in lockstep

"""Drain benchmarks: the rate limit on and off, and the drain over a long link against window / RTT.

1. Rate limit, to a local Mosquitto, each next to the unlimited drain of the same backlog in the same
   run: the limiter switched on but set far above the drain's speed (its cost: ratio to the unlimited
   drain, should be ~1.0), and set to binding limits (events/s, bytes/s: achieved / limit, should be
   ~1.0), with the latency of a new alert committed mid-replay next to its latency on an idle link.
2. Window / RTT: the drain through the tests' fault proxy (a separate process, so its timers do not
   share the link's loop) at several added round-trip times and in-flight windows; each figure next to
   its bound, window / RTT.

Run: ``.venv/bin/python bench/bench_drain.py [--events N] [--rtts 100,200,300] [--windows 50,100,200,400]``.
It starts its own Mosquitto on a free port and its own proxy processes.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from common import REPO, MosquittoBroker
from paho.mqtt.enums import CallbackAPIVersion

from device_drivers import Backoff
from sync import Event, Lane, MqttConfig, MqttLink, Outbox, OutboxConfig, Severity
from sync.mqtt.ratelimit import DrainLimit

SITE, GW = "bench", "gw-1"
DEFAULT_WINDOW = MqttConfig().inflight_window
SOURCE = f"campus/{SITE}/{GW}/gateway"


def heartbeat(i: int) -> Event:
    return Event(
        "edu.campus.device.heartbeat.v1",
        f"campus/{SITE}/{GW}/reader-1",
        {"device": "reader-1", "kind": "sim", "uptime_s": float(i), "counter": i},
    )


def alert(i: int) -> Event:
    return Event(
        "edu.campus.security.test_alert.v1",
        f"campus/{SITE}/{GW}/cam1",
        {"device": "cam1", "reason": f"bench {i}"},
        severity=Severity.CRITICAL,
    )


class AlertWatch:
    """A subscriber on the broker's side noting when each alert (by id) arrived."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(f"campus/v1/{SITE}/{GW}/alerts/#", qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.arrived[orjson.loads(msg.payload)["id"]] = time.monotonic()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def drain(
    workdir: Path,
    url: str,
    n: int,
    *,
    window: int = DEFAULT_WINDOW,
    events_s: float | None = None,
    bytes_s: float | None = None,
    watch: AlertWatch | None = None,
) -> dict[str, float]:
    """Drain a backlog of ``n`` heartbeats; rows/s and bytes/s in the steady state, from the first
    full window acked (connect and subscribe are not the drain) or, under a limit, from the end of
    its one-second burst, to the last; and a mid-replay alert's latency."""
    async with Outbox(Path(tempfile.mkdtemp(dir=workdir)), OutboxConfig(synchronous="normal"), SOURCE) as ob:
        await asyncio.gather(*[ob.append_nowait(heartbeat(i)) for i in range(n)])
        pending = ob.fetch_pending(Lane.TELEMETRY, 0, n)
        size = sum(len(r.payload) for r in pending) / len(pending)
        cfg = MqttConfig(
            url=url, inflight_window=window, drain_rate_events_s=events_s, drain_rate_bytes_s=bytes_s
        )
        link = MqttLink(cfg, ob, site=SITE, gateway=GW, version="bench", backoff=Backoff())
        # Under a binding limit, from twice its one-second burst on: the bucket is empty by then.
        burst = max(events_s or 0, (bytes_s or 0) / size)
        start_at = window if burst > n / 2 else max(window, int(2 * burst))
        task = asyncio.create_task(link.run())
        try:
            # Rows handed to the broker (what the limit paces; their PUBACKs follow within the window).
            while link.stats.published < start_at:
                await asyncio.sleep(0.001)
            t0, a0 = time.perf_counter(), link.stats.published
            alert_latency = float("nan")
            if watch is not None:
                while link.stats.published < a0 + (n - a0) // 3:
                    await asyncio.sleep(0.001)
                event_id = (await ob.append(alert(0))).id
                at = time.monotonic()
                while event_id not in watch.arrived:
                    await asyncio.sleep(0.0005)
                alert_latency = watch.arrived[event_id] - at
            while link.stats.published < n:
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - t0
            while link.stats.acked < n:
                await asyncio.sleep(0.001)
        finally:
            await link.shutdown(1.0)
            await task
        rows = link.stats.published - a0
        return {
            "rows_s": rows / elapsed,
            "bytes_s": rows * size / elapsed,
            "alert_ms": alert_latency * 1000,
            "throttled_s": link.stats.drain_throttled_s,
        }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median drain rate."""
    return sorted(runs, key=lambda r: r["rows_s"])[len(runs) // 2]


def start_proxy(upstream: int, rtt_ms: float) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.proxy", str(upstream), "--rtt-ms", str(rtt_ms)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000, help="backlog for the rate-limit runs")
    parser.add_argument("--rtts", default="100,200,300", help="added round-trip times, ms")
    parser.add_argument("--windows", default="50,100,200,400", help="in-flight windows")
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on runs (median)")
    args = parser.parse_args()
    print("command:", " ".join(["bench/bench_drain.py", *sys.argv[1:]]))
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker(Path(tmp) / "broker") as broker:
        work = Path(tmp)
        watch = AlertWatch(broker.port)
        n = args.events

        print(f"\n1. rate limit, local Mosquitto, backlog {n} heartbeats, window {DEFAULT_WINDOW}")
        # Off and on-but-not-binding alternate, so drift on a shared machine hits both alike.
        offs, highs = [], []
        for _ in range(args.rounds):
            offs.append(asyncio.run(drain(work, broker.url, n, watch=watch)))
            highs.append(asyncio.run(drain(work, broker.url, n, events_s=1e9, bytes_s=1e12)))
        off, high = median(offs), median(highs)
        print(
            f"  limit off:             {off['rows_s']:8.0f} rows/s {off['bytes_s'] / 1e6:6.2f} MB/s,"
            f" new alert mid-replay {off['alert_ms']:.1f} ms (median of {args.rounds})"
        )
        ratios = sorted(h["rows_s"] / o["rows_s"] for o, h in zip(offs, highs, strict=True))
        print(
            f"  limit on, not binding: {high['rows_s']:8.0f} rows/s  ratio to off per round (sorted):"
            f" {' '.join(f'{r:.2f}' for r in ratios)}, median {ratios[len(ratios) // 2]:.2f}"
        )
        # The limiter's own cost, free of the run-to-run noise above: one acquire() per row.
        bucket = DrainLimit(1e9, 1e12, time.monotonic())
        calls = 200_000
        t = time.perf_counter()
        for _ in range(calls):
            bucket.acquire(300, time.monotonic())
        per_call = (time.perf_counter() - t) / calls
        print(
            f"  limiter cost: {per_call * 1e6:.2f} µs a row, {per_call * off['rows_s'] * 100:.1f}% of"
            f" the unlimited drain's time per row ({1e6 / off['rows_s']:.0f} µs)"
        )
        # Binding limits at a quarter of the unlimited drain, about 6 s of replay each (4 s measured).
        events_limit, bytes_limit = off["rows_s"] / 4, off["bytes_s"] / 4
        m = min(n, int(6 * events_limit))
        by_events = asyncio.run(drain(work, broker.url, m, events_s=events_limit, watch=watch))
        by_bytes = asyncio.run(drain(work, broker.url, m, bytes_s=bytes_limit, watch=watch))
        for what, got, want, r in (
            ("events/s", by_events["rows_s"], events_limit, by_events),
            ("bytes/s", by_bytes["bytes_s"], bytes_limit, by_bytes),
        ):
            print(
                f"  limit {want:10.0f} {what:8}: {got:10.0f}  achieved/limit {got / want:.3f};"
                f" new alert mid-replay {r['alert_ms']:.1f} ms (limit off: {off['alert_ms']:.1f} ms)"
            )

        print("\n2. drain through the fault proxy (own process) vs window / RTT")
        print(f"  {'RTT ms':>6} {'window':>6} {'rows/s':>8} {'bound':>8} {'ratio':>6}")
        for rtt in (float(x) for x in args.rtts.split(",")):
            proc, port = start_proxy(broker.port, rtt)
            try:
                for window in (int(x) for x in args.windows.split(",")):
                    bound = window / (rtt / 1000)
                    m = int(min(bound, off["rows_s"]) * 3) + window  # ~3 s
                    r = asyncio.run(drain(work, f"mqtt://127.0.0.1:{port}", m, window=window))
                    print(
                        f"  {rtt:6.0f} {window:6d} {r['rows_s']:8.0f} {bound:8.0f} {r['rows_s'] / bound:6.2f}"
                    )
            finally:
                proc.terminate()
                proc.wait(10)
        watch.close()


if __name__ == "__main__":
    main()

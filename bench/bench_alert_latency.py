"""Alert latency: from the camera frame that completes a rule to the MQTT PUBLISH at a subscriber.

The real agent watches a simulated camera (a looping clip of a person walking into a restricted zone,
built from the scene photos the project ships, ``vision.scenes``) at 5 frames/s analysis; an intrusion
rule with no cooldown alerts on every walk-in. Latency is the subscriber's receive time minus the
event's ``time`` (the capture time of the frame that completed the rule). It covers that frame's
analysis (detection, tracking, zones, rules), the snapshot, the outbox commit and the broker hop; the
zone's inertia (the earlier frames that had to agree) belongs to the rule, not to the latency.
Baseline in the same run: a bare paho publish → receive through the same broker.
Bar (issue 5): p95 < 1 s.

Run: ``.venv/bin/python bench/bench_alert_latency.py [--alerts N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
from common import percentile, start_broker
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import parse_config
from edge_agent.gateway import Gateway
from vision.scenes import (
    WalkerPath,
    corridor_background,
    linear_path,
    person_sprite,
    walk_clip,
    write_video,
)


class Receiver:
    def __init__(self, port: int, topic: str) -> None:
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        body = orjson.loads(msg.payload)
        sent = (
            body["sent"]
            if "sent" in body
            else datetime.fromisoformat(body["time"].replace("Z", "+00:00")).timestamp()
        )
        with self.lock:
            self.latencies.append(now - sent)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def bare_latencies(port: int, n: int) -> list[float]:
    receiver = Receiver(port, "bench/bare")
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    for _ in range(n):
        sender.publish("bench/bare", orjson.dumps({"sent": time.time()}), qos=1).wait_for_publish(5)
        time.sleep(0.02)
    time.sleep(0.5)
    sender.loop_stop()
    sender.disconnect()
    receiver.close()
    return receiver.latencies


async def agent_latencies(workdir: Path, port: int, video: Path, alerts: int) -> list[float]:
    receiver = Receiver(port, "campus/v1/bench/gw-1/alerts/#")
    config = parse_config(f"""
gateway: {{site: bench, id: gw-1}}
agent: {{data_dir: {workdir / "data"}, log_level: warning}}
mqtt: {{url: "mqtt://127.0.0.1:{port}"}}
cameras:
  - device: {{kind: camera_sim, id: cam-1, video: {video}, loop: true, analysis_fps: 5}}
    security:
      zones: [{{id: restricted, points: [[760, 380], [1280, 380], [1280, 720], [760, 720]]}}]
      pipeline: {{tamper: null}}
      rules: [{{kind: intrusion, id: intrusion, zone: restricted, severity: critical, cooldown_s: 0}}]
""")
    agent = Gateway(config, data_dir=workdir / "data")
    task = asyncio.create_task(agent.run())
    deadline = time.monotonic() + 60 + alerts * 10
    while len(receiver.latencies) < alerts and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    agent.request_stop("bench")
    await task
    receiver.close()
    return receiver.latencies[:alerts]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=20)
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    broker, port = start_broker(workdir)
    try:
        walk = linear_path((120, 600), (1100, 600), 12)
        frames = walk_clip(corridor_background(), [WalkerPath(person_sprite("figure"), walk, 250.0)], 15)
        video = write_video([f.frame for f in frames], workdir / "clip.avi", fps=5.0)
        bare = bare_latencies(port, 200)
        latencies = asyncio.run(agent_latencies(workdir, port, video, args.alerts))
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    if not latencies:
        raise SystemExit("no alert arrived")
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    b50, b95 = percentile(bare, 0.5), percentile(bare, 0.95)
    print(
        f"alert latency (completing frame captured -> PUBLISH at subscriber), {len(latencies)} alerts, "
        f"1 camera at 5 fps: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms"
    )
    print(
        f"baseline bare paho publish -> receive, same broker: "
        f"p50 {b50 * 1000:.2f} ms, p95 {b95 * 1000:.2f} ms"
    )
    print(f"ratio p95 agent / bare: {p95 / b95:.0f}x; bar p95 < 1000 ms")


if __name__ == "__main__":
    main()

"""A light simulated gateway: real CloudEvents on the real topics, with its own client id, a retained
status and a Last Will, but no outbox or devices behind it.

It publishes what a gateway's MQTT link publishes (``sync.envelope.Event.to_json(seq)`` on
``sync.topics.Topics.for_event``, alerts on both topics) so the central tests and the fleet bench can
run hundreds of gateways on one machine. Run as a module it is a gateway process that tests kill -9
to fire its Last Will.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sync.envelope import Event, format_time
from sync.event_types import Severity
from sync.topics import Topics

ROLES = ("student",) * 9 + ("teacher",)


def granted(site: str, gw: str, rng: random.Random) -> Event:
    person = rng.randrange(100_000)
    return Event(
        "edu.campus.access.granted.v1",
        f"campus/{site}/{gw}/reader-{rng.randrange(4)}",
        {
            "gate": f"gate-{rng.randrange(2)}",
            "reader": "r1",
            "direction": rng.choice(("entry", "exit")),
            "person": {"id": f"p{person}", "role": rng.choice(ROLES), "group": f"class-{person % 30}"},
            "credential": f"{person:08x}",
            "credential_format": "mifare-uid",
            "decision_us": rng.randrange(200, 3000),
            "anti_passback": "ok",
        },
        subject=f"p{person}",
    )


def attendance(
    site: str, gw: str, rng: random.Random, person: int | None = None, day: date | None = None
) -> Event:
    person = rng.randrange(100_000) if person is None else person
    return Event(
        "edu.campus.attendance.recorded.v1",
        f"campus/{site}/{gw}/cam-door",
        {
            "person": {"id": f"p{person}", "role": "student", "group": f"class-{person % 30}"},
            "method": "face",
            "point": "classroom-door",
            "device": "cam-door",
            "session": {
                "id": f"s{person % 30}-1",
                "name": "period 1",
                "date": (day or datetime.now(UTC).date()).isoformat(),
                "start": "08:00",
                "end": "08:45",
            },
            "status": rng.choice(("present",) * 5 + ("late",)),
        },
        subject=f"p{person}",
    )


def forced(site: str, gw: str, rng: random.Random) -> Event:
    return Event(
        "edu.campus.access.forced.v1",
        f"campus/{site}/{gw}/door-{rng.randrange(4)}",
        {"gate": f"gate-{rng.randrange(2)}", "device": "door", "direction": "entry"},
        severity=rng.choice((Severity.WARNING, Severity.CRITICAL)),
    )


def morning_rush(site: str, gw: str, rng: random.Random) -> Event:
    """The bench's mix: mostly gate passes, a third attendance, one alert in a hundred."""
    roll = rng.random()
    if roll < 0.01:
        return forced(site, gw, rng)
    if roll < 0.34:
        return attendance(site, gw, rng)
    return granted(site, gw, rng)


class SimGateway:
    """One simulated gateway connection. ``publish`` gives each event the next ``seq``."""

    def __init__(
        self, url: str, site: str, gateway: str, *, prefix: str = "campus/v1", version: str = "sim"
    ) -> None:
        parts = urlsplit(url)
        self.site, self.gateway, self.version = site, gateway, version
        self.topics = Topics(prefix, site, gateway)
        self.seq = 0
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sim-{site}-{gateway}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.topics.status, self.status("offline", "connection_lost"), 1, True)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        self.client.loop_start()
        self.client.publish(self.topics.status, self.status("online", "connected"), 1, True).wait_for_publish(
            10
        )

    def status(self, state: str, reason: str, pending: int = 0) -> bytes:
        body: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "site": self.site,
            "gateway": self.gateway,
            "version": self.version,
            "at": format_time(datetime.now(UTC)),
        }
        if state == "online":
            body["last_seq"] = self.seq
            body["backlog"] = {
                lane: {"pending": pending if lane == "access" else 0, "oldest_age_s": None}
                for lane in ("alert", "access", "telemetry")
            }
            body["mqtt_protocol"] = "5"
        return orjson.dumps(body)

    def publish(self, event: Event, seq: int | None = None) -> int:
        """Publish ``event`` (alerts on their two topics); returns the seq it carried."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        else:
            self.seq = max(self.seq, seq)
        payload = event.to_json(seq)
        for topic in self.topics.for_event(event.type, event.severity.value if event.severity else None):
            self._pending.append(self.client.publish(topic, payload, qos=1))
        return seq

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._pending.append(self.client.publish(topic, payload, qos=1))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the broker's PUBACK of everything published so far."""
        deadline = time.monotonic() + timeout
        for info in self._pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError("publish not acknowledged by the broker")
        self._pending.clear()

    def close(self, clean: bool = True) -> None:
        if clean:
            self.flush()
            self.client.publish(
                self.topics.status, self.status("offline", "shutdown"), 1, True
            ).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    """A gateway process: online status, ``--events`` events, then it idles until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--prefix", default="campus/v1")
    parser.add_argument("--events", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.gateway)
    gw = SimGateway(args.url, args.site, args.gateway, prefix=args.prefix)
    for _ in range(args.events):
        gw.publish(morning_rush(args.site, args.gateway, rng))
    gw.flush()
    print("ready", flush=True)
    threading.Event().wait()  # until the test kills this process


if __name__ == "__main__":
    sys.exit(main())

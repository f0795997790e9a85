"""A big roster snapshot sent in parts must not pause the gates; one in a single message is still
taken in (its receive is measured, not bound); one over the size limit is refused, unread.

The real agent (in this process, tests/support/agent_harness.py), a real Mosquitto, the centre as a
separate ``mosquitto_pub`` process, and the card reader and turnstile simulators on pty pairs.

How latency is measured: swipes are due on a fixed 50 ms grid laid out before the snapshot is
published, and each is measured from the time it was *due* to the moment the turnstile simulator
decoded the open command it caused (``TurnstileSimulator.command_ns``, stamped on this process's
event loop). The simulators share the agent's event loop and GIL, so a stall anywhere in the
process — the agent's or the simulators' — shows up in the figure; a swipe that could only be sent
late because the loop was stalled is still measured from when it was due, so stalls cannot hide
behind late swipes. Swipes are sent on the grid without waiting for the previous open, and every
one of them must open the gate.

The goal (p99 under 10 ms) is for the snapshot in parts, as a centre sends it through a broker
that caps message size; it is a timing goal, so bench/bench_roster.py measures it with this
scenario against the idle phase of the same run. This test binds that no swipe waits anywhere near
the old pause (1.98 s for 24 MB). A 30 MB single message is received by the MQTT client on the
event loop (paho decodes one packet in one callback) before the roster code sees a byte: it is
asserted to be applied with every swipe opening the gate.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sync import MAX_SIGNATURE_BYTES
from sync.contract import SCHEMA_DIR, validate
from sync.messages.roster import RosterSnapshot, split_snapshot
from tests.agent.roster_data import snapshot
from tests.support.agent_harness import RunningGate, running_gate
from tests.support.broker import MosquittoBroker
from tests.support.mqtt import Collector
from tests.support.roster_signing import signed, trust_roster_keys
from tests.support.wait import until

BIG_PERSONS = 166_000  # with one card each: a 30 MB snapshot
PART_BYTES = 512 * 1024
SWIPE_EVERY_S = 0.05
GOAL_P99_MS = 10.0
"""The issue's goal, measured by bench/bench_roster.py."""
GATES_NEVER_PAUSED_MS = 500.0
"""No swipe waits this long, whatever else runs beside the test (the old code: 1,980 ms)."""
KNOWN_CARD = "0012AB34CD"  # S1 in tests/agent/roster_data.py, in every version

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="needs mosquitto_pub")


def centre_publish(broker: MosquittoBroker, topic: str, payload_file: Path, *, lines: bool = False) -> None:
    """The centre: a separate process, so publishing costs this process nothing. ``lines``: one
    message per line of the file, in order (a snapshot in parts)."""
    command = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", topic]
    with payload_file.open("rb") as source:
        if lines:
            subprocess.run([*command, "-l"], stdin=source, check=True, timeout=60)
        else:
            subprocess.run([*command, "-f", str(payload_file)], check=True, timeout=60)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Swiper:
    """Swipes ``KNOWN_CARD`` on a fixed grid; :meth:`latencies_ms` pairs each swipe with its open."""

    def __init__(self, gate: RunningGate) -> None:
        self.gate = gate
        self.due_ns: list[int] = []
        self.opens_before = self._opens()

    def _opens(self) -> int:
        return sum(c.name == "open" for c in self.gate.turnstile.commands)

    async def run(self, until_done: asyncio.Event) -> None:
        start = time.monotonic_ns()
        step = int(SWIPE_EVERY_S * 1e9)
        while not until_done.is_set():
            due = start + len(self.due_ns) * step
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            self.due_ns.append(due)
            self.gate.reader.present(KNOWN_CARD)

    async def latencies_ms(self) -> list[float]:
        await until(
            lambda: self._opens() - self.opens_before >= len(self.due_ns),
            f"an open for each of {len(self.due_ns)} swipes",
        )
        turnstile = self.gate.turnstile
        open_ns = [
            ns for c, ns in zip(turnstile.commands, turnstile.command_ns, strict=True) if c.name == "open"
        ]
        opened = open_ns[self.opens_before : self.opens_before + len(self.due_ns)]
        return [(o - d) / 1e6 for o, d in zip(opened, self.due_ns, strict=True)]


async def swipe_while(gate: RunningGate, busy: Any) -> list[float]:
    """Swipe every 50 ms while ``busy()`` runs; the latencies of those swipes."""
    swiper = Swiper(gate)
    done = asyncio.Event()
    task = asyncio.create_task(swiper.run(done))
    try:
        await busy()
    finally:
        done.set()
        await task
    return await swiper.latencies_ms()


def take_big_rosters(tmp_path: Path, mosquitto: MosquittoBroker) -> dict[str, Any]:
    """The whole scenario with its functional checks (every swipe opened, the right replies and
    counters); returns the swipe->open figures in ms per phase. ``bench/bench_roster.py`` runs it
    for the latency goal, with the idle phase as its same-run baseline."""
    site, gw = "big-roster", "gw-big"
    base = f"campus/v1/{site}"
    topic = f"{base}/roster/snapshot"
    in_parts = tmp_path / "snapshot-v2.parts"
    whole_v2 = snapshot(2, extra_persons=BIG_PERSONS)
    # Each part signed as the centre publishes it; the signature goes in the room left for it.
    parts = split_snapshot(
        RosterSnapshot.model_validate(whole_v2), part_id="v2", max_part_bytes=PART_BYTES - MAX_SIGNATURE_BYTES
    )
    parts = [signed(topic, part) for part in parts]
    in_parts.write_bytes(b"\n".join(parts) + b"\n")
    single = tmp_path / "snapshot-v3.json"
    single.write_bytes(signed(topic, json.dumps(snapshot(3, extra_persons=BIG_PERSONS)).encode()))
    del whole_v2
    size = single.stat().st_size
    assert size >= 30_000_000 and max(map(len, parts)) <= PART_BYTES
    limit = size + 65_536
    oversize = tmp_path / "oversize.json"
    oversize.write_bytes(b" " * (limit + 1))  # never read: refused on its length alone
    # The gateway's own topics only: a subscriber in this process that also took the 30 MB of
    # snapshot would copy it under the GIL the agent shares, and be measured as the agent.
    collector = Collector(mosquitto.url, f"{base}/{gw}/#")
    figures: dict[str, Any] = {"parts": f"{len(parts)} of at most {PART_BYTES:,} bytes"}

    def replies() -> list[dict[str, Any]]:
        return [m.json() for m in collector.snapshot(f"{base}/{gw}/roster/reply")]

    async def scenario() -> None:
        async with running_gate(
            tmp_path,
            mosquitto.url,
            site=site,
            gateway=gw,
            agent_extra=f", roster_max_message_bytes: {limit}",
        ) as gate:
            agent = gate.agent
            await until(
                lambda: agent.roster is not None and agent.roster.last_good_version() == 1, "seed copied"
            )

            async def idle() -> None:
                await asyncio.sleep(2.0)  # the same-run baseline: the same swipes with nothing else to do

            figures["baseline"] = await swipe_while(gate, idle)

            def take(path: Path, version: int, *, lines: bool) -> Any:
                async def taking() -> None:
                    await asyncio.to_thread(
                        centre_publish, mosquitto, f"{base}/roster/snapshot", path, lines=lines
                    )
                    await until(
                        lambda: agent.roster is not None and agent.roster.version == version,
                        f"version {version} applied",
                        90,
                    )
                    # The copy to roster.db.last-good is part of taking it in.
                    assert agent.roster is not None
                    roster = agent.roster
                    await until(
                        lambda: asyncio.to_thread(lambda: roster.last_good_version() == version),
                        "the copy",
                        60,
                    )

                return taking

            started = time.monotonic()
            figures["in_parts"] = await swipe_while(gate, take(in_parts, 2, lines=True))
            figures["in_parts_s"] = round(time.monotonic() - started, 1)
            assert agent.roster is not None and len(agent.roster.index.persons) == BIG_PERSONS + 7
            assert agent.roster.index.credentials[f"{0x5000000000 + BIG_PERSONS - 1:010X}"].person_id == (
                f"P{BIG_PERSONS - 1:05d}"
            )
            started = time.monotonic()
            figures["single_message"] = await swipe_while(gate, take(single, 3, lines=False))
            figures["single_message_s"] = round(time.monotonic() - started, 1)
            assert agent.roster is not None and len(agent.roster.index.persons) == BIG_PERSONS + 7

            async def refuse_oversize() -> None:
                await asyncio.to_thread(centre_publish, mosquitto, f"{base}/roster/snapshot", oversize)
                await until(lambda: any(r["result"] == "rejected" for r in replies()), "the refusal")

            figures["oversize"] = await swipe_while(gate, refuse_oversize)
            assert agent.counters.get("roster_too_large") == 1
            assert agent.roster is not None and agent.roster.version == 3
            roster_counts = {k: v for k, v in agent.counters.snapshot().items() if k.startswith("roster_")}
            assert roster_counts == {"roster_too_large": 1}, roster_counts
            # Still deciding: a card of the new version opens the gate.
            opens = sum(c.name == "open" for c in gate.turnstile.commands)
            gate.reader.present(f"{0x5000000000 + BIG_PERSONS - 1:010X}")
            await until(lambda: sum(c.name == "open" for c in gate.turnstile.commands) > opens, "a new card")

    try:
        with pytest.MonkeyPatch.context() as env:
            trust_roster_keys(env)  # also when bench/bench_roster.py runs it, outside pytest
            asyncio.run(scenario())
        got = replies()
        rejected = collector.wait_for(
            lambda m: any(
                x.json().get("type") == "edu.campus.gateway.roster_rejected.v1"
                for x in m
                if "/events/" in x.topic
            )
        )
    finally:
        collector.close()
    for reply in got:
        validate(reply, SCHEMA_DIR / "roster" / "reply.json")
    # One answer for the snapshot in parts, none per part.
    assert [(r["result"], r["version"]) for r in got] == [("applied", 2), ("applied", 3), ("rejected", 3)]
    assert "over the limit" in got[2]["reason"] and f"{limit:,}" in got[2]["reason"]
    event = next(
        x.json()
        for x in rejected
        if "/events/" in x.topic and x.json()["type"].endswith("roster_rejected.v1")
    )
    assert event["data"]["kind"] == "snapshot" and event["data"]["result"] == "rejected"
    figures["size_mb"] = round(size / 1e6, 1)
    return figures


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            f"p50 {sorted(v)[len(v) // 2]:.2f} ms, p99 {p99(v):.2f} ms, max {max(v):.2f} ms, "
            f"over 10 ms {sum(x > 10 for x in v)} of {len(v)}"
            if isinstance(v, list)
            else v
        )
        for k, v in figures.items()
    }


def test_30mb_snapshot_in_parts_keeps_gates_deciding_single_message_works_oversize_is_refused(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    figures = take_big_rosters(tmp_path, mosquitto)
    report = summary(figures)
    print(f"\nswipe->open (load average {os.getloadavg()[0]:.1f}): {report}")
    # The goal (p99 under 10 ms while a 30 MB snapshot is taken in) is a timing goal: it is
    # measured by bench/bench_roster.py against the idle phase of the same run (docs/PERFORMANCE.md),
    # not bound here, where CI runs other tests beside it. What this test binds is that the gates
    # are never paused: before, a 24 MB snapshot stopped every gate for 1.98 s.
    for phase in ("in_parts", "single_message", "oversize"):
        assert max(figures[phase]) < GATES_NEVER_PAUSED_MS, (phase, report)

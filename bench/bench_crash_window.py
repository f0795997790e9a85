"""The crash window: how many events a SIGKILL takes that never got a ``seq``.

A grant opens the gate before its event is committed (decisions never wait on fsync), and every
producer hands its event to the outbox's writer thread without waiting. An event is only safe once
the writer's group commit holding it has returned; a SIGKILL before that takes it, and because it
never got a ``seq`` the centre cannot see a gap.

1. Real process: the agent (``edge-agent run``, the same ``edge_agent.cli.main``) runs as a child
   process on a real data directory, with a simulated EM4100 reader and a turnstile on pty pairs
   held by this process, and simulated heartbeat sources loading the outbox at a background rate
   (0, ~1,000, ~10,000 events/s). Cards are swiped back to back, as in bench_gate_latency.py (each
   swipe waits for the open). At a random moment the child is killed with SIGKILL and started again
   on the same data directory (that start is the next trial). Per trial it counts, from what this
   process saw and from ``outbox.db`` after the restart:
   - gate opens the turnstile decoded (with what the agent wrote just before dying, still in the pty)
     minus the trial's committed ``access.granted`` rows: opens whose event never got a ``seq``;
   - events handed to the outbox (counted by the producer, see below) that have no row.
   The producer-side count is the instrumentation: in the child, ``Outbox.submit`` is wrapped to
   count each event into a shared memory file *after* ``submit`` returned, so a counted event was
   handed over; the file survives the SIGKILL. The writer's ``_commit`` is timed the same way
   (commit times, batch sizes, which commits ran SQLite's WAL checkpoint).
2. Anatomy (this process, the real ``Outbox`` on the same file system): where an event waits between
   ``submit`` and durability. The writer's ``_commit`` is timed from outside; per event: queue wait
   (submit -> its batch starts) and commit (batch start -> COMMIT returned), batch sizes, the raw
   fsync time of the file system, and by Little's law the events a kill at a random moment takes
   (rate x mean time to durability), to compare with part 1. Also measured: the same with the WAL
   checkpoint taken off the writer's commits (``wal_autocheckpoint=0`` on the writer connection and a
   passive checkpoint from another thread), a candidate change to shrink the window's tail.
3. Commit cost with the GIL shared: the same rows committed with ``executemany`` (what the writer
   did before issue 11: one ``sqlite3_step`` per row, each releasing and re-taking the GIL) and with
   multi-row INSERTs (what it does now), alone and with another thread busy in Python (the agent's
   event loop under load).

Run: ``.venv/bin/python bench/bench_crash_window.py [--trials N] [--rates 0,1000,10000]
[--modes full,normal] [--anatomy-s S] [--broker] [--dir DIR]``. Figures are printed with this command
line. ``--dir`` puts the work (and so the fsync figures) on a given file system, e.g. a box's data
partition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mmap
import os
import random
import shutil
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from bench_gate_latency import roster
from common import MosquittoBroker, free_port, percentile

from device_drivers import TurnstileMessage, load_profile, resolve_profile
from device_drivers._io.sim import PtyEndpoint
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.turnstile.sim import TurnstileSimulator
from sync import Event, Outbox, OutboxConfig
from tests.support.wait import async_wait_until

HEARTBEAT = "edu.campus.device.heartbeat.v1"
GRANTED = "edu.campus.access.granted.v1"
PASSAGE = "edu.campus.access.passage.v1"
ONLINE = "edu.campus.device.online.v1"
GATE_DEVICES = ("reader", "turnstile")
# Producer-side counters in the shared file, one int64 each.
SLOTS = (
    "sim_heartbeat",
    "granted",
    "passage",
    "submitted",
    "gate_online",
    # The writer's group commits as the agent ran them: how many, how long, how big.
    "commits",
    "commit_ns_total",
    "commit_ns_max",
    "batch_total",
    "batch_max",
    "checkpoint_commits",
    "checkpoint_ns_max",
    "plain_ns_max",
)
SLOT = {name: i for i, name in enumerate(SLOTS)}
SIM_PREFIX = "sim-"
# Each simulated source sleeps this long between heartbeats; the rate is set by how many there are.
SIM_INTERVAL_S = 0.01
PERSONS = 10_000


# -- insert styles (part 3): the writer's multi-row INSERT against executemany ---------------

EVENT_COLUMNS = "INSERT INTO events (seq, id, lane, type, severity, created_at, payload) VALUES "
ROWS_PER_STATEMENT = 128  # as the writer's: 7 parameters a row stays under 999 (SQLite before 3.32)


def multi_row_sql(rows: int) -> str:
    return EVENT_COLUMNS + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows)


# -- the child: the agent with a producer-side count ----------------------------------------


def agent_child(config: str, data_dir: str, counters: str) -> int:
    """``edge-agent run`` with ``Outbox.submit`` counting into ``counters`` (shared memory)."""
    from edge_agent import cli

    fd = os.open(counters, os.O_RDWR)
    shared = mmap.mmap(fd, 8 * len(SLOTS))
    original = Outbox.submit

    # Producers run on the event loop, commits on the writer thread: each slot has one writer.
    def bump(slot: int, by: int = 1) -> None:
        offset = 8 * slot
        struct.pack_into("q", shared, offset, struct.unpack_from("q", shared, offset)[0] + by)

    def peak(slot: int, value: int) -> None:
        offset = 8 * slot
        if value > struct.unpack_from("q", shared, offset)[0]:
            struct.pack_into("q", shared, offset, value)

    def counting_submit(self: Outbox, event: Event, attachment: bytes | None = None) -> None:
        original(self, event, attachment)
        # Counted only once submit returned: the event is in the writer's queue.
        if event.type == HEARTBEAT and str(event.data.get("device", "")).startswith(SIM_PREFIX):
            bump(SLOT["sim_heartbeat"])
        elif event.type == GRANTED:
            bump(SLOT["granted"])
        elif event.type == PASSAGE:
            bump(SLOT["passage"])
        elif event.type == ONLINE and event.data.get("device") in GATE_DEVICES:
            bump(SLOT["gate_online"])
        bump(SLOT["submitted"])

    Outbox.submit = counting_submit  # type: ignore[method-assign]
    commit = getattr(Outbox, "_commit", None)
    if commit is not None:  # private: timed only while it keeps this name

        def timed_commit(self: Outbox, conn: Any, appends: list[Any], *rest: Any, **kw: Any) -> Any:
            before = db_written(self.path)
            start = time.perf_counter_ns()
            try:
                return commit(self, conn, appends, *rest, **kw)
            finally:
                took = time.perf_counter_ns() - start
                if db_written(self.path) != before:
                    bump(SLOT["checkpoint_commits"])
                    peak(SLOT["checkpoint_ns_max"], took)
                else:
                    peak(SLOT["plain_ns_max"], took)
                bump(SLOT["commits"])
                bump(SLOT["commit_ns_total"], took)
                peak(SLOT["commit_ns_max"], took)
                bump(SLOT["batch_total"], len(appends))
                peak(SLOT["batch_max"], len(appends))

        Outbox._commit = timed_commit  # type: ignore[method-assign]
    return cli.main(["run", "--config", config, "--data-dir", data_dir])


# -- the parent: simulators, kills, and the count after restart ------------------------------


class OpenTurnstile(TurnstileSimulator):
    """Stamps (wall time) each ``open`` command as its bytes are decoded on the turnstile's side."""

    opens: list[float]
    opened: asyncio.Event

    def _command(self, command: TurnstileMessage) -> None:
        if command.name == "open":
            self.opens.append(time.time())
            self.opened.set()
        super()._command(command)


@dataclass
class Trial:
    spawned: float
    killed: float = 0.0
    ready_s: float = 0.0
    swipes: int = 0
    opens: list[float] = field(default_factory=list)
    handed: dict[str, int] = field(default_factory=dict)
    timeouts: int = 0


@dataclass
class TrialResult:
    rate: float
    opened: int
    lost_opens: int
    lost_open_window_ms: float
    handed: int
    lost_handed: int
    lost_heartbeats: int
    lost_granted: int
    window_ms: float
    newest_age_ms: float
    commit_mean_ms: float
    commit_max_ms: float
    batch_mean: float
    batch_max: int
    writer_busy: float
    checkpoint_commits: int
    checkpoint_max_ms: float
    plain_max_ms: float


def write_agent_config(
    path: Path, workdir: Path, mode: str, rate: int, reader: str, turnstile: str, url: str
) -> None:
    seed = workdir / "roster.json"
    if not seed.exists():
        seed.write_text(json.dumps(roster(PERSONS)))
    sources = round(rate * SIM_INTERVAL_S)
    config: dict[str, Any] = {
        "gateway": {"site": "bench", "id": "gw-1"},
        "agent": {"roster_seed": str(seed), "log_level": "warning", "shutdown_timeout_s": 5},
        "mqtt": {"url": url, "reconnect_min_s": 1.0, "reconnect_max_s": 5.0},
        "outbox": {"synchronous": mode},
        "devices": [
            {
                "kind": "card_reader",
                "id": "reader",
                "profile": "em4100_id12",
                "port": reader,
                "debounce_s": 0,
            },
            {"kind": "turnstile", "id": "turnstile", "profile": "turnstile_stx_xor", "port": turnstile},
        ],
        "gates": [{"id": "gate-1", "readers": [{"device": "reader"}], "turnstile": "turnstile"}],
        "simulated": [{"id": f"{SIM_PREFIX}{i}", "interval_s": SIM_INTERVAL_S} for i in range(sources)],
    }
    path.write_text(yaml.safe_dump(config))


class Counters:
    """The shared producer-side counters, as this process reads them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def reset(self) -> None:
        self.path.write_bytes(bytes(8 * len(SLOTS)))

    def read(self) -> dict[str, int]:
        raw = self.path.read_bytes()
        return {name: struct.unpack_from("q", raw, 8 * i)[0] for i, name in enumerate(SLOTS)}


def spawn(config: Path, data: Path, counters: Counters, log: Path) -> subprocess.Popen[bytes]:
    counters.reset()
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--agent-child",
                str(config),
                str(data),
                str(counters.path),
            ],
            stdout=out,
            stderr=out,
        )


async def run_trial(
    proc: subprocess.Popen[bytes],
    trial: Trial,
    reader: CardReaderSimulator,
    turnstile: OpenTurnstile,
    counters: Counters,
    cards: Callable[[], str],
    kill_after: tuple[float, float],
    swipe_interval_s: float,
    log: Path,
) -> None:
    """Swipe back to back until the kill; the first open is the agent being ready."""
    turnstile.opens = trial.opens

    async def swipe_until_killed() -> None:
        def gate_online() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
            return counters.read()["gate_online"] >= len(GATE_DEVICES)

        # Swipe only once the reader's driver holds its port: a frame sent before may be flushed.
        await async_wait_until(gate_online, 60, what="the reader and turnstile online")
        first = True
        while True:
            expected = len(trial.opens) + 1
            card = cards()
            turnstile.opened.clear()
            trial.swipes += 1
            reader.present(card)
            timeout = 5.0 if first else 2.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turnstile.opened.wait(), timeout)
            if trial.killed:
                return
            if len(trial.opens) < expected:
                if proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the agent exited ({proc.returncode}):\n{tail}")
                # The agent is alive but did not open: a fault of its own, reported with the figures.
                trial.timeouts += 1
                continue
            if first:
                first = False
                trial.ready_s = time.time() - trial.spawned
                ready.set()
            if swipe_interval_s:
                await asyncio.sleep(swipe_interval_s)

    ready = asyncio.Event()
    swiper = asyncio.create_task(swipe_until_killed())
    await asyncio.wait([swiper, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if swiper.done():
        swiper.result()
    # Heartbeat sources start with the other components; let the background rate settle too.
    await asyncio.sleep(random.uniform(*kill_after))
    trial.killed = time.time()
    proc.kill()
    proc.wait()
    swiper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await swiper
    # Open commands the agent wrote just before it died are still in the pty: read them.
    for _ in range(5):
        await asyncio.sleep(0)
    trial.handed = counters.read()


def committed_rows(db: Path, start: float, end: float) -> list[tuple[str, dict[str, Any]]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT type, payload FROM events WHERE created_at >= ? AND created_at < ?", (start, end)
        ).fetchall()
    finally:
        conn.close()
    return [(type_, json.loads(payload)) for type_, payload in rows]


def event_wall(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def judge(trial: Trial, rows: list[tuple[str, dict[str, Any]]]) -> TrialResult:
    heartbeats = [ev for t, ev in rows if t == HEARTBEAT and str(ev["data"]["device"]).startswith(SIM_PREFIX)]
    granted = sum(1 for t, _ in rows if t == GRANTED)
    passages = sum(1 for t, _ in rows if t == PASSAGE)
    # Every open this run wrote (the pty keeps what it wrote before dying) was followed at once by
    # its grant's submit, and the gate opens in decision order, so the lost ones are the last opens.
    lost_opens = len(trial.opens) - granted
    lost_open_window = (trial.killed - trial.opens[-lost_opens]) * 1000 if lost_opens > 0 else 0.0
    handed = trial.handed
    lost_hb = handed["sim_heartbeat"] - len(heartbeats)
    lost_granted = handed["granted"] - granted
    lost_passage = handed["passage"] - passages
    times = sorted(event_wall(ev) for ev in heartbeats)
    newest_age = (trial.killed - times[-1]) * 1000 if times else 0.0
    # Rate over the run's committed heartbeats, from their creation stamps.
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    rate = (len(times) - 1) / span if span > 0 else 0.0
    total_handed = handed["sim_heartbeat"] + handed["granted"] + handed["passage"]
    lost_total = lost_hb + lost_granted + lost_passage
    # The window in time: what was lost over the rate it was produced at (background plus gate).
    gate_rate = len(trial.opens) / max(1e-9, trial.killed - trial.spawned - trial.ready_s)
    total_rate = rate + 2 * gate_rate  # each open is a grant and, once passed, a passage
    window = lost_total / total_rate * 1000 if total_rate > 0 else 0.0
    return TrialResult(
        rate=rate,
        opened=len(trial.opens),
        lost_opens=lost_opens,
        lost_open_window_ms=lost_open_window,
        handed=total_handed,
        lost_handed=lost_total,
        lost_heartbeats=lost_hb,
        lost_granted=lost_granted,
        window_ms=window,
        newest_age_ms=newest_age,
        commit_mean_ms=handed["commit_ns_total"] / max(1, handed["commits"]) / 1e6,
        commit_max_ms=handed["commit_ns_max"] / 1e6,
        batch_mean=handed["batch_total"] / max(1, handed["commits"]),
        batch_max=handed["batch_max"],
        writer_busy=handed["commit_ns_total"] / 1e9 / (trial.killed - trial.spawned),
        checkpoint_commits=handed["checkpoint_commits"],
        checkpoint_max_ms=handed["checkpoint_ns_max"] / 1e6,
        plain_max_ms=handed["plain_ns_max"] / 1e6,
    )


async def crash_trials(
    workdir: Path,
    mode: str,
    rate: int,
    trials: int,
    kill_after: tuple[float, float],
    swipe_interval_s: float,
    url: str,
) -> list[TrialResult]:
    base = workdir / f"{mode}-{rate}"
    base.mkdir()
    data = base / "data"
    counters = Counters(base / "counters")
    log = base / "agent.log"
    reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
    turnstile = OpenTurnstile(
        load_profile(resolve_profile("turnstile_stx_xor")), PtyEndpoint(), passage_delay_s=0.001
    )
    turnstile.opens = []
    turnstile.opened = asyncio.Event()
    next_card = iter(range(10**9))

    def card() -> str:
        return f"{0x5000000000 + next(next_card) % PERSONS:010X}"

    done: list[Trial] = []
    async with reader, turnstile:
        config = base / "agent.yaml"
        write_agent_config(config, workdir, mode, rate, reader.url, turnstile.url, url)
        for _ in range(trials):
            trial = Trial(spawned=time.time())
            proc = spawn(config, data, counters, log)
            await run_trial(proc, trial, reader, turnstile, counters, card, kill_after, swipe_interval_s, log)
            done.append(trial)
        # The restart after the last kill: the agent opens (and recovers) the outbox, then stops.
        last = Trial(spawned=time.time())
        proc = spawn(config, data, counters, log)
        turnstile.opens = last.opens
        deadline = time.monotonic() + 60
        while not last.opens and time.monotonic() < deadline and proc.poll() is None:
            turnstile.opened.clear()
            reader.present(card())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turnstile.opened.wait(), 2.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    results = []
    for i, trial in enumerate(done):
        end = done[i + 1].spawned if i + 1 < len(done) else last.spawned
        results.append(judge(trial, committed_rows(data / "outbox.db", trial.spawned, end)))
    timeouts = sum(t.timeouts for t in done)
    ready = statistics.median(t.ready_s for t in done)
    print(
        f"  [{mode}, {rate:,}/s] {trials} trials; "
        f"agent ready (first open) after {ready:.1f} s median; "
        f"{sum(t.swipes for t in done):,} swipes, of which never opened while the agent ran: {timeouts}"
    )
    return results


def summary(values: list[float], unit: str = "", digits: int = 0) -> str:
    def fmt(value: float) -> str:
        return f"{value:.{digits}f}{unit}"

    median, p95 = statistics.median(values), percentile(values, 0.95)
    return f"median {fmt(median)}, p95 {fmt(p95)}, max {fmt(max(values))}"


def report_crash(mode: str, rate: int, results: list[TrialResult]) -> None:
    def of(name: str, unit: str = "", digits: int = 0, only_lost: bool = False) -> str:
        picked = [float(getattr(r, name)) for r in results if r.lost_opens or not only_lost]
        return summary(picked or [0.0], unit, digits)

    measured = statistics.median(r.rate for r in results)
    trials = len(results)
    print(
        f"SIGKILL, synchronous={mode}, background {rate:,}/s (measured {measured:,.0f}/s), {trials} trials:"
    )
    print(f"  gate opens per trial: {of('opened')}")
    print(
        f"  opened but never got a seq: {of('lost_opens')}; "
        f"trials with any: {sum(1 for r in results if r.lost_opens)}; "
        f"how far back from the kill: {of('lost_open_window_ms', ' ms', 1, only_lost=True)}"
    )
    print(
        f"  handed to the outbox but never got a seq (all events): {of('lost_handed')} "
        f"(heartbeats {of('lost_heartbeats')}; grants {of('lost_granted')})"
    )
    ages = of("newest_age_ms", " ms", 1) if rate else "n/a (no heartbeats)"
    print(
        f"  window (lost / rate): {of('window_ms', ' ms', 1)}; "
        f"newest committed heartbeat's age at the kill (an upper bound: sources emit in bursts): {ages}"
    )
    print(
        f"  the writer in the agent: commit {of('commit_mean_ms', ' ms', 2)} "
        f"(mean per trial), longest {max(r.commit_max_ms for r in results):.1f} ms; "
        f"batch mean {statistics.median(r.batch_mean for r in results):.1f}, "
        f"largest {max(r.batch_max for r in results)}; "
        f"busy committing {100 * statistics.median(r.writer_busy for r in results):.0f}% of the run"
    )
    print(
        f"  commits that ran SQLite's WAL checkpoint: {sum(r.checkpoint_commits for r in results)} "
        f"(longest per trial {of('checkpoint_max_ms', ' ms', 1)}); "
        f"longest other commit per trial {of('plain_max_ms', ' ms', 1)}"
    )


# -- part 2: where an event waits -------------------------------------------------------------


def db_written(path: Path) -> tuple[int, int]:
    """In WAL mode only a checkpoint writes the main database file: its mtime and size say when."""
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size


def fsync_times(directory: Path, n: int) -> list[float]:
    """One 4 KiB append plus fsync, as a WAL commit does, on the data directory's file system."""
    path = directory / "fsync-probe"
    out = []
    with open(path, "ab") as fh:
        block = os.urandom(4096)
        for _ in range(n):
            fh.write(block)
            fh.flush()
            start = time.perf_counter()
            os.fsync(fh.fileno())
            out.append((time.perf_counter() - start) * 1000)
    path.unlink()
    return out


@dataclass
class Anatomy:
    waits_ms: list[float]
    commits_ms: list[float]
    totals_ms: list[float]
    batches: list[int]
    checkpoint_ms: list[float]
    """Commits during which the main database file was written: SQLite's automatic WAL checkpoint."""
    rate: float


def heartbeat(i: int) -> Event:
    return Event(
        HEARTBEAT,
        "campus/bench/gw-1/sim-0",
        {"device": "sim-0", "kind": "simulated", "uptime_s": 0.0, "counter": i},
    )


async def anatomy(
    directory: Path, mode: str, rate: int, seconds: float, checkpoint_off_writer: bool
) -> Anatomy:
    """Pace ``submit`` at ``rate`` and time every event from submit to its COMMIT returning."""
    submitted: dict[str, float] = {}
    waits: list[float] = []
    commits: list[float] = []
    totals: list[float] = []
    batches: list[int] = []
    checkpointed: list[float] = []
    stop_checkpoints = threading.Event()
    # As the agent does (Gateway.run): the writer thread gets the GIL back within 1 ms.
    sys.setswitchinterval(0.001)
    async with Outbox(directory, OutboxConfig(synchronous=mode), "campus/bench/gw-1/gateway") as ob:
        original = ob._commit

        # The appends are the second argument in both the old and the new writer; the rest passes.
        def timed(conn: sqlite3.Connection, appends: list[Any], *rest: Any) -> Any:
            before = db_written(ob.path)
            start = time.perf_counter()
            result = original(conn, appends, *rest)
            end = time.perf_counter()
            commits.append((end - start) * 1000)
            if db_written(ob.path) != before:
                checkpointed.append((end - start) * 1000)
            batches.append(len(appends))
            for item in appends:
                at = submitted.pop(item.event.id, None)
                if at is not None:
                    waits.append((start - at) * 1000)
                    totals.append((end - at) * 1000)
            return result

        ob._commit = timed  # type: ignore[method-assign]
        checkpointer = None
        if checkpoint_off_writer:
            assert ob._write is not None
            writer_conn = ob._write
            ob.run_in_writer(lambda: writer_conn.execute("PRAGMA wal_autocheckpoint=0").close())

            def checkpoints() -> None:
                conn = sqlite3.connect(ob.path, check_same_thread=False)
                while not stop_checkpoints.wait(0.5):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                conn.close()

            checkpointer = threading.Thread(target=checkpoints, name="checkpointer")
            checkpointer.start()
        await ob.flush()
        batches.clear()
        commits.clear()
        checkpointed.clear()
        # Submit in ticks of 1 ms, as many as the rate owes by now: a steady producer.
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            owed = int((now - start) * rate) - sent
            for _ in range(owed):
                ev = heartbeat(sent)
                submitted[ev.id] = time.perf_counter()
                ob.submit(ev)
                sent += 1
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
        await ob.flush()
        stop_checkpoints.set()
        if checkpointer is not None:
            checkpointer.join()
    return Anatomy(waits, commits, totals, [b for b in batches if b], checkpointed, sent / elapsed)


# (label, checkpoint off the writer): the writer as it is first, a same-run baseline.
ANATOMY_VARIANTS = (
    ("the writer as it is", False),
    ("candidate: WAL checkpoint off the writer", True),
)


def report_anatomy(mode: str, rate: int, a: Anatomy, label: str) -> None:
    mean_total = statistics.mean(a.totals_ms)
    print(f"anatomy, synchronous={mode}, {rate:,}/s submitted (got {a.rate:,.0f}/s), {label}:")
    print(f"  queue wait (submit -> its batch starts): {summary(a.waits_ms, ' ms', 2)}")
    print(
        f"  commit (batch start -> COMMIT returned): {summary(a.commits_ms, ' ms', 2)}; "
        f"batch size {summary([float(b) for b in a.batches])}"
    )
    ran = summary(a.checkpoint_ms, " ms", 1) if a.checkpoint_ms else "none"
    print(f"  commits that ran SQLite's WAL checkpoint: {len(a.checkpoint_ms)} of {len(a.commits_ms)}: {ran}")
    print(
        f"  submit -> durable: {summary(a.totals_ms, ' ms', 2)}, p99 {percentile(a.totals_ms, 0.99):.2f} ms, "
        f"mean {mean_total:.2f} ms; "
        f"Little's law: a kill at a random moment takes {a.rate * mean_total / 1000:.1f} events on average"
    )


# -- part 3: one statement per row or per batch, with the event loop busy -----------------------


def insert_styles(
    directory: Path, mode: str, batch: int, busy: bool, commits: int = 200
) -> dict[str, list[float]]:
    """Commit ``batch`` rows per transaction as ``executemany`` does (one ``sqlite3_step``, and so
    one GIL release and re-acquire, per row) and as multi-row INSERTs of ``ROWS_PER_STATEMENT``;
    ``busy``: another thread runs Python meanwhile, as the agent's event loop does under load."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin, daemon=True)
    if busy:
        spinner.start()
    payload = heartbeat(0).to_json(1)
    out: dict[str, list[float]] = {}
    try:
        for style in ("executemany", "multi-row"):
            conn = sqlite3.Connection(directory / f"{style}-{mode}-{batch}-{busy}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={mode.upper()}")
            conn.execute(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, lane INTEGER NOT NULL, "
                "type TEXT NOT NULL, severity TEXT, created_at REAL NOT NULL, payload BLOB NOT NULL, "
                "delivered_at REAL)"
            )
            conn.execute("CREATE INDEX events_pending ON events(lane, seq) WHERE delivered_at IS NULL")
            times = out.setdefault(style, [])
            seq = 0
            for _ in range(commits):
                rows = [
                    (seq + i + 1, f"id-{seq + i}", 2, HEARTBEAT, None, time.time(), payload)
                    for i in range(batch)
                ]
                seq += batch
                start = time.perf_counter()
                conn.execute("BEGIN")
                if style == "executemany":
                    conn.executemany(EVENT_COLUMNS + "(?, ?, ?, ?, ?, ?, ?)", rows)
                else:
                    for at in range(0, batch, ROWS_PER_STATEMENT):
                        chunk = rows[at : at + ROWS_PER_STATEMENT]
                        conn.execute(multi_row_sql(len(chunk)), [v for row in chunk for v in row])
                conn.execute("COMMIT")
                times.append((time.perf_counter() - start) * 1000)
            conn.close()
    finally:
        stop.set()
        if busy:
            spinner.join()
    return out


def report_insert_styles(directory: Path, modes: list[str]) -> None:
    sys.setswitchinterval(0.001)  # as in the agent
    for mode in modes:
        for batch in (25, 250, 2000):
            for busy in (False, True):
                styles = insert_styles(directory, mode, batch, busy)
                load = "another thread busy in Python" if busy else "nothing else running"
                figures = "; ".join(f"{name} {summary(t, ' ms', 2)}" for name, t in styles.items())
                print(f"commit of {batch} rows, synchronous={mode}, {load}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=30, help="SIGKILLs per rate and mode")
    parser.add_argument("--rates", default="0,1000,10000", help="background event rates (events/s)")
    parser.add_argument("--modes", default="full,normal", help="outbox synchronous modes")
    parser.add_argument(
        "--kill-after", default="0.5,2.5", help="kill uniformly within this many s after ready"
    )
    parser.add_argument(
        "--swipe-interval-ms", type=float, default=0.0, help="pause between swipes (0: back to back)"
    )
    parser.add_argument("--anatomy-s", type=float, default=5.0, help="seconds per anatomy run (0: skip)")
    parser.add_argument("--broker", action="store_true", help="run a Mosquitto, so the agent also drains")
    parser.add_argument(
        "--skip-kills", action="store_true", help="only the fsync, anatomy and insert figures"
    )
    parser.add_argument(
        "--dir", type=Path, help="where to work (default: the temp dir); a box's data partition"
    )
    parser.add_argument("--agent-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent_child:
        sys.exit(agent_child(*args.agent_child))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    rates = [int(r) for r in args.rates.split(",")]
    modes = args.modes.split(",")
    low, high = (float(x) for x in args.kill_after.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bench-crash-", dir=args.dir))
    broker = None
    try:
        fs = fsync_times(workdir, 200)
        print(f"fsync of a 4 KiB append on {workdir} (the data directory's disk): {summary(fs, ' ms', 2)}")
        if args.anatomy_s > 0:
            for mode in modes:
                for rate in [r for r in rates if r > 0]:
                    for label, off in ANATOMY_VARIANTS:
                        directory = workdir / f"anatomy-{mode}-{rate}-{int(off)}"
                        a = asyncio.run(anatomy(directory, mode, rate, args.anatomy_s, off))
                        report_anatomy(mode, rate, a, label)
                        shutil.rmtree(directory, ignore_errors=True)
            report_insert_styles(workdir, modes)
        if args.skip_kills:
            return
        if args.broker:
            broker = MosquittoBroker(workdir)
            broker.start()
            url = broker.url
        else:
            url = f"mqtt://127.0.0.1:{free_port()}"  # nobody listens: the link stays down, the backlog grows
        print(f"broker: {'a local Mosquitto (the agent drains)' if broker else 'down (nothing drains)'}")
        pause = args.swipe_interval_ms / 1000
        for mode in modes:
            for rate in rates:
                results = asyncio.run(crash_trials(workdir, mode, rate, args.trials, (low, high), pause, url))
                report_crash(mode, rate, results)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

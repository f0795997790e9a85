"""Half-open API connections against the real agent process: open files, close lateness, bursts.

Four cases, each against ``edge-agent run`` (simulated sources, the API on a free port, a Mosquitto
of its own) under the unit's LimitNOFILE:

1. ``issue``: the issue's case at the API defaults: 200 partial-header connections; the agent's open
   files before, while held and after, how many were refused at once, and when the last one closed.
2. ``mix``: 500 stalled connections at once (partial headers, trickled headers, partial bodies, idle
   keep-alive) with short deadlines; open files base → held → after, ``/health`` during the flood, and
   how late past its stage's deadline each close is seen by the client.
3. ``burst``: ``--burst`` non-blocking connects at once against the default cap; the peak of the
   agent's open files (``/proc/PID/fd`` sampled in a tight loop) against the baseline plus the cap.
4. ``refusal``: the cap held by partial-header connections, then ``--over-cap`` connections one
   after another, each timed from ``connect()`` to the reset the client sees.

The probes, the watcher and the agent's start are the half-open test's (tests/api/test_half_open.py):
one implementation, so the bench measures exactly what the test proves.

Run: ``.venv/bin/python bench/bench_api_connections.py [issue mix burst refusal] [--runs N]
[--burst N] [--over-cap N]`` (all four cases by default; about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import MosquittoBroker, percentile

from edge_agent.config import ApiSettings
from tests.api.test_half_open import (
    KEEP_ALIVE_REQUEST,
    PARTIAL_BODY,
    PARTIAL_HEADERS,
    Probe,
    Watcher,
    _get,
    _interleaved,
    _metrics,
    _open,
    _open_fds,
    _start_agent,
)
from tests.support.agent_process import AgentProcess

DEFAULTS = ApiSettings()
DEFAULT_CAP = DEFAULTS.max_connections
MIX = {"headers": 150, "trickle": 50, "idle": 150, "body": 150}
BURST_SETTLE_S = 4.0  # a measurement, not a test: let the kernel's SYN retries play out before closing


def stop(agent: AgentProcess) -> None:
    agent.signal(signal.SIGTERM)
    agent.wait(30)
    agent.kill()


def wait_back_to(agent: AgentProcess, base: int) -> float:
    """Seconds until the agent's open files are back at ``base``."""
    t = time.monotonic()
    while _open_fds(agent) > base:
        time.sleep(0.005)
    return time.monotonic() - t


def issue_case(broker: MosquittoBroker, tmp: Path, args: argparse.Namespace) -> None:
    agent, port = _start_agent(tmp, broker)
    base = _open_fds(agent)
    watcher = Watcher()
    t0 = time.monotonic()
    probes: list[Probe] = []
    for _ in range(200):
        probes.append(_open(port, "headers", PARTIAL_HEADERS))
        watcher.add(probes[-1])  # at once, so a refusal is seen when it happens
    held = _open_fds(agent)
    watcher.until_all_closed(30)
    # Seen by this client, which is blocked in connect() while the listen queue is full (a SYN retry
    # takes 1 s), so a refusal may be seen late; the agent's counter is the exact figure.
    after = [p.closed_at - p.started for p in probes if p.closed_at is not None]
    early = [t for t in after if t < DEFAULTS.header_timeout_s / 2]
    wait_back_to(agent, base)
    m = _metrics(port)
    print(
        f"issue case, defaults: 200 partial headers; open files {base} -> {held} -> {_open_fds(agent)};"
        f" {len(early)} closed before the header deadline, within {max(early, default=0):.2f} s"
        f" (counter refused {m['api_connections_refused']:.0f}),"
        f" header timeouts {m['api_connections_header_timeout']:.0f},"
        f" last {max(p.closed_at or t0 for p in probes) - t0:.2f} s after the first connect"
    )
    stop(agent)


def mix_case(broker: MosquittoBroker, tmp: Path, args: argparse.Namespace) -> None:
    late: dict[str, list[float]] = {kind: [] for kind in MIX}
    agent, port = _start_agent(
        tmp, broker, max_connections=512, header_timeout_s=2.0, body_timeout_s=3.0, keep_alive_timeout_s=1
    )
    base = _open_fds(agent)
    payload = {"headers": PARTIAL_HEADERS, "trickle": PARTIAL_HEADERS, "idle": KEEP_ALIVE_REQUEST}
    for _ in range(args.runs):
        watcher = Watcher()
        probes: list[Probe] = []
        t0 = time.monotonic()
        for kind in _interleaved(MIX):
            probes.append(_open(port, kind, payload.get(kind, PARTIAL_BODY)))
            watcher.add(probes[-1])
        opened = time.monotonic() - t0
        held = _open_fds(agent)
        t = time.monotonic()
        status, _ = _get(port, "/health")
        during = time.monotonic() - t
        watcher.until_all_closed(15)
        watcher.close()
        for p in probes:
            assert p.closed_at is not None
            late[p.kind].append(p.closed_at - p.started - p.timeout_s)
        after_ms = wait_back_to(agent, base) * 1000
        print(
            f"  500 mixed: opened in {opened:.2f} s; open files {base} -> {held} -> {_open_fds(agent)}"
            f" ({after_ms:.0f} ms after the last close seen);"
            f" /health during {during * 1000:.1f} ms ({status})"
        )
    for kind, values in late.items():
        print(
            f"  {kind:8s} n={len(values)} past its deadline:"
            f" median {statistics.median(values) * 1000:.0f} ms,"
            f" p99 {percentile(values, 0.99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"
        )
    stop(agent)


def sample_peak(agent: AgentProcess, peak: list[int], done: threading.Event) -> None:
    """Keep ``peak[0]`` at the most open files seen in the agent until ``done`` is set."""
    while not done.is_set():
        with contextlib.suppress(OSError):  # a descriptor closed while the directory was listed
            peak[0] = max(peak[0], _open_fds(agent))


def burst_case(broker: MosquittoBroker, tmp: Path, args: argparse.Namespace) -> None:
    agent, port = _start_agent(tmp, broker)
    base = _open_fds(agent)
    for _ in range(args.runs):
        before = _metrics(port).get("api_connections_refused", 0)
        peak = [base]
        done = threading.Event()
        sampler = threading.Thread(target=sample_peak, args=(agent, peak, done))
        sampler.start()
        socks = []
        for _ in range(args.burst):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        time.sleep(BURST_SETTLE_S)
        done.set()
        sampler.join()
        for s in socks:
            s.close()
        wait_back_to(agent, base)
        refused = _metrics(port)["api_connections_refused"] - before
        print(
            f"burst of {args.burst}: open files {base}, peak {peak[0]}"
            f" ({peak[0] - base - DEFAULT_CAP} over the cap of {DEFAULT_CAP}), refused {refused:.0f},"
            f" /health after {_get(port, '/health')[0]}"
        )
    stop(agent)


def refusal_case(broker: MosquittoBroker, tmp: Path, args: argparse.Namespace) -> None:
    cap = 8
    agent, port = _start_agent(tmp, broker, max_connections=cap, header_timeout_s=60)
    holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(cap)]
    for h in holders:
        h.sendall(PARTIAL_HEADERS)
    times = []
    for _ in range(args.over_cap):
        t = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(PARTIAL_HEADERS)
            s.recv(1)
        except ConnectionResetError:
            pass
        times.append(time.monotonic() - t)
        s.close()
    for h in holders:
        h.close()
    refused = _metrics(port)["api_connections_refused"]
    print(
        f"{args.over_cap} over the cap of {cap}: connect to reset"
        f" median {statistics.median(times) * 1000:.2f} ms, p99 {percentile(times, 0.99) * 1000:.2f} ms,"
        f" max {max(times) * 1000:.2f} ms; counter refused {refused:.0f}"
    )
    stop(agent)


CASES = {"issue": issue_case, "mix": mix_case, "burst": burst_case, "refusal": refusal_case}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of the mix and burst cases")
    parser.add_argument("--burst", type=int, default=1000, help="connects at once in the burst case")
    parser.add_argument(
        "--over-cap", type=int, default=200, help="connections over the cap in the refusal case"
    )
    args = parser.parse_args()
    if unknown := set(args.cases) - set(CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory() as d, MosquittoBroker(Path(d) / "mq") as broker:
        for i, case in enumerate(args.cases or CASES):
            tmp = Path(d) / f"run{i}"
            tmp.mkdir()
            CASES[case](broker, tmp, args)


if __name__ == "__main__":
    main()

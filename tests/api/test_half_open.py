"""Half-open connections against the real agent process (issue 11, item 5).

Hundreds of clients that open a connection and stall it (half a header, trickled or not; a header
and half a body; an idle keep-alive connection; half the header of a second request on one
connection) are each closed at their stage's deadline, counted, and leave the agent's open files
where they were; the API answers meanwhile; a connection over the cap is closed at once. The agent
runs under the unit's LimitNOFILE, and `edge-agent doctor` compares its open files with that limit.
"""

from __future__ import annotations

import errno
import os
import resource
import selectors
import signal
import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edge_agent.config import load_config
from edge_agent.doctor import Status, check_open_files, open_files_needed
from tests.ops.unit_file import UNIT, parse_unit
from tests.support.agent_process import AgentProcess, write_config
from tests.support.broker import MosquittoBroker, free_port
from tests.support.wait import wait_until

KEEP_ALIVE_S = 1
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0  # longer than the headers' deadline, so a body closed on time proves its own timer
# How late past its deadline a close may be seen here: the agent's loop and this process share two
# busy cores. The measured lateness is in docs/performance/api-connections.md.
LATE_S = 1.0
TRICKLE_EVERY_S = 0.2

PARTIAL_HEADERS = b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Unfinished: "
PARTIAL_BODY = (
    b"POST /api/v1/config/validate HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + b'{"gateway": '
)
KEEP_ALIVE_REQUEST = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
UNIT_OPEN_FILES = int(parse_unit(UNIT.read_text())["Service"]["LimitNOFILE"][-1])


@dataclass
class Probe:
    sock: socket.socket
    kind: str
    started: float
    """When the stalled stage began here: the connect, or the response for an idle keep-alive."""
    closed_at: float | None = None

    @property
    def timeout_s(self) -> float:
        return {"idle": KEEP_ALIVE_S, "body": BODY_TIMEOUT_S}.get(self.kind, HEADER_TIMEOUT_S)


def _start_agent(tmp_path: Path, broker: MosquittoBroker, **api: Any) -> tuple[AgentProcess, int]:
    port = free_port()
    config = write_config(
        tmp_path / "agent.yaml", site="half-open", interval_s=0.05, extra={"api": {"port": port, **api}}
    )
    agent = AgentProcess(config, tmp_path / "data", broker.url)
    # The limit the unit gives it (this shell's may be far higher).
    resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE, (UNIT_OPEN_FILES, UNIT_OPEN_FILES))
    wait_until(
        lambda: _get(port, "/ready")[0] == 200 and b'"broker":"connected"' in _get(port, "/ready")[1],
        30,
        0.1,
        what="the agent ready with its API up",
        ignore=(OSError,),
    )
    return agent, port


def _get(port: int, path: str) -> tuple[int, bytes]:
    # urllib sends "Connection: close": these requests leave no keep-alive connection behind.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _metrics(port: int) -> dict[str, float]:
    status, body = _get(port, "/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            agent_counter = sample.name == "edge_agent_events_total"
            values[sample.labels["name"] if agent_counter else sample.name] = sample.value
    return values


def _open_fds(agent: AgentProcess) -> int:
    return len(os.listdir(f"/proc/{agent.proc.pid}/fd"))


def _settled_fds(agent: AgentProcess) -> int:
    """The agent's open files without the short-lived ones (a status file being written, the last
    metrics request still closing): the least of a few samples, so a baseline is never inflated."""
    samples = []
    for _ in range(10):
        samples.append(_open_fds(agent))
        time.sleep(0.03)
    return min(samples)


def _read_response(sock: socket.socket) -> None:
    """Read one whole 200 response (headers and Content-Length bytes of body)."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    headers = dict(line.partition(b": ")[::2] for line in head.split(b"\r\n")[1:])
    length = int(headers[b"content-length"])
    while len(body) < length:
        body += sock.recv(65536)


def _open(port: int, kind: str, payload: bytes) -> Probe:
    # Before the connect: the agent arms its timer when it accepts, which cannot come earlier. Taken
    # after it, a test thread descheduled on a loaded box would start its clock late.
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(payload)
    if kind in ("idle", "next"):
        _read_response(sock)
        started = time.monotonic()  # the response is complete: the keep-alive timer runs
    if kind == "next":
        sock.sendall(PARTIAL_HEADERS)  # a second request on the same connection, left unfinished
        started = time.monotonic()
    sock.setblocking(False)
    return Probe(sock, kind, started)


def _interleaved(mix: dict[str, int]) -> list[str]:
    """The kinds spread evenly. Each idle probe waits for its response, and the agent accepts in
    order, so an idle one every few keeps the listen queue short: a burst longer than the queue
    would wait out SYN retries in the kernel, where the agent cannot arm any timer."""
    placed = [((i + 0.5) / n, kind) for kind, n in mix.items() for i in range(n)]
    return [kind for _, kind in sorted(placed)]


def _closed_by_peer(sock: socket.socket) -> bool | None:
    """True once the agent closed the connection, False while it is open, None when data arrived."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True if not data else None


class Watcher:
    """Reads every probe until the agent closes it, noting when; feeds the trickling ones a byte at a
    time. Probes are watched from the moment they are added, so a close is seen when it happens."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.next_trickle = time.monotonic() + TRICKLE_EVERY_S

    def add(self, probe: Probe) -> None:
        self.selector.register(probe.sock, selectors.EVENT_READ, probe)
        self.poll(0)

    def poll(self, timeout: float) -> None:
        now = time.monotonic()
        if now >= self.next_trickle:
            self.next_trickle = now + TRICKLE_EVERY_S
            for key in list(self.selector.get_map().values()):
                if key.data.kind == "trickle":
                    try:
                        key.data.sock.send(b"a")
                    except OSError as err:
                        assert err.errno in (errno.EPIPE, errno.ECONNRESET), err
        for key, _ in self.selector.select(timeout):
            probe: Probe = key.data
            closed = _closed_by_peer(probe.sock)
            at = time.monotonic()
            assert closed is not None, f"{probe.kind}: the agent sent data"
            if closed:
                probe.closed_at = at
                self.selector.unregister(probe.sock)
                probe.sock.close()

    def until_all_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while left := len(self.selector.get_map()):
            now = time.monotonic()
            assert now < deadline, f"{left} connections still open after {timeout} s"
            self.poll(min(TRICKLE_EVERY_S, deadline - now))

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            key.data.sock.close()
        self.selector.close()


def test_500_half_open_connections_are_closed_at_their_deadlines_and_counted(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    stalled = {"headers": 130, "trickle": 50, "next": 20, "idle": 150, "body": 150}
    agent, port = _start_agent(
        tmp_path,
        mosquitto,
        max_connections=sum(stalled.values()) + 12,  # the largest cap the config allows
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
    )
    watcher = Watcher()
    try:
        before = _metrics(port)
        baseline = _settled_fds(agent)
        payload = {"headers": PARTIAL_HEADERS, "trickle": PARTIAL_HEADERS}
        payload |= {"idle": KEEP_ALIVE_REQUEST, "next": KEEP_ALIVE_REQUEST}
        probes = []
        for kind in _interleaved(stalled):
            probes.append(_open(port, kind, payload.get(kind, PARTIAL_BODY)))
            watcher.add(probes[-1])
        assert _open_fds(agent) >= baseline + stalled["body"]
        status, _ = _get(port, "/health")
        answered_at = time.monotonic()
        assert status == 200

        watcher.until_all_closed(BODY_TIMEOUT_S + LATE_S + 5)

        assert answered_at < min(p.closed_at for p in probes if p.kind == "body" and p.closed_at)
        for probe in probes:
            assert probe.closed_at is not None
            # The agent arms its timer when it accepts (after our connect) or when it has sent the
            # response (before we read it): an idle one may be seen closing a little early here.
            early = 0.2 if probe.kind == "idle" else 0.01
            elapsed = probe.closed_at - probe.started
            assert probe.timeout_s - early <= elapsed <= probe.timeout_s + LATE_S, (probe.kind, elapsed)

        after = _metrics(port)

        def closed(reason: str) -> float:
            return after.get(f"api_connections_{reason}", 0) - before.get(f"api_connections_{reason}", 0)

        assert closed("header_timeout") == stalled["headers"] + stalled["trickle"] + stalled["next"]
        assert closed("body_timeout") == stalled["body"]
        assert closed("idle_closed") == stalled["idle"]
        assert closed("refused") == 0
        wait_until(lambda: _open_fds(agent) <= baseline, 10, 0.05, what=f"open files back to {baseline}")
        assert _metrics(port)["edge_api_connections_open"] == 1  # the scrape itself
        assert _get(port, "/health")[0] == 200
        # One summary line per interval for the whole flood, not one per connection.
        assert agent.output().count("local API closed connections") <= 2
    finally:
        watcher.close()
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()


def _refused_at_once(port: int, within_s: float) -> bool:
    sock = socket.create_connection(("127.0.0.1", port), timeout=within_s)
    try:
        sock.sendall(PARTIAL_HEADERS)
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()


def test_connections_over_the_cap_are_closed_at_once_and_counted(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cap, over = 8, 30
    header_timeout_s = 30.0  # far longer than "at once", so a refusal cannot pass for a timeout
    agent, port = _start_agent(tmp_path, mosquitto, max_connections=cap, header_timeout_s=header_timeout_s)
    holders: list[socket.socket] = []
    try:
        before = _metrics(port)
        baseline = _settled_fds(agent)
        holders = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(cap)]
        for sock in holders:
            sock.sendall(PARTIAL_HEADERS)
        wait_until(lambda: _open_fds(agent) >= baseline + cap, 10, 0.02, what="the holders accepted")

        refused = [_refused_at_once(port, header_timeout_s / 10) for _ in range(over)]
        assert all(refused), f"{refused.count(False)} of {over} still open after {header_timeout_s / 10} s"
        # Not queued either: none of them holds a descriptor in the agent.
        wait_until(lambda: _open_fds(agent) <= baseline + cap, 10, 0.02, what="only the holders open")

        holders.pop().close()
        wait_until(lambda: _open_fds(agent) <= baseline + cap - 1, 10, 0.02, what="one holder gone")
        after = _metrics(port)
        assert after.get("api_connections_refused", 0) - before.get("api_connections_refused", 0) == over
        assert after["edge_api_connections_open"] == cap  # the holders left and this scrape
        assert after["edge_api_connections_max"] == cap
        assert agent.output().count("local API closed connections") == 1
        # The first refusal is logged at once; the rest wait for the next summary line.
        assert f"1 over the cap of {cap} open" in agent.output()
    finally:
        for sock in holders:
            sock.close()
    try:
        wait_until(lambda: _open_fds(agent) <= baseline, 10, 0.05, what=f"open files back to {baseline}")
        assert _get(port, "/health")[0] == 200
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()


def test_doctor_compares_the_agents_open_files_with_its_limit(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    agent, port = _start_agent(tmp_path, mosquitto)
    try:
        config = load_config(tmp_path / "agent.yaml")
        needed = open_files_needed(config)
        data = tmp_path / "data"
        wait_until(lambda: (data / "status.json").exists(), 10, 0.05, what="status.json")
        result = check_open_files(config, data)
        assert result.status is Status.OK, result.line()
        assert f"pid {agent.proc.pid} holds " in result.detail
        assert f"of its limit {UNIT_OPEN_FILES}; this configuration needs up to {needed}" in result.detail
        resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE, (needed - 1, UNIT_OPEN_FILES))
        assert check_open_files(config, data).status is Status.FAIL
        assert _get(port, "/health")[0] == 200  # a limit below the need costs nothing until it is reached
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(30)
        agent.kill()
    assert check_open_files(config, data).status is Status.WARN  # no agent to look at

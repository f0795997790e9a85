"""Local API latency under a small concurrent load, against a bare FastAPI endpoint in the same run.

The real agent (simulated reader and turnstile on pty pairs, SQLite outbox and alert book, a local
Mosquitto when one is installed) runs with the API served by uvicorn in its event loop, exactly as
``serve_api`` runs it. The baseline is a bare FastAPI app with one endpoint returning a constant,
served by the same uvicorn settings in the same process and loop, so the ratio shows what the
gateway's endpoints add over FastAPI + uvicorn themselves. The load comes from a separate process
(httpx, ``--concurrency`` connections on loopback) so the client does not share the server's loop.

It also measures what API load does to the gates, which share the agent's event loop: card bytes on
the reader's pty → open command decoded on the turnstile's, with the API idle (the baseline) and with
the alert list under the same concurrent load.

Run: ``/tmp/venv/bin/python bench/bench_api.py [--requests N] [--concurrency N] [--alerts N] [--swipes N]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI

from device_drivers import TurnstileMessage, load_profile, resolve_profile
from device_drivers._io.sim import PtyEndpoint
from device_drivers.card.sim import CardReaderSimulator
from device_drivers.turnstile.sim import TurnstileSimulator
from edge_agent.api import serve_api
from edge_agent.config import ApiSettings, parse_config
from edge_agent.gateway import Gateway
from sync import Event, Severity


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the load generator (a separate process) ------------------------------------------------------


async def _load(url: str, token: str, requests: int, concurrency: int, warmup: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        for _ in range(warmup):
            (await client.get(url)).raise_for_status()
        latencies: list[float] = []
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def client_main(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    latencies = asyncio.run(_load(args.client, args.token, args.requests, args.concurrency, args.warmup))
    elapsed = time.perf_counter() - t0
    print(json.dumps({"latencies": latencies, "elapsed_s": elapsed}))


# -- the server side ------------------------------------------------------------------------------


class TimedTurnstile(TurnstileSimulator):
    """Stamps the moment each command's bytes are decoded on the turnstile side of the line."""

    arrivals: list[int]
    arrived: asyncio.Event

    def _command(self, command: TurnstileMessage) -> None:
        self.arrivals.append(time.perf_counter_ns())
        self.arrived.set()
        super()._command(command)


async def swipe_latencies(
    reader: CardReaderSimulator, turnstile: TimedTurnstile, n: int
) -> tuple[list[float], int]:
    """Card bytes written on the reader's line → open command decoded on the turnstile's, in ms."""
    latencies: list[float] = []
    lost = 0
    for i in range(n):
        expected = len(turnstile.arrivals) + 1
        turnstile.arrived.clear()
        start = time.perf_counter_ns()
        reader.present(f"{0x5000000000 + i % 100:010X}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(turnstile.arrived.wait(), 2.0)
        if len(turnstile.arrivals) < expected:
            lost += 1
            continue
        latencies.append((turnstile.arrivals[-1] - start) / 1e6)
        await asyncio.sleep(0.005)
    return latencies, lost


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    def capture_signals(self) -> Any:  # newer uvicorn: leave the agent's handlers alone
        return contextlib.nullcontext()


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.get("/constant")
    async def constant() -> dict[str, bool]:
        return {"ok": True}

    return app


def config_text(data: Path, broker: str, reader: str, turnstile: str) -> str:
    seed = data.parent / "roster.json"
    seed.write_text(
        json.dumps(
            {
                "kind": "snapshot",
                "version": 1,
                "persons": [
                    {"id": f"P{i}", "name": f"P {i}", "role": "student", "access_groups": ["all"]}
                    for i in range(100)
                ],
                "credentials": [
                    {"credential": f"{0x5000000000 + i:010X}", "person_id": f"P{i}"} for i in range(100)
                ],
                "access_groups": [{"id": "all", "gates": ["gate-1"]}],
            }
        )
    )
    return f"""
gateway: {{site: bench-site, id: gw-bench}}
agent: {{data_dir: {data}, roster_seed: {seed}, shutdown_timeout_s: 2}}
mqtt: {{url: "{broker}", reconnect_min_s: 0.2, reconnect_max_s: 2}}
devices:
  - {{kind: card_reader, id: reader-in, profile: em4100_id12, port: "{reader}", debounce_s: 0}}
  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, port: "{turnstile}"}}
gates:
  - {{id: gate-1, readers: [{{device: reader-in}}], turnstile: turnstile-1}}
"""


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes] | None, str]:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    port = free_port()
    if binary is None:
        return None, f"mqtt://127.0.0.1:{port}"  # nothing listens: the link just retries
    conf = workdir / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}allow_anonymous true\npersistence false\nlistener {port} 127.0.0.1\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, f"mqtt://127.0.0.1:{port}"


async def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    token = secrets.token_urlsafe(24)
    os.environ["EDGE_AGENT_API_TOKENS"] = f"viewer:{token}:bench"
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    broker, broker_url = start_broker(workdir)
    reader = CardReaderSimulator(load_profile(resolve_profile("em4100_id12")), PtyEndpoint())
    turnstile = TimedTurnstile(
        load_profile(resolve_profile("turnstile_stx_xor")), PtyEndpoint(), passage_delay_s=0.001
    )
    turnstile.arrivals = []
    turnstile.arrived = asyncio.Event()
    results: list[dict[str, Any]] = []
    try:
        async with reader, turnstile:
            config = parse_config(config_text(workdir / "data", broker_url, reader.url, turnstile.url))
            agent = Gateway(config, data_dir=workdir / "data")
            agent_task = asyncio.create_task(agent.run())
            while agent.services is None or "gate-1" not in agent.gates:
                await asyncio.sleep(0.05)
            settings = ApiSettings(port=free_port(), max_concurrent_requests=args.api_concurrency)
            api_task = asyncio.create_task(serve_api(agent.services, settings))
            bare_port = free_port()
            bare = _Server(
                uvicorn.Config(
                    bare_app(),
                    host="127.0.0.1",
                    port=bare_port,
                    log_config=None,
                    access_log=False,
                    lifespan="off",
                    server_header=False,
                    ws="none",
                )
            )
            bare_task = asyncio.create_task(bare.serve())
            # Alerts with snapshots in the book, and access events in the outbox, as on a busy day.
            _, buf = cv2.imencode(".jpg", np.full((360, 640, 3), 80, np.uint8))
            for i in range(args.alerts):
                agent.emit(
                    Event(
                        "edu.campus.security.test_alert.v1",
                        agent.source("cam-1"),
                        {"device": "cam-1", "reason": f"bench {i}"},
                        severity=Severity.WARNING,
                    ),
                    attachment=bytes(buf),
                )
            for i in range(50):
                reader.present(f"{0x5000000000 + i % 100:010X}")
                await asyncio.sleep(0.01)
            await agent.outbox.flush()
            await asyncio.sleep(1.0)
            api = f"http://127.0.0.1:{settings.port}"
            targets = [
                ("bare FastAPI constant (baseline)", f"http://127.0.0.1:{bare_port}/constant", ""),
                ("/health", f"{api}/health", ""),
                ("/api/v1/status", f"{api}/api/v1/status", token),
                ("/api/v1/alerts?limit=100", f"{api}/api/v1/alerts?limit=100", token),
                ("/api/v1/events?limit=100", f"{api}/api/v1/events?limit=100", token),
                ("/metrics", f"{api}/metrics", ""),
            ]
            samples: dict[str, list[float]] = {name: [] for name, _, _ in targets}
            elapsed: dict[str, float] = dict.fromkeys(samples, 0.0)
            # Rounds interleave the targets, so a burst of load from elsewhere hits them all alike.
            for _ in range(args.rounds):
                for name, url, tok in targets:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--client",
                        url,
                        "--token",
                        tok,
                        "--requests",
                        str(args.requests // args.rounds),
                        "--concurrency",
                        str(args.concurrency),
                        stdout=asyncio.subprocess.PIPE,
                    )
                    out, _ = await asyncio.wait_for(proc.communicate(), args.timeout)
                    data = json.loads(out)
                    samples[name] += data["latencies"]
                    elapsed[name] += data["elapsed_s"]
            base_p50 = statistics.median(samples[targets[0][0]])
            base_p99 = percentile(samples[targets[0][0]], 0.99)
            for name, _, _ in targets:
                lat = samples[name]
                p50, p99 = statistics.median(lat), percentile(lat, 0.99)
                results.append(
                    {
                        "endpoint": name,
                        "requests": len(lat),
                        "rps": len(lat) / elapsed[name],
                        "p50_ms": p50 * 1000,
                        "p99_ms": p99 * 1000,
                        "p50_ratio": p50 / base_p50,
                        "p99_ratio": p99 / base_p99,
                    }
                )
            # Gate decisions share the event loop with the API: swipe → open with the API idle, then
            # with the alert list under the same load as above.
            idle, idle_lost = await swipe_latencies(reader, turnstile, args.swipes)
            phases = [("swipe → open, API idle (baseline)", idle, idle_lost)]
            for label, url, tok in (
                ("bare constant endpoint", f"http://127.0.0.1:{bare_port}/constant", ""),
                ("/api/v1/alerts?limit=100", f"{api}/api/v1/alerts?limit=100", token),
            ):
                load = await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--client",
                    url,
                    "--token",
                    tok,
                    "--requests",
                    "1000000",
                    "--concurrency",
                    str(args.concurrency),
                    "--warmup",
                    "0",
                    stdout=asyncio.subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
                lat, lost = await swipe_latencies(reader, turnstile, args.swipes)
                load.kill()
                await load.wait()
                phases.append((f"swipe → open, {label} under load", lat, lost))
            for name, lat, lost in phases:
                results.append(
                    {
                        "endpoint": name,
                        "requests": len(lat),
                        "lost": lost,
                        "p50_ms": statistics.median(lat),
                        "p99_ms": percentile(lat, 0.99),
                        "p50_ratio": statistics.median(lat) / statistics.median(idle),
                        "p99_ratio": percentile(lat, 0.99) / percentile(idle, 0.99),
                    }
                )
            bare.should_exit = True
            await bare_task
            api_task.cancel()
            await asyncio.gather(api_task, return_exceptions=True)
            agent.request_stop("bench")
            await asyncio.wait_for(agent_task, 20)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per endpoint (all rounds)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the endpoints")
    parser.add_argument("--alerts", type=int, default=300, help="alerts in the book before measuring")
    parser.add_argument(
        "--api-concurrency",
        type=int,
        default=ApiSettings().max_concurrent_requests,
        help="api.max_concurrent_requests",
    )
    parser.add_argument("--swipes", type=int, default=300, help="card swipes per gate phase")
    parser.add_argument("--timeout", type=float, default=120, help="seconds allowed per load run")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=50, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    results = asyncio.run(run_bench(args))
    print(f"$ {Path(sys.executable).name} bench/bench_api.py " + " ".join(sys.argv[1:]))
    print(
        f"{args.concurrency} concurrent connections, {args.requests} requests per endpoint, "
        f"api.max_concurrent_requests {args.api_concurrency}, "
        f"{os.cpu_count()} CPUs"
    )
    print("| endpoint | requests | req/s | p50 ms | p99 ms | p50 / baseline | p99 / baseline |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "lost" in r:
            continue
        print(
            f"| {r['endpoint']} | {r['requests']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} |"
        )

    print()
    print("| gate path | swipes | never opened | p50 ms | p99 ms | p50 / idle | p99 / idle |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "lost" in r:
            print(
                f"| {r['endpoint']} | {r['requests']} | {r['lost']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} |"
            )


if __name__ == "__main__":
    main()

"""Idle cost of the agent: CPU and RSS running the demo config (simulated readers, turnstile and
heartbeat devices, a card every 2 s) for 60 s, next to a bare Python process with an idle asyncio
loop measured in the same run. Bars (issue 6): idle CPU < 3% of one core, RSS < 400 MB.

Run: ``.venv/bin/python bench/bench_idle.py [--seconds 60]``. It starts its own Mosquitto.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import rss_mib

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(cmd: list[str], seconds: float, warmup: float, env: dict[str, str]) -> tuple[float, float]:
    """(CPU % of one core, peak RSS MiB) of ``cmd`` over ``seconds`` after ``warmup``."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2:5]} exited early with {proc.returncode}")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            peak = max(peak, rss_mib(proc.pid))
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return cpu, peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        ("user root\n" if os.geteuid() == 0 else "") + f"listener {port} 127.0.0.1\nallow_anonymous true\n"
    )
    broker = subprocess.Popen(
        [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ)
    try:
        time.sleep(0.5)
        bare_cpu, bare_rss = measure(
            [
                sys.executable,
                "-c",
                "import asyncio\nasync def m():\n    while True: await asyncio.sleep(1)\nasyncio.run(m())",
            ],
            args.seconds,
            1.0,
            env,
        )
        agent_cpu, agent_rss = measure(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "--config",
                "config/demo.yaml",
                "--data-dir",
                str(workdir / "data"),
                "--mqtt-url",
                f"mqtt://127.0.0.1:{port}",
            ],
            args.seconds,
            5.0,
            env,
        )
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"bare python asyncio loop: CPU {bare_cpu:.2f}% of a core, RSS {bare_rss:.0f} MiB")
    print(
        f"agent, demo config, {args.seconds:.0f} s: CPU {agent_cpu:.2f}% of a core, "
        f"RSS peak {agent_rss:.0f} MiB "
        f"(CPU {agent_cpu - bare_cpu:+.2f} points over the bare loop); bars CPU < 3%, RSS < 400 MiB"
    )


if __name__ == "__main__":
    main()

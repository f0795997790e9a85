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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import rss_mib, start_broker

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


CAMERAS_AND_READERS = """
gateway: {{site: bench, id: gw-idle}}
agent: {{data_dir: {data}, log_level: warning}}
devices:
{readers}  - {{kind: turnstile, id: turnstile-1, profile: turnstile_stx_xor, simulated: true}}
gates:
  - id: gate-1
    readers: [{{device: reader-1}}, {{device: reader-2, direction: exit}}]
    turnstile: turnstile-1
cameras:
{cameras}"""


def cameras_and_readers_config(workdir: Path) -> Path:
    """The DESIGN.md load: 2 cameras (face attendance and security rules, on a still scene) and 4
    card readers presenting a card every 5 s."""
    import cv2
    import numpy as np

    still = workdir / "still.avi"
    writer = cv2.VideoWriter(str(still), cv2.VideoWriter.fourcc(*"MJPG"), 5, (1280, 720))
    frame = np.full((720, 1280, 3), 120, np.uint8)
    cv2.rectangle(frame, (200, 200), (600, 500), (60, 90, 140), -1)
    for _ in range(50):
        writer.write(frame)
    writer.release()
    readers = "".join(
        f"  - {{kind: card_reader, id: reader-{i}, profile: em4100_id12, simulated: true, "
        f'sim_cards: ["00000000{i:02d}"], sim_interval_s: 5}}\n'
        for i in range(1, 5)
    )
    cameras = "".join(
        f"  - device: {{kind: camera_sim, id: cam-{i}, video: {still}, loop: true, analysis_fps: 5}}\n"
        f"    face: {{stranger_alerts: true}}\n"
        f"    security:\n"
        f"      zones: [{{id: z, points: [[0, 400], [1280, 400], [1280, 720], [0, 720]]}}]\n"
        f"      rules: [{{kind: intrusion, id: r, zone: z}}, {{kind: tamper, id: t}}]\n"
        for i in range(1, 3)
    )
    path = workdir / "cameras.yaml"
    path.write_text(CAMERAS_AND_READERS.format(data=workdir / "cam-data", readers=readers, cameras=cameras))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    broker, port = start_broker(workdir)
    # Face recognition needs its key; a throwaway one for this run.
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": "11" * 32}
    url = f"mqtt://127.0.0.1:{port}"
    try:
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
                url,
            ],
            args.seconds,
            5.0,
            env,
        )
        cam_cpu, cam_rss = measure(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "run",
                "--config",
                str(cameras_and_readers_config(workdir)),
                "--mqtt-url",
                url,
            ],
            args.seconds,
            15.0,
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
    print(
        f"agent, 2 cameras (faces + security, still scene) and 4 readers, {args.seconds:.0f} s: "
        f"CPU {cam_cpu:.2f}% of a core, RSS peak {cam_rss:.0f} MiB; bars CPU < 3%, RSS < 400 MiB"
    )


if __name__ == "__main__":
    main()

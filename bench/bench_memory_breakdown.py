"""Where the agent's memory goes with cameras: RSS of the agent with no cameras (the baseline, same
run), 2 cameras capturing only, 2 cameras with face recognition, 2 cameras with security analysis,
and 2 cameras with both (the DESIGN.md load's cameras: RSS < 400 MB). Each agent runs 15 s on a still
720p clip, longer than the 10 s after which a still camera hands its freed heap back (so the steady
state, not start-up), API off.

Run: ``.venv/bin/python bench/bench_memory_breakdown.py``. It starts its own Mosquitto.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from common import rss_mib, start_broker


def main() -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    still = work / "still.avi"
    writer = cv2.VideoWriter(str(still), cv2.VideoWriter.fourcc(*"MJPG"), 5, (1280, 720))
    for _ in range(50):
        writer.write(np.full((720, 1280, 3), 120, np.uint8))
    writer.release()
    broker, port = start_broker(work)

    def cameras(extra: str) -> str:
        return "".join(
            f"  - device: {{kind: camera_sim, id: cam-{i}, video: {still}, loop: true, "
            f"analysis_fps: 5}}\n{extra}"
            for i in (1, 2)
        )

    zones = (
        "{zones: [{id: z, points: [[0, 400], [1280, 400], [1280, 720]]}], "
        "rules: [{kind: intrusion, id: r, zone: z}]}"
    )
    variants = {
        "no cameras (baseline)": "",
        "2 cameras, capture only": cameras(""),
        "2 cameras, face recognition": cameras("    face: {stranger_alerts: true}\n"),
        "2 cameras, security analysis": cameras(f"    security: {zones}\n"),
        "2 cameras, face recognition + security": cameras(
            f"    face: {{stranger_alerts: true}}\n    security: {zones}\n"
        ),
    }
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": "11" * 32}
    results: dict[str, float] = {}
    try:
        for i, (name, block) in enumerate(variants.items()):
            config = work / f"agent-{i}.yaml"
            config.write_text(
                f"gateway: {{site: bench, id: gw-mem}}\n"
                f"agent: {{data_dir: {work / f'data-{i}'}, log_level: warning}}\n"
                "api: {enabled: false}\n" + (f"cameras:\n{block}" if block else "")
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent.cli",
                    "run",
                    "--config",
                    str(config),
                    "--mqtt-url",
                    f"mqtt://127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            time.sleep(15)
            if proc.poll() is not None:
                raise RuntimeError(f"{name}: the agent exited with {proc.returncode}")
            results[name] = rss_mib(proc.pid)
            proc.terminate()
            proc.wait(60)
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)
    base = results["no cameras (baseline)"]
    for name, rss in results.items():
        print(f"{name}: RSS {rss:.0f} MiB ({rss - base:+.0f} MiB over the baseline)")
    bar_mib = 400e6 / 2**20  # DESIGN.md's 400 MB
    both = results["2 cameras, face recognition + security"]
    print(f"bar (DESIGN.md): RSS < {bar_mib:.0f} MiB: {'met' if both < bar_mib else 'NOT met'}")


if __name__ == "__main__":
    main()

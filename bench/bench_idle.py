"""Idle cost of the agent: CPU and RSS of the demo as a new user runs it (``edge-agent demo``: two
simulated card readers, a turnstile, heartbeats, the local API, and two cameras playing the demo clips
through face attendance and security rules), and of the DESIGN.md load (2 cameras on a still scene and
4 card readers), each for 60 s, next to a bare Python process with an idle asyncio loop measured in
the same run. Bars (DESIGN.md): idle CPU < 3% of one core, RSS < 400 MB.

The demo is started once before it is measured, so its clips are built and its students enrolled
(the first start's work); the measured run is the second start on the same data dir, as every later
``edge-agent demo`` is. Its clips are mostly still (people walk in for about 9 s of each ~33 s pass),
so its figure is the demo's steady state, not an idle agent.

Run: ``.venv/bin/python bench/bench_idle.py [--seconds 60] [--design-load-only]``; the option measures
only the bare loop and the DESIGN.md load (issue 15's "2 cameras + 4 readers" bar), not the demo.
It starts its own Mosquitto.
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
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import free_port, rss_mib, start_broker

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@dataclass
class Measured:
    cpu: float
    """CPU, % of one core, over the whole window."""
    rss_peak: float
    """MiB."""
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``"still"`` / ``"analysing"``: (CPU seconds, wall seconds) of the sample intervals in which the
    cameras ran no analysis at all, or some (see :func:`analysis_count`)."""

    def phase_cpu(self, name: str) -> tuple[float, float]:
        """(CPU % of one core, seconds) of one phase."""
        cpu_s, wall_s = self.phases.get(name, (0.0, 0.0))
        return (cpu_s / wall_s * 100 if wall_s else float("nan")), wall_s


def analysis_count(metrics_url: str) -> float:
    """Frames the face pipelines analysed plus person-detector runs so far, from the agent's /metrics.
    Unchanged between two samples: the cameras were still (only the motion gates and the idle rate
    ran); the demo's still stretches are its idle cost."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("edge_camera_pipeline_total{", "edge_person_pipeline_total{")) and (
            'name="frames_analysed"' in line or 'name="detector_runs"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def measure(
    cmd: list[str],
    seconds: float,
    warmup: float,
    env: dict[str, str],
    log: Path | None = None,
    activity: Callable[[], float] | None = None,
) -> Measured:
    """CPU and peak RSS of ``cmd`` over ``seconds`` after ``warmup``; with ``activity`` (a counter of
    analysis work), the CPU also split by whether any analysis ran in each 1 s sample."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    phases: dict[str, tuple[float, float]] = {}
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[2:5]} exited early with {proc.returncode}")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        peak = 0.0
        last = (cpu0, t0, activity() if activity else 0.0)
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0 if activity else 0.5)
            peak = max(peak, rss_mib(proc.pid))
            if activity is not None:
                now = (cpu_seconds(proc.pid), time.monotonic(), activity())
                phase = "still" if now[2] == last[2] else "analysing"
                cpu_s, wall_s = phases.get(phase, (0.0, 0.0))
                phases[phase] = (cpu_s + now[0] - last[0], wall_s + now[1] - last[1])
                last = now
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        if log is not None:
            out.close()  # type: ignore[union-attr]
    return Measured(cpu, peak, phases)


def demo_command(
    data_dir: Path, mqtt_url: str, api_port: int | None = None, config: Path | None = None
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "demo",
        "--data-dir",
        str(data_dir),
        "--mqtt-url",
        mqtt_url,
        "--api-port",
        str(api_port or free_port()),
        *(["--config", str(config)] if config is not None else []),
    ]


def demo_variant(workdir: Path, name: str, clips: Path, *, cameras: bool) -> Path:
    """The demo configuration with its cameras only capturing (playing the demo's clips, no face or
    security analysis), or without cameras: where the demo's cost comes from."""
    import yaml

    from edge_agent.demo import DEMO_CONFIG

    config = yaml.safe_load(DEMO_CONFIG.read_text())
    config["agent"]["roster_seed"] = str(DEMO_CONFIG.parent / config["agent"]["roster_seed"])
    if cameras:
        for camera in config["cameras"]:
            camera.pop("face", None)
            camera.pop("security", None)
            (clip,) = clips.glob(f"{camera['device']['id']}.*.avi")
            camera["device"]["video"] = str(clip)
    else:
        config.pop("cameras")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def first_demo_start(data_dir: Path, mqtt_url: str, env: dict[str, str], log: Path) -> float:
    """Run the demo until the agent is up (clips built, students enrolled), stop it; its seconds."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            demo_command(data_dir, mqtt_url), stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            while "running: site" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() - started > 300:
                    raise RuntimeError(f"the demo did not start; see {log}")
                time.sleep(0.2)
            return time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


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


def demo_report(workdir: Path, url: str, seconds: float, bare: Measured) -> list[str]:
    """The demo measured as a new user runs it (second start), capturing only, and without cameras:
    the lines to print."""
    # The demo brings its own face key (and is measured without ours).
    demo_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EDGE_AGENT_FACE_TEMPLATE_KEY", "CREDENTIALS_DIRECTORY")
    }
    demo_data = workdir / "demo-data"
    first_start_s = first_demo_start(demo_data, url, demo_env, workdir / "demo-first.log")
    api_port = free_port()
    demo = measure(
        demo_command(demo_data, url, api_port),
        seconds,
        15.0,
        demo_env,
        workdir / "demo-measured.log",
        activity=lambda: analysis_count(f"http://127.0.0.1:{api_port}/metrics"),
    )
    clips = demo_data / "demo-clips"
    capture_only = measure(
        demo_command(
            workdir / "capture-data", url, config=demo_variant(workdir, "capture", clips, cameras=True)
        ),
        seconds,
        10.0,
        demo_env,
        workdir / "capture-only.log",
    )
    no_cameras = measure(
        demo_command(
            workdir / "readers-data", url, config=demo_variant(workdir, "readers", clips, cameras=False)
        ),
        seconds,
        5.0,
        demo_env,
        workdir / "no-cameras.log",
    )
    still_cpu, still_s = demo.phase_cpu("still")
    busy_cpu, busy_s = demo.phase_cpu("analysing")
    return [
        f"edge-agent demo, first start (clips built, students enrolled, agent up): {first_start_s:.1f} s",
        f"edge-agent demo (2 cameras on the demo clips, 2 readers, a turnstile, API), {seconds:.0f} s: "
        f"CPU {demo.cpu:.2f}% of a core, RSS peak {demo.rss_peak:.0f} MiB "
        f"(CPU {demo.cpu - bare.cpu:+.2f} points over the bare loop); bars CPU < 3%, RSS < 400 MiB",
        f"  of which still (no analysis in the second; /metrics read once a second): CPU {still_cpu:.2f}% "
        f"over {still_s:.0f} s; analysing people: CPU {busy_cpu:.2f}% over {busy_s:.0f} s",
        f"edge-agent demo, cameras capturing only (the demo clips decoded, no analysis): "
        f"CPU {capture_only.cpu:.2f}% of a core, RSS peak {capture_only.rss_peak:.0f} MiB",
        f"edge-agent demo without cameras (readers, turnstile, heartbeats, API): "
        f"CPU {no_cameras.cpu:.2f}% of a core, RSS peak {no_cameras.rss_peak:.0f} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--design-load-only",
        action="store_true",
        help="measure only the bare loop and 2 cameras + 4 readers, not the demo",
    )
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    broker, port = start_broker(workdir)
    # The DESIGN.md load needs a face key.
    env = {**os.environ, "EDGE_AGENT_FACE_TEMPLATE_KEY": "11" * 32}
    url = f"mqtt://127.0.0.1:{port}"
    try:
        bare = measure(
            [
                sys.executable,
                "-c",
                "import asyncio\nasync def m():\n    while True: await asyncio.sleep(1)\nasyncio.run(m())",
            ],
            args.seconds,
            1.0,
            env,
        )
        demo_lines = [] if args.design_load_only else demo_report(workdir, url, args.seconds, bare)
        cams = measure(
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
    print(f"bare python asyncio loop: CPU {bare.cpu:.2f}% of a core, RSS {bare.rss_peak:.0f} MiB")
    for line in demo_lines:
        print(line)
    print(
        f"agent, 2 cameras (faces + security, still scene) and 4 readers, {args.seconds:.0f} s: "
        f"CPU {cams.cpu:.2f}% of a core, RSS peak {cams.rss_peak:.0f} MiB; bars CPU < 3%, RSS < 400 MiB"
    )


if __name__ == "__main__":
    main()

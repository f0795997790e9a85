"""Cameras at building scale (issue 15): 8 and 16 cameras through the real agent, next to the bare
model limit measured in the same run, for each source tree given (the working tree, and a baseline
checkout such as a git worktree of an earlier commit), side by side.

* Clips (written to a temp dir, 1280x720, 10 fps, MJPEG, looped by the cameras): the *classroom*
  (the demo's room photo; a stranger walks back and forth for :data:`PRELUDE_S`, then the enrolled
  demo students S1001 and S1002 walk in, each at a known frame) and the *courtyard* (the corridor
  scene with two people walking to and fro through a zone). Something moves in every frame, so the
  motion gates never leave the models idle: the demand really is 5 analysed frames/s per camera.
* Roles, as the issue describes them: classroom cameras run face attendance ("faces"), courtyard
  cameras run person detection with an intrusion rule ("security"); half of the cameras each.
* Bare limit: CenterFace and NanoDet ``InferenceSession.run`` on the same preprocessed tensors the
  agent's pipelines feed them (a classroom frame, a courtyard frame), from 2 threads in parallel with
  one intra-op thread each, the two models alternating as the camera mix asks (half each): model
  runs/s over ``--bare-s``, just before and just after each agent run (the mean of the two: the
  box's speed drifts within minutes). The agent cannot do more detector runs than this on these cores.
  The ratio bar is judged at the mix the agent served (:meth:`BareLimit.at_mix`: security first
  means more than half NanoDet runs, the slower model), and the ratio against half each is shown
  beside it.
* Agent runs: ``edge-agent run`` from each tree with the cameras (``kind: camera``, a file URL,
  ``analysis_fps`` 5; the security cameras at ``analysis_width`` ``--security-width``, 640 by
  default, as docs/CAMERAS.md advises: NanoDet sees 416 px, and a half-size JPEG decode costs a
  third of a full one; face cameras at the full 1280 px, their crops need it), its own data dir with
  the demo roster and the demo students enrolled, API on a free port. After every camera is online
  (its ``device.online`` event on MQTT) and a warm-up, two /metrics scrapes ``--seconds`` apart
  give, per camera, the frames its pipeline took (faces: ``edge_camera_pipeline{name=frames}``,
  security: ``edge_person_pipeline{name=frames}``) and the detector runs among them
  (``frames_analysed``, ``detector_runs``; the rest were skipped by a motion gate). Where the tree
  exposes the shared inference service's metrics (``edge_inference_frames``,
  ``edge_inference_lag_seconds``), the replaced/stale/failed frames and the capture → analysed lag
  come from them; a tree without them shows "n/a" there.
* Face time to record: the attendance event of each enrolled student on each classroom camera, as
  received on MQTT, minus the moment the student first appears (the camera's first frame is the
  time of its ``device.online`` event, the clip plays in real time, the appearance frame is known).
  A student not recorded within :data:`FACE_WAIT_S` counts as missed.
* RSS: peak of the agent process, sampled every second over the window; CPU: its average, and by
  thread (inference, capture, serial, the event loop, other), from ``/proc``.

Bars (issue 15): detector runs/s >= 0.85 x the bare limit whenever demand exceeds it; slowest
camera >= 0.8 x the mean (within each analysis: security is served before faces by design, so the
two are not expected to be equal under overload); lag < 1 s; a recognisable face recorded within
2 s; RSS 8 cameras < 600 MiB, 16 < 900 MiB.

Run: ``.venv/bin/python bench/bench_cameras.py [--tree NAME=PATH ...] [--cameras 8,16] [--quick]``
(default tree: this checkout, named "working tree"). A baseline tree::

    git -C /work/main worktree add /tmp/baseline 3e8043d
    .venv/bin/python bench/bench_cameras.py --tree "per-camera threads (3e8043d)=/tmp/baseline" \
        --tree "working tree=."
    git -C /work/main worktree remove /tmp/baseline

The 8-camera total on OpenVINO (bench/openvino_env.sh makes the venv)::

    .venv-openvino/bin/python bench/bench_cameras.py --cameras 8 --providers openvino,cpu

It starts its own Mosquitto.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from common import free_port, rss_mib, start_broker
from numpy.typing import NDArray
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

CLIP_FPS = 10.0
FRAME_SIZE = (1280, 720)
ANALYSIS_FPS = 5.0
"""Requested of every camera (issue 15)."""
PRELUDE_S = 20.0
"""The classroom clip's first stretch, a stranger walking back and forth: longer than start-up and
warm-up, so the students appear while the agent is in its steady state."""
WALK_FRAMES = 40
"""One walk across the room (4 s at 10 fps), as in the demo's classroom clip."""
FACE_WAIT_S = 10.0
"""How long after a student's appearance the bench waits for the attendance event."""
FACE_BAR_S = 2.0
RSS_BAR_MIB = {8: 600.0, 16: 900.0}
ANALYSES = ("security", "faces")
TEMPLATE_KEY = "11" * 32
DEMO_VARIANTS = {"S1001": "rotate_6", "S1002": "jpeg_40"}
"""How the demo's classroom clip changes each enrolled student's face (edge_agent.demo), known to be
recognised with the shipped models."""

Image = NDArray[np.uint8]


# --- clips -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clips:
    classroom: Path
    courtyard: Path
    appears_at_frame: dict[str, int]
    """Enrolled person id -> the classroom clip's frame in which they are first in the picture."""


def _walker(detector: Any, photo: str, index: int, variant: str) -> Image:
    """A demo face (the ``index``-th from the left in ``photo``) as a half-size head-and-shoulders
    crop with a camera-like change (``variant`` of ``realistic_variants``), the way the demo's
    classroom clip shows its students."""
    import cv2

    from vision import crop_around, load_photo, realistic_variants

    image = load_photo(photo)
    box = sorted(detector.detect(image), key=lambda f: f.box[0])[index].box
    small = cv2.resize(realistic_variants(crop_around(image, box, 0.6))[variant], None, fx=0.5, fy=0.5)
    return np.asarray(small, np.uint8)


def classroom_frames(detector: Any) -> tuple[Iterator[Image], dict[str, int]]:
    """The classroom pass and each enrolled student's first frame. Made as the writer takes them (a
    whole 720p clip in memory is hundreds of MB)."""
    import cv2

    from edge_agent.demo import ENROLLED_FACES, STRANGER_FACE
    from vision import load_photo, walking_clip

    room = np.asarray(cv2.resize(load_photo("sample1.jpg")[760:, :], FRAME_SIZE), np.uint8)
    stranger = _walker(detector, STRANGER_FACE.photo, STRANGER_FACE.index, "jpeg_40")
    students = {
        pid: _walker(detector, face.photo, face.index, DEMO_VARIANTS[pid])
        for pid, face in ENROLLED_FACES.items()
    }
    legs = [((1150.0, 420.0), (250.0, 330.0)), ((250.0, 330.0), (1150.0, 420.0))]
    prelude_legs = round(PRELUDE_S * CLIP_FPS / WALK_FRAMES)
    student_paths = [((150.0, 300.0), (1100.0, 380.0)), ((1150.0, 380.0), (200.0, 330.0))]
    appears = {
        pid: (prelude_legs + i) * WALK_FRAMES for i, pid in enumerate(students)
    }  # each student walks in on the leg after the one before

    def frames() -> Iterator[Image]:
        for leg in range(prelude_legs):
            yield from walking_clip(room, [stranger], frames=WALK_FRAMES, paths=[legs[leg % 2]])
        # As in the demo's clip: the first student walks in beside the stranger, the second alone.
        for i, patch in enumerate(students.values()):
            walkers, paths = [patch], [student_paths[i % 2]]
            if i == 0:
                walkers.append(stranger)
                paths.append(legs[prelude_legs % 2])
            yield from walking_clip(room, walkers, frames=WALK_FRAMES, paths=paths)

    return frames(), appears


def courtyard_frames() -> Iterator[Image]:
    """Two people walking to and fro across the corridor scene, in opposite directions."""
    from vision import (
        SPRITE_HEIGHT,
        WalkerPath,
        corridor_background,
        linear_path,
        person_sprite,
        walk_clip,
    )

    there = linear_path((120.0, 600.0), (1100.0, 600.0), 50)
    other = linear_path((1150.0, 560.0), (200.0, 560.0), 50)
    walkers = [
        WalkerPath(person_sprite("figure"), there + there[::-1], SPRITE_HEIGHT["figure"]),
        WalkerPath(person_sprite("diner"), other + other[::-1], SPRITE_HEIGHT["diner"]),
    ]
    for frame in walk_clip(corridor_background(*FRAME_SIZE), walkers, len(there) * 2):
        yield frame.frame


def write_clips(workdir: Path) -> Clips:
    from vision import FaceDetector, write_video

    frames, appears = classroom_frames(FaceDetector())
    classroom = write_video(frames, workdir / "classroom.avi", fps=CLIP_FPS)
    courtyard = write_video(courtyard_frames(), workdir / "courtyard.avi", fps=CLIP_FPS)
    return Clips(classroom, courtyard, appears)


# --- configuration ---------------------------------------------------------------------------------


def camera_ids(count: int) -> dict[str, str]:
    """Camera id -> its analysis: the first half courtyard (security), the second classroom (faces)."""
    half = count // 2
    return {
        **{f"yard-{i:02d}": "security" for i in range(1, half + 1)},
        **{f"class-{i:02d}": "faces" for i in range(1, count - half + 1)},
    }


def cameras_yaml(clips: Clips, count: int, security_width: int | None = None) -> str:
    """The ``cameras:`` list of ``count`` cameras (see :func:`camera_ids`), 5 analysed frames/s each;
    ``security_width``: the security cameras' ``analysis_width`` (their zones drawn on the 720p
    picture, so with its ``reference_size``)."""
    out = []
    for cam_id, analysis in camera_ids(count).items():
        clip = clips.courtyard if analysis == "security" else clips.classroom
        shrunk = security_width is not None and analysis == "security"
        out.append(
            f"  - device: {{kind: camera, id: {cam_id}, url: '{clip}', loop: true, "
            f"analysis_fps: {ANALYSIS_FPS:g}"
            + (f", analysis_width: {security_width}" if shrunk else "")
            + "}\n"
        )
        if analysis == "security":
            out.append(
                "    security:\n"
                + (f"      reference_size: [{FRAME_SIZE[0]}, {FRAME_SIZE[1]}]\n" if shrunk else "")
                + "      zones: [{id: yard, points: [[640, 380], [1280, 380], [1280, 720], [640, 720]]}]\n"
                "      rules: [{kind: intrusion, id: yard-intrusion, zone: yard, cooldown_s: 30}]\n"
            )
        else:
            out.append(
                "    face:\n"
                "      attendance:\n"
                "        sessions: [{id: all-day, name: all day, weekdays: [mon, tue, wed, thu, fri, sat, "
                'sun], start: "00:00", end: "24:00", late_after_min: 1440}]\n'
            )
    return "cameras:\n" + "".join(out)


def agent_config(
    workdir: Path,
    clips: Clips,
    count: int,
    api_port: int,
    providers: str | None = None,
    security_width: int | None = None,
    inference_threads: int | None = None,
) -> Path:
    """The agent's configuration; ``providers`` (e.g. ``openvino,cpu``) sets
    ``vision.execution_providers`` (the agent's default, CPU, when None); ``security_width`` as in
    :func:`cameras_yaml`; ``inference_threads`` sets ``vision.inference_threads`` (the agent's
    default, one per core, when None)."""
    from edge_agent.demo import DEMO_CONFIG

    path = workdir / f"agent-{count}.yaml"
    settings = [f"execution_providers: [{providers}]"] if providers else []
    settings += [f"inference_threads: {inference_threads}"] if inference_threads else []
    vision = f"vision: {{{', '.join(settings)}}}\n" if settings else ""
    path.write_text(
        f"gateway: {{site: bench, id: gw-cams}}\n"
        f"agent: {{data_dir: {workdir / 'data'}, roster_seed: {DEMO_CONFIG.parent / 'demo-roster.json'}, "
        "log_level: warning}\n"
        f"api: {{port: {api_port}}}\n" + vision + cameras_yaml(clips, count, security_width)
    )
    return path


def enrolled_data_dir(workdir: Path, clips: Clips) -> Path:
    """A data dir with the demo roster and the demo students' face templates, enrolled with the code
    ``edge-agent enroll`` uses; each agent run starts from a copy of it."""
    from edge_agent.config import load_config
    from edge_agent.demo import enroll_demo_faces

    config_path = agent_config(workdir, clips, 2, free_port())
    enroll_demo_faces(load_config(config_path), workdir / "data", config_path)
    return workdir / "data"


# --- the bare limit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BareLimit:
    runs_per_s: float
    """Model runs/s, 2 threads, the camera mix."""
    ms: dict[str, float]
    """Median ms of one run of each model (in the parallel run)."""
    measured: tuple[float, ...] = ()
    """The runs/s of each measurement averaged into this one."""

    def at_mix(self, nanodet_share: float) -> float:
        """Runs/s of the bare models in the proportions an agent ran them (``nanodet_share`` of its
        detector runs were NanoDet's): the measured alternation, half each, scaled by the mean time
        of a run at that mix. An agent serving security first runs more of the slower NanoDet than
        half, and the limit on those tensors is lower by as much."""
        half = (self.ms["CenterFace"] + self.ms["NanoDet"]) / 2
        mixed = nanodet_share * self.ms["NanoDet"] + (1 - nanodet_share) * self.ms["CenterFace"]
        return self.runs_per_s * half / mixed

    @staticmethod
    def mean(limits: list[BareLimit]) -> BareLimit:
        """The mean of measurements taken before and after an agent run: this box's speed drifts
        by 15 % within minutes, and the agent's window lies between the two."""
        return BareLimit(
            statistics.mean(b.runs_per_s for b in limits),
            {name: statistics.mean(b.ms[name] for b in limits) for name in limits[0].ms},
            tuple(b.runs_per_s for b in limits),
        )


class BareModels:
    """CenterFace and NanoDet with the tensors the agent's pipelines make of the clips' frames."""

    def __init__(self, clips: Clips) -> None:
        from vision.face_detect import FaceDetector
        from vision.face_detect import preprocess as face_preprocess
        from vision.person import PersonDetector
        from vision.person import preprocess as person_preprocess

        faces, persons = FaceDetector(), PersonDetector()
        face_blob, _ = face_preprocess(middle_frame(clips.classroom), faces.config.max_side)
        person_blob, _ = person_preprocess(middle_frame(clips.courtyard))
        self.feeds = {
            "CenterFace": (faces.model.session, {faces.model.input_names[0]: face_blob}),
            "NanoDet": (persons.model.session, {persons.model.input_names[0]: person_blob}),
        }
        for session, feed in self.feeds.values():
            session.run(None, feed)  # untimed: lazy allocations

    def limit(self, seconds: float) -> BareLimit:
        """The two models alternating on 2 threads (one intra-op thread each) for ``seconds``."""
        samples: dict[str, list[float]] = {name: [] for name in self.feeds}
        counts = [0, 0]
        stop = threading.Event()

        def worker(slot: int) -> None:
            # The threads start on different models, so both models run at once, as in the agent.
            order = list(self.feeds) if slot == 0 else list(reversed(self.feeds))
            for name in itertools.cycle(order):
                if stop.is_set():
                    return
                session, feed = self.feeds[name]
                t0 = time.perf_counter()
                session.run(None, feed)
                samples[name].append(time.perf_counter() - t0)
                counts[slot] += 1

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - t0
        return BareLimit(sum(counts) / elapsed, {k: statistics.median(v) * 1e3 for k, v in samples.items()})


def middle_frame(clip: Path) -> Image:
    import cv2

    capture = cv2.VideoCapture(str(clip))
    capture.set(cv2.CAP_PROP_POS_FRAMES, capture.get(cv2.CAP_PROP_FRAME_COUNT) // 2)
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise RuntimeError(f"cannot read {clip}")
    return np.asarray(frame, np.uint8)


# --- the agent -------------------------------------------------------------------------------------


class Events:
    """Every event the agent publishes, with the wall time it arrived here."""

    def __init__(self, port: int) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not ready.wait(10):
            raise TimeoutError("the bench's MQTT subscription was not acknowledged")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        if "/events/" not in msg.topic:
            return
        with self._lock:
            self.received.append((arrived, json.loads(msg.payload)))

    def of_type(self, suffix: str) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return [(t, e) for t, e in self.received if e.get("type", "").endswith(suffix)]

    def clear(self) -> None:
        with self._lock:
            self.received.clear()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def event_time(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of the agent's /metrics."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def per_camera(samples: dict[str, Any], metric: str, name: str) -> dict[str, float]:
    return {labels["camera"]: v for labels, v in samples.get(metric, []) if labels.get("name") == name}


def cpu_seconds(pid: int) -> float:
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def _stat_cpu_seconds(stat: str) -> float:
    """utime + stime of a process's or thread's ``stat`` line (after the ``(name)``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


THREAD_GROUPS = (("inference", "inference-"), ("capture", "cam "), ("serial", "read-"))
"""CPU by thread: the agent names its threads in the OS (``show_thread_name``); the main thread,
the event loop's, is the one whose id is the process id; the rest (the outbox writer, executor
threads) are "other". A tree from before the names shows everything as event loop and other."""


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds so far of the process's threads, by group (see :data:`THREAD_GROUPS`)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        group = "event loop" if task.name == str(pid) else "other"
        group = next((g for g, prefix in THREAD_GROUPS if name.startswith(prefix)), group)
        out[group] = out.get(group, 0.0) + _stat_cpu_seconds(stat)
    return out


@dataclass
class AgentRun:
    tree: str
    cameras: int
    bare: BareLimit
    """Measured just before and just after this run (their mean), so both see the machine in the
    same state."""
    seconds: float
    frames: dict[str, float]
    """Camera -> frames its pipeline took per second."""
    detector_runs: dict[str, float]
    """Camera -> detector runs per second (frames the motion gate did not skip)."""
    outcomes: dict[str, float] | None
    """The inference service's outcome -> frames/s over all cameras; None without the service."""
    lag: dict[str, tuple[float, float]] | None
    """Analysis -> (p50, p99) seconds capture → analysed; None without the service."""
    face_s: dict[str, float | None] = field(default_factory=dict)
    """``camera/person`` (each enrolled student on each classroom camera) -> seconds from appearance
    to the attendance event received, or None when it did not come within FACE_WAIT_S."""
    rss_peak: float = 0.0
    cpu: float = 0.0
    cpu_by_thread: dict[str, float] = field(default_factory=dict)
    """Thread group -> % of a core over the window (see :data:`THREAD_GROUPS`)."""


def histogram_quantiles(
    first: dict[str, Any], last: dict[str, Any], metric: str
) -> dict[str, tuple[float, float]] | None:
    """(p50, p99) per ``analysis`` label of a histogram over the window between two scrapes: the upper
    bound of the bucket the quantile falls in (the precision the histogram has)."""
    name = f"{metric}_bucket"
    if name not in last:
        return None

    def buckets(samples: dict[str, Any]) -> dict[tuple[str, float], float]:
        return {(labels["analysis"], float(labels["le"])): v for labels, v in samples.get(name, [])}

    before, after = buckets(first), buckets(last)
    out: dict[str, tuple[float, float]] = {}
    for analysis in sorted({a for a, _ in after}):
        cumulative = sorted(
            (le, v - before.get((a, le), 0.0)) for (a, le), v in after.items() if a == analysis
        )
        total = cumulative[-1][1] if cumulative else 0.0
        if total <= 0:
            continue

        def quantile(q: float, rows: list[tuple[float, float]] = cumulative, n: float = total) -> float:
            return next(le for le, count in rows if count >= q * n)

        out[analysis] = (quantile(0.5), quantile(0.99))
    return out


def run_agent(
    tree: str,
    tree_dir: Path,
    workdir: Path,
    clips: Clips,
    data_template: Path,
    count: int,
    broker_port: int,
    warmup: float,
    seconds: float,
    bare: BareLimit,
    providers: str | None = None,
    security_width: int | None = None,
    inference_threads: int | None = None,
) -> AgentRun:
    run_dir = workdir / f"run-{count}-{len(list(workdir.glob('run-*')))}"
    run_dir.mkdir()
    shutil.copytree(data_template, run_dir / "data")
    api_port = free_port()
    config = agent_config(run_dir, clips, count, api_port, providers, security_width, inference_threads)
    metrics_url = f"http://127.0.0.1:{api_port}/metrics"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["EDGE_AGENT_FACE_TEMPLATE_KEY"] = TEMPLATE_KEY
    events = Events(broker_port)
    log = (run_dir / "agent.log").open("wb")
    # cwd is the tree: ``-m`` puts it first on sys.path, ahead of the venv's editable install.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--config",
            str(config),
            "--mqtt-url",
            f"mqtt://127.0.0.1:{broker_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tree_dir,
    )
    ids = camera_ids(count)
    try:
        deadline = time.monotonic() + 180
        online: dict[str, float] = {}
        while len(online) < count:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (run_dir / "agent.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"not every camera came online; the agent's log ends:\n{tail}")
            for _, event in events.of_type(".device.online.v1"):
                device = event["data"]["device"]
                if device in ids:
                    online.setdefault(device, event_time(event))
            time.sleep(0.2)
        time.sleep(warmup)
        first, t0, cpu0 = scrape(metrics_url), time.monotonic(), cpu_seconds(proc.pid)
        threads0 = thread_cpu_seconds(proc.pid)
        peak = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            peak = max(peak, rss_mib(proc.pid))
        last, elapsed = scrape(metrics_url), time.monotonic() - t0
        cpu = (cpu_seconds(proc.pid) - cpu0) / elapsed * 100
        by_thread = {
            group: (spent - threads0.get(group, 0.0)) / elapsed * 100
            for group, spent in thread_cpu_seconds(proc.pid).items()
        }
        appear = {
            (cam, pid): online[cam] + frame / CLIP_FPS
            for cam, analysis in ids.items()
            if analysis == "faces"
            for pid, frame in clips.appears_at_frame.items()
        }
        while time.time() < max(appear.values()) + FACE_WAIT_S:
            time.sleep(0.5)
        recorded: dict[tuple[str, str], float] = {}
        for arrived, event in events.of_type(".attendance.recorded.v1"):
            key = (event["data"]["device"], event["data"]["person"]["id"])
            recorded.setdefault(key, arrived)
        face_s = {
            f"{cam}/{pid}": recorded[(cam, pid)] - at
            if (cam, pid) in recorded and recorded[(cam, pid)] - at <= FACE_WAIT_S
            else None
            for (cam, pid), at in sorted(appear.items())
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        events.close()

    def rate(metric: str, name: str) -> dict[str, float]:
        before, after = per_camera(first, metric, name), per_camera(last, metric, name)
        return {cam: (v - before.get(cam, 0.0)) / elapsed for cam, v in after.items() if cam in ids}

    frames = {**rate("edge_camera_pipeline_total", "frames"), **rate("edge_person_pipeline_total", "frames")}
    runs = {
        **rate("edge_camera_pipeline_total", "frames_analysed"),
        **rate("edge_person_pipeline_total", "detector_runs"),
    }
    uncounted = sorted(set(ids) - set(frames))
    if uncounted:
        raise RuntimeError(f"/metrics has no pipeline counters for {', '.join(uncounted)}")
    outcomes: dict[str, float] | None = None
    if "edge_inference_frames_total" in last:
        outcomes = {}
        before = {tuple(sorted(lb.items())): v for lb, v in first.get("edge_inference_frames_total", [])}
        for labels, value in last["edge_inference_frames_total"]:
            delta = value - before.get(tuple(sorted(labels.items())), 0.0)
            outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0.0) + delta / elapsed
    return AgentRun(
        tree,
        count,
        bare,
        elapsed,
        frames,
        runs,
        outcomes,
        histogram_quantiles(first, last, "edge_inference_lag_seconds"),
        face_s,
        peak,
        cpu,
        by_thread,
    )


# --- report ----------------------------------------------------------------------------------------


def fairness(values: list[float]) -> str:
    if not values:
        return "n/a"
    mean = statistics.mean(values)
    return f"{min(values):.2f} / {mean:.2f} = {min(values) / mean:.2f}" if mean else "0 / 0"


def bare_at_served_mix(run: AgentRun) -> tuple[float, float]:
    """NanoDet's share of the run's detector runs (security cameras run it, face cameras CenterFace)
    and the bare limit at that mix."""
    ids = camera_ids(run.cameras)
    total = sum(run.detector_runs.values())
    security = sum(v for cam, v in run.detector_runs.items() if ids.get(cam) == "security")
    share = security / total if total else 0.5
    return share, run.bare.at_mix(share)


def served(run: AgentRun) -> dict[str, list[float]]:
    """Analysis -> frames/s its pipeline took, one value per camera of that analysis."""
    ids = camera_ids(run.cameras)
    return {a: [run.frames.get(c, 0.0) for c, x in ids.items() if x == a] for a in ANALYSES}


def report(runs: list[AgentRun]) -> None:
    print(
        "\n| tree | cameras | bare limit runs/s (before / after; CenterFace, NanoDet ms) | demand frames/s "
        "| pipeline frames/s | detector runs/s | runs / bare limit: half each, at the served mix (NanoDet "
        "share) | served / demand: security, faces "
        "| slowest / mean camera: security | faces | lag p50 / p99: security | faces "
        "| replaced, stale, failed /s | face recorded p50 / max (recorded) | RSS peak MiB "
        "| CPU % of a core |"
    )
    print("|" + "---|" * 16)
    for run in runs:
        by = served(run)
        total_runs = sum(run.detector_runs.values())
        share = ", ".join(
            f"{sum(by[a]) / (len(by[a]) * ANALYSIS_FPS):.2f}" if by[a] else "n/a" for a in ANALYSES
        )
        lag = " | ".join(
            f"{run.lag[a][0]:.2f} / {run.lag[a][1]:.2f} s" if run.lag and a in run.lag else "n/a"
            for a in ANALYSES
        )
        dropped = (
            ", ".join(f"{run.outcomes.get(k, 0.0):.1f}" for k in ("replaced", "stale", "failed"))
            if run.outcomes is not None
            else "n/a"
        )
        got = [s for s in run.face_s.values() if s is not None]
        face = (
            f"{statistics.median(got):.2f} / {max(got):.2f} s ({len(got)}/{len(run.face_s)})"
            if got
            else f"none recorded (0/{len(run.face_s)})"
        )
        models = ", ".join(f"{ms:.0f}" for ms in run.bare.ms.values())
        nanodet, mixed = bare_at_served_mix(run)
        if len(run.bare.measured) > 1:
            models = f"{' / '.join(f'{r:.1f}' for r in run.bare.measured)}; {models}"
        print(
            f"| {run.tree} | {run.cameras} | {run.bare.runs_per_s:.1f} ({models}) "
            f"| {run.cameras * ANALYSIS_FPS:.0f} | {sum(run.frames.values()):.1f} | {total_runs:.1f} "
            f"| {total_runs / run.bare.runs_per_s:.2f}, {total_runs / mixed:.2f} ({nanodet:.2f}) "
            f"| {share} | {fairness(by['security'])} "
            f"| {fairness(by['faces'])} | {lag} | {dropped} | {face} | {run.rss_peak:.0f} | {run.cpu:.0f} |"
        )
    print("\nCPU by thread, % of a core (the agent names its threads in the OS):")
    for run in runs:
        groups = sorted(run.cpu_by_thread.items(), key=lambda kv: -kv[1])
        print(f"  {run.tree}, {run.cameras} cameras: " + ", ".join(f"{g} {v:.1f}" for g, v in groups))
    print("\nbars (issue 15), per run:")
    for run in runs:
        print(f"  {run.tree}, {run.cameras} cameras: " + "; ".join(verdicts(run)))


def verdicts(run: AgentRun) -> list[str]:
    out = []
    total_runs = sum(run.detector_runs.values())
    demand = run.cameras * ANALYSIS_FPS
    by = served(run)
    overloaded = demand > run.bare.runs_per_s
    if overloaded:
        # Against the bare models on the tensors the agent ran, in the proportions it ran them.
        nanodet, mixed = bare_at_served_mix(run)
        ratio = total_runs / mixed
        out.append(
            f"runs / bare {ratio:.2f} at the served mix ({nanodet:.2f} NanoDet; "
            f"{total_runs / run.bare.runs_per_s:.2f} against half each) "
            f"{'met' if ratio >= 0.85 else 'NOT met'} (>= 0.85)"
        )
        fractions = {a: sum(v) / (len(v) * ANALYSIS_FPS) for a, v in by.items() if v}
        # Served alike is round-robin, not priority: security must get more of its demand than
        # attendance, unless it gets all of it.
        security, faces = fractions.get("security", 0.0), fractions.get("faces", 0.0)
        first = security >= 0.99 or security > 1.05 * faces
        out.append(
            f"security first ({fractions.get('security', 0):.2f} vs faces {fractions.get('faces', 0):.2f} "
            f"of demand) {'met' if first else 'NOT met'}"
        )
    else:
        out.append(
            f"demand {demand:.0f} <= bare limit {run.bare.runs_per_s:.0f}: ratio and priority bars "
            "not applicable"
        )
    for a, values in by.items():
        if values and statistics.mean(values):
            even = min(values) / statistics.mean(values)
            out.append(f"fairness {a} {even:.2f} {'met' if even >= 0.8 else 'NOT met'}")
    if run.lag is None:
        out.append("lag: no lag histogram in this tree")
    elif run.lag:
        worst = max(p99 for _, p99 in run.lag.values())
        out.append(f"lag p99 {worst:.2f} s {'met' if worst < 1 else 'NOT met'}")
    missed = [key for key, s in run.face_s.items() if s is None]
    late = [s for s in run.face_s.values() if s is not None and s > FACE_BAR_S]
    if missed or late:
        out.append(
            f"face within {FACE_BAR_S:g} s NOT met ({len(run.face_s)} appearances: {len(missed)} not "
            f"recorded within {FACE_WAIT_S:g} s, {len(late)} later than {FACE_BAR_S:g} s"
            + (f", the latest {max(late):.1f} s" if late else "")
            + ")"
        )
        if missed:
            by_person = Counter(key.rpartition("/")[2] for key in missed)
            out.append(
                "not recorded: " + ", ".join(f"{pid} on {n} cameras" for pid, n in sorted(by_person.items()))
            )
    else:
        out.append(f"face within {FACE_BAR_S:g} s met")
    bar = RSS_BAR_MIB.get(run.cameras)
    if bar is not None:
        out.append(f"RSS {run.rss_peak:.0f} < {bar:.0f} MiB {'met' if run.rss_peak < bar else 'NOT met'}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tree",
        action="append",
        metavar="NAME=PATH",
        help="a source tree to run the agent from (repeatable; default: this checkout as 'working tree')",
    )
    parser.add_argument("--cameras", default="8,16", help="camera counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured window per agent run")
    parser.add_argument("--warmup", type=float, default=10.0, help="after every camera is online")
    parser.add_argument("--bare-s", type=float, default=10.0, help="bare limit measurement")
    parser.add_argument(
        "--security-width",
        type=int,
        default=640,
        help="analysis_width of the security cameras (their MJPEG decoded at half size); 0: the full 1280 px",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 cameras, short windows")
    parser.add_argument(
        "--providers",
        help="vision.execution_providers of the agents, e.g. openvino,cpu (run the bench with the "
        "OpenVINO venv's python: .venv-openvino/bin/python)",
    )
    parser.add_argument(
        "--inference-threads",
        help="vision.inference_threads to compare, e.g. 2,3: each tree runs with each, in turn "
        "(default: the agent's own, one per core)",
    )
    args = parser.parse_args()
    if args.quick:
        args.cameras, args.seconds, args.warmup, args.bare_s = "4", 8.0, 3.0, 3.0
    trees = []
    for spec in args.tree or [f"working tree={REPO}"]:
        name, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "edge_agent" / "cli.py").is_file():
            parser.error(f"--tree {spec!r}: NAME=PATH of a checkout of this project")
        trees.append((name, Path(path).resolve()))
    threads: list[int | None] = (
        [int(n) for n in args.inference_threads.split(",")] if args.inference_threads else [None]
    )
    if threads != [None]:
        trees = [(f"{name}, {n} inference threads", path) for name, path in trees for n in threads]
    counts = [int(c) for c in args.cameras.split(",")]
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    os.environ["EDGE_AGENT_FACE_TEMPLATE_KEY"] = TEMPLATE_KEY  # the enrollment below reads it
    workdir = Path(tempfile.mkdtemp(prefix="bench-cameras-"))
    broker, port = start_broker(workdir)
    try:
        clips = write_clips(workdir)
        data_template = enrolled_data_dir(workdir, clips)
        models = BareModels(clips)
        runs = []
        failed = []
        for count in counts:
            for name, path in trees:
                before = models.limit(args.bare_s)
                try:
                    run = run_agent(
                        name,
                        path,
                        workdir,
                        clips,
                        data_template,
                        count,
                        port,
                        args.warmup,
                        args.seconds,
                        before,
                        args.providers,
                        args.security_width or None,
                        threads[trees.index((name, path)) % len(threads)],
                    )
                except (RuntimeError, OSError) as err:
                    # One tree failing (an agent that crashed, /metrics gone) must not lose the others.
                    failed.append(f"{name}, {count} cameras: FAILED: {err}")
                    print(failed[-1], flush=True)
                    continue
                run = replace(run, bare=BareLimit.mean([before, models.limit(args.bare_s)]))
                print(
                    f"{name}, {count} cameras: {sum(run.frames.values()):.1f} pipeline frames/s, "
                    f"RSS peak {run.rss_peak:.0f} MiB",
                    flush=True,
                )
                runs.append(run)
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"clips: {FRAME_SIZE[0]}x{FRAME_SIZE[1]} at {CLIP_FPS:g} fps; cameras: half courtyard (security), "
        f"half classroom (faces), {ANALYSIS_FPS:g} analysed frames/s requested each, security "
        f"analysed {args.security_width or FRAME_SIZE[0]} px wide, faces {FRAME_SIZE[0]}; window "
        f"{args.seconds:g} s after {args.warmup:g} s of warm-up"
    )
    report(runs)
    for line in failed:
        print(line)


if __name__ == "__main__":
    main()

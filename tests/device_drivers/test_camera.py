"""Camera driver against real video files written with cv2.VideoWriter, a refused RTSP port, and
(only where a file cannot show the fault) a scripted stand-in for a physical camera."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from device_drivers import BackoffConfig, open_camera
from device_drivers._io.threads import BULK_NICENESS
from device_drivers.camera.config import CameraConfig, SimulatedCameraConfig, parse_source, redact_url
from device_drivers.camera.driver import RESOLUTION_FOLLOW_FRAMES, Camera, check_frame
from device_drivers.camera.sim import ScriptedCapture, SimulatedCamera, generate_clip
from device_drivers.errors import CameraError, DeviceError
from device_drivers.readings import (
    CameraFrame,
    CameraItem,
    CameraOffline,
    CameraOnline,
    DeviceOffline,
    DeviceOnline,
)

FAST_BACKOFF = BackoffConfig(initial_s=0.1, max_s=0.4, jitter=0.2)


def write_clip(path: Path, n: int, fps: float = 20.0, size: tuple[int, int] = (320, 240)) -> Path:
    """A real MJPG file whose frame k is uniformly grey level 10 + 8k (so frames can be told apart)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for k in range(n):
        frame = np.full((h, w, 3), 10 + (8 * k) % 230, np.uint8)
        cv2.putText(frame, str(k), (10, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


async def collect(
    camera: Camera, stop: Callable[[list[CameraItem]], bool], timeout: float, slow_s: float = 0.0
) -> list[CameraItem]:
    items: list[CameraItem] = []

    async def run() -> None:
        async for item in camera.frames():
            items.append(item)
            if stop(items):
                return
            if slow_s:
                await asyncio.sleep(slow_s)

    async with camera:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run(), timeout)
    return items


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def kinds(items: list[CameraItem]) -> list[str]:
    """Online/offline changes in order, with runs of frames collapsed to one 'F'."""
    out: list[str] = []
    for it in items:
        k = "F" if isinstance(it, CameraFrame) else ("on" if isinstance(it, CameraOnline) else "off")
        if not (k == "F" and out and out[-1] == "F"):
            out.append(k)
    return out


def test_parse_source_and_config_validation() -> None:
    assert parse_source("rtsp://cam/stream1") == ("stream", "rtsp://cam/stream1")
    assert parse_source("usb:2") == ("usb", 2)
    assert parse_source("/dev/video1") == ("usb", 1)
    assert parse_source("file:///tmp/a.mp4") == ("file", "/tmp/a.mp4")
    assert parse_source("clips/a.avi") == ("file", "clips/a.avi")
    with pytest.raises(ValueError):
        parse_source("usb:front")
    with pytest.raises(ValidationError, match="unsupported camera URL scheme"):
        CameraConfig(id="c1", url="gopher://x")
    with pytest.raises(ValidationError, match="extra"):
        CameraConfig.model_validate({"id": "c1", "url": "usb:0", "fps": 5})
    with pytest.raises(ValidationError):
        CameraConfig(id="c1", url="usb:0", analysis_fps=0)
    with pytest.raises(ValidationError):
        CameraConfig(id="bad id", url="usb:0")
    cfg = CameraConfig.model_validate({"kind": "camera", "id": "gate1", "url": "rtsp://u:p@10.0.0.5/s"})
    assert cfg.analysis_fps == 5.0 and cfg.kind == "camera"


def test_redact_url_hides_the_password() -> None:
    assert redact_url("rtsp://admin:s3cret@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact_url("rtsp://10.0.0.5/h264") == "rtsp://10.0.0.5/h264"
    assert redact_url("/videos/a@b.avi") == "/videos/a@b.avi"


def test_check_frame_names_the_problem() -> None:
    good = np.zeros((240, 320, 3), np.uint8)
    assert check_frame(good, None) is None
    assert check_frame(good, (240, 320, 3)) is None
    assert "dtype" in (check_frame(good.astype(np.float32), None) or "")
    assert "HxWx3" in (check_frame(np.zeros((240, 320), np.uint8), None) or "")
    assert "too small" in (check_frame(np.zeros((4, 4, 3), np.uint8), None) or "")
    assert "changed" in (check_frame(good, (480, 640, 3)) or "")
    assert "not an array" in (check_frame(None, None) or "")
    too_many = check_frame(good, None, max_pixels=320 * 240 - 1) or ""
    assert "frame 320x240 has more than max_frame_pixels (76,799)" in too_many


def test_readings_are_device_online_offline_for_the_agent() -> None:
    # The agent handles every device's health alike; camera readings are those, with a camera type.
    assert issubclass(CameraOnline, DeviceOnline) and issubclass(CameraOffline, DeviceOffline)
    assert issubclass(CameraError, DeviceError)


def test_file_plays_throttled_then_ends_offline_and_is_retried(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", n=20, fps=20.0)  # one second of video
    cfg = CameraConfig(id="cam1", url=str(clip), analysis_fps=5.0, backoff=FAST_BACKOFF, stall_timeout_s=5)
    cam = Camera(cfg)
    # Run until the camera came back online after the end of the file (the retry).
    items = asyncio.run(collect(cam, lambda it: kinds(it)[-1:] == ["on"] and len(kinds(it)) > 1, 10.0))
    assert kinds(items)[:4] == ["on", "F", "off", "on"]
    offline = [i for i in items if isinstance(i, CameraOffline)]
    assert "ended" in offline[0].reason and offline[0].device_id == "cam1"
    frames = [i for i in items if isinstance(i, CameraFrame)]
    assert all(f.frame.shape == (240, 320, 3) and f.frame.dtype == np.uint8 for f in frames)
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    # 20 frames read at 20 fps, analysis at 5 fps: only some are handed on.
    assert cam.counters["frames_read"] >= 20
    assert 2 <= cam.counters["frames_delivered"] < cam.counters["frames_read"]
    assert cam.counters["ended"] >= 1 and cam.counters["reconnects"] >= 1
    # Frame contents are the file's frames, in order (grey level rises with the frame index).
    levels = [int(np.median(f.frame)) for f in frames[:4]]
    assert levels == sorted(levels)


def test_looping_file_never_goes_offline(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "short.avi", n=6, fps=30.0)  # 0.2 s
    cfg = CameraConfig(id="cam1", url=f"file://{clip}", analysis_fps=30.0, loop=True)
    cam = Camera(cfg)
    items = asyncio.run(collect(cam, lambda it: len(it) > 25, 10.0))
    assert kinds(items) == ["on", "F"]
    assert cam.counters["ended"] >= 2


def test_missing_file_is_offline_and_retried_with_backoff(tmp_path: Path) -> None:
    cfg = CameraConfig(id="cam1", url=str(tmp_path / "nope.avi"), backoff=FAST_BACKOFF)
    cam = Camera(cfg)
    items = asyncio.run(collect(cam, lambda it: False, 1.5))
    assert kinds(items) == ["off"]  # reported once, not once per attempt
    assert "does not exist" in items[0].reason  # type: ignore[union-attr]
    assert cam.counters["open_failures"] >= 3
    assert not cam.online


def test_refused_rtsp_url_is_offline_and_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    cfg = CameraConfig(
        id="gate", url=f"rtsp://admin:pw@127.0.0.1:{port}/live", open_timeout_s=2, backoff=FAST_BACKOFF
    )
    cam = Camera(cfg)

    async def until_retried() -> list[CameraItem]:
        items: list[CameraItem] = []

        async def gather() -> None:
            async for item in cam.frames():
                items.append(item)

        async with cam:
            gathering = asyncio.create_task(gather())
            await wait_until(lambda: cam.counters.get("open_failures", 0) >= 2, timeout=10)
        await gathering  # frames() ends when the camera is closed
        return items

    items = asyncio.run(until_retried())
    assert kinds(items) == ["off"]
    assert "cannot open" in items[0].reason and "pw" not in items[0].reason  # type: ignore[union-attr]
    assert cam.counters["open_failures"] >= 2


def test_latest_frame_wins_with_a_slow_consumer(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", n=200, fps=50.0)
    cfg = CameraConfig(id="cam1", url=str(clip), analysis_fps=50.0)
    cam = Camera(cfg)
    items = asyncio.run(collect(cam, lambda it: len(it) > 8, 10.0, slow_s=0.2))
    frames = [i for i in items if isinstance(i, CameraFrame)]
    seqs = [f.seq for f in frames]
    assert len(frames) >= 6
    # Each time the consumer comes back it gets the newest frame: big jumps in seq, nothing queued.
    assert max(b - a for a, b in itertools.pairwise(seqs)) >= 3
    assert cam.counters["frames_replaced"] > 0
    assert len(frames) < cam.counters["frames_delivered"]


def good(n: int, shape: tuple[int, int, int] = (120, 160, 3)) -> list[np.ndarray | str]:
    return [np.full(shape, 40 + (10 * k) % 200, np.uint8) for k in range(n)]


def test_garbage_frames_are_counted_and_dropped() -> None:
    # Stand-in for a physical camera whose decoder emits garbage (a file cannot produce that).
    script: list[np.ndarray | str] = [
        *good(3),
        "garbage",
        "garbage",
        np.zeros((60, 80, 3), np.uint8),
        *good(3),
    ]
    caps: list[ScriptedCapture] = []

    def factory(cfg: CameraConfig) -> ScriptedCapture:
        caps.append(ScriptedCapture(script if not caps else good(50), fps=50))
        return caps[-1]

    # analysis_fps 60: every scripted frame is due, so every garbage frame is looked at.
    cam = Camera(CameraConfig(id="usb1", url="usb:0", analysis_fps=60), capture_factory=factory)
    items = asyncio.run(collect(cam, lambda it: sum(isinstance(i, CameraFrame) for i in it) >= 6, 5.0))
    frames = [i for i in items if isinstance(i, CameraFrame)]
    assert all(f.frame.shape == (120, 160, 3) for f in frames)
    assert cam.counters["bad_frames"] == 3  # two garbage arrays and one that changed size mid-stream
    assert cam.online is False  # closed


def test_a_camera_switched_to_another_resolution_is_followed_without_a_reopen() -> None:
    # Someone changes the camera's resolution in its web page: the stream goes on at the new size,
    # and so does the camera, once the new size has held for a few frames.
    caps: list[ScriptedCapture] = []

    def factory(cfg: CameraConfig) -> ScriptedCapture:
        caps.append(ScriptedCapture([*good(5), *good(1000, shape=(240, 320, 3))], fps=50))
        return caps[-1]

    def new_size(items: list[CameraItem]) -> bool:
        return any(isinstance(i, CameraFrame) and i.frame.shape == (240, 320, 3) for i in items)

    # A watchdog far longer than the test: the change must not wait for it.
    cfg = CameraConfig(id="usb1", url="usb:0", analysis_fps=50, stall_timeout_s=30.0, backoff=FAST_BACKOFF)
    cam = Camera(cfg, capture_factory=factory)
    items = asyncio.run(collect(cam, new_size, 10.0))
    sizes = [i.frame.shape for i in items if isinstance(i, CameraFrame)]
    assert sizes[0] == (120, 160, 3) and sizes[-1] == (240, 320, 3)
    assert not [i for i in items if isinstance(i, CameraOffline)] and len(caps) == 1
    # The frames before the new size was trusted were dropped, as one odd frame would be.
    assert cam.counters["bad_frames"] == RESOLUTION_FOLLOW_FRAMES - 1
    assert cam.counters["resolution_changes"] == 1


def test_frames_of_ever_changing_sizes_are_dropped_not_followed() -> None:
    # A broken decoder whose frames come at a new size each time: never one size long enough to
    # follow, so every one is dropped and the stream is judged by the watchdog as before.
    sizes = [(128 + 8 * (k % 7), 160, 3) for k in range(400)]
    caps: list[ScriptedCapture] = []

    def factory(cfg: CameraConfig) -> ScriptedCapture:
        script = [*good(3), *(np.full(size, 90, np.uint8) for size in sizes)] if not caps else good(100)
        caps.append(ScriptedCapture(script, fps=60))
        return caps[-1]

    cfg = CameraConfig(id="usb1", url="usb:0", analysis_fps=60, stall_timeout_s=1.0, backoff=FAST_BACKOFF)
    cam = Camera(cfg, capture_factory=factory)
    items = asyncio.run(collect(cam, lambda it: any(isinstance(i, CameraOffline) for i in it), 10.0))
    frames = [i for i in items if isinstance(i, CameraFrame)]
    assert all(f.frame.shape == (120, 160, 3) for f in frames) and len(frames) == 3
    assert cam.counters["bad_frames"] > 50 and cam.counters.get("resolution_changes", 0) == 0


def test_the_capture_thread_runs_at_a_lower_priority_than_the_agent() -> None:
    # Decoding must not keep the gates' threads and the event loop waiting for a core.
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def factory(cfg: CameraConfig) -> ScriptedCapture:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return ScriptedCapture(good(20), fps=50)

    cam = Camera(CameraConfig(id="usb1", url="usb:0", analysis_fps=50), capture_factory=factory)
    items = asyncio.run(collect(cam, lambda it: any(isinstance(i, CameraFrame) for i in it), 5.0))
    assert any(isinstance(i, CameraFrame) for i in items)
    assert seen == [min(19, ours + BULK_NICENESS)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours  # only that thread


def test_stalled_camera_goes_offline_and_is_restarted() -> None:
    # Stand-in for a physical camera whose read blocks forever inside the driver library.
    caps: list[ScriptedCapture] = []

    def factory(cfg: CameraConfig) -> ScriptedCapture:
        caps.append(ScriptedCapture([*good(5), "hang"] if not caps else good(100), fps=50, hang_s=5))
        return caps[-1]

    cfg = CameraConfig(id="usb1", url="usb:0", analysis_fps=50, stall_timeout_s=0.6, backoff=FAST_BACKOFF)
    cam = Camera(cfg, capture_factory=factory)
    started = time.monotonic()
    items = asyncio.run(collect(cam, lambda it: kinds(it)[-2:] == ["on", "F"] and "off" in kinds(it), 5.0))
    assert kinds(items) == ["on", "F", "off", "on", "F"]
    offline = next(i for i in items if isinstance(i, CameraOffline))
    assert offline.reason.startswith("no frames for")
    assert cam.counters["stalls"] == 1 and len(caps) == 2
    assert time.monotonic() - started < 5.0  # recovered without waiting for the hung read


def test_simulated_camera_plays_a_generated_clip(tmp_path: Path) -> None:
    cfg = SimulatedCameraConfig(id="demo-cam", clip_seconds=1.0, clip_fps=20.0, width=320, height=180)
    cam = open_camera(cfg, workdir=tmp_path)
    assert isinstance(cam, SimulatedCamera) and cam.video_path.is_file()
    items = asyncio.run(collect(cam, lambda it: len(it) > 12, 10.0))
    assert kinds(items) == ["on", "F"]  # loops: never offline
    frames = [i for i in items if isinstance(i, CameraFrame)]
    assert frames[0].frame.shape == (180, 320, 3)
    # The figure walks: consecutive analysed frames differ.
    assert any(not np.array_equal(a.frame, b.frame) for a, b in itertools.pairwise(frames))


def test_simulated_camera_config_errors(tmp_path: Path) -> None:
    with pytest.raises(CameraError) as err:
        SimulatedCamera(SimulatedCameraConfig(id="c", video=str(tmp_path / "missing.avi")))
    assert err.value.code == "not_found" and err.value.device_id == "c"
    with pytest.raises(ValidationError):
        SimulatedCameraConfig.model_validate({"id": "c", "kind": "camera"})
    clip = generate_clip(tmp_path / "g.avi", seconds=0.5, fps=10, width=160, height=120)
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (120, 160, 3)


def test_camera_is_a_reusable_context_manager(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.avi", n=10, fps=30.0)
    cam = Camera(CameraConfig(id="cam1", url=str(clip), analysis_fps=30.0, loop=True))
    for _ in range(2):
        items = asyncio.run(collect(cam, lambda it: len(it) > 3, 5.0))
        assert kinds(items) == ["on", "F"]

    async def via_readings() -> list[CameraItem]:
        # The agent reads every driver through readings(); a camera answers to it as well.
        async with cam:
            out = []
            async for item in cam.readings():
                out.append(item)
                if len(out) > 3:
                    return out
        return out

    assert kinds(asyncio.run(asyncio.wait_for(via_readings(), 5.0))) == ["on", "F"]

    async def drain(c: Camera) -> list[CameraItem]:
        return [item async for item in c.frames()]

    # Closed: frames() ends at once (leftovers aside, nothing waits forever).
    assert all(isinstance(i, CameraFrame) for i in asyncio.run(drain(cam)))
    with pytest.raises(CameraError) as err:
        asyncio.run(drain(Camera(CameraConfig(id="cam2", url=str(clip)))))
    assert err.value.code == "not_started"


def test_idle_analysis_rate_hands_over_fewer_frames_and_reading_goes_on(tmp_path: Path) -> None:
    """set_analysis_fps lowers the hand-over rate while the source is still read at its own rate,
    and None restores the configured rate."""
    clip = write_clip(tmp_path / "loop.avi", n=20, fps=20.0)
    cam = Camera(CameraConfig(id="cam1", url=f"file://{clip}", analysis_fps=10.0, loop=True))

    async def rates() -> tuple[float, float, float, int]:
        async def count_for(seconds: float) -> float:
            n, start = 0, time.monotonic()
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    n += 1
                if time.monotonic() - start >= seconds:
                    return n / seconds
            return 0.0

        async with cam:
            full = await count_for(2.0)
            cam.set_analysis_fps(2.0)
            idle = await count_for(2.0)
            cam.set_analysis_fps(None)
            again = await count_for(2.0)
            return full, idle, again, cam.counters["frames_read"]

    full, idle, again, read = asyncio.run(rates())
    assert full > 7 and again > 7  # about 10/s
    assert idle < 3.5  # about 2/s
    assert read > 90  # the 20 fps source kept being read throughout (about 120 frames in 6 s)

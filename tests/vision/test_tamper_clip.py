"""Tamper checks fed by the real camera driver playing a video file with tamper effects in it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
from scene_clips import cover, defocus, jpeg_noise, shift_view

from device_drivers import Camera, CameraConfig, CameraFrame, CameraOffline
from vision.config import TamperConfig
from vision.scenes import load_photo, write_video
from vision.tamper import StreamWatch, TamperChange, TamperDetector


def test_covered_then_defocused_then_moved_clip(tmp_path: Path) -> None:
    base = np.asarray(cv2.resize(load_photo("sample2.jpg"), (640, 400)), dtype=np.uint8)
    segments = [
        ("clean", [jpeg_noise(base, 70 + k) for k in range(10)]),
        ("covered", [cover(base, seed=k) for k in range(10)]),
        ("clean", [jpeg_noise(base, 70 + k) for k in range(10)]),
        ("defocused", [defocus(base, 4.0)] * 10),
        ("clean", [jpeg_noise(base, 70 + k) for k in range(10)]),
        ("moved", [shift_view(base, 60, 10)] * 10),
    ]
    clip = write_video((f for _, frames in segments for f in frames), tmp_path / "tamper.avi", fps=20.0)
    cam = Camera(CameraConfig(id="cam1", url=str(clip), analysis_fps=20.0, realtime=True))
    det = TamperDetector("cam1", TamperConfig(reference_frames=3, trigger_frames=4, clear_frames=3))
    changes: list[TamperChange] = []
    last_at = 0.0

    async def run() -> None:
        nonlocal last_at
        async with cam:
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    last_at = item.monotonic_s
                    changes.extend(det.update(item.frame, last_at))
                elif isinstance(item, CameraOffline):
                    return  # the file ended

    asyncio.run(asyncio.wait_for(run(), 20.0))
    assert [(c.kind, c.active) for c in changes] == [
        ("covered", True),
        ("covered", False),
        ("defocused", True),
        ("defocused", False),
        ("moved", True),
    ]
    # The file ended: no frames any more, and the watchdog side reports the stream lost.
    watch = StreamWatch("cam1", det.config.stream_timeout_s)
    watch.seen(last_at)
    lost = watch.check(last_at + det.config.stream_timeout_s + 0.1)
    assert [(c.kind, c.active) for c in lost] == [("stream_lost", True)]

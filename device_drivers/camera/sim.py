"""A simulated camera for the demo and tests: plays a video file, or a generated clip, in a loop.

It is the real :class:`device_drivers.camera.driver.Camera` (same thread, pacing, health and garbage
handling) reading a real video file; only the source is made up. :func:`generate_clip` writes a
synthetic scene (a corridor with a moving figure, or caller-supplied sprites along a path) with
``cv2.VideoWriter``, so the demo needs no camera and no sample footage.

:class:`ScriptedCapture` stands in for a physical camera where a file cannot show the fault (a
decoder returning garbage, a read that hangs); tests use it only for that. Test and demo
equipment: the agent opens a simulated camera through :func:`device_drivers.registry.open_camera`.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from device_drivers.camera.config import SimulatedCameraConfig
from device_drivers.camera.driver import Camera
from device_drivers.errors import CameraError

Frame = NDArray[np.uint8]


def _scene(width: int, height: int, seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    bg = np.zeros((height, width, 3), np.float32)
    horizon = height // 2
    bg[:horizon] = (165, 175, 185)
    bg[horizon:] = np.linspace(95, 150, height - horizon, dtype=np.float32)[:, None, None]
    for x in range(width // 10, width - width // 8, width // 4):
        cv2.rectangle(bg, (x, height // 5), (x + width // 10, horizon), (60, 80, 120), -1)
    bg += rng.normal(0, 5, bg.shape).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _paste(frame: Frame, sprite: Frame, feet: tuple[float, float], height: float) -> None:
    scale = height / sprite.shape[0]
    w, h = max(1, round(sprite.shape[1] * scale)), max(1, round(height))
    resized = cv2.resize(sprite, (w, h), interpolation=cv2.INTER_AREA)
    x1, y1 = round(feet[0] - w / 2), round(feet[1] - h)
    fx1, fy1 = max(x1, 0), max(y1, 0)
    fx2, fy2 = min(x1 + w, frame.shape[1]), min(y1 + h, frame.shape[0])
    if fx2 > fx1 and fy2 > fy1:
        frame[fy1:fy2, fx1:fx2] = resized[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]


def _figure(height: int) -> Frame:
    """A plain figure (head and body) for generated clips when no sprite is given."""
    w = max(8, height // 3)
    img = np.full((height, w, 3), (150, 160, 170), np.uint8)
    cv2.ellipse(img, (w // 2, height // 8), (w // 5, height // 9), 0, 0, 360, (90, 120, 170), -1)
    cv2.rectangle(img, (w // 5, height // 4), (4 * w // 5, 2 * height // 3), (120, 50, 40), -1)
    cv2.rectangle(img, (w // 4, 2 * height // 3), (3 * w // 4, height - 1), (50, 40, 40), -1)
    return img


def generate_clip(
    path: Path,
    *,
    seconds: float = 10.0,
    fps: float = 10.0,
    width: int = 640,
    height: int = 360,
    sprites: Sequence[Frame] = (),
    seed: int = 0,
) -> Path:
    """Write an MJPG AVI of figures walking across a corridor, left to right and back.

    ``sprites`` (BGR crops of people) replace the plain drawn figure; each walks at its own pace.
    """
    n = max(1, round(seconds * fps))
    bg = _scene(width, height, seed)
    walkers = list(sprites) or [_figure(height // 2)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise CameraError(f"cannot write a clip to {path}", code="clip_write_failed")
    try:
        for k in range(n):
            frame = bg.copy()
            for i, sprite in enumerate(walkers):
                phase = (k / n * (1 + 0.3 * i)) % 1.0
                x = width * (2 * phase if phase < 0.5 else 2 * (1 - phase))
                feet_y = height * (0.85 + 0.1 * (i % 2))
                _paste(frame, sprite, (x, feet_y), height * 0.45)
            writer.write(frame)
    finally:
        writer.release()
    return path


class SimulatedCamera(Camera):
    """A :class:`Camera` that plays the configured file, or a clip generated at start, as a live feed."""

    def __init__(self, config: SimulatedCameraConfig, *, workdir: Path | None = None) -> None:
        self.sim_config = config
        if config.video:
            video = Path(config.video)
            if not video.is_file():
                raise CameraError(f"video file {video} does not exist", device_id=config.id, code="not_found")
        else:
            base = workdir or Path(tempfile.mkdtemp(prefix=f"camera-sim-{config.id}-"))
            video = generate_clip(
                base / f"{config.id}.avi",
                seconds=config.clip_seconds,
                fps=config.clip_fps,
                width=config.width,
                height=config.height,
            )
        self.video_path = video
        super().__init__(config.camera_config(video))


class ScriptedCapture:
    """A stand-in for a physical camera that misbehaves on cue (tests only: faults a file cannot show).

    ``script`` items are frames (returned by ``read``), ``"garbage"`` (a wrong-shaped array),
    ``"fail"`` (``read`` returns False) or ``"hang"`` (``read`` blocks until :meth:`release` or
    ``hang_s``). After the script, reads return False. Reads are paced at ``fps``; ``grab`` reads
    and keeps the result for ``retrieve``, as OpenCV's capture does.
    """

    def __init__(self, script: Sequence[NDArray[Any] | str], fps: float = 20.0, hang_s: float = 60.0) -> None:
        self._script = list(script)
        self._i = 0
        self._interval = 1.0 / fps
        self._hang_s = hang_s
        self._released = threading.Event()
        self._pending: tuple[bool, Any] = (False, None)
        self.reads = 0

    def isOpened(self) -> bool:
        return not self._released.is_set()

    def grab(self) -> bool:
        self._pending = self.read()
        return self._pending[0]

    def retrieve(self) -> tuple[bool, Any]:
        return self._pending

    def read(self) -> tuple[bool, Any]:
        self.reads += 1
        time.sleep(self._interval)
        if self._i >= len(self._script):
            return False, None
        item = self._script[self._i]
        self._i += 1
        if isinstance(item, str):
            if item == "garbage":
                return True, np.zeros((4, 7), np.float32)
            if item == "hang":
                self._released.wait(self._hang_s)
                return False, None
            return False, None
        return True, item

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        self._released.set()


__all__ = ["ScriptedCapture", "SimulatedCamera", "generate_clip"]

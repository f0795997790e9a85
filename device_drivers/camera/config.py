"""Configuration of cameras (real and simulated) and the camera URL forms. A leaf: pydantic, the
stdlib and the shared backoff config only."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from device_drivers._io.config import BackoffConfig

SourceKind = Literal["stream", "usb", "file"]

MAX_FRAME_PIXELS = 40_000_000
"""The default of ``max_frame_pixels``: an 8K camera (7680x4320, 33 Mpx) with room to spare."""


class CameraConfig(BaseModel):
    """One camera. ``url`` is an RTSP/HTTP URL, ``usb:N`` or ``/dev/videoN``, or a video file path.

    Analysis runs on the frames of :attr:`analysis_url`: ``substream_url`` when the camera has a
    low-resolution sub-stream (then ``url`` is not opened by the driver at all), else ``url``.
    ``analysis_width`` shrinks them right after decode (MJPEG packets are decoded at a reduced size
    straight away); the main stream's picture is then kept for evidence snapshots (not with a
    sub-stream: the main stream is not opened).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["camera"] = Field(default="camera", description="Selects this driver.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    url: str = Field(
        min_length=1,
        description="`rtsp://user:pass@host/path`, `http(s)://...` (MJPEG), `usb:0` or `/dev/video0`, or a "
        "video file (`file:///path` or a path). Credentials in it are redacted from logs and events.",
    )
    substream_url: str | None = Field(
        default=None,
        min_length=1,
        description="The camera's low-resolution sub-stream (same URL forms as `url`): when set, analysis "
        "frames are read from it and `url` is not opened. Credentials are redacted like `url`'s.",
    )
    analysis_fps: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Frames per second handed on for analysis; the rest are skipped.",
    )
    analysis_width: int | None = Field(
        default=None,
        ge=64,
        le=3840,
        description="Frames handed on for analysis are shrunk to this width (aspect kept, never enlarged) "
        "right after decode; unset: as decoded. Pixel zones then need `security.reference_size`.",
    )
    max_frame_pixels: int = Field(
        default=MAX_FRAME_PIXELS,
        ge=64 * 64,
        le=1 << 30,
        description="A frame with more pixels is dropped as a bad frame; an MJPEG frame is judged by "
        "its header, before anything is decoded (a few kilobytes can declare 16000x16000 pixels, 768 MB "
        "for each decode).",
    )
    stall_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="No good frame for this long: the camera is offline."
    )
    open_timeout_s: float = Field(
        default=10.0, gt=0, le=120, description="How long OpenCV may try to open a stream (FFmpeg sources)."
    )
    read_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="How long one read may block inside FFmpeg before it fails."
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        default="tcp", description="RTSP transport; TCP survives lossy Wi-Fi links without smeared frames."
    )
    loop: bool = Field(default=False, description="Video files: start again at the end (demo, soak tests).")
    realtime: bool = Field(
        default=True,
        description="Video files: play at the file's own frame rate, as a live camera would deliver them.",
    )
    backoff: BackoffConfig = Field(
        default=BackoffConfig(initial_s=1.0, max_s=30.0), description="Reconnect delays."
    )

    @field_validator("url", "substream_url")
    @classmethod
    def _known_url(cls, url: str | None) -> str | None:
        if url is not None:
            parse_source(url)
        return url

    @property
    def analysis_url(self) -> str:
        """The URL the driver opens: the sub-stream when there is one, else the main stream."""
        return self.substream_url or self.url


def parse_source(url: str) -> tuple[SourceKind, str | int]:
    """``(kind, target)`` for a camera URL: a stream URL, a USB index, or a file path."""
    low = url.lower()
    if low.startswith(("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")):
        return "stream", url
    if low.startswith("usb:"):
        index = url[4:]
        if not index.isdigit():
            raise ValueError(f"usb camera must be usb:N with N a number, got {url!r}")
        return "usb", int(index)
    if low.startswith("/dev/video") and url[len("/dev/video") :].isdigit():
        return "usb", int(url[len("/dev/video") :])
    if low.startswith("file://"):
        return "file", url[len("file://") :]
    if "://" in url:
        raise ValueError(f"unsupported camera URL scheme in {url!r}")
    return "file", url


def redact_url(url: str) -> str:
    """The URL without its password (``rtsp://user:***@host/...``), for logs and events."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"


class SimulatedCameraConfig(BaseModel):
    """A camera that plays a file (or a clip generated at start-up) as if it were live."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["camera_sim"] = Field(default="camera_sim", description="Selects the simulated camera.")
    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="Device id, unique on this gateway; used in events."
    )
    video: str | None = Field(
        default=None, description="Video file to play; empty: a synthetic clip is generated at start."
    )
    analysis_fps: float = Field(
        default=5.0, gt=0, le=60, description="Frames per second handed on for analysis."
    )
    analysis_width: int | None = Field(
        default=None, ge=64, le=3840, description="Shrink analysed frames to this width (see `camera`)."
    )
    stall_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="No frame for this long: offline."
    )
    loop: bool = Field(default=True, description="Start again at the end of the file.")
    width: int = Field(default=640, ge=64, le=3840, description="Width of a generated clip.")
    height: int = Field(default=360, ge=64, le=2160, description="Height of a generated clip.")
    clip_seconds: float = Field(default=10.0, gt=0, le=600, description="Length of a generated clip.")
    clip_fps: float = Field(default=10.0, gt=0, le=60, description="Frame rate of a generated clip.")

    def camera_config(self, video_path: Path) -> CameraConfig:
        """The real camera configuration that plays ``video_path``."""
        return CameraConfig(
            id=self.id,
            url=str(video_path),
            analysis_fps=self.analysis_fps,
            analysis_width=self.analysis_width,
            stall_timeout_s=self.stall_timeout_s,
            loop=self.loop,
            realtime=True,
            backoff=BackoffConfig(initial_s=0.5, max_s=5.0),
        )


__all__ = ["CameraConfig", "SimulatedCameraConfig", "SourceKind", "parse_source", "redact_url"]

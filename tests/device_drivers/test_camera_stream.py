"""Camera driver against a real network stream: an MJPEG-over-HTTP server on localhost, read by
OpenCV's FFmpeg backend exactly as an IP camera's stream would be, that stalls or drops on cue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_camera import FAST_BACKOFF, collect, kinds

from device_drivers.camera.config import CameraConfig
from device_drivers.camera.driver import Camera, JpegPacket
from device_drivers.camera.ffmpeg_limits import FLOOR, allocation_bound, bound_allocations
from device_drivers.readings import CameraFrame, CameraOffline
from tests.support.jpeg import declaring


@dataclass
class Behaviour:
    """What the server does on one connection: send ``frames`` frames, then ``then``."""

    frames: int
    then: str = "close"  # "close", "stall" (keep the socket open, send nothing) or "endless" (a
    # part that never ends: a header without Content-Length, then bytes and never a boundary)
    declare: tuple[int, int] | None = None  # the size the frames' JPEG headers claim, if not theirs
    size: tuple[int, int] = (160, 120)  # (width, height) of the frames
    resized: tuple[int, tuple[int, int]] | None = None  # after this many frames, this size instead


@dataclass
class MjpegServer:
    plan: list[Behaviour]
    port: int = 0
    connections: int = 0
    _sock: socket.socket = field(default_factory=socket.socket)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            behaviour = self.plan[min(self.connections, len(self.plan) - 1)]
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, behaviour), daemon=True).start()

    def _serve(self, conn: socket.socket, b: Behaviour) -> None:
        with conn, contextlib.suppress(OSError):
            conn.recv(4096)
            conn.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
            )
            for k in range(b.frames):
                if self._stop.is_set():
                    return
                width, height = b.resized[1] if b.resized is not None and k >= b.resized[0] else b.size
                img = np.full((height, width, 3), 20 + (k * 7) % 200, np.uint8)
                ok, buf = cv2.imencode(".jpg", img)
                assert ok
                data = buf.tobytes() if b.declare is None else declaring(buf.tobytes(), *b.declare)
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
                conn.sendall(head + data + b"\r\n")
                time.sleep(0.04)
            if b.then == "stall":
                self._stop.wait(30)
            if b.then == "endless":
                conn.sendall(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8")
                junk = bytes(1 << 20)  # no boundary in it, ever
                while not self._stop.is_set():
                    conn.sendall(junk)

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def server_factory() -> Iterator[list[MjpegServer]]:
    servers: list[MjpegServer] = []
    yield servers
    for s in servers:
        s.stop()


def start(servers: list[MjpegServer], plan: list[Behaviour]) -> MjpegServer:
    s = MjpegServer(plan)
    s.start()
    servers.append(s)
    return s


def test_stream_that_stalls_goes_offline_then_recovers(server_factory: list[MjpegServer]) -> None:
    # First connection: 15 frames, then silence with the socket open (the read blocks inside FFmpeg).
    server = start(server_factory, [Behaviour(15, "stall"), Behaviour(10_000)])
    cfg = CameraConfig(
        id="ipcam",
        url=server.url,
        analysis_fps=25,
        stall_timeout_s=0.8,
        read_timeout_s=20,
        backoff=FAST_BACKOFF,
    )
    cam = Camera(cfg)
    items = asyncio.run(collect(cam, lambda it: kinds(it) == ["on", "F", "off", "on", "F"], 10.0))
    assert kinds(items) == ["on", "F", "off", "on", "F"]
    offline = next(i for i in items if isinstance(i, CameraOffline))
    assert offline.reason.startswith("no frames for")
    assert cam.counters["stalls"] == 1 and server.connections == 2
    assert all(i.frame.shape == (120, 160, 3) for i in items if isinstance(i, CameraFrame))


def test_stream_closed_by_the_camera_is_offline_and_reconnected(server_factory: list[MjpegServer]) -> None:
    server = start(server_factory, [Behaviour(10, "close"), Behaviour(10_000)])
    cfg = CameraConfig(id="ipcam", url=server.url, analysis_fps=25, stall_timeout_s=5, backoff=FAST_BACKOFF)
    cam = Camera(cfg)
    items = asyncio.run(collect(cam, lambda it: kinds(it) == ["on", "F", "off", "on", "F"], 10.0))
    assert kinds(items) == ["on", "F", "off", "on", "F"]
    offline = next(i for i in items if isinstance(i, CameraOffline))
    assert "read failed" in offline.reason
    assert cam.counters.get("stalls", 0) == 0 and cam.counters["reconnects"] >= 1


def test_frames_whose_header_claims_too_many_pixels_are_dropped_undecoded(
    server_factory: list[MjpegServer], caplog: pytest.LogCaptureFixture
) -> None:
    # 5 KB frames declaring 16000x16000: each decode would allocate 768 MB. Then an honest camera.
    server = start(server_factory, [Behaviour(40, "close", declare=(16000, 16000)), Behaviour(10_000)])
    cfg = CameraConfig(id="ipcam", url=server.url, analysis_fps=25, stall_timeout_s=5, backoff=FAST_BACKOFF)
    cam = Camera(cfg)
    decodes: list[tuple[int, int]] = []
    real_imdecode = cv2.imdecode

    def imdecode(buf: np.ndarray, flags: int) -> np.ndarray | None:
        out = real_imdecode(buf, flags)
        if out is not None:
            decodes.append(out.shape[:2])
        return out

    with caplog.at_level(logging.WARNING), pytest.MonkeyPatch.context() as mp:
        mp.setattr(cv2, "imdecode", imdecode)
        items = asyncio.run(collect(cam, lambda it: kinds(it) == ["off", "on", "F"], 15.0))
    assert kinds(items) == ["off", "on", "F"]  # the lying stream never went online
    assert cam.counters["bad_frames"] >= 30
    assert "frame 16000x16000 has more than max_frame_pixels (40,000,000)" in caplog.text
    # Only the 1/8-scale trial of the first packet decoded anything of the lying stream (2000 px).
    assert max(h * w for h, w in decodes) <= 2000 * 2000
    assert all(i.frame.shape == (120, 160, 3) for i in items if isinstance(i, CameraFrame))


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_frame_that_never_ends_is_not_buffered_without_bound(server_factory: list[MjpegServer]) -> None:
    """A camera whose MJPEG part never ends (no next boundary): FFmpeg's demuxer reads it as one
    packet growing until the read times out (1.5 GB in 5 s on localhost before the bound, in the
    process that runs the gates). Bounded, the read fails once the packet passes the bound, the
    camera goes offline, is reconnected, and the next connection's frames come."""
    server = start(server_factory, [Behaviour(5, "endless"), Behaviour(10_000)])
    # A long read timeout: unbounded, the packet would grow for all of it.
    cfg = CameraConfig(
        id="ipcam",
        url=server.url,
        analysis_fps=25,
        read_timeout_s=20,
        stall_timeout_s=60,
        backoff=FAST_BACKOFF,
    )
    cam = Camera(cfg)
    peak, done = [_rss_mib()], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.append(_rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        items = asyncio.run(collect(cam, lambda it: kinds(it) == ["on", "F", "off", "on", "F"], 30.0))
    finally:
        done.set()
        sampler.join()
    assert kinds(items) == ["on", "F", "off", "on", "F"]
    assert cam.counters["read_failures"] >= 1 and server.connections >= 2
    bound = bound_allocations(cfg.max_frame_pixels)
    assert bound is not None and bound >= allocation_bound(cfg.max_frame_pixels)
    assert max(peak) - peak[0] < 3 * bound / 2**20, (max(peak) - peak[0], bound >> 20)


def test_the_allocation_bound_follows_the_largest_camera_and_is_never_lowered() -> None:
    base = bound_allocations(40_000_000)
    assert base is not None and base >= allocation_bound(40_000_000) >= 80_000_000
    bigger = bound_allocations(44_000_000)  # a camera allowed more pixels raises it for all
    assert bigger == max(base, allocation_bound(44_000_000))
    assert bound_allocations(1_000_000) == bigger  # a smaller one never lowers it
    assert allocation_bound(1_000_000) == FLOOR


def test_an_ip_camera_switched_to_another_resolution_is_followed_on_the_same_connection(
    server_factory: list[MjpegServer],
) -> None:
    # Someone lowers the camera's resolution in its web page mid-stream.
    server = start(server_factory, [Behaviour(10_000, size=(320, 240), resized=(10, (160, 120)))])
    cfg = CameraConfig(id="ipcam", url=server.url, analysis_fps=25, stall_timeout_s=30, backoff=FAST_BACKOFF)
    cam = Camera(cfg)

    def followed(items: list[object]) -> bool:
        return any(isinstance(i, CameraFrame) and i.frame.shape == (120, 160, 3) for i in items)

    items = asyncio.run(collect(cam, followed, 10.0))
    shapes = [i.frame.shape for i in items if isinstance(i, CameraFrame)]
    assert shapes[0] == (240, 320, 3) and shapes[-1] == (120, 160, 3)
    assert kinds(items)[0] == "on" and "off" not in kinds(items) and server.connections == 1
    assert cam.counters["resolution_changes"] == 1 and cam.counters["bad_frames"] == 4


def test_a_camera_analysed_smaller_than_both_its_resolutions_goes_on_without_a_hiccup(
    server_factory: list[MjpegServer],
) -> None:
    # Analysed 160 wide: 640x480 packets decode at a quarter, and once the camera is switched to
    # 320x240 at a half, so the analysis goes on at 160x120 as if nothing had happened.
    server = start(server_factory, [Behaviour(10_000, size=(640, 480), resized=(10, (320, 240)))])
    cfg = CameraConfig(
        id="ipcam",
        url=server.url,
        analysis_fps=25,
        analysis_width=160,
        stall_timeout_s=30,
        backoff=FAST_BACKOFF,
    )
    cam = Camera(cfg)

    def declared(items: list[object]) -> list[tuple[int, int]]:
        """The JPEG sizes of the frames handed over (packets, decoded by whoever analyses them)."""
        return [
            i.picture.size for i in items if isinstance(i, CameraFrame) and isinstance(i.picture, JpegPacket)
        ]

    def frames(items: list[object]) -> list[CameraFrame]:
        return [i for i in items if isinstance(i, CameraFrame)]

    items = asyncio.run(collect(cam, lambda it: declared(it).count((320, 240)) >= 5, 10.0))
    decoded = declared(items)
    assert all(f.frame.shape == (120, 160, 3) for f in frames(items))
    assert (640, 480) in decoded and (320, 240) in decoded
    assert cam.counters.get("bad_frames", 0) == 0 and cam.counters.get("resolution_changes", 0) == 0

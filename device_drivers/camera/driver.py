"""Camera input over OpenCV: RTSP/HTTP URLs, USB cameras and video files, off the event loop.

One capture thread per camera reads frames as fast as the source gives them (a live stream must be
drained, or its buffer grows and the picture lags), keeps only the newest one that falls due at the
configured analysis rate, and hands it to the event loop. Nothing queues up: if the consumer is
slower than ``analysis_fps`` the older frame is replaced (latest frame wins) and counted.

Health: the camera is *online* from its first good frame; *offline* when it cannot be opened, when
reads fail, when a file ends (unless looped), or when no good frame came for ``stall_timeout_s``
(a watchdog on the event loop catches a capture stuck inside OpenCV, abandons that thread and starts
a fresh one). Reconnects use capped, jittered exponential backoff. Frames of the wrong shape or type
(a broken decoder, a mis-set stream) are counted and dropped (checked on the frames due for
analysis: the others are only grabbed, never converted to pixels). An MJPEG source is read as its
JPEG packets, so the skipped frames are not even decoded (:class:`MjpegPackets`), and the due ones
are handed over as packets (:class:`JpegPacket`, checked by their header): the inference thread that
analyses a frame decodes it, and a frame replaced before any thread took it is never decoded.

Use::

    async with Camera(CameraConfig(id="gate1", url="rtsp://10.0.0.5/stream1")) as cam:
        async for item in cam.frames():
            match item:
                case CameraFrame(): ...
                case CameraOnline() | CameraOffline(): ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import cv2
import numpy as np
from numpy.typing import NDArray

from device_drivers._io.backoff import Backoff
from device_drivers._io.threads import lower_thread_priority, show_thread_name
from device_drivers.camera.config import (
    MAX_FRAME_PIXELS,
    CameraConfig,
    SourceKind,
    parse_source,
    redact_url,
)
from device_drivers.camera.ffmpeg_limits import bound_allocations
from device_drivers.errors import CameraError
from device_drivers.readings import CameraFrame, CameraItem, CameraOffline, CameraOnline, utc_now

log = logging.getLogger(__name__)


class CaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the driver uses (lets tests stand in for a physical camera)."""

    def isOpened(self) -> bool: ...

    def grab(self) -> bool: ...

    def retrieve(self) -> tuple[bool, Any]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


def check_frame(
    frame: object, expected_shape: tuple[int, ...] | None, max_pixels: int = MAX_FRAME_PIXELS
) -> str | None:
    """Why ``frame`` is garbage, or None if it is a usable BGR frame (same shape as before, if known,
    and at most ``max_pixels``)."""
    if not isinstance(frame, np.ndarray):
        return f"not an array ({type(frame).__name__})"
    if frame.dtype != np.uint8:
        return f"dtype {frame.dtype}, not uint8"
    if frame.ndim != 3 or frame.shape[2] != 3:
        return f"shape {frame.shape}, not HxWx3"
    return _too_many_pixels(frame.shape[1], frame.shape[0], max_pixels) or _check_size(
        frame.shape, expected_shape
    )


def _check_size(shape: tuple[int, ...], expected_shape: tuple[int, ...] | None) -> str | None:
    """Why an HxWx3 picture of ``shape`` is unusable (too small, a size changed mid-stream)."""
    if shape[0] < 8 or shape[1] < 8:
        return f"frame {shape[1]}x{shape[0]} too small"
    if expected_shape is not None and shape != expected_shape:
        return f"shape {shape} changed from {expected_shape} mid-stream"
    return None


RESOLUTION_FOLLOW_FRAMES = 5
"""Frames in a row of one new size after which a stream's resolution change is followed (a second at
5 analysed frames/s); fewer are dropped as garbage, so one odd frame never resets the analysis."""


def _size_text(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _too_many_pixels(width: int, height: int, max_pixels: int) -> str | None:
    if width * height > max_pixels:
        return f"frame {width}x{height} has more than max_frame_pixels ({max_pixels:,})"
    return None


def check_picture(
    picture: object, expected_shape: tuple[int, ...] | None, max_pixels: int = MAX_FRAME_PIXELS
) -> str | None:
    """:func:`check_frame` for decoded pixels; for a JPEG packet, the same checks on the size its
    header gives, before anything is decoded (the packet is decoded later, by whoever analyses
    it, and once more at full size for evidence): a header declaring 16000x16000 pixels on a
    few kilobytes of data would have each decode allocate 768 MB."""
    if picture is None:
        return "nothing decodable (a read that failed, or a packet without a JPEG header)"
    if not isinstance(picture, JpegPacket):
        return check_frame(picture, expected_shape, max_pixels)
    return _too_many_pixels(*picture.size, max_pixels) or _check_size(picture.shape, expected_shape)


def open_capture(config: CameraConfig) -> CaptureLike:
    """Open ``config.analysis_url`` (the sub-stream if set) with OpenCV; blocking (call from the
    capture thread)."""
    kind, target = parse_source(config.analysis_url)
    if kind == "usb":
        assert isinstance(target, int)
        return cv2.VideoCapture(target, cv2.CAP_V4L2)
    assert isinstance(target, str)
    if kind == "file" and not Path(target).is_file():
        raise CameraError(f"video file {target} does not exist", device_id=config.id, code="not_found")
    # A camera that never ends a frame must not make FFmpeg buffer gigabytes (see the module).
    bound_allocations(config.max_frame_pixels)
    if kind == "stream" and target.lower().startswith("rtsp"):
        # FFmpeg takes its RTSP options from the environment, read at open time.
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{config.rtsp_transport}"
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(config.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(config.read_timeout_s * 1000),
    ]
    cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    if not cap.isOpened() or _fourcc(cap) != "MJPG":
        return cap
    packets = MjpegPackets.of(cap, rewind=kind == "file", analysis_width=config.analysis_width)
    if packets is not None:
        return packets
    # The packets are not JPEG images imdecode reads: decode with FFmpeg, on a fresh capture (a
    # capture in packet mode cannot be switched back).
    cap.release()
    return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)


def _fourcc(cap: CaptureLike) -> str:
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    return code.to_bytes(4, "little").decode("ascii", errors="replace")


class MjpegPackets:
    """An MJPEG source (an HTTP camera, a demo clip) read as its compressed JPEG packets: ``grab``
    takes a packet off the stream without decoding it, ``retrieve`` decodes that one packet and
    ``retrieve_packet`` hands it over undecoded (what the driver does).

    Every MJPEG frame is a whole JPEG image, so the frames the driver skips (not due at the analysis
    rate) need no decoding at all, which FFmpeg's ``grab`` always does; a still scene analysed at
    1 frame/s out of a 5 frames/s stream decodes a fifth of the frames. Codecs with frames that
    depend on earlier ones (H.264, H.265) must decode every frame and are read by FFmpeg as before.
    """

    def __init__(self, capture: cv2.VideoCapture) -> None:
        self._capture = capture
        self._imread_flag = cv2.IMREAD_COLOR  # the DCT scale for packets as wide as the one below
        self._flag_for: tuple[int, int | None] | None = None  # (packet width, analysis width)

    @classmethod
    def of(
        cls, capture: cv2.VideoCapture, *, rewind: bool, analysis_width: int | None = None
    ) -> MjpegPackets | None:
        """``capture`` (open, MJPEG) switched to packets, or None when its packets do not decode as
        JPEG images (then ``capture`` has lost a frame and is left in packet mode: release it).
        ``rewind``: go back to the first frame after trying one (a file). With ``analysis_width``,
        packets are decoded at the smallest JPEG scale (1/2, 1/4, 1/8) still at least that wide."""
        if not capture.set(cv2.CAP_PROP_FORMAT, -1):  # -1: OpenCV's "raw stream" format
            return None
        packets = cls(capture)
        if not packets.grab():
            return None
        first = packets.retrieve_packet(analysis_width)  # which also sets the DCT scale
        # Tried at an eighth of its size: whether the packets are plain JPEG images shows as well,
        # and a header that lies about the size cannot make the trial allocate much.
        if first is None or _decodes_at(first.data, cv2.IMREAD_REDUCED_COLOR_8) is None:
            log.info("MJPEG packets of this source are not plain JPEG images: decoding them with FFmpeg")
            return None
        if rewind and not capture.set(cv2.CAP_PROP_POS_FRAMES, 0):
            return None
        return packets

    def isOpened(self) -> bool:
        return bool(self._capture.isOpened())

    def grab(self) -> bool:
        return bool(self._capture.grab())

    def retrieve(self) -> tuple[bool, Any]:
        """The packet taken by the last ``grab``, decoded to BGR; ``(False, None)`` when it is not a
        decodable JPEG (a corrupt packet: the driver counts it as a bad frame)."""
        ok, packet = self._capture.retrieve()
        if not ok or packet is None or packet.size == 0:
            return False, None
        frame = _decodes_at(np.asarray(packet, dtype=np.uint8), self._imread_flag)
        return frame is not None, frame

    def retrieve_packet(self, analysis_width: int | None) -> JpegPacket | None:
        """The packet taken by the last ``grab``, not decoded (the driver hands it over as it is:
        the inference thread that takes the frame decodes it); None when it is not a JPEG image
        with a size in its header (a corrupt packet: the driver counts it as a bad frame)."""
        ok, packet = self._capture.retrieve()
        if not ok or packet is None or packet.size == 0:
            return None
        data = np.asarray(packet, dtype=np.uint8).reshape(-1)
        taken = JpegPacket.of(data, self._imread_flag, analysis_width)
        if taken is not None and (taken.size[0], analysis_width) != self._flag_for:
            # The first packet, or the camera's resolution changed: the DCT scale for this width.
            self._flag_for = (taken.size[0], analysis_width)
            self._imread_flag = _reduced_decode_flag(taken.size[0], analysis_width)
            taken = JpegPacket.of(data, self._imread_flag, analysis_width)
        return taken

    def get(self, prop_id: int) -> float:
        return float(self._capture.get(prop_id))

    def set(self, prop_id: int, value: float) -> bool:
        return bool(self._capture.set(prop_id, value))

    def release(self) -> None:
        self._capture.release()


def _decodes_at(packet: NDArray[np.uint8], imread_flag: int) -> NDArray[np.uint8] | None:
    """``packet`` decoded with ``imread_flag``, None when it does not decode."""
    try:
        frame = cv2.imdecode(packet, imread_flag)
    except cv2.error:
        return None
    return None if frame is None else np.asarray(frame, dtype=np.uint8)


_SCALE_OF_FLAG = {
    cv2.IMREAD_COLOR: 1,
    cv2.IMREAD_REDUCED_COLOR_2: 2,
    cv2.IMREAD_REDUCED_COLOR_4: 4,
    cv2.IMREAD_REDUCED_COLOR_8: 8,
}

# Start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8) or DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOS, _STANDALONE = 0xDA, frozenset({0x01, *range(0xD0, 0xD9)})


def jpeg_size(data: NDArray[np.uint8]) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header, or None when ``data`` does not start
    like a JPEG image with a size (no SOI, a broken segment, the scan before any frame header).
    Reads a few header segments, not the image."""
    head = bytes(data[: 1 << 17])  # the header segments (APPn, DQT, SOF...) come first
    if head[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(head)
    while i + 4 <= end:
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == _SOS:
            return None
        length = int.from_bytes(head[i + 2 : i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if i + 9 > end:
                return None
            height = int.from_bytes(head[i + 5 : i + 7], "big")
            width = int.from_bytes(head[i + 7 : i + 9], "big")
            return (width, height) if width and height else None
        i += 2 + length
    return None


class JpegPacket:
    """One MJPEG frame as its JPEG bytes, decoded when first needed (:class:`UndecodedPicture`):
    ``shape`` is what :meth:`decode` gives, known from the header (at the reduced DCT scale of
    ``imread_flag``, then shrunk to ``analysis_width`` like any decoded frame)."""

    __slots__ = ("_analysis_width", "_decoded", "_imread_flag", "_lock", "data", "reduced", "shape", "size")

    def __init__(
        self,
        data: NDArray[np.uint8],
        size: tuple[int, int],
        shape: tuple[int, int, int],
        imread_flag: int,
        analysis_width: int | None,
        reduced: bool = False,
    ) -> None:
        self.data = data
        self.size = size
        """(width, height) as the JPEG header declares it: the full-resolution picture."""
        self.shape = shape
        self.reduced = reduced
        """Whether it decodes smaller than the JPEG (a reduced scale, a shrink): then the packet
        is the full-resolution picture, kept for evidence."""
        self._imread_flag = imread_flag
        self._analysis_width = analysis_width
        # A camera with face and security analysis has one frame in two lanes, which two threads
        # may take at once: the first decodes, the second waits for its pixels (or its error).
        self._lock = threading.Lock()
        self._decoded: NDArray[np.uint8] | CameraError | None = None

    @classmethod
    def of(cls, data: NDArray[np.uint8], imread_flag: int, analysis_width: int | None) -> JpegPacket | None:
        """``data`` as a packet, or None when its header gives no size."""
        size = jpeg_size(data)
        if size is None:
            return None
        scale = _SCALE_OF_FLAG[imread_flag]
        # libjpeg's scaled output rounds up.
        width, height = -(-size[0] // scale), -(-size[1] // scale)
        if analysis_width is not None and width > analysis_width:
            width, height = analysis_width, max(1, round(height * analysis_width / width))
        return cls(data, size, (height, width, 3), imread_flag, analysis_width, reduced=width < size[0])

    def decode(self) -> NDArray[np.uint8]:
        """The pixels, decoded once however many threads ask; ``CameraError`` (``bad_frame``) when
        the data does not decode to ``shape``."""
        with self._lock:
            if self._decoded is None:
                self._decoded = self._decode()
            decoded = self._decoded
        if isinstance(decoded, CameraError):
            raise decoded
        return decoded

    def _decode(self) -> NDArray[np.uint8] | CameraError:
        try:
            frame = cv2.imdecode(self.data, self._imread_flag)
        except cv2.error as err:
            return CameraError(f"a JPEG packet does not decode: {err}", code="bad_frame")
        if frame is None:
            return CameraError(f"a JPEG packet ({self.data.size} bytes) does not decode", code="bad_frame")
        frame = shrink_to_width(np.asarray(frame, dtype=np.uint8), self._analysis_width)
        if frame.shape != self.shape:
            return CameraError(
                f"a JPEG packet decoded to {frame.shape}, its header said {self.shape}", code="bad_frame"
            )
        return frame


def _reduced_decode_flag(source_width: int, analysis_width: int | None) -> int:
    """The imdecode flag that decodes a JPEG straight at the smallest of its DCT scales (1/8, 1/4,
    1/2) still at least ``analysis_width`` wide: decoding at a quarter of the size skips most of the
    inverse DCT and the colour conversion, instead of paying for them and then shrinking."""
    if analysis_width is not None:
        for factor, flag in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if source_width // factor >= analysis_width:
                return flag
    return cv2.IMREAD_COLOR


def shrink_to_width(frame: NDArray[np.uint8], width: int | None) -> NDArray[np.uint8]:
    """``frame`` at ``width`` pixels wide, aspect kept (never enlarged; as it is when None)."""
    h, w = frame.shape[:2]
    if width is None or w <= width:
        return frame
    height = max(1, round(h * width / w))
    return np.asarray(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


CaptureFactory = Callable[[CameraConfig], CaptureLike]


class Camera:
    """One camera: a capture thread, a watchdog, and ``frames()`` for the event loop.

    ``counters``: ``frames_read`` (from the source), ``frames_delivered`` (due for analysis and
    handed to the loop), ``frames_replaced`` (a due frame replaced by a newer one before anyone took
    it, in the thread's hand-over slot or in ``frames()``), ``bad_frames`` (garbage dropped),
    ``open_failures``, ``read_failures``, ``stalls`` (watchdog fired), ``reconnects``, ``ended`` (file
    ends).

    ``capture_factory`` replaces :func:`open_capture`; tests use it only to stand in for a physical
    camera that cannot be attached here.
    """

    def __init__(self, config: CameraConfig, *, capture_factory: CaptureFactory | None = None) -> None:
        self.config = config
        self._interval_ns = int(1e9 / config.analysis_fps)
        self.device_id = config.id
        self._factory = capture_factory or open_capture
        self.counters: dict[str, int] = {}
        self.online = False
        self._offline_reported = False
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        # The capture thread's newest frame waiting for the loop: one slot, so a busy loop never
        # lets frames (or callbacks carrying them) pile up.
        self._slot: (
            tuple[int, NDArray[np.uint8] | JpegPacket, datetime, int, NDArray[np.uint8] | None] | None
        ) = None
        self._generation = 0
        self._stop = threading.Event()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: deque[CameraItem | None] = deque()
        self._latest: CameraFrame | None = None
        self._seq = 0
        self._last_good_ns = 0
        self._phase = "idle"  # of the current capture thread: opening / reading / waiting (backoff)
        self._watchdog: asyncio.Task[None] | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False

    # lifecycle

    async def __aenter__(self) -> Self:
        if self._watchdog is not None:
            raise CameraError(
                f"camera {self.device_id} is already running", device_id=self.device_id, code="busy"
            )
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._events.clear()
        self._latest = None
        self._slot = None
        self._phase = "idle"
        self._closed = False
        self._offline_reported = False
        self._last_good_ns = time.monotonic_ns()
        self._start_thread()
        self._watchdog = asyncio.create_task(self._watch(), name=f"camera-watchdog:{self.device_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        with self._lock:
            self._generation += 1
        task, self._watchdog = self._watchdog, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        threads, self._threads = self._threads, []
        loop = asyncio.get_running_loop()
        for t in threads:
            # A thread stuck inside OpenCV is left behind (daemon); it exits when its read returns.
            await loop.run_in_executor(None, t.join, 2.0)
        self.online = False
        self._closed = True
        self._events.append(None)
        if self._wake is not None:
            self._wake.set()

    def set_analysis_fps(self, fps: float | None) -> None:
        """Hand over frames at ``fps`` from now on (None: the configured rate). The agent lowers it
        while the scene is still, so an empty room costs little; frames are still read at the source
        rate, so the stream never lags."""
        rate = self.config.analysis_fps if fps is None else max(0.01, min(fps, self.config.analysis_fps))
        self._interval_ns = int(1e9 / rate)

    async def frames(self) -> AsyncIterator[CameraItem]:
        """Frames and online/offline changes, in order, until the camera is closed."""
        wake = self._wake
        if wake is None:
            raise CameraError(
                f"camera {self.device_id} is not started", device_id=self.device_id, code="not_started"
            )
        while True:
            while self._events or self._latest is not None:
                if self._events:
                    item = self._events.popleft()
                    if item is None:
                        return
                    yield item
                else:
                    frame, self._latest = self._latest, None
                    assert frame is not None
                    yield frame
            if self._closed:
                return
            wake.clear()
            await wake.wait()

    async def readings(self) -> AsyncIterator[CameraItem]:
        """The same as :meth:`frames`, under the name every other driver uses (``driver.readings()``)."""
        async for item in self.frames():
            yield item

    # event-loop side (state below is touched on the loop only, via call_soon_threadsafe, except
    # counters and the frame slot, which have their own locks)

    def _count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def _hand_over(
        self,
        generation: int,
        frame: NDArray[np.uint8] | JpegPacket,
        at: datetime,
        received_ns: int,
        original: NDArray[np.uint8] | None = None,
    ) -> None:
        """Capture thread: put the frame in the slot; wake the loop only if the slot was empty."""
        with self._lock:
            pending = self._slot is not None
            self._slot = (generation, frame, at, received_ns, original)
        if pending:
            self._count("frames_replaced")
        else:
            self._post(self._take_slot)

    def _take_slot(self) -> None:
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            self._deliver_frame(*slot)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(fn, *args)

    def _deliver_frame(
        self,
        generation: int,
        frame: NDArray[np.uint8] | JpegPacket,
        at: datetime,
        received_ns: int,
        original: NDArray[np.uint8] | None,
    ) -> None:
        if generation != self._generation or self._closed:
            return  # from an abandoned thread
        self._last_good_ns = received_ns
        if not self.online:
            self._set_online("frames arrive")
        self._seq += 1
        if self._latest is not None:
            self._count("frames_replaced")
        self._latest = CameraFrame(self.device_id, frame, at, self._seq, received_ns, original)
        self._count("frames_delivered")
        self._wake_up()

    def _set_online(self, reason: str) -> None:
        self.online = True
        self._offline_reported = False
        log.info("camera %s online: %s", self.device_id, reason)
        self._push_event(CameraOnline(self.device_id, reason, utc_now()))

    def _set_offline(self, generation: int, reason: str) -> None:
        if generation != self._generation or self._closed:
            return
        if self.online or not self._offline_reported:
            self.online = False
            self._offline_reported = True
            log.warning("camera %s offline: %s", self.device_id, reason)
            self._push_event(CameraOffline(self.device_id, reason, utc_now()))

    def _push_event(self, event: CameraItem) -> None:
        # A frame taken before the change is handed out before it, so the order is kept.
        if self._latest is not None:
            self._events.append(self._latest)
            self._latest = None
        self._events.append(event)
        self._wake_up()

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _set_phase(self, generation: int, phase: str, at_ns: int) -> None:
        if generation != self._generation:
            return
        self._phase = phase
        if phase in ("opening", "reading"):
            # "No frames for N s" counts from the moment the thread started to try.
            self._last_good_ns = max(self._last_good_ns, at_ns)

    def _count_from_thread(self, generation: int, key: str) -> None:
        if generation == self._generation:  # an abandoned thread's late news is not counted
            self._count(key)

    async def _watch(self) -> None:
        period = min(0.25, self.config.stall_timeout_s / 4)
        while True:
            await asyncio.sleep(period)
            if self._phase not in ("opening", "reading"):
                continue  # the capture thread is waiting out a backoff and reports for itself
            silent_s = (time.monotonic_ns() - self._last_good_ns) / 1e9
            if silent_s < self.config.stall_timeout_s:
                continue
            reason = f"no frames for {silent_s:.1f} s"
            self._count("stalls")
            self._set_offline(self._generation, reason)
            # The capture may be stuck inside OpenCV: abandon it and start over with a fresh thread.
            with self._lock:
                self._generation += 1
            self._last_good_ns = time.monotonic_ns()
            self._start_thread(initial_delay_s=0.0)

    def _start_thread(self, initial_delay_s: float = 0.0) -> None:
        generation = self._generation
        t = threading.Thread(
            target=self._capture_loop,
            args=(generation, initial_delay_s),
            name=f"camera-{self.device_id}-{generation}",
            daemon=True,
        )
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    # capture thread

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _capture_loop(self, generation: int, initial_delay_s: float) -> None:
        lower_thread_priority()  # decoding yields the CPU to the gates' threads (see the function)
        show_thread_name(f"cam {self.device_id}")
        cfg = self.config
        backoff = Backoff(cfg.backoff)
        kind, _ = parse_source(cfg.analysis_url)
        if initial_delay_s:
            self._stop.wait(initial_delay_s)
        first = True
        while self._current(generation):
            if not first:
                self._count_from_thread(generation, "reconnects")
            first = False
            cap: CaptureLike | None = None
            self._post(self._set_phase, generation, "opening", time.monotonic_ns())
            try:
                cap = self._factory(cfg)
                if not cap.isOpened():
                    raise CameraError(
                        f"cannot open {redact_url(cfg.analysis_url)}", device_id=cfg.id, code="open_failed"
                    )
            except Exception as err:  # OpenCV and factories raise assorted types
                log.debug("camera %s: open failed: %r", cfg.id, err)
                self._count_from_thread(generation, "open_failures")
                self._post(self._set_offline, generation, f"cannot open camera: {err}")
                if cap is not None:
                    with contextlib.suppress(Exception):
                        cap.release()
                self._post(self._set_phase, generation, "waiting", time.monotonic_ns())
                self._stop.wait(backoff.next_delay())
                continue
            self._post(self._set_phase, generation, "reading", time.monotonic_ns())
            try:
                reason = self._read_frames(generation, cap, kind, backoff)
            finally:
                with contextlib.suppress(Exception):
                    cap.release()
            if reason is None:
                return
            self._post(self._set_offline, generation, reason)
            self._post(self._set_phase, generation, "waiting", time.monotonic_ns())
            self._stop.wait(backoff.next_delay())

    def _read_frames(
        self, generation: int, cap: CaptureLike, kind: SourceKind, backoff: Backoff
    ) -> str | None:
        """Read until the source fails (returns why) or the thread is retired (returns None)."""
        cfg = self.config
        pace_ns = 0
        if kind == "file" and cfg.realtime:
            fps = cap.get(cv2.CAP_PROP_FPS)
            pace_ns = int(1e9 / fps) if 0 < fps <= 240 else int(1e9 / 25)
        next_due_ns = 0
        next_frame_ns = time.monotonic_ns()
        shape: tuple[int, ...] | None = None
        consecutive_bad = 0
        resized: tuple[tuple[int, ...], int] | None = None  # a new size, and frames of it in a row
        while self._current(generation):
            if pace_ns:
                wait_ns = next_frame_ns - time.monotonic_ns()
                if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):
                    return None
                next_frame_ns = max(next_frame_ns + pace_ns, time.monotonic_ns() - pace_ns)
            try:
                # grab() takes the frame off the stream without converting it to BGR; only frames
                # due for analysis pay for retrieve().
                ok = cap.grab()
            except Exception as err:  # a broken backend may raise instead of returning False
                self._count_from_thread(generation, "read_failures")
                return f"read failed: {err}"
            if not self._current(generation):
                return None
            if not ok:
                if kind == "file":
                    self._count_from_thread(generation, "ended")
                    if cfg.loop and shape is not None:
                        # Rewinding is cheaper than reopening and keeps the camera online.
                        if not _rewind(cap):
                            return "video file ended and cannot rewind"
                        continue
                    return "video file ended"
                self._count_from_thread(generation, "read_failures")
                return "read failed (stream closed or timed out)"
            now_ns = time.monotonic_ns()
            self._count_from_thread(generation, "frames_read")
            interval_ns = self._interval_ns  # may be lowered while the scene is still
            # A fifth of an interval early still counts: frame times jitter, and a 10 fps source
            # analysed at 5 fps should give every second frame, not an irregular pattern.
            if now_ns < next_due_ns - interval_ns // 5:
                continue  # not due for analysis: skipped (already taken off the stream, so no lag)
            try:
                picture = self._retrieve(cap)
            except Exception as err:
                self._count_from_thread(generation, "read_failures")
                return f"read failed: {err}"
            problem = check_picture(picture, shape, cfg.max_frame_pixels)
            if problem is not None and check_picture(picture, None, cfg.max_frame_pixels) is None:
                # Sound but of another size than the stream so far: someone changed the camera's
                # resolution, or one odd frame. Followed once it holds for a few frames in a row
                # (the pipelines start afresh on a new size), instead of refusing every frame until
                # the stall watchdog reopens the camera.
                assert picture is not None and shape is not None
                count = resized[1] + 1 if resized is not None and resized[0] == picture.shape else 1
                resized = (picture.shape, count)
                if count >= RESOLUTION_FOLLOW_FRAMES:
                    log.warning(
                        "camera %s: the picture changed from %s to %s (%d frames in a row); following it",
                        cfg.id,
                        _size_text(shape),
                        _size_text(picture.shape),
                        count,
                    )
                    self._count_from_thread(generation, "resolution_changes")
                    shape, resized, problem = picture.shape, None, None
            if problem is not None:
                consecutive_bad += 1
                self._count_from_thread(generation, "bad_frames")
                if consecutive_bad == 1 or consecutive_bad % 100 == 0:
                    log.warning(
                        "camera %s: dropped a garbage frame (%s), %d in a row",
                        cfg.id,
                        problem,
                        consecutive_bad,
                    )
                continue
            assert picture is not None  # check_picture passed it
            consecutive_bad = 0
            resized = None
            if shape is None:
                shape = picture.shape  # as decoded: the next frames are checked against it
                backoff.reset()
            # The main stream's picture is kept for evidence when the analysed frame is smaller.
            original: NDArray[np.uint8] | None = None
            if isinstance(picture, JpegPacket):
                if picture.reduced and cfg.substream_url is None:
                    original = picture.data
            else:
                shrunk = shrink_to_width(picture, cfg.analysis_width)
                if shrunk is not picture and cfg.substream_url is None:
                    original = picture
                picture = shrunk
            behind = now_ns - next_due_ns >= interval_ns
            next_due_ns = now_ns + interval_ns if behind else next_due_ns + interval_ns
            self._hand_over(generation, picture, utc_now(), now_ns, original)
        return None

    def _retrieve(self, cap: CaptureLike) -> NDArray[np.uint8] | JpegPacket | None:
        """The grabbed frame: an MJPEG source's packet as it is (decoded by whoever analyses it),
        any other source's decoded pixels; None when there is nothing usable."""
        if isinstance(cap, MjpegPackets):
            return cap.retrieve_packet(self.config.analysis_width)
        ok, frame = cap.retrieve()
        return frame if ok else None


def _rewind(cap: CaptureLike) -> bool:
    setter = getattr(cap, "set", None)
    if setter is None:
        return False
    return bool(setter(cv2.CAP_PROP_POS_FRAMES, 0))


__all__ = ["Camera", "CaptureFactory", "CaptureLike", "MjpegPackets", "check_frame", "open_capture"]

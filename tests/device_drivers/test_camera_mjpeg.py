"""MJPEG sources read as JPEG packets: only the frames due for analysis are decoded, and they are
the source's pictures, in order, as FFmpeg would have decoded them. Real files from cv2.VideoWriter."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pydantic
import pytest

from device_drivers import CameraError
from device_drivers.camera.config import CameraConfig
from device_drivers.camera.driver import Camera, JpegPacket, MjpegPackets, jpeg_size, open_capture
from device_drivers.readings import CameraFrame
from tests.support.jpeg import without_scan

FRAMES = 12
SIZE = (320, 240)


def pictures() -> list[npt.NDArray[np.uint8]]:
    """Frames that differ in content, not only in brightness: a gradient and a block that moves."""
    w, h = SIZE
    ramp = np.tile(np.linspace(0, 200, w, dtype=np.uint8), (h, 1))
    out = []
    for k in range(FRAMES):
        frame = np.asarray(
            cv2.merge([ramp, ramp[:, ::-1], np.full((h, w), 40 + 10 * k, np.uint8)]), dtype=np.uint8
        )
        cv2.rectangle(frame, (20 * k, 60), (20 * k + 40, 140), (255, 255, 255), -1)
        out.append(frame)
    return out


def write(path: Path, fourcc: str, fps: float = 20.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, SIZE)
    assert writer.isOpened()
    for frame in pictures():
        writer.write(frame)
    writer.release()
    return path


def which(frame: npt.NDArray[np.uint8]) -> int:
    """The index of the source picture ``frame`` shows (the nearest one)."""
    return int(np.argmin([np.abs(frame.astype(int) - p).mean() for p in pictures()]))


def test_mjpeg_packets_decode_to_the_pictures_ffmpeg_gives(tmp_path: Path) -> None:
    clip = write(tmp_path / "clip.avi", "MJPG")
    packets = open_capture(CameraConfig(id="cam", url=str(clip)))
    assert isinstance(packets, MjpegPackets)
    ffmpeg = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)
    try:
        for k in range(FRAMES):
            assert packets.grab() and ffmpeg.grab()
            ok, frame = packets.retrieve()
            ok_ffmpeg, reference = ffmpeg.retrieve()
            assert ok and ok_ffmpeg and frame.shape == reference.shape == (SIZE[1], SIZE[0], 3)
            assert which(frame) == k  # the probe at open did not cost the first frame
            # Two JPEG decoders (libjpeg-turbo, FFmpeg's) differ by rounding, never by content.
            assert np.abs(frame.astype(int) - reference).mean() < 2.0
        assert not packets.grab()  # the end of the file, as with FFmpeg
    finally:
        packets.release()
        ffmpeg.release()


def test_other_codecs_are_decoded_by_ffmpeg(tmp_path: Path) -> None:
    clip = write(tmp_path / "clip.avi", "FMP4")  # MPEG-4 part 2: frames depend on earlier ones
    capture = open_capture(CameraConfig(id="cam", url=str(clip)))
    try:
        assert not isinstance(capture, MjpegPackets)
        assert capture.grab()
        ok, frame = capture.retrieve()
        assert ok and which(frame) == 0
    finally:
        capture.release()


def test_a_camera_skips_frames_undecoded_and_delivers_the_due_ones_in_order(tmp_path: Path) -> None:
    clip = write(tmp_path / "clip.avi", "MJPG", fps=20.0)
    config = CameraConfig(id="cam", url=str(clip), analysis_fps=5.0, loop=True)

    async def scenario() -> tuple[list[int], dict[str, int]]:
        seen: list[int] = []
        async with Camera(config) as cam:
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    seen.append(which(item.frame))
                if len(seen) == 8:
                    return seen, dict(cam.counters)
        raise AssertionError("the camera closed")

    seen, counters = asyncio.run(asyncio.wait_for(scenario(), 30))
    # 20 frames/s analysed at 5: about every fourth picture, through the loop's rewinds; the skipped
    # packets were never decoded, and each delivered frame is the picture of its own packet (never a
    # repeat of the one before, as a frame decoded from a stale packet would be).
    assert counters["frames_read"] >= 3 * counters["frames_delivered"]
    assert counters.get("bad_frames", 0) == 0 and counters["ended"] >= 1
    assert all((b - a) % FRAMES != 0 for a, b in itertools.pairwise(seen)), seen


def test_substream_url_is_what_is_opened(tmp_path: Path) -> None:
    sub = write(tmp_path / "sub.avi", "MJPG")
    config = CameraConfig(id="cam", url=str(tmp_path / "main-missing.avi"), substream_url=str(sub))
    assert config.analysis_url == str(sub)
    capture = open_capture(config)  # the missing main file would raise not_found if it were opened
    try:
        assert capture.grab()
        ok, frame = capture.retrieve()
        assert ok and frame.shape == (SIZE[1], SIZE[0], 3) and which(frame) == 0
    finally:
        capture.release()


def test_substream_url_is_validated_like_url() -> None:
    with pytest.raises(pydantic.ValidationError, match="unsupported camera URL scheme"):
        CameraConfig(id="cam", url="rtsp://10.0.0.5/main", substream_url="gopher://x")
    assert CameraConfig(id="cam", url="rtsp://10.0.0.5/main").analysis_url == "rtsp://10.0.0.5/main"


def _delivered(config: CameraConfig, count: int) -> tuple[list[npt.NDArray[np.uint8]], dict[str, int]]:
    async def scenario() -> tuple[list[npt.NDArray[np.uint8]], dict[str, int]]:
        frames: list[npt.NDArray[np.uint8]] = []
        async with Camera(config) as cam:
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    frames.append(item.frame)
                if len(frames) == count:
                    return frames, dict(cam.counters)
        raise AssertionError("the camera closed")

    return asyncio.run(asyncio.wait_for(scenario(), 30))


def small(picture: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    height = round(picture.shape[0] * width / picture.shape[1])
    return np.asarray(cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


@pytest.mark.parametrize("fourcc", ["MJPG", "mp4v"])
def test_analysis_width_shrinks_frames_right_after_decode(tmp_path: Path, fourcc: str) -> None:
    """MJPEG packets are decoded at half size (320 → 160 wide needs a 1/2 JPEG scale) and other
    codecs are shrunk after FFmpeg's decode: either way the frames come out 100 pixels wide with the
    source's aspect, every frame (the shape check runs on the decoded size, so none is 'bad')."""
    clip = write(tmp_path / f"clip-{fourcc}.avi", fourcc, fps=20.0)
    config = CameraConfig(id="cam", url=str(clip), analysis_fps=10.0, analysis_width=100, loop=True)
    frames, counters = _delivered(config, 6)
    assert all(f.shape == (75, 100, 3) for f in frames), [f.shape for f in frames]
    assert counters.get("bad_frames", 0) == 0
    # Still the source's pictures: each is close to one shrunk picture of the clip.
    references = [small(p, 100) for p in pictures()]
    for frame in frames:
        assert min(float(np.abs(frame.astype(int) - r).mean()) for r in references) < 12


@pytest.mark.parametrize("fourcc", ["MJPG", "mp4v"])
def test_a_shrunk_frame_keeps_the_main_streams_picture_for_evidence(tmp_path: Path, fourcc: str) -> None:
    clip = write(tmp_path / f"clip-{fourcc}.avi", fourcc, fps=20.0)

    async def first(config: CameraConfig) -> CameraFrame:
        async with Camera(config) as cam:
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    return item
        raise AssertionError("the camera closed")

    shrunk = asyncio.run(
        asyncio.wait_for(first(CameraConfig(id="cam", url=str(clip), analysis_width=100, loop=True)), 30)
    )
    assert shrunk.frame.shape == (75, 100, 3)
    assert shrunk.original is not None
    # MJPEG keeps the packet (decoded on demand), other codecs the decoded frame before the shrink.
    assert shrunk.original.ndim == (1 if fourcc == "MJPG" else 3)
    full = shrunk.full_resolution()
    assert full.shape == (SIZE[1], SIZE[0], 3)
    assert float(np.abs(small(full, 100).astype(int) - shrunk.frame).mean()) < 12  # the same picture
    # Analysed at the source's size, or from a sub-stream (the main stream is not open): nothing more.
    plain = asyncio.run(asyncio.wait_for(first(CameraConfig(id="cam", url=str(clip), loop=True)), 30))
    assert plain.original is None and plain.full_resolution() is plain.frame
    sub = CameraConfig(
        id="cam", url="rtsp://10.0.0.9/main", substream_url=str(clip), analysis_width=100, loop=True
    )
    assert asyncio.run(asyncio.wait_for(first(sub), 30)).original is None


def test_mjpeg_packets_decode_at_the_smallest_jpeg_scale_wide_enough(tmp_path: Path) -> None:
    clip = write(tmp_path / "clip.avi", "MJPG")
    sizes = {}
    for width in (None, 200, 160, 80, 64):
        capture = open_capture(CameraConfig(id="cam", url=str(clip), analysis_width=width or 320))
        try:
            assert isinstance(capture, MjpegPackets) and capture.grab()
            ok, frame = capture.retrieve()
            assert ok
            sizes[width] = frame.shape[1]
        finally:
            capture.release()
    # 320 wide: 200 needs the full decode, 160 a half, 80 a quarter, and 64 a quarter too (an
    # eighth, 40, would be narrower than asked).
    assert sizes == {None: 320, 200: 320, 160: 160, 80: 80, 64: 80}


def test_analysis_width_never_enlarges(tmp_path: Path) -> None:
    clip = write(tmp_path / "clip.avi", "MJPG", fps=20.0)
    config = CameraConfig(id="cam", url=str(clip), analysis_fps=10.0, analysis_width=640, loop=True)
    frames, _ = _delivered(config, 2)
    assert all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)


def jpeg(picture: npt.NDArray[np.uint8], *params: int) -> npt.NDArray[np.uint8]:
    ok, data = cv2.imencode(".jpg", picture, list(params))
    assert ok
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def test_due_frames_are_handed_over_as_packets_and_decoded_by_whoever_reads_them(tmp_path: Path) -> None:
    """The capture thread decodes nothing: a frame's pixels are decoded the first time they are read
    (by the inference thread that takes the frame), its shape is known before that from the JPEG
    header, and the pixels are the source's picture."""
    clip = write(tmp_path / "clip.avi", "MJPG", fps=20.0)
    for width, shape in ((None, (240, 320, 3)), (100, (75, 100, 3)), (200, (150, 200, 3))):
        config = CameraConfig(id="cam", url=str(clip), analysis_fps=10.0, analysis_width=width, loop=True)

        async def scenario(config: CameraConfig = config) -> list[CameraFrame]:
            frames: list[CameraFrame] = []
            async with Camera(config) as cam:
                async for item in cam.frames():
                    if isinstance(item, CameraFrame):
                        frames.append(item)
                    if len(frames) == 4:
                        return frames
            raise AssertionError("the camera closed")

        frames = asyncio.run(asyncio.wait_for(scenario(), 30))
        assert not any(f.decoded for f in frames)
        assert all(f.shape == shape for f in frames)
        # Shrunk (at a reduced JPEG scale or after a full decode): the packet is kept for evidence.
        assert all((f.original is not None) == (width is not None) for f in frames), width
        if width is not None:
            assert frames[0].full_resolution().shape == (240, 320, 3)
        pixels = frames[0].frame
        assert frames[0].decoded and frames[0].frame is pixels  # decoded once, then kept
        assert pixels.shape == shape and pixels.dtype == np.uint8
        if width is None:
            # Decoded long after their packets were read, each is still its own packet's picture
            # (the packet is the frame's own copy, not the capture's buffer, which would make them
            # all the newest picture): consecutive frames show different pictures.
            seen = [which(f.frame) for f in frames]
            assert all((b - a) % FRAMES != 0 for a, b in itertools.pairwise(seen)), seen
            reference = pictures()[seen[0]]
            assert float(np.abs(pixels.astype(int) - reference).mean()) < 2.0


@pytest.mark.parametrize("size", [(320, 240), (321, 241), (643, 361), (17, 9)])
@pytest.mark.parametrize("analysis_width", [None, 300, 160, 100, 40, 9])
def test_a_packets_header_shape_is_the_shape_it_decodes_to(
    size: tuple[int, int], analysis_width: int | None
) -> None:
    # Odd sizes too: libjpeg rounds a reduced scale up, and the shrink rounds the height.
    picture = np.asarray(cv2.resize(pictures()[3], size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    data = jpeg(picture)
    for flag in (
        cv2.IMREAD_COLOR,
        cv2.IMREAD_REDUCED_COLOR_2,
        cv2.IMREAD_REDUCED_COLOR_4,
        cv2.IMREAD_REDUCED_COLOR_8,
    ):
        packet = JpegPacket.of(data, flag, analysis_width)
        assert packet is not None
        assert packet.decode().shape == packet.shape, (size, analysis_width, flag)


def test_jpeg_size_reads_baseline_progressive_and_headers_with_metadata() -> None:
    picture = pictures()[0]
    assert jpeg_size(jpeg(picture)) == (320, 240)
    assert jpeg_size(jpeg(picture, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)) == (320, 240)
    plain = jpeg(picture).tobytes()
    # A camera's APP1 (EXIF) segment of 30 KB and fill bytes before the next marker.
    app1 = b"\xff\xe1" + (2 + 30_000).to_bytes(2, "big") + bytes(30_000)
    with_metadata = plain[:2] + app1 + b"\xff\xff" + plain[2:]
    assert jpeg_size(np.frombuffer(with_metadata, np.uint8)) == (320, 240)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\x00" * 64, "no start-of-image marker"),
        (b"\xff\xd8\xff", "cut inside the first segment"),
        (b"\xff\xd8\xff\xe0\x00\x01", "a segment length under 2"),
        (b"\xff\xd8\x12\x34\x00\x10", "not a marker where one must be"),
        (b"\xff\xd8\xff\xda\x00\x08" + bytes(16), "the scan before any frame header"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x01\x40\x03" + bytes(9), "a height of 0"),
        (b"\xff\xd8\xff\xc0\x00\x11\x08\x00", "cut inside the frame header"),
    ],
)
def test_jpeg_size_refuses_what_is_not_a_jpeg_header(data: bytes, why: str) -> None:
    assert jpeg_size(np.frombuffer(data, np.uint8)) is None, why


class Packets:
    """Stands in for OpenCV's capture in raw-stream mode (an HTTP MJPEG camera cannot be attached
    here): each ``retrieve`` gives the next packet, as ``cv2.VideoCapture`` gives one after ``grab``."""

    def __init__(self, packets: list[bytes]) -> None:
        self.packets = list(packets)
        self.current = b""

    def isOpened(self) -> bool:
        return True

    def grab(self) -> bool:
        if not self.packets:
            return False
        time.sleep(0.025)  # a camera sending 40 frames/s: each one due at 60 analysed frames/s
        self.current = self.packets.pop(0)
        return True

    def retrieve(self) -> tuple[bool, npt.NDArray[np.uint8]]:
        return True, np.frombuffer(self.current, np.uint8).reshape(1, -1)

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def test_a_packet_without_a_header_is_a_bad_frame_and_one_that_does_not_decode_fails_on_reading() -> None:
    good = jpeg(pictures()[2]).tobytes()
    garbage = bytes(range(256)) * 8
    # The header and nothing after it: the size is there, the picture is not.
    header_only = without_scan(good)
    config = CameraConfig(id="cam", url="http://10.0.0.9/mjpeg", analysis_fps=60.0, stall_timeout_s=30)
    stream = Packets([good, garbage, header_only, good] + [good] * 50)

    async def scenario() -> tuple[list[CameraFrame], dict[str, int]]:
        frames: list[CameraFrame] = []
        async with Camera(config, capture_factory=lambda cfg: MjpegPackets(stream)) as cam:  # type: ignore[arg-type]
            async for item in cam.frames():
                if isinstance(item, CameraFrame):
                    frames.append(item)
                    # Each frame read before the next is taken: none is replaced unseen.
                    with contextlib.suppress(CameraError):
                        _ = item.frame
                if len(frames) == 3:
                    return frames, dict(cam.counters)
        raise AssertionError("the camera closed")

    frames, counters = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert counters["bad_frames"] >= 1  # the garbage, refused by its header at the capture
    assert all(f.shape == (240, 320, 3) for f in frames)
    unreadable = [f for f in frames if not f.decoded]
    assert unreadable, "the header-only packet was handed over (its header is fine)"
    with pytest.raises(CameraError, match="does not decode") as err:
        _ = unreadable[0].frame
    assert err.value.code == "bad_frame"
    assert which(frames[0].frame) == 2


def test_a_frame_in_two_lanes_is_decoded_once_when_two_threads_take_it_at_once() -> None:
    """A camera with face and security analysis puts one frame in two lanes; two inference threads
    may read its pixels at the same moment. They get the one decoded array (decoding is a third of
    an idle camera's cost: twice would show in the idle bench), and a packet that does not decode
    gives both the same error."""
    big = np.asarray(cv2.resize(pictures()[5], (1920, 1080)), dtype=np.uint8)
    data = jpeg(big)
    for attempt in range(20):  # the threads meet inside the decode in most attempts, not all
        packet = JpegPacket.of(data, cv2.IMREAD_COLOR, None)
        assert packet is not None
        frame = CameraFrame("cam", packet, datetime.now(UTC), attempt + 1)
        start = threading.Barrier(4)
        got: list[object] = []

        def read(
            frame: CameraFrame = frame, start: threading.Barrier = start, got: list[object] = got
        ) -> None:
            start.wait()
            got.append(frame.frame)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(got) == 4 and all(pixels is got[0] for pixels in got)
    broken = JpegPacket.of(np.frombuffer(without_scan(data.tobytes()), np.uint8), cv2.IMREAD_COLOR, None)
    assert broken is not None
    errors = []
    for _ in range(2):
        with pytest.raises(CameraError) as err:
            broken.decode()
        errors.append(err.value)
    assert errors[0] is errors[1]  # decoded (and failed) once

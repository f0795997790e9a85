"""PersonPipeline: motion gate → NanoDet → tracker → zones (+ tamper) on composited clips."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from scene_clips import cover, shared_person_detector

from device_drivers import Camera, CameraConfig, CameraFrame, CameraOffline
from vision.config import PersonPipelineConfig, TamperConfig
from vision.person import PersonPipeline
from vision.runtime import InvalidImageError
from vision.scenes import (
    SPRITE_HEIGHT,
    WalkerPath,
    corridor_background,
    linear_path,
    person_sprite,
    stand_path,
    walk_clip,
    write_video,
)
from vision.tamper import StreamWatch
from vision.zones import CameraZones, PolygonZone, ZoneEntered, ZoneLeft

FPS = 5.0
# The right 40% of the picture, in normalized coordinates so it follows the frame size.
ZONES = CameraZones(
    camera_id="cam1",
    zones=[
        PolygonZone(id="yard", coords="normalized", points=[(0.6, 0.4), (1.0, 0.4), (1.0, 1.0), (0.6, 1.0)])
    ],
)


def clip() -> list[np.ndarray]:
    # Walks into the zone, stands perfectly still for 6 s, walks out again.
    arrive = linear_path((200.0, 600.0), (1000.0, 600.0), 12)
    leave = linear_path((1000.0, 600.0), (300.0, 600.0), 12)
    path = arrive + stand_path((1000.0, 600.0), 30, sway_px=0.0) + leave
    walker = WalkerPath(person_sprite("figure"), path, SPRITE_HEIGHT["figure"])
    return [cf.frame for cf in walk_clip(corridor_background(), [walker], len(path))]


def run(pipeline: PersonPipeline, frames: list[np.ndarray]) -> list[object]:
    out: list[object] = []
    ids: set[int] = set()
    for k, f in enumerate(frames):
        res = pipeline.process(f, k / FPS)
        out += res.zones
        ids |= {t.track_id for t in res.tracks}
        assert not res.removed or k > 40  # nobody is dropped while standing still
    assert len(ids) == 1, ids
    return out


def test_motion_gating_skips_the_detector_but_keeps_a_still_person_tracked() -> None:
    frames = clip()
    no_tamper = PersonPipelineConfig(tamper=None)
    gated = PersonPipeline("cam1", ZONES, no_tamper, detector=shared_person_detector())
    gated_obs = run(gated, frames)
    ungated = PersonPipeline(
        "cam1",
        ZONES,
        PersonPipelineConfig(tamper=None, motion_gating=False),
        detector=shared_person_detector(),
    )
    ungated_obs = run(ungated, frames)
    assert ungated.detector_runs == len(frames)
    # While the person stood still the detector mostly did not run...
    assert gated.detector_runs < len(frames) - 15
    # ...and the zone story is the same: entered once, left once, with the same dwell to a frame.
    kinds = [(type(o).__name__, getattr(o, "zone_id", None)) for o in gated_obs]
    assert kinds == [("ZoneEntered", "yard"), ("ZoneLeft", "yard")]
    assert kinds == [(type(o).__name__, getattr(o, "zone_id", None)) for o in ungated_obs]
    left_g = next(o for o in gated_obs if isinstance(o, ZoneLeft))
    left_u = next(o for o in ungated_obs if isinstance(o, ZoneLeft))
    assert left_g.dwell_s == pytest.approx(left_u.dwell_s, abs=2 / FPS)
    assert left_g.dwell_s > 5.0
    entered = next(o for o in gated_obs if isinstance(o, ZoneEntered))
    assert entered.point[0] >= 0.6 * 1280


def test_bad_frame_is_counted_and_changes_nothing() -> None:
    pipeline = PersonPipeline(
        "cam1", ZONES, PersonPipelineConfig(tamper=None), detector=shared_person_detector()
    )
    pipeline.process(corridor_background(), 0.0)
    with pytest.raises(InvalidImageError) as err:
        pipeline.process(np.zeros((720, 1280), np.float32), 0.2)
    assert err.value.code == "bad_frame" and err.value.camera_id == "cam1"
    assert pipeline.bad_frames == 1 and pipeline.frames == 1
    assert pipeline.process(corridor_background(), 0.4).tracks == []


def test_normalized_zones_follow_the_frame_size_and_tamper_reports() -> None:
    cfg = PersonPipelineConfig(
        tamper=TamperConfig(reference_frames=2, trigger_frames=3, clear_frames=3, check_every_s=0)
    )
    pipeline = PersonPipeline("cam1", ZONES, cfg, detector=shared_person_detector())
    small = np.ascontiguousarray(corridor_background(640, 360))
    changes = []
    for k in range(4):
        changes += pipeline.process(small, k / FPS).tamper
    judge = pipeline.zone_judge
    assert judge is not None and judge.config.zones[0].points[0] == (0.6 * 640, 0.4 * 360)
    for k in range(4, 8):
        changes += pipeline.process(cover(small), k / FPS).tamper
    assert [(c.kind, c.active) for c in changes] == [("covered", True)]
    assert results_active(pipeline, cover(small), 8 / FPS) == {"covered"}
    watch = StreamWatch("cam1", cfg.tamper.stream_timeout_s if cfg.tamper else 10.0)
    watch.seen(8 / FPS)
    assert [c.kind for c in watch.check(8 / FPS + 60)] == ["stream_lost"]


def results_active(pipeline: PersonPipeline, frame: NDArray[np.uint8], at: float) -> set[str]:
    """The tamper states a frame's result reports as on."""
    return set(pipeline.process(frame, at).tamper_active)


def test_resolution_change_ends_tracks_and_zones_follow() -> None:
    pipeline = PersonPipeline(
        "cam1", ZONES, PersonPipelineConfig(tamper=None), detector=shared_person_detector()
    )
    big = corridor_background()
    paste = WalkerPath(person_sprite("figure"), stand_path((1000.0, 600.0), 6), SPRITE_HEIGHT["figure"])
    frames = [cf.frame for cf in walk_clip(big, [paste], 6)]
    results = [pipeline.process(f, k / FPS) for k, f in enumerate(frames)]
    (tid,) = {t.track_id for t in results[-1].tracks}
    assert any(isinstance(o, ZoneEntered) for r in results for o in r.zones)
    small = np.ascontiguousarray(frames[-1][::2, ::2])
    res = pipeline.process(small, 6 / FPS)
    assert [t.track_id for t in res.removed] == [tid]
    assert [(type(o).__name__, getattr(o, "reason", None)) for o in res.zones] == [("ZoneLeft", "track_lost")]
    later = [pipeline.process(small, (7 + k) / FPS) for k in range(5)]
    ids = {t.track_id for r in later for t in r.tracks}
    assert ids and tid not in ids  # a new id for the same person, never the old one
    assert any(isinstance(o, ZoneEntered) for r in later for o in r.zones)  # the zone scaled with the picture


def test_camera_file_through_the_pipeline_off_the_event_loop(tmp_path: Path) -> None:
    # The wiring the agent does: camera frames on the loop, analysis in a worker thread.
    path = linear_path((200.0, 600.0), (1100.0, 600.0), 40)
    walker = WalkerPath(person_sprite("figure"), path, SPRITE_HEIGHT["figure"])
    video = write_video(
        (cf.frame for cf in walk_clip(corridor_background(), [walker], 40)), tmp_path / "walk.avi"
    )
    camera = Camera(CameraConfig(id="cam1", url=str(video), analysis_fps=5.0))
    pipeline = PersonPipeline("cam1", ZONES, detector=shared_person_detector())
    observations: list[object] = []
    ids: set[int] = set()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tick = asyncio.create_task(ticker())
        with ThreadPoolExecutor(max_workers=1) as pool:
            async with camera:
                async for item in camera.frames():
                    if isinstance(item, CameraOffline):
                        break  # end of the file
                    if isinstance(item, CameraFrame):
                        res = await loop.run_in_executor(pool, pipeline.process, item.frame, item.monotonic_s)
                        observations.extend(res.zones)
                        ids.update(t.track_id for t in res.tracks)
        tick.cancel()

    asyncio.run(asyncio.wait_for(main(), 30.0))
    assert len(ids) == 1
    assert [type(o).__name__ for o in observations] == ["ZoneEntered"]
    assert ticks > 100  # the loop kept running while frames were analysed (4 s of video)


def test_each_result_carries_the_zone_state_rules_need() -> None:
    # Rules read occupants and dwell from the result, never from the pipeline's judge.
    pipeline = PersonPipeline(
        "cam1", ZONES, PersonPipelineConfig(tamper=None), detector=shared_person_detector()
    )
    frames = clip()
    inside_from: float | None = None
    for k, f in enumerate(frames):
        res = pipeline.process(f, k / FPS)
        judge = pipeline.zone_judge
        assert judge is not None
        assert res.occupants == {"yard": judge.occupants("yard")}
        assert res.camera_id == "cam1" and res.frame_size == (1280, 720) and res.tamper_active == {}
        if any(isinstance(o, ZoneEntered) for o in res.zones):
            inside_from = res.at
        if res.occupants["yard"]:
            assert inside_from is not None
            assert res.dwell_s("yard") == {
                tid: pytest.approx(res.at - inside_from) for tid in res.occupants["yard"]
            }
    assert inside_from is not None and res.occupants["yard"] == {}

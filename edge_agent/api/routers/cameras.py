"""Cameras for the console's zone editor: each camera's newest frame and zones, and the YAML of zones
drawn on it (admin), checked in the whole configuration before anyone pastes it.

Nothing here changes the gateway: the edited zones come back as a ``security:`` fragment built from
the configuration's own models (so it is valid on its own), together with the result of validating
the agent's configuration file with the fragment put in. Applying it stays with ``edge-agent config``
or the signed ``push_config`` command, which own installing a file with rollback.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Response
from pydantic import ValidationError

from device_drivers import CameraError, CameraFrame
from edge_agent.api.deps import AUTH_RESPONSES, BODY_RESPONSES, Admin, ApiContext, ApiError, Ctx, Viewer
from edge_agent.api.models import (
    CameraLine,
    CameraList,
    CameraView,
    CameraZone,
    ConfigIssueOut,
    ConfigValidation,
    ErrorBody,
    FrameInfo,
    ZoneEdit,
    ZoneYaml,
)
from edge_agent.config import CameraSetup, ConfigFileError, parse_config
from sync import format_time
from vision import evidence_jpeg
from vision.config import CameraZones, LineZone, Point, PolygonZone, polygon_problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/cameras", tags=["cameras"], responses=AUTH_RESPONSES)

CAMERA_ID = r"^[A-Za-z0-9_.-]{1,64}$"
CameraId = Annotated[str, Path(pattern=CAMERA_ID, description="Camera (device) id.")]
# A hand-drawn zone has a handful of corners; thousands would make every frame's judgement slow.
MAX_POINTS = 256

_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown_camera: no camera with this id is configured."}
}


def _setup(ctx: ApiContext, camera_id: str) -> CameraSetup:
    for setup in ctx.services.config.current().cameras:
        if setup.id == camera_id:
            return setup
    raise ApiError(404, "unknown_camera", f"no camera {camera_id} is configured")


def _view(setup: CameraSetup, frame: CameraFrame | None) -> CameraView:
    security = setup.security
    info = None
    if frame is not None:
        height, width = frame.shape[:2]
        info = FrameInfo(width=int(width), height=int(height), at=format_time(frame.at))
    return CameraView(
        id=setup.id,
        kind=setup.device.kind,
        frame=info,
        frame_url=f"/api/v1/cameras/{setup.id}/frame.jpg",
        security=security is not None,
        reference_size=security.reference_size if security is not None else None,
        zones=[CameraZone.model_validate(z.model_dump()) for z in security.zones] if security else [],
        lines=[CameraLine.model_validate(ln.model_dump()) for ln in security.lines] if security else [],
    )


@router.get("", response_model=CameraList, summary="Cameras with their newest frame's size and zones")
async def list_cameras(ctx: Ctx, _: Viewer) -> CameraList:
    frames = ctx.services.cameras.latest_frames
    return CameraList(cameras=[_view(s, frames.get(s.id)) for s in ctx.services.config.current().cameras])


@router.get(
    "/{camera_id}/frame.jpg",
    summary="The camera's newest frame as JPEG, optionally with its zones drawn",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        404: {
            "model": ErrorBody,
            "description": "unknown_camera, or no_frame: the camera has not delivered a frame (yet).",
        },
        503: {"model": ErrorBody, "description": "encode_failed: the frame could not be encoded."},
    },
)
async def frame_jpeg(
    ctx: Ctx,
    _: Viewer,
    camera_id: CameraId,
    overlay: Annotated[bool, Query(description="Draw the configured zones and lines on it.")] = False,
    full: Annotated[
        bool,
        Query(
            description="The main stream's picture where the camera keeps it (analysis at a smaller "
            "analysis_width): evidence at full resolution. Otherwise the analysed frame."
        ),
    ] = False,
) -> Response:
    setup = _setup(ctx, camera_id)
    latest = ctx.services.cameras.latest_frames.get(camera_id)
    if latest is None:
        raise ApiError(404, "no_frame", f"camera {camera_id} has not delivered a frame yet")
    zones = setup.security.camera_zones(camera_id) if overlay and setup.security is not None else None
    # By default the analysed size, so what the editor shows is what the zones are judged on.
    # Decoding a JPEG (a kept one, or an MJPEG camera's newest frame nobody analysed yet) and
    # encoding a large frame take milliseconds: never on the event loop the gates decide on.
    try:
        image = await asyncio.to_thread(latest.full_resolution if full else lambda: latest.frame)
    except CameraError as err:
        ctx.services.counters.count("api_camera_frame_decode_failed")
        log.error("camera %s: the newest frame does not decode: %s", camera_id, err)
        raise ApiError(503, "bad_frame", f"the newest frame of {camera_id} does not decode") from err
    jpeg = await asyncio.to_thread(evidence_jpeg, image, zones=zones, max_width=int(image.shape[1]))
    if not jpeg:
        ctx.services.counters.count("api_camera_frame_encode_failed")
        log.error("camera %s: the newest frame (%s) could not be encoded as JPEG", camera_id, image.shape)
        raise ApiError(503, "encode_failed", f"the newest frame of {camera_id} could not be encoded")
    # A picture of people: never cached by the browser or a proxy.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


class _Refused(Exception):
    """A drawing (or the configuration it is checked in) that cannot give a fragment: code, why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check_points(item: str, coords: str, points: list[Point], size: tuple[int, int] | None) -> None:
    """Every point inside the picture: 0..1 when normalized, within ``size`` when in pixels."""
    width, height = (1, 1) if coords == "normalized" else (size or (0, 0))
    for x, y in points:
        if not (0 <= x <= width and 0 <= y <= height):
            unit = "0..1" if coords == "normalized" else f"the {width}x{height} picture"
            raise _Refused("outside_frame", f"{item}: point ({x}, {y}) is outside {unit}")


def _built(edit: ZoneEdit, size: tuple[int, int] | None) -> tuple[list[PolygonZone], list[LineZone]]:
    """The configuration's own zone and line models for ``edit``; :class:`_Refused` names the first
    problem (the models' validators then only confirm what was checked here)."""
    seen: set[str] = set()
    for item_id in [z.id for z in edit.zones] + [ln.id for ln in edit.lines]:
        if item_id in seen:
            raise _Refused("duplicate_id", f"{item_id!r} names two zones or lines (ids are per camera)")
        seen.add(item_id)
    zones: list[PolygonZone] = []
    for zone in edit.zones:
        if len(zone.points) < 3:
            raise _Refused(
                "too_few_points", f"zone {zone.id!r}: a polygon needs 3 points, got {len(zone.points)}"
            )
        if len(zone.points) > MAX_POINTS:
            raise _Refused("too_many_points", f"zone {zone.id!r}: at most {MAX_POINTS} points")
        _check_points(f"zone {zone.id!r}", zone.coords, zone.points, size)
        problem = polygon_problem(zone.points)
        if problem is not None:
            raise _Refused("not_a_polygon", f"zone {zone.id!r} is not a simple polygon: {problem}")
        zones.append(PolygonZone.model_validate(zone.model_dump()))
    lines: list[LineZone] = []
    for line in edit.lines:
        _check_points(f"line {line.id!r}", line.coords, [line.start, line.end], size)
        if math.dist(line.start, line.end) == 0:
            raise _Refused("zero_length_line", f"line {line.id!r}: start and end are the same point")
        lines.append(LineZone.model_validate(line.model_dump()))
    return zones, lines


def _fragment(
    zones: list[PolygonZone], lines: list[LineZone], size: tuple[int, int] | None
) -> dict[str, Any]:
    security: dict[str, Any] = {}
    if size is not None:
        security["reference_size"] = list(size)
    # Defaults left out: the fragment says what was drawn, not every setting's default.
    security["zones"] = [_whole(z.model_dump(mode="json", exclude_defaults=True)) for z in zones]
    security["lines"] = [_whole(ln.model_dump(mode="json", exclude_defaults=True)) for ln in lines]
    return {"security": security}


def _whole(value: Any) -> Any:
    """``value`` with whole-number floats as integers: [120, 40] reads better than [120.0, 40.0]
    (the models read both the same)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def _configuration(ctx: ApiContext) -> tuple[dict[str, Any], str]:
    """The configuration the agent runs with, as YAML data: its file when it was started from one
    (what an admin will edit), else the running configuration."""
    path = ctx.services.config.path
    if path is None:
        return ctx.services.config.current().model_dump(
            mode="json", exclude_unset=True
        ), "running configuration"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise _Refused("config_unreadable", f"cannot read {path}: {err}") from err
    if not isinstance(data, dict):
        raise _Refused("config_unreadable", f"{path} does not hold a YAML mapping")
    return data, str(path)


def _check_in_configuration(
    ctx: ApiContext, camera_id: str, fragment: dict[str, Any]
) -> tuple[ConfigValidation, str]:
    data, source = _configuration(ctx)
    cameras = data.get("cameras")
    entry = next(
        (
            c
            for c in (cameras if isinstance(cameras, list) else [])
            if isinstance(c, dict)
            and isinstance(c.get("device"), dict)
            and c["device"].get("id") == camera_id
        ),
        None,
    )
    if entry is None:
        raise _Refused(
            "camera_not_in_config", f"{source} has no camera {camera_id} (edited since the start?)"
        )
    security = entry.get("security")
    security = dict(security) if isinstance(security, dict) else {}
    security.pop("reference_size", None)
    security.update(fragment["security"])
    entry["security"] = security
    try:
        parse_config(yaml.safe_dump(data, sort_keys=False), source=f"{source} with the edited zones")
    except ConfigFileError as err:
        issues = [ConfigIssueOut(path=i.path, line=i.line, message=i.message) for i in err.issues]
        return ConfigValidation(valid=False, issues=issues), source
    return ConfigValidation(valid=True, issues=[]), source


@router.post(
    "/{camera_id}/zones",
    response_model=ZoneYaml,
    summary="The YAML of zones and lines drawn on the console (admin); nothing is applied",
    name="camera_zones_yaml",
    responses={
        **_UNKNOWN,
        **BODY_RESPONSES,
        409: {
            "model": ErrorBody,
            "description": "camera_not_in_config: the configuration file no longer has this camera; "
            "config_unreadable: it cannot be read.",
        },
        422: {
            "model": ErrorBody,
            "description": "The drawing is not usable: too_few_points, too_many_points, not_a_polygon, "
            "outside_frame, zero_length_line, duplicate_id, no_reference_size, invalid_zone.",
        },
    },
)
async def zones_yaml(ctx: Ctx, who: Admin, camera_id: CameraId, edit: ZoneEdit) -> ZoneYaml:
    # Not audited: like config validation, this changes nothing on the gateway.
    setup = _setup(ctx, camera_id)
    try:
        # In a thread: checking a drawing is pure Python and O(points²) per zone (64 zones of 256
        # points: seconds), which the event loop, and the gates on it, must not wait for.
        text, validation, source = await asyncio.to_thread(_zone_yaml, ctx, camera_id, edit)
    except _Refused as err:
        ctx.services.counters.count(f"api_zone_edit_refused_{err.code}")
        log.warning(
            "zones drawn for camera %s by %s refused: %s: %s", setup.id, who.name, err.code, err.message
        )
        status = 409 if err.code in ("camera_not_in_config", "config_unreadable") else 422
        raise ApiError(status, err.code, err.message) from err
    return ZoneYaml(camera=setup.id, yaml=text, checked_against=source, validation=validation)


def _zone_yaml(ctx: ApiContext, camera_id: str, edit: ZoneEdit) -> tuple[str, ConfigValidation, str]:
    """The YAML fragment of ``edit``, its validation in the whole configuration and what that was
    (:class:`_Refused` for a drawing that gives no fragment)."""
    pixel = any(z.coords == "pixel" for z in edit.zones) or any(ln.coords == "pixel" for ln in edit.lines)
    size = edit.reference_size
    if size is None and pixel:
        latest = ctx.services.cameras.latest_frames.get(camera_id)
        if latest is None:
            raise _Refused(
                "no_reference_size",
                f"pixel coordinates need reference_size: camera {camera_id} has no frame to take it from",
            )
        height, width = latest.shape[:2]
        size = (int(width), int(height))
    try:
        zones, lines = _built(edit, size)
        CameraZones(camera_id=camera_id, zones=zones, lines=lines, reference_size=size)
    except ValidationError as err:
        raise _Refused("invalid_zone", "; ".join(str(e.get("msg", "")) for e in err.errors()[:3])) from err
    fragment = _fragment(zones, lines, size if pixel else None)
    validation, source = _check_in_configuration(ctx, camera_id, fragment)
    return yaml.safe_dump(fragment, sort_keys=False, default_flow_style=None), validation, source

"""Cameras for the console's zone editor: each camera's newest frame and zones, the YAML of zones
drawn on it (admin), checked in the whole configuration before anyone pastes it, and applying a
drawing (admin, audited).

The edited zones become a ``security:`` fragment built from the configuration's own models (so it
is valid on its own), spliced into the agent's configuration file in place of the camera's zones
(:func:`edge_agent.config.redraw_camera_zones`: every other line as it was) and that file is
validated whole. Applying installs that file (the previous one kept beside it, as a pushed
configuration's is) and hands the zones to the camera's running analysis, from its next frame on,
without a restart. Only the drawing is applied: the running camera keeps its rules and settings
as it runs them, so edits in the file not reloaded yet, and the command line's overrides, stay
as they were (the drawing is checked against both the file and the running camera).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Response
from pydantic import ValidationError

from device_drivers import CameraError, CameraFrame
from edge_agent.api.auth import Principal
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
    ZoneApply,
    ZoneEdit,
    ZonesApplied,
    ZoneYaml,
)
from edge_agent.config import (
    CameraSetup,
    ConfigEditError,
    ConfigFileError,
    GatewayConfig,
    SecurityConfig,
    install_config,
    parse_config,
    pending_marker,
    redraw_camera_zones,
    restore_previous_config,
    write_error_code,
)
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
        zones_version=zones_version(security),
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
    """A drawing (or the configuration it is checked in) that cannot give a fragment or be
    applied: code, why, and for a few the HTTP status and details."""

    def __init__(
        self, code: str, message: str, *, status: int = 0, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details


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


def _configuration_text(ctx: ApiContext) -> tuple[str, str]:
    """The configuration the agent runs with, as YAML text, and what it is: its file when it was
    started from one (what an admin edits), else the running configuration."""
    path = ctx.services.config.path
    if path is None:
        data = ctx.services.config.current().model_dump(mode="json", exclude_unset=True)
        return yaml.safe_dump(data, sort_keys=False), "running configuration"
    try:
        # As the bytes are: a file edited on Windows keeps its \r\n line ends through a splice.
        with open(path, newline="") as f:
            return f.read(), str(path)
    except (OSError, UnicodeDecodeError) as err:
        raise _Refused("config_unreadable", f"cannot read {path}: {err}") from err


@dataclass(frozen=True)
class _Drawing:
    """A drawing as the configuration's models, and as the ``security:`` fragment they give."""

    zones: list[PolygonZone]
    lines: list[LineZone]
    reference_size: tuple[int, int] | None
    fragment: dict[str, Any]

    def matches(self, security: SecurityConfig | None) -> bool:
        return security is not None and security.drawing() == {
            "zones": self.zones,
            "lines": self.lines,
            "reference_size": self.reference_size,
        }


def _redrawn(
    ctx: ApiContext, camera_id: str, drawing: _Drawing
) -> tuple[str, str, GatewayConfig | ConfigFileError]:
    """The configuration's text with ``drawing`` in place of the camera's zones (every other
    line as it was), what that text is, and what it loads as (or why it does not)."""
    text, source = _configuration_text(ctx)
    try:
        redrawn = redraw_camera_zones(text, camera_id, drawing.fragment["security"])
    except ConfigEditError as err:
        if err.code == "camera_not_in_config":
            raise _Refused(err.code, f"{source} has no camera {camera_id} (edited since the start?)") from err
        raise _Refused(err.code, f"{source}: {err}") from err  # config_unreadable, config_layout
    try:
        config = parse_config(redrawn, source=f"{source} with the edited zones")
    except ConfigFileError as err:
        return redrawn, source, err
    setup = next((c for c in config.cameras if c.id == camera_id), None)
    if setup is None or not drawing.matches(setup.security):
        # The splice put the drawing somewhere else than the camera's security (a layout it does
        # not know): neither check nor apply anything but what was drawn.
        log.error("camera %s: redrawing its zones in %s did not give the drawing", camera_id, source)
        raise _Refused(
            "config_layout", f"{source}: the camera's entry is laid out in a way the editor cannot change"
        )
    return redrawn, source, config


def _validation(loaded: GatewayConfig | ConfigFileError) -> ConfigValidation:
    if isinstance(loaded, ConfigFileError):
        issues = [ConfigIssueOut(path=i.path, line=i.line, message=i.message) for i in loaded.issues]
        return ConfigValidation(valid=False, issues=issues)
    return ConfigValidation(valid=True, issues=[])


def zones_version(security: SecurityConfig | None) -> str:
    """A short name of a camera's zones, lines and reference size: the same drawing, the same name."""
    drawing = security.drawing() if security is not None else {}
    data = {
        k: [item.model_dump(mode="json") for item in v] if isinstance(v, list) else v
        for k, v in drawing.items()
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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
        drawing = await asyncio.to_thread(_drawing_of, ctx, camera_id, edit)
    except _Refused as err:
        raise _refusal(ctx, who, setup.id, err, audit=False) from err
    try:
        _, source, loaded = await asyncio.to_thread(_redrawn, ctx, camera_id, drawing)
    except _Refused as err:
        refused = _refusal(ctx, who, setup.id, err, audit=False)  # counted and logged either way
        if err.code != "config_layout":
            raise refused from err
        # The YAML is right to paste; only the file cannot take it in place (zones shared through
        # an anchor): say so as the check's one issue, and the console offers no Apply.
        issue = ConfigIssueOut(path=f"cameras[{camera_id}].security", line=None, message=err.message)
        return ZoneYaml(
            camera=setup.id,
            yaml=_yaml(drawing.fragment),
            checked_against=str(ctx.services.config.path or "running configuration"),
            validation=ConfigValidation(valid=False, issues=[issue]),
            paste_only=True,
        )
    return ZoneYaml(
        camera=setup.id, yaml=_yaml(drawing.fragment), checked_against=source, validation=_validation(loaded)
    )


def _yaml(fragment: dict[str, Any]) -> str:
    return yaml.safe_dump(fragment, sort_keys=False, default_flow_style=None)


# A drawing refused for what it is (422) or for the state of the gateway or its file (409).
_STATE_REFUSALS = frozenset(
    {
        "camera_not_in_config",
        "config_unreadable",
        "config_layout",
        "config_on_probation",
        "config_read_only",
        "no_config_file",
        "no_security_analysis",
        "zones_changed",
    }
)


def _refusal(ctx: ApiContext, who: Principal, camera_id: str, err: _Refused, *, audit: bool) -> ApiError:
    ctx.services.counters.count(f"api_zone_edit_refused_{err.code}")
    log.warning("zones drawn for camera %s by %s refused: %s: %s", camera_id, who.name, err.code, err.message)
    if audit:
        ctx.audit(who, "apply_zones", camera_id, "refused", f"{err.code}: {err.message}")
    status = 409 if err.code in _STATE_REFUSALS else err.status or 422
    return ApiError(status, err.code, err.message, err.details)


def _drawing_of(ctx: ApiContext, camera_id: str, edit: ZoneEdit) -> _Drawing:
    """``edit`` as the configuration's models (:class:`_Refused` for a drawing that gives none)."""
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
    size = size if pixel else None
    return _Drawing(zones, lines, size, _fragment(zones, lines, size))


def _running_security_with(running: SecurityConfig, drawing: _Drawing) -> SecurityConfig:
    """The running camera's security settings with ``drawing`` in place of its zones, validated
    (:class:`_Refused` ``config_invalid`` when one of its rules would lose its zone or line)."""
    data = running.model_dump()
    data.update(
        zones=[z.model_dump() for z in drawing.zones],
        lines=[ln.model_dump() for ln in drawing.lines],
        reference_size=drawing.reference_size,
    )
    try:
        return SecurityConfig.model_validate(data)
    except ValidationError as err:
        details = [{"path": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in err.errors()]
        raise _Refused(
            "config_invalid",
            f"the running camera would not take the drawing: {details[0]['message']}",
            details=details,
        ) from err


@router.post(
    "/{camera_id}/zones/apply",
    response_model=ZonesApplied,
    summary="Apply zones and lines drawn on the console (admin, audited): into the file and the analysis",
    name="apply_camera_zones",
    responses={
        **_UNKNOWN,
        **BODY_RESPONSES,
        409: {
            "model": ErrorBody,
            "description": "no_config_file: the agent was not started from a file; no_security_analysis: "
            "the camera has no security section; zones_changed: its zones changed since zones_version; "
            "config_on_probation: a pushed configuration is not confirmed yet; "
            "config_read_only: the agent may not write its file (the shipped unit); "
            "camera_not_in_config, config_unreadable, config_layout.",
        },
        422: {
            "model": ErrorBody,
            "description": "The drawing is not usable (the codes of the YAML route), or config_invalid: "
            "the file would not load with it, or a rule of the running camera would lose its zone "
            "(details: the issues).",
        },
        500: {"model": ErrorBody, "description": "write_failed, apply_failed: nothing changed."},
        507: {"model": ErrorBody, "description": "write_failed: the disk is full; nothing changed."},
    },
)
async def apply_zones(ctx: Ctx, who: Admin, camera_id: CameraId, edit: ZoneApply) -> ZonesApplied:
    setup = _setup(ctx, camera_id)
    try:
        # One drawing at a time: two admins applying at once must not both edit the same file.
        async with ctx.services.config.writing:
            applied = await _apply(ctx, camera_id, edit)
    except _Refused as err:
        raise _refusal(ctx, who, setup.id, err, audit=True) from err
    ctx.services.counters.count("api_zones_applied")
    ctx.audit(who, "apply_zones", camera_id, "ok")
    log.info("zones of camera %s applied by %s, written to %s", camera_id, who.name, applied.config_file)
    return applied


async def _apply(ctx: ApiContext, camera_id: str, edit: ZoneApply) -> ZonesApplied:
    """Write the drawing into the agent's file (the previous one kept) and have the camera judge by
    it; nothing changes when any step refuses."""
    config = ctx.services.config
    path = config.path
    if path is None:
        raise _Refused("no_config_file", "the agent was not started from a config file: paste the YAML")
    if pending_marker(path).exists():
        # Installing now would make this file the "previous" one the probation falls back to, and
        # a pushed file that fails would then come back instead of the one that worked.
        raise _Refused(
            "config_on_probation",
            "a configuration pushed from the centre is still on probation (it has not reached the "
            "broker since the restart): apply the drawing once it is confirmed",
        )
    running = config.current()
    setup = next(c for c in running.cameras if c.id == camera_id)
    if setup.security is None:
        raise _Refused("no_security_analysis", f"camera {camera_id} has no security section to draw zones in")
    if edit.zones_version is not None and edit.zones_version != zones_version(setup.security):
        raise _Refused(
            "zones_changed",
            f"the zones of camera {camera_id} changed since this drawing began: load them again and redraw",
        )
    drawing = await asyncio.to_thread(_drawing_of, ctx, camera_id, edit)
    text, source, loaded = await asyncio.to_thread(_redrawn, ctx, camera_id, drawing)
    if isinstance(loaded, ConfigFileError):
        issues = [{"path": i.path, "line": i.line, "message": i.message} for i in loaded.issues]
        raise _Refused(
            "config_invalid", f"with this drawing {source} would not load: {loaded.issues[0]}", details=issues
        )
    # The running camera takes the drawing and nothing else: its rules and settings as it runs them
    # (the file may hold edits not reloaded yet, the command line overrides others), checked again.
    security = await asyncio.to_thread(_running_security_with, setup.security, drawing)
    try:
        previous = await asyncio.to_thread(install_config, path, text)
    except OSError as err:
        if write_error_code(err) == "config_read_only":
            raise _Refused(
                "config_read_only",
                f"cannot write {path}: {err.strerror}; the shipped systemd unit keeps the configuration "
                "read-only to the agent: paste the YAML, or allow writing it (docs/OPERATIONS.md)",
            ) from err
        full = err.errno == errno.ENOSPC
        raise _Refused("write_failed", f"cannot write {path}: {err}", status=507 if full else 500) from err
    try:
        live = config.redraw(camera_id, security)
    except Exception as err:
        log.exception("camera %s: the applied zones could not be used; putting %s back", camera_id, path)
        await asyncio.to_thread(restore_previous_config, path)
        raise _Refused("apply_failed", f"the camera could not take the zones: {err}", status=500) from err
    return ZonesApplied(
        camera=camera_id,
        config_file=str(path),
        previous=str(previous),
        live=live,
        zones_version=zones_version(security),
        yaml=_yaml(drawing.fragment),
    )

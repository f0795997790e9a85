"""Alerts from the local alert book: list, snapshot, acknowledge, and a live stream (SSE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import StreamingResponse

from edge_agent.alerts import AlertBook, AlertError, AlertRecord
from edge_agent.api.deps import AUTH_RESPONSES, BODY_RESPONSES, ApiContext, ApiError, Ctx, Operator, Viewer
from edge_agent.api.models import AckRequest, Alert, AlertList, ErrorBody

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=AUTH_RESPONSES)

ALERT_ID = r"^[0-9A-Za-z]{1,64}$"
KEEPALIVE_S = 15.0
AlertId = Annotated[str, Path(pattern=ALERT_ID, description="Alert (event) id.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such alert."}}


_ALERT_FIELDS = tuple(name for name in Alert.model_fields if name != "snapshot_url")


def to_model(record: AlertRecord | dict[str, Any]) -> Alert:
    # Attribute by attribute, not AlertRecord.to_dict (dataclasses.asdict): that deep-copies every
    # payload, and a list of a hundred alerts spent most of its time there.
    if isinstance(record, AlertRecord):
        raw = {name: getattr(record, name) for name in _ALERT_FIELDS}
    else:
        raw = record
    url = f"/api/v1/alerts/{raw['id']}/snapshot" if raw["has_snapshot"] else None
    return Alert(**raw, snapshot_url=url)


@router.get("", response_model=AlertList, summary="Alerts, newest first")
async def list_alerts(
    ctx: Ctx,
    _: Viewer,
    severity: Annotated[
        Literal["info", "warning", "critical"] | None, Query(description="Only this.")
    ] = None,
    acknowledged: Annotated[bool | None, Query(description="Only open (false) or done (true).")] = None,
    device: Annotated[str | None, Query(max_length=64, description="Only from this device.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most alerts returned.")] = 100,
) -> AlertList:
    book = ctx.services.alerts.book
    records = book.list(severity=severity, acknowledged=acknowledged, device=device, limit=limit)
    return AlertList(alerts=[to_model(r) for r in records])


async def _stream(
    ctx: ApiContext, request: Request, book: AlertBook, queue: asyncio.Queue[dict[str, Any]]
) -> AsyncIterator[bytes]:
    closing = asyncio.ensure_future(ctx.closing.wait())
    try:
        # Tells the browser how long to wait before reconnecting, and flushes the headers at once.
        yield b"retry: 2000\n\n"
        while not ctx.closing.is_set():
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getter, closing}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                if await request.is_disconnected():
                    break
                # A comment line keeps proxies and idle timers from closing a quiet stream.
                yield b": keepalive\n\n"
                continue
            message = getter.result()
            payload = {"kind": message["kind"], "alert": to_model(message["alert"]).model_dump()}
            yield (
                f"id: {message['alert']['id']}\nevent: {message['kind']}\n"
                f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
            ).encode()
    finally:
        closing.cancel()
        book.unsubscribe(queue)


@router.get(
    "/stream",
    summary="Live alerts (Server-Sent Events: 'alert' and 'acknowledged')",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def stream(request: Request, ctx: Ctx, _: Viewer) -> StreamingResponse:
    book = ctx.services.alerts.book
    # Subscribe before answering: the response headers go out before the body generator runs, and
    # a client that saw them may rely on getting every alert raised from then on.
    queue = book.subscribe()
    return StreamingResponse(
        _stream(ctx, request, book, queue),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/{alert_id}", response_model=Alert, summary="One alert", responses=_NOT_FOUND)
async def get_alert(ctx: Ctx, _: Viewer, alert_id: AlertId) -> Alert:
    record = ctx.services.alerts.book.get(alert_id)
    if record is None:
        raise ApiError(404, "unknown_alert", f"no alert with id {alert_id}")
    return to_model(record)


@router.get(
    "/{alert_id}/snapshot",
    summary="The alert's JPEG snapshot",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"model": ErrorBody, "description": "No such alert, or it has no snapshot (any more)."},
    },
)
async def snapshot(ctx: Ctx, _: Viewer, alert_id: AlertId) -> Response:
    book = ctx.services.alerts.book
    jpeg = book.snapshot(alert_id)
    if jpeg is None:
        code = "no_snapshot" if book.get(alert_id) is not None else "unknown_alert"
        raise ApiError(404, code, f"no snapshot for alert {alert_id}")
    # Evidence about people: never cached by the browser or a proxy.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@router.post(
    "/{alert_id}/ack",
    response_model=Alert,
    summary="Acknowledge an alert (operator)",
    name="acknowledge_alert",
    responses={
        **_NOT_FOUND,
        **BODY_RESPONSES,
        409: {"model": ErrorBody, "description": "Already acknowledged."},
    },
)
async def acknowledge(
    request: Request,
    ctx: Ctx,
    who: Operator,
    alert_id: AlertId,
    body: Annotated[AckRequest | None, Body(description="Optional note.")] = None,
) -> Alert:
    note = body.note if body is not None else ""
    # The console marks its calls, so the acknowledgement event says where the guard clicked.
    via = "console" if request.headers.get("x-edge-client") == "console" else "api"
    try:
        record = ctx.services.alerts.acknowledge(alert_id, who.name, via, note)
    except AlertError as err:
        ctx.audit(who, "acknowledge_alert", alert_id, "refused", f"{err.code}: {err}")
        status = {"unknown_alert": 404, "already_acknowledged": 409}.get(err.code, 503)
        raise ApiError(status, err.code, str(err)) from err
    ctx.audit(who, "acknowledge_alert", alert_id, "ok")
    return to_model(record)

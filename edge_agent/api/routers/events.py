"""Recent events, read from the outbox with a read-only connection of our own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query

from edge_agent.api.deps import AUTH_RESPONSES, ApiError, Ctx, Viewer
from edge_agent.api.models import ErrorBody, EventList

router = APIRouter(prefix="/api/v1", tags=["events"], responses=AUTH_RESPONSES)

TYPE_PATTERN = r"^edu\.campus\.[a-z_]+\.[a-z_]+\.v[0-9]+$"
AREA_PATTERN = r"^[a-z][a-z_]{0,31}$"


def _query(
    path: Path, event_type: str | None, area: str | None, after_seq: int | None, limit: int
) -> list[tuple[int, str, bytes, float | None]]:
    # mode=ro: this connection can never write, whatever a bug in here does; WAL lets it read
    # while the outbox writer commits.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        where: list[str] = ["seq > ?"]
        args: list[object] = [after_seq or 0]
        if event_type is not None:
            where.append("type = ?")
            args.append(event_type)
        if area is not None:
            # The area pattern has no GLOB metacharacters, so it cannot widen the match.
            where.append("type GLOB ?")
            args.append(f"edu.campus.{area}.*")
        # From after_seq: the next page, oldest first. Without it: the newest events.
        order = "ASC" if after_seq is not None else "DESC"
        rows = conn.execute(
            f"SELECT seq, id, payload, delivered_at FROM events WHERE {' AND '.join(where)} "
            f"ORDER BY seq {order} LIMIT ?",
            (*args, limit),
        ).fetchall()
    finally:
        conn.close()
    return sorted(rows)


@router.get(
    "/events",
    response_model=EventList,
    summary="Recent events from the outbox, oldest first",
    responses={503: {"model": ErrorBody, "description": "The outbox cannot be read."}},
)
async def events(
    ctx: Ctx,
    _: Viewer,
    type: Annotated[str | None, Query(pattern=TYPE_PATTERN, description="Exact event type.")] = None,
    area: Annotated[
        str | None, Query(pattern=AREA_PATTERN, description="Area: access, attendance, security, ...")
    ] = None,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2**62, description="Only events after this seq, oldest first.")
    ] = None,
    limit: Annotated[int, Query(ge=1, description="Most events returned (capped by the settings).")] = 100,
) -> EventList:
    limit = min(limit, ctx.settings.events_max_limit)
    try:
        # Off the event loop: a type filter over a week of events can scan many rows.
        rows = await asyncio.to_thread(_query, ctx.services.outbox.path, type, area, after_seq, limit)
    except sqlite3.Error as err:
        raise ApiError(503, "outbox_unreadable", f"cannot read the outbox: {err}") from err
    out: list[dict[str, Any]] = []
    delivered: dict[str, bool] = {}
    for _seq, event_id, payload, delivered_at in rows:
        out.append(orjson.loads(payload))
        delivered[event_id] = delivered_at is not None
    next_after = rows[-1][0] if rows else (after_seq or 0)
    return EventList(events=out, delivered=delivered, next_after_seq=next_after)

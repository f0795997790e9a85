"""Attendance points and their roll-call now (edge_agent/rollcall.py), read-only.

The console's roll-call view polls ``/points/{point}/rollcall``: the lists are computed from the
attendance records at each request, so a swipe or a face shows at the next poll.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from edge_agent.api.deps import AUTH_RESPONSES, ApiError, Ctx, Viewer
from edge_agent.api.models import (
    AttendancePoint,
    AttendancePointList,
    ErrorBody,
    RollCall,
    RollCallAbsent,
    RollCallPresent,
    RollCallSession,
)
from edge_agent.rollcall import Attendee, Occurrence
from edge_agent.rollcall import RollCall as RollCallComponent

router = APIRouter(
    prefix="/api/v1/attendance",
    tags=["attendance"],
    responses={
        **AUTH_RESPONSES,
        503: {"model": ErrorBody, "description": "rollcall_not_running: the roll-call has not started."},
    },
)

POINT_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "unknown_point: no attendance point of that id."}
}


def _rollcall(ctx: Ctx) -> RollCallComponent:
    rollcall = ctx.services.rollcall
    if rollcall is None:
        raise ApiError(503, "rollcall_not_running", "the roll-call component has not started (yet)")
    return rollcall


def _session(here: Occurrence) -> RollCallSession:
    s = here.session
    return RollCallSession(id=s.id, name=s.name, start=s.start, end=s.end, day=here.day.isoformat())


@router.get("/points", response_model=AttendancePointList, summary="Attendance points and their session")
async def points(ctx: Ctx, _: Viewer) -> AttendancePointList:
    rollcall = _rollcall(ctx)
    out = []
    for point in sorted(rollcall.points):
        current = rollcall.current(point)
        if current is None:
            out.append(AttendancePoint(point=point, session=None, state="none"))
        else:
            here, state = current
            out.append(AttendancePoint(point=point, session=_session(here), state=state))
    return AttendancePointList(points=out)


@router.get(
    "/points/{point}/rollcall",
    response_model=RollCall,
    summary="A point's roll-call now: present, late, absent",
    responses=_NOT_FOUND,
)
async def rollcall(
    ctx: Ctx, _: Viewer, point: Annotated[str, Path(pattern=POINT_ID, description="Attendance point id.")]
) -> RollCall:
    component = _rollcall(ctx)
    if point not in component.points:
        raise ApiError(404, "unknown_point", f"{point} is not an attendance point of this gateway")
    current = component.current(point)
    if current is None:
        return RollCall(point=point, session=None, state="none", expected=0, present=[], late=[], absent=[])
    here, state = current
    sheet = component.sheet(here)
    persons = ctx.services.roster.index.persons

    def name(person_id: str) -> str:
        person = persons.get(person_id)
        return person.name if person is not None else ""

    def recorded(a: Attendee) -> RollCallPresent:
        assert a.record is not None
        return RollCallPresent(
            person_id=a.person_id,
            name=name(a.person_id),
            at=a.record.at.replace(tzinfo=component.timezone).isoformat(),
            method=a.record.method,
            evidence=a.record.evidence,
            seen_elsewhere=a.seen_elsewhere,
        )

    return RollCall(
        point=point,
        session=_session(here),
        state=state,
        expected=sheet.expected,
        present=[recorded(a) for a in sheet.having("present")],
        late=[recorded(a) for a in sheet.having("late")],
        absent=[
            RollCallAbsent(person_id=a.person_id, name=name(a.person_id)) for a in sheet.having("absent")
        ],
    )

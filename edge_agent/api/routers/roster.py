"""The local roster (master data from the centre), read-only."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Query

from edge_agent.api.deps import AUTH_RESPONSES, ApiError, Ctx, Viewer
from edge_agent.api.models import ErrorBody, PersonDetail, PersonList, PersonSummary

router = APIRouter(prefix="/api/v1/roster", tags=["roster"], responses=AUTH_RESPONSES)

PERSON_ID = r"^[A-Za-z0-9_.:-]{1,64}$"


def _mask(card: str) -> str:
    # Enough to tell two cards apart at the desk, not enough to clone one.
    return "*" * max(0, len(card) - 4) + card[-4:]


@router.get("/persons", response_model=PersonList, summary="Persons of the roster")
async def persons(
    ctx: Ctx,
    _: Viewer,
    group: Annotated[str | None, Query(max_length=64, description="Only this class or group.")] = None,
    role: Annotated[str | None, Query(max_length=16, description="student, teacher, staff, visitor.")] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Skip this many.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> PersonList:
    index = ctx.services.roster.index
    chosen = [
        p
        for _, p in sorted(index.persons.items())
        if (group is None or p.group == group) and (role is None or p.role == role)
    ]
    page = [
        PersonSummary(
            id=p.id,
            name=p.name,
            role=p.role,
            group=p.group,
            blocked=p.blocked,
            access_groups=list(p.access_groups),
        )
        for p in chosen[offset : offset + limit]
    ]
    return PersonList(roster_version=index.version, total=len(chosen), persons=page)


@router.get(
    "/persons/{person_id}",
    response_model=PersonDetail,
    summary="One person",
    responses={404: {"model": ErrorBody, "description": "Not in the roster."}},
)
async def person(
    ctx: Ctx, _: Viewer, person_id: Annotated[str, Path(pattern=PERSON_ID, description="Person id.")]
) -> PersonDetail:
    index = ctx.services.roster.index
    found = index.persons.get(person_id)
    if found is None:
        raise ApiError(404, "unknown_person", f"{person_id} is not in the roster")
    cards = [
        {"credential": _mask(c.credential), "format": c.format}
        for c in index.credentials.values()
        if c.person_id == person_id
    ]
    faces = ctx.services.cameras.faces
    templates = None
    if faces is not None:
        # Decrypting every template is not free with a big gallery: off the event loop.
        stored = await asyncio.to_thread(faces.store.templates, faces.model_id)
        templates = sum(1 for t in stored if t.person_id == person_id)
    return PersonDetail(
        id=found.id,
        name=found.name,
        role=found.role,
        group=found.group,
        blocked=found.blocked,
        access_groups=list(found.access_groups),
        valid_from=found.valid_from.isoformat() if found.valid_from else None,
        valid_until=found.valid_until.isoformat() if found.valid_until else None,
        credentials=cards,
        face_templates=templates,
    )

"""Face enrollment from photos uploaded at the edge (operator)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from edge_agent.api.deps import AUTH_RESPONSES, BODY_RESPONSES, ApiError, Ctx, Operator
from edge_agent.api.models import EnrollmentResult, ErrorBody, RejectedPhoto
from edge_agent.api.routers.roster import PERSON_ID

router = APIRouter(prefix="/api/v1", tags=["enrollments"], responses=AUTH_RESPONSES)

MAX_PHOTOS = 10


@router.post(
    "/enrollments",
    response_model=EnrollmentResult,
    status_code=201,
    summary="Enroll a person's face from photos (operator)",
    responses={
        **BODY_RESPONSES,
        404: {"model": ErrorBody, "description": "unknown_person: not in the roster."},
        422: {"model": ErrorBody, "description": "No photo was usable; details give each reason."},
        409: {"model": ErrorBody, "description": "faces_disabled: face recognition is off here."},
    },
)
async def enroll(
    ctx: Ctx,
    who: Operator,
    person_id: Annotated[
        str, Form(pattern=PERSON_ID, description="Person id from the roster.", examples=["S1"])
    ],
    photos: Annotated[list[UploadFile], File(description="One to ten photos (JPEG or PNG), one face each.")],
) -> EnrollmentResult:
    cameras, roster = ctx.services.cameras, ctx.services.roster
    faces = cameras.faces
    if faces is None:
        reason = cameras.face_error or "no camera has face recognition configured"
        ctx.audit(who, "enroll", person_id, "refused", f"faces_disabled: {reason}")
        # 409, not 503: the gateway is working as configured, so 5xx keeps meaning "broken".
        raise ApiError(409, "faces_disabled", f"face recognition is off: {reason}")
    if person_id not in roster.index.persons:
        ctx.audit(who, "enroll", person_id, "refused", "unknown_person")
        raise ApiError(404, "unknown_person", f"{person_id} is not in the roster")
    if not 1 <= len(photos) <= MAX_PHOTOS:
        ctx.audit(who, "enroll", person_id, "refused", "photo_count")
        raise ApiError(422, "photo_count", f"send 1 to {MAX_PHOTOS} photos, not {len(photos)}")
    # The body size limit already bounds what these reads can hold in memory.
    files = [(p.filename or f"photo-{i}", await p.read()) for i, p in enumerate(photos, start=1)]
    index = roster.index
    try:
        # Detection and embedding take tens of milliseconds per photo: never on the event loop.
        outcome = await asyncio.to_thread(faces.enroll, person_id, files, index)
    except Exception as err:
        ctx.audit(who, "enroll", person_id, "failed", f"{type(err).__name__}: {err}")
        raise ApiError(500, "enroll_failed", f"enrollment failed: {err}") from err
    rejected = [RejectedPhoto(photo=n, code=c, message=m) for n, c, m in outcome.rejected]
    if not outcome.stored:
        reason = ", ".join(sorted({r.code for r in rejected})) or "no_photo"
        ctx.audit(who, "enroll", person_id, "refused", reason)
        details: list[dict[str, Any]] = [r.model_dump() for r in rejected]
        first = rejected[0].code if rejected else "no_photo"
        raise ApiError(422, first, f"no photo could be enrolled for {person_id}", details)
    ctx.audit(
        who,
        "enroll",
        person_id,
        "ok",
        f"{len(outcome.stored)} stored, {len(rejected)} rejected",
    )
    return EnrollmentResult(
        person_id=person_id, stored=outcome.stored, rejected=rejected, warnings=outcome.warnings
    )

"""Face enrollment and a person's face templates: biometric data, so admin only, every call audited."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile

from edge_agent.api.auth import Principal
from edge_agent.api.deps import AUTH_RESPONSES, BODY_RESPONSES, Admin, ApiContext, ApiError, Ctx, Viewer
from edge_agent.api.models import (
    EnrollmentResult,
    ErrorBody,
    PersonTemplates,
    RejectedPhoto,
    TemplatesDeleted,
    TemplateSummary,
)
from edge_agent.api.routers.roster import PERSON_ID

if TYPE_CHECKING:  # the face models load only when a camera does face recognition
    from edge_agent.faces import FaceService

router = APIRouter(prefix="/api/v1", tags=["enrollments"], responses=AUTH_RESPONSES)

FACES_OFF: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "faces_disabled: face recognition is off here."}
}


def _faces(ctx: ApiContext, who: Principal, action: str, person_id: str) -> FaceService:
    cameras = ctx.services.cameras
    if cameras.faces is None:
        reason = cameras.face_error or "no camera has face recognition configured"
        ctx.audit(who, action, person_id, "refused", f"faces_disabled: {reason}")
        # 409, not 503: the gateway is working as configured, so 5xx keeps meaning "broken".
        raise ApiError(409, "faces_disabled", f"face recognition is off: {reason}")
    return cameras.faces


@router.post(
    "/enrollments",
    response_model=EnrollmentResult,
    status_code=201,
    summary="Enroll a person's face from photos (admin)",
    responses={
        **BODY_RESPONSES,
        **FACES_OFF,
        404: {"model": ErrorBody, "description": "unknown_person: not in the roster."},
        422: {
            "model": ErrorBody,
            "description": "No photo was stored; details give each reason (quality, consent_*, "
            "matches_other_person, inconsistent_with_person, photo_outlier, too_many_templates).",
        },
    },
)
async def enroll(
    ctx: Ctx,
    who: Admin,
    person_id: Annotated[
        str, Form(pattern=PERSON_ID, description="Person id from the roster.", examples=["S1"])
    ],
    photos: Annotated[
        list[UploadFile], File(description="One to faces.max_templates_per_person photos, one face each.")
    ],
    force: Annotated[
        bool,
        Form(
            description="Store photos refused as another person's look-alike (matches_other_person) or "
            "unlike the person's own templates (inconsistent_with_person); needs a reason, audited."
        ),
    ] = False,
    reason: Annotated[str, Form(max_length=400, description="Why force is right (required with it).")] = "",
) -> EnrollmentResult:
    roster = ctx.services.roster
    faces = _faces(ctx, who, "enroll", person_id)
    if person_id not in roster.index.persons:
        ctx.audit(who, "enroll", person_id, "refused", "unknown_person")
        raise ApiError(404, "unknown_person", f"{person_id} is not in the roster")
    if force and not reason.strip():
        ctx.audit(who, "enroll", person_id, "refused", "reason_required")
        raise ApiError(422, "reason_required", "force needs a reason: it is audited")
    most = faces.settings.max_templates_per_person
    if not 1 <= len(photos) <= most:
        ctx.audit(who, "enroll", person_id, "refused", "photo_count")
        raise ApiError(422, "photo_count", f"send 1 to {most} photos, not {len(photos)}")
    # The body size limit already bounds what these reads can hold in memory.
    files = [(p.filename or f"photo-{i}", await p.read()) for i, p in enumerate(photos, start=1)]
    from edge_agent.faces import Override

    index = roster.index
    override = Override(reason.strip()) if force else None
    try:
        # Detection and embedding take tens of milliseconds per photo: never on the event loop.
        outcome = await asyncio.to_thread(faces.enroll, person_id, files, index, override=override)
    except Exception as err:
        ctx.audit(who, "enroll", person_id, "failed", f"{type(err).__name__}: {err}")
        raise ApiError(500, "enroll_failed", f"enrollment failed: {err}") from err
    rejected = [RejectedPhoto(photo=n, code=c, message=m) for n, c, m in outcome.rejected]
    forced = [RejectedPhoto(photo=n, code=c, message=m) for n, c, m in outcome.forced]
    if forced:
        codes = ", ".join(sorted({f.code for f in forced}))
        ctx.audit(
            who,
            "enroll_forced",
            person_id,
            "ok" if outcome.stored else "refused",
            f"{reason.strip()} (overrode {codes}: {'; '.join(f.message for f in forced)})",
        )
    if not outcome.stored:
        why = ", ".join(sorted({r.code for r in rejected})) or "no_photo"
        ctx.audit(who, "enroll", person_id, "refused", why)
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
        person_id=person_id,
        stored=outcome.stored,
        rejected=rejected,
        warnings=outcome.warnings,
        forced=forced,
    )


PersonPath = Annotated[str, Path(pattern=PERSON_ID, description="Person id.")]


@router.get(
    "/persons/{person_id}/templates",
    response_model=PersonTemplates,
    summary="A person's face templates: metadata only (admin)",
    responses={
        **FACES_OFF,
        404: {"model": ErrorBody, "description": "unknown_person: not in the roster, no templates."},
    },
)
async def list_templates(ctx: Ctx, who: Viewer, person_id: PersonPath) -> PersonTemplates:
    # Viewer admits the token, the role is checked here: a read of biometric data refused is
    # audited too (the shared check audits refused writes only).
    if not who.may("admin"):
        ctx.metrics.auth_failures.labels("403").inc()
        message = f"this needs the admin role; the token has {who.role}"
        ctx.audit(who, "list_templates", person_id, "refused", message)
        raise ApiError(403, "forbidden", message)
    faces = _faces(ctx, who, "list_templates", person_id)
    infos = await asyncio.to_thread(faces.store.info, person_id)
    if not infos and person_id not in ctx.services.roster.index.persons:
        ctx.audit(who, "list_templates", person_id, "refused", "unknown_person")
        raise ApiError(404, "unknown_person", f"{person_id} is not in the roster and holds no template")
    ctx.audit(who, "list_templates", person_id, "ok", f"{len(infos)} templates")
    return PersonTemplates(
        person_id=person_id,
        templates=[
            TemplateSummary(
                id=i.id,
                created_at=datetime.fromtimestamp(i.created_at, UTC).isoformat(),
                source=i.source,
                model=i.model_id,
            )
            for i in infos
        ],
    )


@router.delete(
    "/persons/{person_id}/templates",
    response_model=TemplatesDeleted,
    summary="Delete a person's face templates (admin)",
    responses=FACES_OFF,
)
async def delete_templates(ctx: Ctx, who: Admin, person_id: PersonPath) -> TemplatesDeleted:
    faces = _faces(ctx, who, "delete_templates", person_id)
    deleted = await asyncio.to_thread(faces.delete_templates, person_id)
    ctx.audit(who, "delete_templates", person_id, "ok", f"{deleted} deleted")
    return TemplatesDeleted(person_id=person_id, deleted=deleted)

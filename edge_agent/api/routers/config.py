"""Configuration validation: the same checks and messages as ``edge-agent config check`` (admin)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from edge_agent.api.deps import AUTH_RESPONSES, BODY_RESPONSES, Admin, ApiError
from edge_agent.api.models import ConfigIssueOut, ConfigValidation, ErrorBody
from edge_agent.config import ConfigFileError, parse_config

router = APIRouter(prefix="/api/v1/config", tags=["config"], responses=AUTH_RESPONSES)


@router.post(
    "/validate",
    response_model=ConfigValidation,
    summary="Validate a configuration file (admin); nothing is applied",
    name="validate_config",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
    responses={
        **BODY_RESPONSES,
        400: {"model": ErrorBody, "description": "not_utf8: the body is not UTF-8 text."},
    },
)
async def validate(request: Request, _: Admin) -> ConfigValidation:
    # Not audited: validating changes nothing on the gateway.
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ApiError(400, "not_utf8", f"the configuration must be UTF-8 text: {err}") from err
    try:
        # In a thread: a file near the body limit takes seconds to parse and check, which the
        # event loop, and the gates on it, must not wait for.
        await asyncio.to_thread(parse_config, text, "<posted>")
    except ConfigFileError as err:
        return ConfigValidation(
            valid=False,
            issues=[ConfigIssueOut(path=i.path, line=i.line, message=i.message) for i in err.issues],
        )
    return ConfigValidation(valid=True, issues=[])

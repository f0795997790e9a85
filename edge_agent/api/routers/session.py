"""The console's login: turns a bearer token into a session cookie for what cannot send headers.

Why a cookie and not ``?token=`` in the URL: the browser's EventSource (the live alert stream) and
<img> (snapshots) cannot send an Authorization header. A token in a query string ends up in access
logs, proxy logs and the browser history; an HttpOnly, SameSite=Strict cookie does not, cannot be
read by scripts, and is only honoured for GET requests (see ``deps.require``), so it cannot be used
to make a logged-in browser act on another site's behalf.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from edge_agent.api.deps import AUTH_RESPONSES, SESSION_COOKIE, Ctx, Viewer
from edge_agent.api.models import Session

router = APIRouter(prefix="/api/v1", tags=["session"], responses=AUTH_RESPONSES)


@router.post("/session", response_model=Session, summary="Log in: check the token, set the session cookie")
async def login(request: Request, response: Response, ctx: Ctx, who: Viewer) -> Session:
    token = request.headers["authorization"].partition(" ")[2].strip()
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.settings.session_cookie_secure,
        path="/api/",
    )
    return Session(role=who.role, name=who.name)


@router.delete("/session", status_code=204, summary="Log out: drop the session cookie")
async def logout(response: Response) -> Response:
    response.delete_cookie(SESSION_COOKIE, path="/api/")
    response.status_code = 204
    return response

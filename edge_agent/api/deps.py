"""What every router shares: the gateway's services, the token table, errors with codes, role checks,
auditing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter

from edge_agent.api.auth import Principal, Role, TokenTable
from edge_agent.api.models import ErrorBody
from edge_agent.config import ApiSettings
from edge_agent.services import Services
from sync import Event

log = logging.getLogger(__name__)

SESSION_COOKIE = "edge_session"
SAFE_METHODS = frozenset({"GET", "HEAD"})


class ApiError(Exception):
    """An answer other than success: HTTP status, stable code, message (and optional details)."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []


@dataclass
class ApiMetrics:
    """The API's own counters, in the app's registry next to the gateway's metrics."""

    registry: CollectorRegistry
    requests: Counter = field(init=False)
    auth_failures: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "edge_api_requests",
            "Local API requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "edge_api_auth_failures",
            "Requests refused for a missing or unknown token (401) or a too-weak role (403).",
            ["status"],
            registry=self.registry,
        )


@dataclass
class ApiContext:
    """Everything the routers need, kept on ``app.state.ctx``."""

    services: Services
    settings: ApiSettings
    tokens: TokenTable
    registry: CollectorRegistry
    metrics: ApiMetrics
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server stops, so live streams end instead of holding the shutdown."""

    def audit(
        self,
        principal: Principal | None,
        action: str,
        target: str,
        result: str,
        reason: str = "",
    ) -> None:
        """Record a mutating call (or a refused attempt) as a ``gateway.audit`` event."""
        data: dict[str, Any] = {
            "actor": principal.name if principal else "unknown",
            "role": principal.role if principal else "unknown",
            "via": "api",
            "action": action,
            "target": target,
            "result": result,
        }
        if reason:
            data["reason"] = reason[:500]
        emitter = self.services.emitter
        emitter.emit(Event("edu.campus.gateway.audit.v1", emitter.source("gateway"), data))


def get_ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]

_bearer = HTTPBearer(auto_error=False, description="A token from the api_tokens credential.")


def _action(request: Request) -> tuple[str, str]:
    route = request.scope.get("route")
    name = getattr(route, "name", None) or request.url.path
    target = "/".join(str(v) for v in request.path_params.values())
    return str(name), target


def _header_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authenticate(request: Request, role: Role, token: str | None = None) -> Principal:
    """The principal behind the request if it holds ``role`` or higher; raises 401/403 otherwise."""
    ctx = get_ctx(request)
    token = token or _header_token(request)
    if token is None and request.method in SAFE_METHODS:
        token = request.cookies.get(SESSION_COOKIE)
    if not token:
        ctx.metrics.auth_failures.labels("401").inc()
        raise ApiError(401, "missing_token", "send 'Authorization: Bearer <token>'")
    principal = ctx.tokens.lookup(token)
    if principal is None:
        ctx.metrics.auth_failures.labels("401").inc()
        raise ApiError(401, "unknown_token", "the token is not one this gateway accepts")
    if not principal.may(role):
        ctx.metrics.auth_failures.labels("403").inc()
        message = f"this needs the {role} role; the token has {principal.role}"
        if request.method not in SAFE_METHODS:
            # Unauthenticated attempts (401) are counted, not audited: anyone on the LAN could
            # otherwise fill the never-dropped access lane. A known token overreaching is audited.
            action, target = _action(request)
            ctx.audit(principal, action, target, "refused", message)
        raise ApiError(403, "forbidden", message)
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits tokens of ``role`` or higher.

    The header is the way in. The session cookie (set by the console's login) is accepted only for
    GET: the browser's EventSource and <img> cannot send headers, and refusing the cookie on
    mutating calls means another site cannot make a logged-in browser act (no CSRF).
    """

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return authenticate(request, role, credentials.credentials if credentials is not None else None)

    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No token or an unknown token."},
    403: {"model": ErrorBody, "description": "The token's role may not do this."},
}

BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body could not be parsed."},
    413: {"model": ErrorBody, "description": "body_too_large: over api.max_body_bytes."},
}

__all__ = [
    "AUTH_RESPONSES",
    "BODY_RESPONSES",
    "SESSION_COOKIE",
    "Admin",
    "ApiContext",
    "ApiError",
    "ApiMetrics",
    "Ctx",
    "Operator",
    "Viewer",
    "authenticate",
    "get_ctx",
    "require",
]

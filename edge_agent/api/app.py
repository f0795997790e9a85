"""The FastAPI application over a running gateway: ``create_app(services, settings)``.

Thin edge (STYLE.md 10): every route reads or calls the gateway's services; this module only
composes the routers, the error format, the request size limit, the metrics registry and the
console's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import ProcessCollector
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge_agent import __version__
from edge_agent.api.auth import TokenTable
from edge_agent.api.connections import ConnectionGuard
from edge_agent.api.deps import ApiContext, ApiError, ApiMetrics
from edge_agent.api.models import ErrorBody
from edge_agent.api.routers import (
    alerts,
    attendance,
    cameras,
    config,
    enrollments,
    events,
    health,
    roster,
    session,
    status,
)
from edge_agent.config import ApiSettings
from edge_agent.metrics import gateway_registry
from edge_agent.services import Services

STATIC_DIR = Path(__file__).parent / "static"
# The console is served from here, and only here: no CDN, nothing inline, nothing framed.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body = ErrorBody(code=code, message=message, details=details or [])
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


DRAIN_LIMIT = 64 * 1024 * 1024


class _TooLarge(Exception):
    """A request body grew past the limit while being read."""


async def _read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body, or None when the client went away first; :class:`_TooLarge` as soon
    as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then passes on what follows
    (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413 before the app sees them.

    With a Content-Length the header decides (the HTTP parser holds the client to it). A chunked
    upload has none: it is read here up to the limit and then handed on, so an oversized one is
    refused without the app ever starting on a truncated body.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                with contextlib.suppress(ValueError):
                    length = int(value)
        if length is not None:
            if length > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive, self.limit)
        except _TooLarge:
            await self._refuse(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, _replaying(body, receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Read and discard (never keep) what the client is still sending, up to a bound: a client
        # that is cut off mid-upload sees a reset connection instead of our 413.
        drained = 0
        while drained < DRAIN_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                break
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response = _error(413, "body_too_large", f"request bodies are limited to {self.limit} bytes")
        await response(scope, receive, send)


class Observe:
    """Counts requests by route template and status, and adds the console's security headers.

    Plain ASGI rather than ``@app.middleware("http")``: that one runs every request through an extra
    task and memory streams, which cost more than most of these endpoints themselves.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        console = str(scope.get("path", "")).startswith("/console")
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                if console:
                    headers["Content-Security-Policy"] = CONSOLE_CSP
                    headers["X-Content-Type-Options"] = "nosniff"
                    headers["Referrer-Policy"] = "no-referrer"
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()


class Throttle:
    """At most ``limit`` requests in their handlers at once; the others wait, costing nothing.

    The gates decide on the gateway's event loop. Every request ready to run is work a card read
    queues behind, so an API flood (a console left polling in many tabs, a scraper) would otherwise
    stretch the swipe-to-open time from under a millisecond to tens (bench/bench_api.py). Long-lived
    streams hold no slot: they sleep between alerts. A request body is received before the slot is
    taken, so a slow upload cannot hold the API for everyone (BodyLimit, outside this, bounds it).
    """

    EXEMPT = ("/api/v1/alerts/stream", "/health")

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD"):
            async with self.slots:
                await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away before sending its body
        async with self.slots:
            await self.app(scope, _replaying(body, receive), send)


def create_app(services: Services, settings: ApiSettings, *, tokens: TokenTable | None = None) -> FastAPI:
    """The API over ``services``. ``tokens`` defaults to the ``settings.tokens_credential`` credential
    (raises :class:`~edge_agent.api.auth.TokenFileError` when it is malformed). The server's
    connection bounds are kept on ``app.state.connections`` (a :class:`ConnectionGuard`), so that
    /metrics shows them."""
    app = FastAPI(
        title="Campus edge gateway: local API",
        version=__version__,
        description="Health, metrics, status, events, roster, enrollment, alerts and config "
        "validation of one edge gateway. Bearer tokens with roles viewer < operator < admin.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    registry = gateway_registry(services)
    ctx = ApiContext(
        services=services,
        settings=settings,
        tokens=tokens if tokens is not None else TokenTable.from_credential(settings.tokens_credential),
        registry=registry,
        metrics=ApiMetrics(registry),
    )
    app.state.ctx = ctx
    connections = ConnectionGuard(settings, services.counters, services.clock)
    app.state.connections = connections
    registry.register(connections)
    # process_open_fds next to process_max_fds (LimitNOFILE): what every API connection draws on.
    ProcessCollector(registry=registry)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.code, err.message, err.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type")),
            }
            for e in err.errors()
        ]
        first = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:3])
        return _error(422, "invalid_request", first or "invalid request", jsonable_encoder(details))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, f"http_{err.status_code}", str(err.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, err: Exception) -> JSONResponse:
        # A bug in one handler answers 500 with a code; the gateway (same process) keeps running.
        return _error(500, "internal_error", f"{type(err).__name__} while handling the request")

    app.add_middleware(Throttle, limit=settings.max_concurrent_requests)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Observe, metrics=ctx.metrics)

    for module in (health, status, events, roster, enrollments, alerts, config, session, cameras, attendance):
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.mount("/console", StaticFiles(directory=STATIC_DIR, html=True), name="console")
    return app


def openapi_document(app: FastAPI) -> str:
    """The OpenAPI document as JSON text (for docs and client generators)."""
    return json.dumps(app.openapi(), indent=2)


__all__ = ["BodyLimit", "create_app", "openapi_document"]

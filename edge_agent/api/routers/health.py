"""Liveness, readiness and the Prometheus scrape: the endpoints systemd, load balancers and
Prometheus call, without a token (see ``ApiSettings.metrics_public``)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_agent import __version__
from edge_agent.api.deps import ApiContext, Ctx, authenticate
from edge_agent.api.models import Health, Readiness

router = APIRouter(tags=["health"])


def readiness(ctx: ApiContext) -> Readiness:
    services = ctx.services
    cfg = services.config.current()
    configured = [d.id for d in cfg.devices] + [c.id for c in cfg.cameras]
    # The same test the gateway's watchdog makes: the writer thread is the only way to disk.
    outbox_open = services.outbox.writer_alive()
    checks = {
        "config": True,  # services exist only over a validated configuration
        "outbox": outbox_open,
        # Critical: protected events wait in memory for disk space (the gate still decides, but a
        # restart now would lose them; docs/OPERATIONS.md "Full disk").
        "storage": services.outbox.storage.state != "critical",
        "roster": True,  # and only once the local stores (roster, alert book) are open
        # Start-up got past the devices: each is in the directory (online or not), every gate built.
        "devices": all(dev in services.devices.state for dev in configured)
        and len(services.gates) == len(cfg.gates),
        "loops": outbox_open and services.report.healthy(),
    }
    return Readiness(ready=all(checks.values()), checks=checks, broker=services.link.state)


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: config loaded, outbox open, devices started (broker not required)",
    responses={503: {"model": Readiness, "description": "Not ready yet (or any more)."}},
)
async def ready(ctx: Ctx) -> Response:
    state = readiness(ctx)
    return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, ctx: Ctx) -> Response:
    if not ctx.settings.metrics_public:
        authenticate(request, "viewer")
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

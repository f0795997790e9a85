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
    agent = ctx.agent
    configured = [d.id for d in agent.config.devices] + [c.id for c in agent.config.cameras]
    # Outbox open: its writer thread runs (the same test the agent's watchdog makes).
    writer = getattr(agent.outbox, "_writer", None)
    outbox_open = writer is not None and writer.is_alive()
    checks = {
        "config": True,  # an Agent only exists over a validated configuration
        "outbox": outbox_open,
        "roster": agent.roster is not None,
        # The agent records every configured device when it tries to start it (online or not), and
        # builds the gates after the devices: both done means start-up got past the devices.
        "devices": agent.link is not None
        and all(dev in agent.device_state for dev in configured)
        and len(agent.gates) == len(agent.config.gates),
        "loops": outbox_open and agent.healthy(),
    }
    return Readiness(
        ready=all(checks.values()), checks=checks, broker=agent.link.state if agent.link else "starting"
    )


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

"""Serving the API inside the gateway's event loop with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn

from edge_agent.api.app import create_app
from edge_agent.api.connections import ConnectionGuard, GuardedH11Protocol
from edge_agent.api.deps import ApiContext
from edge_agent.config import ApiSettings
from edge_agent.errors import AgentError
from edge_agent.services import Services

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 64
"""Connections the kernel queues for the API before accepting them. Queued ones cost the agent no
descriptor, but asyncio accepts up to this many per wake-up, and an accepted connection lives about
three loop iterations before one over the cap is closed: a burst holds up to ~4 x this many
descriptors beyond the cap (docs/OPERATIONS.md). Shorter, and a burst of clients waits out SYN
retries (1 s, 3 s, ...) in the kernel, the console's included."""


class ApiStartError(AgentError):
    """The API could not listen (address in use, no permission); ``code`` is ``api_bind_failed``.

    Not a :class:`~edge_agent.errors.ConfigError`: the configuration may be right and the port
    taken by another process."""


class _Server(uvicorn.Server):
    # The gateway owns SIGTERM/SIGINT (its loop handlers stop it in order); uvicorn must not replace
    # them with its own for as long as it serves.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # that say they are TCP, and without it Nagle + delayed ACKs add ~40 ms to every small response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ApiStartError(
            f"the local API cannot listen on {host}:{port}: {err}", code="api_bind_failed"
        ) from err
    sock.set_inheritable(True)
    return sock


async def serve_api(services: Services, settings: ApiSettings) -> None:
    """Serve the API and console until cancelled; run it as a task in the gateway's event loop.

    The socket is bound here first, so a port in use raises :class:`ApiStartError` (uvicorn would
    call ``sys.exit``). On cancellation open live streams are ended and the server is given
    ``settings.shutdown_grace_s`` to finish. Returns at once when ``settings.enabled`` is false.
    Connections are capped and held to deadlines (:mod:`edge_agent.api.connections`).
    Tokens are read once here: systemd hands credentials over at service start, so a changed token
    file takes a restart either way.
    """
    if not settings.enabled:
        log.info("local API disabled (api.enabled: false)")
        return
    app = create_app(services, settings)
    ctx: ApiContext = app.state.ctx
    connections: ConnectionGuard = app.state.connections
    sock = _bind(settings.host, settings.port)
    config = uvicorn.Config(
        app,
        # Always h11 (httptools is not installed, and its protocol would need the same guard).
        http=GuardedH11Protocol.for_guard(connections),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        backlog=LISTEN_BACKLOG,
        log_config=None,  # the gateway's logging (journald) is already set up
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        server_header=False,
        proxy_headers=False,
        ws="none",
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
    log.info("local API on http://%s:%d (console at /console/)", settings.host, settings.port)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        ctx.closing.set()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, settings.shutdown_grace_s + 2)
        if not task.done():
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        raise
    finally:
        connections.cancel_report()
        sock.close()


__all__ = ["ApiStartError", "serve_api"]

"""The local HTTP API, Prometheus metrics and the security console, over a running gateway.

Wiring: the gateway runs ``serve_api(services, settings)`` as one of its components (cancel it to
stop); ``create_app(services, settings)`` gives the bare ASGI app. The settings model lives in the
leaf ``edge_agent.config.api``, so the configuration never imports the app.
"""

from edge_agent.api.app import create_app
from edge_agent.api.auth import Principal, TokenFileError, TokenTable
from edge_agent.api.server import ApiStartError, serve_api

__all__ = [
    "ApiStartError",
    "Principal",
    "TokenFileError",
    "TokenTable",
    "create_app",
    "serve_api",
]

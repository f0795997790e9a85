"""The local HTTP API, Prometheus metrics and the security console, over a running agent.

Wiring: build :class:`ApiSettings` from the ``api:`` section and run ``serve_api(agent, settings)``
as a task in the agent's event loop (cancel it to stop). ``create_app`` gives the bare ASGI app.
"""

from edge_agent.api.app import create_app
from edge_agent.api.auth import Principal, TokenFileError, TokenTable
from edge_agent.api.server import ApiStartError, serve_api
from edge_agent.api.settings import ApiSettings

__all__ = [
    "ApiSettings",
    "ApiStartError",
    "Principal",
    "TokenFileError",
    "TokenTable",
    "create_app",
    "serve_api",
]

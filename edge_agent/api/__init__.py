"""The local HTTP API, Prometheus metrics and the security console, over a running agent.

Wiring: build :class:`ApiSettings` from the ``api:`` section and run ``serve_api(agent, settings)``
as a task in the agent's event loop (cancel it to stop). ``create_app`` gives the bare ASGI app.

Only the settings are imported eagerly: ``edge_agent.config`` imports :class:`ApiSettings` to
compose the root config, while the app itself imports ``edge_agent.config`` (config validation), so
loading the app here would make the two modules import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_agent.api.settings import ApiSettings

if TYPE_CHECKING:
    from edge_agent.api.app import create_app
    from edge_agent.api.auth import Principal, TokenFileError, TokenTable
    from edge_agent.api.server import ApiStartError, serve_api

_LAZY = {
    "create_app": "edge_agent.api.app",
    "Principal": "edge_agent.api.auth",
    "TokenFileError": "edge_agent.api.auth",
    "TokenTable": "edge_agent.api.auth",
    "ApiStartError": "edge_agent.api.server",
    "serve_api": "edge_agent.api.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ApiSettings",
    "ApiStartError",
    "Principal",
    "TokenFileError",
    "TokenTable",
    "create_app",
    "serve_api",
]

"""Settings of the local HTTP API and console (the ``api:`` section of the gateway config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """Where the local API listens, where its tokens come from, and how much it accepts."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Serve the local API, metrics and console.")
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on. Loopback by default; set the LAN address (or 0.0.0.0) to "
        "let the security office reach the console.",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port.")
    tokens_credential: str = Field(
        "api_tokens",
        description="Credential holding the bearer tokens, one 'role:token' or 'role:token:name' per "
        "line (roles: viewer, operator, admin). Without it only /health, /ready and /metrics answer.",
    )
    max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it)."
    )
    metrics_public: bool = Field(
        True,
        description="Serve /metrics without a token (Prometheus scrapes from the box or the LAN). "
        "When false, /metrics needs a viewer token.",
    )
    events_max_limit: int = Field(
        500, ge=1, le=10_000, description="Most events one /api/v1/events call returns."
    )
    session_cookie_secure: bool = Field(
        False,
        description="Mark the console's session cookie Secure (only sent over HTTPS); set it when a "
        "TLS proxy fronts the API.",
    )
    max_concurrent_requests: int = Field(
        1,
        ge=1,
        le=64,
        description="API requests handled at once (live streams and /health excepted); more wait their "
        "turn. The gates decide on the same event loop, so this bounds how long a card read can queue "
        "behind API work.",
    )
    shutdown_grace_s: float = Field(
        2.0, gt=0, le=30, description="How long open connections (live alert streams) get at shutdown."
    )


__all__ = ["ApiSettings"]

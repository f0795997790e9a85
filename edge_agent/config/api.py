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
    max_connections: int = Field(
        64,
        ge=1,
        le=512,
        description="Open connections the API keeps at once; one more is closed as soon as it is "
        "accepted (counted as api_connections_refused). Each holds a file descriptor, and the agent's "
        "serial ports, SQLite files and MQTT link share the process's limit (LimitNOFILE in the unit).",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A connection that has not sent a complete request line and headers this long "
        "after it opened (or after it started its next request) is closed.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="A request whose body has not fully arrived this long after its headers is closed. "
        "30 s takes the largest body (max_body_bytes) at about 170 kB/s.",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        le=300,
        description="An idle connection between requests is closed after this many seconds.",
    )
    shutdown_grace_s: float = Field(
        2.0, gt=0, le=30, description="How long open connections (live alert streams) get at shutdown."
    )


__all__ = ["ApiSettings"]

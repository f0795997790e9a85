"""Settings of remote management over MQTT (leaf: pydantic only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RateLimit(BaseModel):
    """At most ``count`` commands in any ``per_s`` seconds (a sliding window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(6, ge=1, le=10_000, description="Commands allowed in the window.")
    per_s: float = Field(60.0, gt=0, le=86_400, description="Length of the window in seconds.")


class CommandSettings(BaseModel):
    """Remote management over MQTT (docs/COMMANDS.md). Off unless ``enabled``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Subscribe to .../cmd/+ and execute signed commands.")
    keys_credential: str = Field(
        "command_keys",
        description="Credential name of the trusted keys (JSON: Ed25519 public keys and/or HMAC "
        "secrets, each with an id); never the keys themselves in the YAML.",
    )
    max_age_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest validity window (expires_at - issued_at) a command may ask for.",
    )
    clock_skew_s: float = Field(
        5.0, ge=0, le=300, description="Tolerated difference between the centre's clock and ours."
    )
    nonce_cache_size: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="Most nonces remembered at once; each is kept until its command expires (at "
        "most max_age_s + 2 x clock_skew_s). When full of live nonces, new commands are refused.",
    )
    open_rate_limit: RateLimit = Field(
        default_factory=RateLimit, description="Per gate: how many remote 'open' commands are allowed."
    )
    max_payload_bytes: int = Field(
        262_144,
        ge=512,
        le=1_048_576,
        description="Larger command payloads are refused unread (push_config carries a whole file).",
    )
    response_topic_prefixes: list[str] | None = Field(
        None,
        description="MQTT 5 response topics the gateway answers on, by prefix (e.g. 'centre/replies/'); "
        "a request naming another gets its reply on .../cmd/{name}/reply. Match the broker ACL: a broker "
        "may close the connection of a client that publishes where its ACL denies. None: any topic.",
    )
    push_probation_s: float = Field(
        120.0,
        gt=0,
        description="After a restart with a pushed configuration, how long the broker has to answer before "
        "the previous file is put back and the agent restarts with it.",
    )
    device_confirm: bool = Field(
        True,
        description="Wait for the turnstile's acknowledgement before replying ok (drivers that "
        "support it); otherwise ok means the command was written.",
    )

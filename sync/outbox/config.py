"""Outbox settings: a leaf (pydantic and the standard library only), so the agent's config can
compose it without importing the outbox runtime."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OutboxConfig(BaseModel):
    """Store-and-forward settings (DESIGN.md: store-and-forward rules)."""

    model_config = ConfigDict(extra="forbid")

    synchronous: Literal["full", "normal"] = Field(
        "full",
        description="SQLite synchronous mode. 'full' survives a power cut; 'normal' survives only a "
        "process crash but saves an fsync per commit.",
    )
    max_batch: int = Field(
        5000, ge=1, le=100_000, description="Most operations committed in one transaction."
    )
    max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Size cap of the live data in the outbox database, in bytes."
    )
    min_free_bytes: int = Field(
        256 << 20, ge=0, description="Free-space floor of the data directory's file system, in bytes."
    )
    delivered_retention_s: float = Field(
        7 * 86400.0, ge=0, description="Delivered rows older than this are purged."
    )
    housekeeping_interval_s: float = Field(
        10.0, gt=0, description="How often the size cap, disk floor and retention are enforced."
    )


__all__ = ["OutboxConfig"]

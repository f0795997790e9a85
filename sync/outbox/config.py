"""Outbox settings: a leaf (pydantic and the standard library only), so the agent's config can
compose it without importing the outbox runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class SpaceLimits:
    """The byte limits the outbox enforces on one file system (see :meth:`OutboxConfig.limits`)."""

    max_bytes: int
    """Cap of the live data in the database."""
    min_free_bytes: int
    """Free-space floor: below it the drop policy runs."""
    reserve_bytes: int
    """Size of the reserve file kept for alerts, access and attendance."""
    check_bytes: int
    """Bytes appended between two free-space checks on the write path."""


class OutboxConfig(BaseModel):
    """Store-and-forward settings (DESIGN.md: store-and-forward rules).

    The byte limits are relative to the data directory's file system, so one default fits a 4 GB
    and a 16 GB SD card (and the 16 MiB file systems of the tests): see :meth:`limits`.
    """

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
        1 << 30,
        ge=1 << 20,
        description="Size cap of the live data in the outbox database, in bytes (an upper bound: "
        "max_percent of the file system applies when smaller).",
    )
    max_percent: float = Field(
        50.0,
        gt=0,
        le=100,
        description="Size cap of the live data as a percentage of the data directory's file system.",
    )
    min_free_bytes: int = Field(
        256 * MiB,
        ge=0,
        description="Highest free-space floor of the data directory's file system, in bytes: the "
        "floor is min_free_percent of the file system, at least min_free_min_bytes (but not more "
        "than a quarter of the file system), at most this. Below the floor the drop policy runs.",
    )
    min_free_percent: float = Field(
        5.0, ge=0, le=100, description="Free-space floor as a percentage of the file system's size."
    )
    min_free_min_bytes: int = Field(
        8 * MiB, ge=0, description="Lowest free-space floor in bytes (unless min_free_bytes is lower)."
    )
    reserve_bytes: int = Field(
        32 * MiB,
        ge=0,
        description="A file of this size is kept in the data directory and deleted when the disk is "
        "full, so alerts, access and attendance can still be committed; re-created when space "
        "returns. Never more than 1/16 of the file system. 0: no reserve.",
    )
    memory_queue_max: int = Field(
        10_000,
        ge=1,
        description="Alerts, access and attendance events kept in memory (in order) while even the "
        "reserve is used up; beyond this the oldest access events are lost (counted and reported).",
    )
    space_check_interval_s: float = Field(
        0.25,
        gt=0,
        description="Free space and size are checked on the write path at least this often while "
        "events are being written (and every check_bytes written).",
    )
    space_check_bytes: int = Field(
        1 * MiB,
        ge=4096,
        description="Most bytes appended between two free-space checks (never more than 1/8 of the floor).",
    )
    delivered_retention_s: float = Field(
        7 * 86400.0, ge=0, description="Delivered rows older than this are purged."
    )
    housekeeping_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often retention is enforced and the reserve re-created (the size cap and "
        "disk floor are also checked on the write path).",
    )

    def limits(self, fs_bytes: int) -> SpaceLimits:
        """The limits on a file system of ``fs_bytes`` (its total size)."""
        # The lower bound never takes more than a quarter of a small file system.
        low = min(self.min_free_min_bytes, fs_bytes // 4)
        floor = min(max(int(fs_bytes * self.min_free_percent / 100), low), self.min_free_bytes)
        cap = min(self.max_bytes, max(MiB, int(fs_bytes * self.max_percent / 100)))
        reserve = min(self.reserve_bytes, fs_bytes // 16)
        # Checked often enough that the space between two checks cannot run through the floor.
        check = max(4096, min(self.space_check_bytes, floor // 8)) if floor else self.space_check_bytes
        return SpaceLimits(cap, floor, reserve, check)


__all__ = ["OutboxConfig", "SpaceLimits"]

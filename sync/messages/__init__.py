"""Wire models of what the centre sends the gateway (roster snapshot and deltas) and the gateway's
roster reply. The command messages are still modelled in the agent's command handler."""

from __future__ import annotations

from sync.messages.roster import (
    ROSTER_SCHEMAS,
    WEEKDAYS,
    AccessGroup,
    BiometricConsent,
    BlockedCredential,
    ConsentUse,
    Credential,
    FaceTemplate,
    Person,
    RosterContent,
    RosterDeletes,
    RosterDelta,
    RosterReply,
    RosterSnapshot,
    Schedule,
    SnapshotPart,
    TimeWindow,
    Weekday,
    split_snapshot,
    templates_digest,
)

__all__ = [
    "ROSTER_SCHEMAS",
    "WEEKDAYS",
    "AccessGroup",
    "BiometricConsent",
    "BlockedCredential",
    "ConsentUse",
    "Credential",
    "FaceTemplate",
    "Person",
    "RosterContent",
    "RosterDeletes",
    "RosterDelta",
    "RosterReply",
    "RosterSnapshot",
    "Schedule",
    "SnapshotPart",
    "TimeWindow",
    "Weekday",
    "split_snapshot",
    "templates_digest",
]

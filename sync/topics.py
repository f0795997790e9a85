"""MQTT topic names (DESIGN.md, topics). The one place that spells them."""

from __future__ import annotations

from dataclasses import dataclass

from sync.event_types import EVENT_TYPES


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one gateway under a configurable prefix (default ``campus/v1``)."""

    prefix: str
    site: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    def events(self, area: str) -> str:
        return f"{self.base}/events/{area}"

    def alerts(self, severity: str) -> str:
        return f"{self.base}/alerts/{severity}"

    def snapshot(self, event_id: str) -> str:
        return f"{self.base}/snapshots/{event_id}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/+"

    def command_reply(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/reply"

    @property
    def roster_filter(self) -> str:
        """Snapshot and delta topics of the site's roster (published by the centre)."""
        return f"{self.prefix}/{self.site}/roster/+"

    def roster(self, kind: str) -> str:
        return f"{self.prefix}/{self.site}/roster/{kind}"

    @property
    def roster_reply(self) -> str:
        """Where this gateway answers roster messages when there is no MQTT 5 response topic."""
        return f"{self.base}/roster/reply"

    def for_event(self, event_type: str, severity: str | None) -> list[str]:
        """Where one event is published: its area's events topic, and for alerts the alert topic too.

        Alerts go to ``alerts/{severity}`` first, so a console listening there gets them soonest.
        """
        spec = EVENT_TYPES[event_type]
        topics = [self.events(spec.area)]
        if spec.alert and severity is not None:
            topics.insert(0, self.alerts(severity))
        return topics


__all__ = ["Topics"]

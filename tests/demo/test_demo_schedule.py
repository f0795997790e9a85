"""The demo's after-hours rule: a real schedule in config/demo.yaml, armed for the demo run when it is
not armed now, and said so in one printed line; at the hours it is armed, left alone and unsaid."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from edge_agent.config import GatewayConfig, load_config
from edge_agent.config.cameras import IntrusionRule
from edge_agent.demo import COURTYARD_CAMERA, DEMO_CONFIG, arm_rules_now


def courtyard_rules(config: GatewayConfig) -> list[IntrusionRule]:
    setup = next(c for c in config.cameras if c.id == COURTYARD_CAMERA)
    assert setup.security is not None
    return [r for r in setup.security.rules if isinstance(r, IntrusionRule)]


def local(config: GatewayConfig, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(config.gateway.timezone))


def test_the_demo_rule_has_a_real_after_hours_schedule() -> None:
    config = load_config(DEMO_CONFIG)
    rules = courtyard_rules(config)
    assert rules and all(r.schedule is not None for r in rules)

    def armed(at: str) -> bool:
        return any(r.schedule.armed(local(config, at)) for r in rules if r.schedule is not None)

    # 2026-12-02 is a Wednesday, 2026-12-05 a Saturday.
    assert not armed("2026-12-02T10:00") and not armed("2026-12-02T17:59")
    assert armed("2026-12-02T06:59") and armed("2026-12-02T18:00") and armed("2026-12-02T23:59")
    assert armed("2026-12-05T12:00")


@pytest.mark.parametrize(
    ("at", "arms"),
    [("2026-12-02T10:00", True), ("2026-12-02T20:00", False), ("2026-12-05T12:00", False)],
)
def test_the_demo_arms_the_zone_only_when_no_rule_is_armed_and_says_so(
    at: str, arms: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(DEMO_CONFIG)
    prepared = arm_rules_now(config, local(config, at))
    err = capsys.readouterr().err
    before, after = courtyard_rules(config), courtyard_rules(prepared)
    unscheduled = [r.id for r in after if r.schedule is None]
    if arms:
        # One rule of the zone loses its schedule for the run, and one line names it and the option.
        assert unscheduled == [before[0].id]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and before[0].id in lines[0] and "--real-schedules" in lines[0]
        assert "not now (Wed 10:00" in lines[0]
    else:
        assert unscheduled == [] and after == before and err == ""
    # Nothing else in the configuration changes.
    rest = [c for c in prepared.cameras if c.id != COURTYARD_CAMERA]
    assert rest == [c for c in config.cameras if c.id != COURTYARD_CAMERA]

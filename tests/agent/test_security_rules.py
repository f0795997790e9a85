"""Security rules on scenario clips: people composited from the shipped scene photos walk, stand and crowd
over a corridor; the real NanoDet, tracker and zones feed the rules. Each rule fires when it should
and stays silent when it should not."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from edge_agent.config import ConfigFileError, SecurityConfig, parse_config
from edge_agent.security import Alert, SecurityRules
from tests.vision.scene_clips import cover, shared_person_detector
from vision import PersonFrameResult, PersonPipeline, TamperChange
from vision.scenes import (
    WalkerPath,
    corridor_background,
    linear_path,
    person_sprite,
    stand_path,
    walk_clip,
    with_gap,
)

FPS = 5.0
SPRITE_HEIGHT = {"figure": 250.0, "diner": 200.0}
NIGHT = datetime(2026, 12, 8, 22, 0)  # a Tuesday, 22:00 local
SCHOOL_HOURS = datetime(2026, 12, 8, 10, 0)
BASE: dict[str, Any] = {
    "zones": [{"id": "restricted", "points": [[760, 380], [1280, 380], [1280, 720], [760, 720]]}],
    "lines": [
        {"id": "door", "start": [640, 360], "end": [640, 720], "label_a_to_b": "in", "label_b_to_a": "out"}
    ],
}
AFTER_HOURS = {"windows": [{"start": "18:00", "end": "24:00"}, {"start": "00:00", "end": "07:00"}]}


def walker(who: str, path: list[Any]) -> WalkerPath:
    return WalkerPath(person_sprite(who), path, SPRITE_HEIGHT[who])


def run_rules(
    frames: list[Any],
    rules: list[dict[str, Any]],
    local: datetime = NIGHT,
    grants: int = 0,
    tamper: bool = False,
) -> list[Alert]:
    config = SecurityConfig.model_validate(
        {**BASE, "rules": rules, "pipeline": {"tamper": {"check_every_s": 0}} if tamper else {"tamper": None}}
    )
    pipeline = PersonPipeline(
        "cam", config.camera_zones("cam"), config.pipeline, detector=shared_person_detector()
    )
    engine = SecurityRules("cam", config, lambda gate, window: grants)
    alerts: list[Alert] = []
    for k, frame in enumerate(frames):
        result = pipeline.process(frame.frame if hasattr(frame, "frame") else frame, k / FPS)
        alerts += engine.evaluate(result, local)
    return alerts


def test_intrusion_after_hours_only_and_only_inside() -> None:
    into = walk_clip(corridor_background(), [walker("figure", linear_path((120, 600), (1100, 600), 25))], 25)
    rule = {
        "kind": "intrusion",
        "id": "night-intrusion",
        "zone": "restricted",
        "severity": "critical",
        "schedule": AFTER_HOURS,
    }
    alerts = run_rules(into, [rule])
    assert [a.type for a in alerts] == ["edu.campus.security.intrusion.v1"]
    assert alerts[0].data["zone"] == "restricted" and alerts[0].severity == "critical"
    assert alerts[0].data["track_ids"] == list(alerts[0].track_ids) and alerts[0].data["count"] == 1
    assert run_rules(into, [rule], local=SCHOOL_HOURS) == []  # disarmed during school hours
    outside = walk_clip(
        corridor_background(), [walker("figure", linear_path((120, 600), (600, 600), 25))], 25
    )
    assert run_rules(outside, [rule]) == []


def test_line_crossing_with_direction() -> None:
    there = linear_path((300, 620), (1000, 620), 15)
    frames = walk_clip(corridor_background(), [walker("figure", there + there[::-1])], 30)
    both = run_rules(frames, [{"kind": "line_crossing", "id": "door-any", "line": "door", "cooldown_s": 0}])
    assert [a.data["label"] for a in both] == ["out", "in"]  # left→right is B→A on this line
    inward = run_rules(
        frames,
        [{"kind": "line_crossing", "id": "door-in", "line": "door", "direction": "a_to_b", "cooldown_s": 0}],
    )
    assert [a.data["direction"] for a in inward] == ["a_to_b"]


def test_loitering_tolerates_a_short_break_and_respects_dwell() -> None:
    stay = with_gap(stand_path((1000.0, 640.0), 30), 15, 2)  # hidden for 0.4 s in the middle
    frames = walk_clip(corridor_background(), [walker("figure", stay)], 30)
    alerts = run_rules(frames, [{"kind": "loitering", "id": "loiter", "zone": "restricted", "dwell_s": 3.0}])
    assert len(alerts) == 1 and alerts[0].data["dwell_s"] >= 3.0
    assert (
        run_rules(frames, [{"kind": "loitering", "id": "loiter", "zone": "restricted", "dwell_s": 10.0}])
        == []
    )


def test_crowding_needs_the_count_for_the_time() -> None:
    spots = [(850.0, 560.0), (1000.0, 640.0), (1150.0, 700.0)]
    who = ["figure", "diner", "figure"]
    frames = walk_clip(
        corridor_background(),
        [walker(w, stand_path(p, 15)) for w, p in zip(who, spots, strict=True)],
        15,
    )
    alerts = run_rules(
        frames, [{"kind": "crowding", "id": "crowd", "zone": "restricted", "min_people": 3, "for_s": 1.0}]
    )
    assert len(alerts) == 1 and alerts[0].data["count"] == 3 and alerts[0].data["for_s"] >= 1.0
    assert (
        run_rules(frames, [{"kind": "crowding", "id": "crowd", "zone": "restricted", "min_people": 4}]) == []
    )


def test_camera_covered_is_a_tamper_alert() -> None:
    background = corridor_background()
    frames = [background] * 15 + [cover(background)] * 15
    alerts = run_rules(frames, [{"kind": "tamper", "id": "tamper", "severity": "critical"}], tamper=True)
    assert [a.data["kind"] for a in alerts] == ["covered"]
    assert run_rules([background] * 30, [{"kind": "tamper", "id": "tamper"}], tamper=True) == []


def test_video_tailgating_compares_crossings_with_grants() -> None:
    first = linear_path((300, 620), (1000, 620), 20)
    second = [None] * 3 + linear_path((250, 690), (950, 690), 17)
    frames = walk_clip(corridor_background(), [walker("figure", first), walker("diner", second)], 20)
    rule = {"kind": "tailgating", "id": "tailgate", "line": "door", "direction": "b_to_a", "gate": "gate-1"}
    alerts = run_rules(frames, [rule], grants=1)
    assert [a.type for a in alerts] == ["edu.campus.access.tailgating.v1"]
    assert alerts[0].data["passages"] == 2 and alerts[0].data["grants"] == 1
    assert run_rules(frames, [rule], grants=2) == []


CAMERA_YAML = """
gateway: {{site: s, id: g}}
cameras:
  - device: {{kind: camera_sim, id: cam-1}}
    security:
{body}
"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("      zones: [{id: z, points: [[0, 0], [100, 100], [100, 0], [0, 100]]}]", "not a simple polygon"),
        (
            "      zones: [{id: z, points: [[0, 0], [100, 0], [100, 100]]}]\n"
            "      rules: [{kind: intrusion, id: r, zone: z, schedule: {weekdays: []}}]",
            "can never be armed",
        ),
        (
            "      zones: [{id: z, points: [[0, 0], [100, 0], [100, 100]]}]\n"
            "      rules: [{kind: intrusion, id: r, zone: z,\n"
            "               schedule: {windows: [{start: '18:00', end: '07:00'}]}}]",
            "crosses midnight",
        ),
        ("      rules: [{kind: intrusion, id: r, zone: nowhere}]", "unknown zone 'nowhere'"),
        ("      lines: [{id: l, start: [5, 5], end: [5, 5]}]", "zero"),
    ],
)
def test_bad_zones_and_schedules_are_config_errors_with_lines(body: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(CAMERA_YAML.format(body=body))
    text = str(info.value)
    assert message in text, text
    assert all(issue.line is not None for issue in info.value.issues)


def test_stream_lost_comes_from_the_periodic_check_and_never_moves_the_frames_time() -> None:
    config = SecurityConfig.model_validate(
        {**BASE, "rules": [{"kind": "tamper", "id": "tamper", "cooldown_s": 60}], "pipeline": {}}
    )
    engine = SecurityRules("cam", config)
    lost = [TamperChange("stream_lost", True, "no frame for 10.5 s", 110.5)]
    first = engine.evaluate_stream(lost, 110.5, NIGHT)
    assert [(a.type, a.data["kind"]) for a in first] == [
        ("edu.campus.security.camera_tamper.v1", "stream_lost")
    ]
    assert engine.evaluate_stream(lost, 130.0, NIGHT) == []  # the rule's cooldown
    assert len(engine.evaluate_stream(lost, 171.0, NIGHT)) == 1
    # A frame captured before those checks (analysed after them) is judged on its own time.
    covered = PersonFrameResult(
        at=100.0,
        detected=False,
        motion=0.0,
        detections=[],
        tracks=[],
        removed=[],
        zones=[],
        tamper=[TamperChange("covered", True, "picture nearly uniform", 100.0)],
    )
    assert [a.data["kind"] for a in engine.evaluate(covered, NIGHT)] == ["covered"]
    only_covered = SecurityRules(
        "cam",
        SecurityConfig.model_validate(
            {**BASE, "rules": [{"kind": "tamper", "id": "t", "kinds": ["covered"]}], "pipeline": {}}
        ),
    )
    assert only_covered.evaluate_stream(lost, 110.5, NIGHT) == []

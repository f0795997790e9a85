"""Roster messages for tests, built the way the centre publishes them."""

from __future__ import annotations

from typing import Any

ALL_WEEK = {
    d: [{"start": "00:00", "end": "24:00"}] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


CONSENT: dict[str, Any] = {
    "granted_by": "guardian",
    "guardian_name": "A. Parent",
    "granted_at": "2026-09-01T00:00:00Z",
    "scopes": ["attendance"],
    "reference": "consent-form-2026",
}
"""Biometric consent of the students whose faces tests enroll (S1, S2): without it nothing is stored."""


def snapshot(version: int = 1, *, extra_persons: int = 0) -> dict[str, Any]:
    persons: list[dict[str, Any]] = [
        {
            "id": "S1",
            "name": "Student One",
            "role": "student",
            "group": "7A",
            "access_groups": ["students"],
            "consent": CONSENT,
        },
        {
            "id": "S2",
            "name": "Student Two",
            "role": "student",
            "group": "7B",
            "access_groups": ["students"],
            "consent": CONSENT,
        },
        {"id": "T1", "name": "Teacher", "role": "teacher", "access_groups": ["staff"]},
        {
            "id": "B1",
            "name": "Blocked",
            "role": "student",
            "group": "7A",
            "access_groups": ["students"],
            "blocked": True,
        },
        {
            "id": "V1",
            "name": "Old visitor",
            "role": "visitor",
            "access_groups": ["visitors"],
            "valid_until": "2020-01-01T00:00:00Z",
        },
        {"id": "N1", "name": "No groups", "role": "staff", "access_groups": []},
        {"id": "W1", "name": "Weekday only", "role": "staff", "access_groups": ["office-hours"]},
    ]
    credentials: list[dict[str, Any]] = [
        {"credential": "0012AB34CD", "format": "em4100", "person_id": "S1"},
        {"credential": "0012AB34CE", "format": "em4100", "person_id": "S2"},
        {"credential": "00FFEE0011", "format": "any", "person_id": "T1"},
        {"credential": "0012AB34CF", "format": "em4100", "person_id": "B1"},
        {"credential": "0099887766", "format": "em4100", "person_id": "V1"},
        {"credential": "00AAAAAAAA", "format": "em4100", "person_id": "N1"},
        {"credential": "00BBBBBBBB", "format": "em4100", "person_id": "W1"},
        {
            "credential": "00CCCCCCCC",
            "format": "em4100",
            "person_id": "S1",
            "valid_until": "2021-06-30T00:00:00Z",
        },
    ]
    for i in range(extra_persons):
        pid = f"P{i:05d}"
        persons.append(
            {
                "id": pid,
                "name": f"Person {i}",
                "role": "student",
                "group": "9Z",
                "access_groups": ["students"],
            }
        )
        credentials.append({"credential": f"{0x5000000000 + i:010X}", "format": "em4100", "person_id": pid})
    return {
        "kind": "snapshot",
        "version": version,
        "persons": persons,
        "credentials": credentials,
        "access_groups": [
            {"id": "students", "gates": ["gate-1", "room-7a"], "schedule": "always"},
            {"id": "staff", "gates": ["*"]},
            {"id": "visitors", "gates": ["gate-1"]},
            {"id": "office-hours", "gates": ["gate-1"], "schedule": "office"},
        ],
        "schedules": [
            {"id": "always", "weekly": ALL_WEEK},
            {
                "id": "office",
                "weekly": {"mon": [{"start": "08:00", "end": "17:00"}]},
                "holidays": ["2026-12-07"],
            },
        ],
        "blocklist": [{"credential": "00DEAD0000", "reason": "reported stolen"}],
    }

"""The roll-call endpoints against a real agent (its attendance file, roster and API over loopback):
what the console's roll-call view polls."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from tests.api.conftest import Tokens, running_api, until
from tests.conftest import MosquittoBroker

# Two classroom cameras (face recognition stays off without a template key: their timetables are
# attendance points all the same). All day, every day, so the test does not depend on the hour.
ALL_WEEK = "[mon, tue, wed, thu, fri, sat, sun]"
CAMERAS = f"""
cameras:
  - device: {{kind: camera_sim, id: cam-7a, width: 64, height: 64, analysis_fps: 1}}
    face:
      point: room-7a
      attendance:
        sessions:
          - {{id: day-7a, name: 7A and 7B, weekdays: {ALL_WEEK}, start: "00:00", end: "24:00",
             late_after_min: 10, groups: [7A, 7B]}}
  - device: {{kind: camera_sim, id: cam-lab, width: 64, height: 64, analysis_fps: 1}}
    face:
      point: lab
      attendance:
        sessions:
          - {{id: open-lab, weekdays: {ALL_WEEK}, start: "00:00", end: "24:00"}}
"""


def test_points_and_rollcall_of_a_running_gateway(
    tmp_path: Path, mosquitto: MosquittoBroker, tokens: Tokens
) -> None:
    async def scenario() -> None:
        async with running_api(tmp_path, mosquitto.url, extra_config=CAMERAS) as gate:
            agent = gate.agent
            anon, viewer = gate.client(), gate.client("viewer", tokens)
            async with anon, viewer:
                assert (await anon.get("/api/v1/attendance/points")).status_code == 401
                await until(lambda: agent.services is not None and agent.services.rollcall, "the roll-call")
                listed = (await viewer.get("/api/v1/attendance/points")).json()["points"]
                today = agent.clock.now().astimezone(agent.timezone).date()
                session = {"id": "day-7a", "name": "7A and 7B", "start": "00:00", "end": "24:00"}
                assert listed == [
                    {
                        "point": "lab",
                        "session": {"id": "open-lab", "name": "", "start": "00:00", "end": "24:00"}
                        | {"day": today.isoformat()},
                        "state": "open",
                    },
                    {"point": "room-7a", "session": session | {"day": today.isoformat()}, "state": "open"},
                ]
                empty = (await viewer.get("/api/v1/attendance/points/room-7a/rollcall")).json()
                assert empty["expected"] == 3 and empty["present"] == [] and empty["late"] == []
                assert [a["person_id"] for a in empty["absent"]] == ["B1", "S1", "S2"]

                # What a camera and a card reader hand the book (the camera's votes as evidence).
                assert agent.attendance is not None and agent.roster is not None
                persons = agent.roster.index.persons
                points = {c.face.point: c.face.attendance for c in agent.config.cameras if c.face}
                midnight = datetime.combine(today, datetime.min.time(), tzinfo=agent.timezone)
                book = agent.attendance
                room, lab = points["room-7a"], points["lab"]
                assert room is not None and lab is not None
                s1_at = midnight + timedelta(minutes=2)
                assert book.record("room-7a", room, persons["S1"], s1_at, method="face", evidence=6)
                assert book.record("room-7a", room, persons["B1"], midnight + timedelta(minutes=40))
                assert book.record("lab", lab, persons["S1"], midnight + timedelta(minutes=50), method="face")
                assert book.record("lab", lab, persons["S2"], midnight + timedelta(minutes=55), method="face")

                rollcall = (await viewer.get("/api/v1/attendance/points/room-7a/rollcall")).json()
                assert rollcall == {
                    "point": "room-7a",
                    "session": session | {"day": today.isoformat()},
                    "state": "open",
                    "expected": 3,
                    "present": [
                        {
                            "person_id": "S1",
                            "name": "Student One",
                            "at": s1_at.isoformat(),
                            "method": "face",
                            "evidence": 6,
                            "seen_elsewhere": True,
                        }
                    ],
                    "late": [
                        {
                            "person_id": "B1",
                            "name": "Blocked",
                            "at": (midnight + timedelta(minutes=40)).isoformat(),
                            "method": "card",
                            "evidence": 1,
                            "seen_elsewhere": False,
                        }
                    ],
                    "absent": [{"person_id": "S2", "name": "Student Two"}],
                }
                unknown = await viewer.get("/api/v1/attendance/points/gate-1/rollcall")
                assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_point"
                bad = await viewer.get("/api/v1/attendance/points/no%20such/rollcall")
                assert bad.status_code == 422

    asyncio.run(scenario())

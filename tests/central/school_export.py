"""A school's master-data export for the publisher's tests, generated from a seeded RNG: one row
per person in the documented columns (docs/MASTER_DATA.md), written as CSV or XLSX, and the edits
a school office makes between two exports (transfers, leavers, joiners, new and lost cards)."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import openpyxl

from sync.central.roster_export import FIELDS

CLASSES = [f"{grade}{letter}" for grade in (7, 8, 9) for letter in "ABCDEFGH"]
GROUPS_YAML = """\
access_groups:
  - {id: students, gates: [gate-1, main-gate]}
  - {id: staff, gates: ["*"]}
  - {id: library, gates: [library-door], schedule: school-days}
schedules:
  - id: school-days
    weekly:
      mon: [{start: "07:00", end: "18:00"}]
      tue: [{start: "07:00", end: "18:00"}]
      wed: [{start: "07:00", end: "18:00"}]
      thu: [{start: "07:00", end: "18:00"}]
      fri: [{start: "07:00", end: "17:00"}]
blocklist:
  - {credential: 00DEADBEEF, reason: reported stolen}
"""

Row = dict[str, str]


@dataclass
class School:
    rows: list[Row]
    rng: random.Random
    next_card: int = 0x1000000000
    next_id: int = 0
    edits: dict[str, list[str]] = field(default_factory=dict)

    def card(self) -> str:
        self.next_card += self.rng.randint(1, 50)
        return f"{self.next_card:010X}"

    def person(self, role: str = "student") -> Row:
        self.next_id += 1
        pid = f"S{self.next_id:05d}" if role == "student" else f"T{self.next_id:05d}"
        born = date(2012, 9, 1) + timedelta(days=self.rng.randint(0, 3 * 365))
        row: Row = {name: "" for name in FIELDS}
        row.update(
            person_id=pid,
            name=f"Student {self.next_id}" if role == "student" else f"Teacher {self.next_id}",
            role=role,
            class_group=self.rng.choice(CLASSES) if role == "student" else "",
            cards=";".join(self.card() for _ in range(self.rng.choice((1, 1, 1, 2)))),
            card_format="em4100",
            valid_from="2026-09-01",
            valid_until="2027-07-15" if role == "student" else "",
            access_groups="students" if role == "student" else "staff;library",
            birth_date=born.isoformat() if role == "student" else "",
        )
        if role == "student" and self.rng.random() < 0.7:
            row.update(
                consent_granted_by="guardian",
                consent_guardian_name=f"Parent of {pid}",
                consent_granted_at="2026-08-25T09:00:00+08:00",
                consent_scopes="attendance",
                consent_reference=f"F-{self.next_id}",
            )
        return row


def school(students: int, *, seed: int = 13, teachers: int = 0) -> School:
    rng = random.Random(seed)
    made = School([], rng)
    made.rows = [made.person() for _ in range(students)] + [made.person("teacher") for _ in range(teachers)]
    return made


def edited(
    base: School, *, transfers: int, leavers: int, joiners: int, new_cards: int, lost_cards: int
) -> School:
    """The next export: some students change class, some leave, some join, some get another card,
    some lose one of two. ``edits`` names who, for the test to check on the gateways."""
    rng = base.rng
    rows = [dict(r) for r in base.rows]
    students = [r for r in rows if r["role"] == "student"]
    picked = rng.sample(students, transfers + leavers + new_cards)
    movers, gone, carded = (
        picked[:transfers],
        picked[transfers : transfers + leavers],
        picked[transfers + leavers :],
    )
    out = School(rows, rng, base.next_card, base.next_id)
    for row in movers:
        row["class_group"] = rng.choice([c for c in CLASSES if c != row["class_group"]])
    for row in carded:
        row["cards"] = ";".join([*row["cards"].split(";"), out.card()])
    two = [r for r in students if len(r["cards"].split(";")) == 2 and r not in gone and r not in carded]
    lost = rng.sample(two, lost_cards)
    lost_numbers = []
    for row in lost:
        first, second = row["cards"].split(";")
        row["cards"] = second
        lost_numbers.append(first)
    gone_ids = {r["person_id"] for r in gone}
    out.rows = [r for r in rows if r["person_id"] not in gone_ids]
    joined = [out.person() for _ in range(joiners)]
    out.rows += joined
    out.edits = {
        "transfers": [r["person_id"] for r in movers],
        "leavers": sorted(gone_ids),
        "joiners": [r["person_id"] for r in joined],
        "new_cards": [r["cards"].split(";")[-1] for r in carded]
        + [card for r in joined for card in r["cards"].split(";")],
        "lost_cards": lost_numbers,
    }
    return out


def write_csv(path: Path, rows: list[Row], columns: dict[str, str] | None = None) -> Path:
    """``columns`` renames fields to the export's own headers (what a mapping file maps back)."""
    columns = columns or {}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([columns.get(name, name) for name in FIELDS])
        for row in rows:
            writer.writerow([row[name] for name in FIELDS])
    return path


def write_xlsx(path: Path, rows: list[Row]) -> Path:
    """As a spreadsheet program saves it: dates as date cells, the rest as text."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Students"
    sheet.append(list(FIELDS))
    for row in rows:
        cells: list[object] = []
        for name in FIELDS:
            value = row[name]
            if value and name in ("valid_from", "valid_until", "birth_date"):
                cells.append(date.fromisoformat(value))
            else:
                cells.append(value or None)
        sheet.append(cells)
    book.save(path)
    return path

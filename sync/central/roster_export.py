"""Reading the school's master-data export (CSV, XLSX or a PostgreSQL query) into roster content.

One row per person. A column mapping (YAML, optional: :data:`DEFAULT_COLUMNS` when there is none)
says which export column holds which field; the access groups and schedules the rows refer to come
from the centre's groups file. Everything is checked before anything is published, and every
problem is reported at once with where it is: the CSV line, the XLSX row, the query's row.
docs/MASTER_DATA.md documents the row model with an example export.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sync.central.errors import CentralError
from sync.messages.roster import (
    AccessGroup,
    BiometricConsent,
    BlockedCredential,
    Credential,
    Person,
    RosterContent,
    Schedule,
)

FIELDS: tuple[str, ...] = (
    "person_id",
    "name",
    "role",
    "class_group",
    "cards",
    "card_format",
    "valid_from",
    "valid_until",
    "access_groups",
    "blocked",
    "birth_date",
    "consent_granted_by",
    "consent_guardian_name",
    "consent_granted_at",
    "consent_scopes",
    "consent_expires_at",
    "consent_withdrawn_at",
    "consent_reference",
    "terminal_user_ids",
)
"""The fields of one person's row, in the order of the documented example export."""

DEFAULT_COLUMNS: dict[str, str] = {name: name for name in FIELDS}
"""Without a mapping, each field is read from the column of the same name."""

REQUIRED: frozenset[str] = frozenset({"person_id", "name"})
"""Columns every export must have; ``role`` may come from the mapping's ``default_role`` instead."""

_TRUE = frozenset({"1", "true", "yes", "y", "x", "blocked"})
_FALSE = frozenset({"", "0", "false", "no", "n"})


class ExportMapping(BaseModel):
    """How the export's columns map to the roster (the ``--mapping`` YAML file)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Field name -> the export's column header; fields left out use their own name.",
    )
    default_role: Literal["student", "teacher", "staff", "visitor"] | None = Field(
        None, description="Role of rows without a role column or with an empty role cell."
    )
    separator: str = Field(";", min_length=1, description="Between several cards or groups in one cell.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="CSV field delimiter.")
    sheet: str | None = Field(None, description="XLSX sheet name; by default the first sheet.")
    timezone: str = Field(
        "UTC",
        description="The school's zone: a date without a time (valid_until: 2027-07-15) means that "
        "whole day in this zone, and a time without an offset is read in it.",
    )
    uppercase_cards: bool = Field(
        True, description="Write card numbers in capitals (EM4100 readers report hex in capitals)."
    )

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; the fields are: {', '.join(FIELDS)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    def column(self, name: str) -> str:
        return self.columns.get(name, name)


class GroupsFile(BaseModel):
    """The centre's definitions the rows refer to (the ``--groups`` YAML file): access groups, their
    schedules, and blocked cards. Published with every version."""

    model_config = ConfigDict(extra="forbid")

    access_groups: list[AccessGroup] = Field(description="Every access group a row may name.")
    schedules: list[Schedule] = Field(default_factory=list, description="Schedules of those groups.")
    blocklist: list[BlockedCredential] = Field(default_factory=list, description="Cards refused.")


class ExportError(CentralError):
    """The export, its mapping or the groups file cannot be used; ``problems`` lists every finding."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message, code="export_invalid")
        self.problems = problems or []


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding in the export: where (``line 17`` of a CSV, ``row 17`` of a sheet, ``query row
    17``), which column, and what is wrong."""

    where: str
    column: str | None
    message: str

    def __str__(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        return f"{self.where}{col}: {self.message}"


@dataclass(frozen=True, slots=True)
class Row:
    where: str
    cells: Mapping[str, Any]
    extra_cells: int = 0
    """Cells beyond the header's columns: a delimiter in an unquoted cell, usually."""


@dataclass
class Source:
    """An export's header and rows, wherever it came from; ``name`` names it in messages."""

    name: str
    header: list[str]
    rows: Iterable[Row]


@dataclass
class Export:
    """A checked export: the roster content to publish and, per person id, where its row was."""

    content: RosterContent
    rows: dict[str, str] = field(default_factory=dict)
    source: str = ""


def load_mapping(path: Path | None) -> tuple[ExportMapping, str]:
    """The mapping in ``path`` (or the default one) and how to name it in messages."""
    if path is None:
        return ExportMapping(), "the default mapping"
    data = _read_yaml(path, "mapping")
    try:
        return ExportMapping.model_validate(data or {}), f"mapping {path}"
    except ValidationError as err:
        raise ExportError(f"mapping {path} is invalid: {_errors(err)}") from err


def load_groups(path: Path) -> GroupsFile:
    data = _read_yaml(path, "groups file")
    try:
        groups = GroupsFile.model_validate(data)
    except ValidationError as err:
        raise ExportError(f"groups file {path} is invalid: {_errors(err)}") from err
    schedules = {s.id for s in groups.schedules}
    missing = sorted({g.schedule for g in groups.access_groups if g.schedule and g.schedule not in schedules})
    if missing:
        raise ExportError(f"groups file {path}: access groups name unknown schedule(s) {', '.join(missing)}")
    return groups


def _read_yaml(path: Path, what: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ExportError(f"cannot read the {what} {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ExportError(f"{what} {path} is not valid YAML: {err}") from err


def _errors(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors())


def read_csv(path: Path, mapping: ExportMapping) -> Source:
    """A CSV export (UTF-8, with or without Excel's byte-order mark); rows are named by the line
    they start on, so a cell with a line break does not shift the numbers after it."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise ExportError(f"cannot read the export {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ExportError(f"export {path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=mapping.delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ExportError(f"export {path} is empty (no header line)") from None

    def rows() -> Iterator[Row]:
        line = reader.line_num + 1
        for record in reader:
            if any(cell.strip() for cell in record):
                extra = max(0, len(record) - len(header))
                yield Row(f"line {line}", dict(zip(header, record, strict=False)), extra)
            line = reader.line_num + 1

    return Source(str(path), header, rows())


def read_xlsx(path: Path, mapping: ExportMapping) -> Source:
    """An XLSX export: the first sheet (or the mapping's ``sheet``), header in row 1; rows are
    named by their number in the sheet."""
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (OSError, InvalidFileException, KeyError, ValueError) as err:
        raise ExportError(f"cannot read the XLSX export {path}: {err}") from err
    if mapping.sheet is not None and mapping.sheet not in book.sheetnames:
        raise ExportError(
            f"export {path} has no sheet {mapping.sheet!r} (it has {', '.join(book.sheetnames)})"
        )
    sheet = book[mapping.sheet] if mapping.sheet else book.worksheets[0]
    values = sheet.iter_rows(values_only=True)
    try:
        header = ["" if h is None else str(h).strip() for h in next(values)]
    except StopIteration:
        raise ExportError(f"export {path} is empty (no header row)") from None

    def rows() -> Iterator[Row]:
        try:
            for number, record in enumerate(values, start=2):
                if any(v is not None and str(v).strip() for v in record):
                    yield Row(f"row {number}", dict(zip(header, record, strict=False)))
        finally:
            book.close()

    return Source(str(path), header, rows())


def read_query(dsn: str, sql: str) -> Source:
    """The rows of a PostgreSQL query (a view over the student information system, say); the
    columns are the query's column names and rows are named by their place in the result."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            cur = conn.execute(sql.encode())
            if cur.description is None:
                raise ExportError("the source query returns no rows (it is not a SELECT)")
            header = [d.name for d in cur.description]
            records = cur.fetchall()
    except psycopg.OperationalError as err:
        raise ExportError(f"source database unreachable: {str(err).strip()}") from err
    except psycopg.Error as err:
        raise ExportError(f"source query failed: {str(err).strip()}") from err
    rows = [
        Row(f"query row {number}", dict(zip(header, record, strict=True)))
        for number, record in enumerate(records, start=1)
    ]
    return Source("query", header, rows)


def read_source(path: Path, mapping: ExportMapping) -> Source:
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return read_xlsx(path, mapping)
    if suffix in (".csv", ".txt"):
        return read_csv(path, mapping)
    raise ExportError(f"export {path}: unknown kind {suffix or '(no extension)'}; use .csv or .xlsx")


def check_export(
    source: Source, mapping: ExportMapping, groups: GroupsFile, *, mapping_name: str = "the default mapping"
) -> Export:
    """Turn ``source``'s rows into roster content; raises :class:`ExportError` listing every
    problem found (missing columns first, then each bad row), so one run shows them all."""
    missing = _missing_columns(source, mapping, mapping_name)
    if missing:
        raise ExportError(f"{source.name}: {len(missing)} column(s) missing", missing)
    reader = _RowReader(mapping, {g.id for g in groups.access_groups}, set(source.header))
    persons: list[Person] = []
    credentials: list[Credential] = []
    person_rows: dict[str, str] = {}
    card_rows: dict[str, tuple[str, str]] = {}
    terminal_rows: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    blocked = {b.credential for b in groups.blocklist}
    for row in source.rows:
        if row.extra_cells:
            problems.append(
                Problem(
                    row.where,
                    None,
                    f"{row.extra_cells} cell(s) more than the header has columns "
                    f"(a {mapping.delimiter!r} in a cell that is not quoted?)",
                )
            )
            continue
        found = reader.read(row)
        problems += found.problems
        if found.person is None:
            continue
        pid = found.person.id
        if pid in person_rows:
            problems.append(
                Problem(row.where, mapping.column("person_id"), f"person id {pid} also on {person_rows[pid]}")
            )
            continue
        person_rows[pid] = row.where
        persons.append(found.person)
        for user_id in found.person.terminal_user_ids:
            # A terminal id held by two people would make a terminal's records ambiguous.
            if user_id in terminal_rows:
                where, owner = terminal_rows[user_id]
                problems.append(
                    Problem(
                        row.where,
                        mapping.column("terminal_user_ids"),
                        f"terminal user id {user_id} is also on {where} ({owner})",
                    )
                )
            else:
                terminal_rows[user_id] = (row.where, pid)
        for card in found.cards:
            if card.credential in card_rows:
                where, owner = card_rows[card.credential]
                problems.append(
                    Problem(
                        row.where,
                        mapping.column("cards"),
                        f"card {card.credential} is also on {where} ({owner})",
                    )
                )
                continue
            if card.credential in blocked:
                problems.append(
                    Problem(row.where, mapping.column("cards"), f"card {card.credential} is on the blocklist")
                )
                continue
            card_rows[card.credential] = (row.where, pid)
            credentials.append(card)
    if problems:
        raise ExportError(f"{source.name}: {len(problems)} problem(s); nothing was published", problems)
    if not persons:
        raise ExportError(f"{source.name}: no person rows")
    content = RosterContent(
        persons=persons,
        credentials=credentials,
        access_groups=groups.access_groups,
        schedules=groups.schedules,
        blocklist=groups.blocklist,
    )
    return Export(content, person_rows, source.name)


def _missing_columns(source: Source, mapping: ExportMapping, mapping_name: str) -> list[Problem]:
    header = set(source.header)
    where = "header"
    problems = []
    for name in FIELDS:
        column = mapping.column(name)
        if column in header:
            continue
        explicit = name in mapping.columns
        if explicit:
            problems.append(
                Problem(
                    where,
                    column,
                    f"no such column, yet {mapping_name} reads {name} from it "
                    f"(the export's columns: {', '.join(source.header)})",
                )
            )
        elif name in REQUIRED or (name == "role" and mapping.default_role is None):
            problems.append(
                Problem(
                    where,
                    column,
                    f"no such column for the required field {name}; name the export's column in "
                    f"{mapping_name} (columns: {{{name}: ...}})"
                    + ("" if name != "role" else " or set default_role"),
                )
            )
    return problems


@dataclass
class _Found:
    person: Person | None = None
    cards: list[Credential] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class _RowReader:
    """Reads one row into a person and their cards, collecting every problem of that row."""

    def __init__(self, mapping: ExportMapping, groups: set[str], header: set[str]) -> None:
        self.mapping = mapping
        self.groups = groups
        self.present = {name for name in FIELDS if mapping.column(name) in header}
        self.zone = ZoneInfo(mapping.timezone)

    def read(self, row: Row) -> _Found:
        found = _Found()
        out: dict[str, Any] = {}
        consent: dict[str, Any] = {}

        def problem(name: str, message: str) -> None:
            found.problems.append(Problem(row.where, self.mapping.column(name), message))

        def cell(name: str) -> Any:
            if name not in self.present:
                return None
            value = row.cells.get(self.mapping.column(name))
            if isinstance(value, str):
                value = value.strip()
                return value or None
            return value

        out["id"] = _text(cell("person_id"))
        out["name"] = _text(cell("name"))
        for name, key in (("person_id", "id"), ("name", "name")):
            if not out[key]:
                problem(name, "empty")
        out["role"] = (_text(cell("role")) or "").lower() or self.mapping.default_role
        if out["role"] is None:
            problem("role", "empty, and the mapping has no default_role")
        out["group"] = _text(cell("class_group"))
        groups = self._list(cell("access_groups"))
        unknown = [g for g in groups if g not in self.groups]
        if unknown:
            problem("access_groups", f"unknown access group(s) {', '.join(unknown)} (not in the groups file)")
        out["access_groups"] = groups
        out["terminal_user_ids"] = self._list(cell("terminal_user_ids"))
        try:
            out["blocked"] = _flag(cell("blocked"))
        except ValueError as err:
            problem("blocked", str(err))
        for name in ("valid_from", "valid_until"):
            try:
                out[name] = self._time(cell(name), end_of_day=name == "valid_until")
            except ValueError as err:
                problem(name, str(err))
        if out.get("valid_from") and out.get("valid_until") and out["valid_from"] >= out["valid_until"]:
            problem("valid_until", "is not after valid_from")
        try:
            out["birth_date"] = _date(cell("birth_date"))
        except ValueError as err:
            problem("birth_date", str(err))
        consent_fields = [n for n in FIELDS if n.startswith("consent_") and cell(n) is not None]
        if consent_fields:
            consent["granted_by"] = (_text(cell("consent_granted_by")) or "").lower() or None
            consent["guardian_name"] = _text(cell("consent_guardian_name"))
            consent["scopes"] = [s.lower() for s in self._list(cell("consent_scopes"))]
            consent["reference"] = _text(cell("consent_reference"))
            for name, key in (
                ("consent_granted_at", "granted_at"),
                ("consent_expires_at", "expires_at"),
                ("consent_withdrawn_at", "withdrawn_at"),
            ):
                try:
                    consent[key] = self._time(cell(name), end_of_day=False)
                except ValueError as err:
                    problem(name, str(err))
            # The record's own cross-field rules, checked here to name the column they concern.
            if consent["granted_by"] == "guardian" and not consent["guardian_name"]:
                problem("consent_guardian_name", "consent: a guardian's consent names the guardian")
            if len(set(consent["scopes"])) != len(consent["scopes"]):
                problem("consent_scopes", "consent: a scope is listed twice")
            try:
                out["consent"] = BiometricConsent.model_validate(consent)
            except ValidationError as err:
                for e in err.errors():
                    column = f"consent_{e['loc'][0]}" if e["loc"] else ""
                    if column in FIELDS:
                        problem(column, f"consent: {_short(e['msg'])}")
                    elif not found.problems:  # a rule of the record's not checked above
                        problem("consent_granted_by", f"consent: {_short(e['msg'])}")
        fmt = _text(cell("card_format")) or "any"
        cards = [c.upper() if self.mapping.uppercase_cards else c for c in self._list(cell("cards"))]
        if found.problems:
            return found
        try:
            person = Person.model_validate({k: v for k, v in out.items() if v is not None})
        except ValidationError as err:
            for e in err.errors():
                key = str(e["loc"][0]) if e["loc"] else "person_id"
                name = {"id": "person_id", "group": "class_group"}.get(key, key)
                value = out.get(key)
                problem(name if name in FIELDS else "person_id", f"{value!r}: {_short(e['msg'])}")
            return found
        found.person = person
        for card in dict.fromkeys(cards):
            try:
                found.cards.append(Credential(credential=card, format=fmt, person_id=person.id))
            except ValidationError:
                problem("cards", f"card number {card!r} is not 1-64 letters, digits or ':_-'")
        if found.problems:
            found.person = None
        return found

    def _list(self, value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, list | tuple):  # a PostgreSQL array
            items = [_text(v) or "" for v in value]
        else:
            items = (_text(value) or "").split(self.mapping.separator)
        return [i.strip() for i in items if i and i.strip()]

    def _time(self, value: Any, *, end_of_day: bool) -> datetime | None:
        """A date or a time of the export as an aware UTC time; a bare date is the start of that day
        in the school's zone, or for ``valid_until`` the start of the day after (the day is valid)."""
        if value is None:
            return None
        if isinstance(value, datetime) and value.tzinfo is None and value.time() == time():
            value = value.date()  # a spreadsheet's date cell comes as midnight: it means the day
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value, time())
            if end_of_day:
                moment += timedelta(days=1)
        else:
            text = str(value).strip()
            try:
                if len(text) == 10:
                    moment = datetime.combine(date.fromisoformat(text), time())
                    if end_of_day:
                        moment += timedelta(days=1)
                else:
                    moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM[:SS][+08:00])"
                ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.astimezone(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number column in a spreadsheet: 1001.0 is the id 1001
    text = str(value).strip()
    return text or None


def _flag(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not yes/no (true/false, 1/0)")


def _date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _short(message: str) -> str:
    return message.removeprefix("Value error, ")


__all__ = [
    "DEFAULT_COLUMNS",
    "FIELDS",
    "Export",
    "ExportError",
    "ExportMapping",
    "GroupsFile",
    "Problem",
    "Source",
    "check_export",
    "load_groups",
    "load_mapping",
    "read_csv",
    "read_query",
    "read_source",
    "read_xlsx",
]

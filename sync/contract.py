"""The event contract on disk: JSON Schemas: one file per event type under ``schemas/events/``.

The same files are referenced by the AsyncAPI document (``asyncapi.yaml``), so what consumers
validate against and what our tests validate against cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sync.errors import SyncError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ASYNCAPI_PATH = Path(__file__).resolve().parent / "asyncapi.yaml"


class SchemaViolation(SyncError):
    """A message that does not validate against its schema; ``path`` points into the message."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message, code="schema_violation")
        self.path = path


def event_schema_path(event_type: str) -> Path:
    return SCHEMA_DIR / "events" / f"{event_type}.json"


def _retrieve(uri: str) -> Resource[Any]:
    # Only files inside our schema directory are ever loaded: no network, no arbitrary paths.
    if not uri.startswith("file://"):
        raise SchemaViolation(f"schema reference {uri!r} is outside the schema directory")
    path = Path(uri.removeprefix("file://")).resolve()
    if SCHEMA_DIR not in path.parents:
        raise SchemaViolation(f"schema reference {uri!r} is outside the schema directory")
    return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT202012)


@functools.cache
def _registry() -> Registry[Any]:
    return Registry(retrieve=_retrieve)  # type: ignore[call-arg]


@functools.cache
def validator_for(schema_path: Path) -> Draft202012Validator:
    """A validator for one schema file, with relative ``$ref`` resolved against that file."""
    contents = json.loads(schema_path.read_text())
    contents.setdefault("$id", schema_path.resolve().as_uri())
    Draft202012Validator.check_schema(contents)
    return Draft202012Validator(contents, registry=_registry())


def validate_event(event: dict[str, Any]) -> None:
    """Validate a published event object against the schema of its ``type``."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise SchemaViolation("event has no string 'type'", path="type")
    path = event_schema_path(event_type)
    if not path.is_file():
        raise SchemaViolation(f"no schema for event type {event_type!r}", path="type")
    validate(event, path)


def validate(message: Any, schema_path: Path) -> None:
    """Validate any message against a schema file; raises :class:`SchemaViolation` on the first error."""
    try:
        validator_for(schema_path).validate(message)
    except ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        raise SchemaViolation(f"{schema_path.name}: {err.message} at '{where}'", path=where) from err


__all__ = [
    "ASYNCAPI_PATH",
    "SCHEMA_DIR",
    "SchemaViolation",
    "event_schema_path",
    "validate",
    "validate_event",
    "validator_for",
]

"""Cross-references inside the configuration (a gate naming its reader, a rule naming its zone),
checked all at once, each problem with the path of the field that holds the wrong value.

A config leaf (standard library and pydantic only). The models' ``reference_problems()`` methods
list the problems; their model validators raise them as one error when a model is validated on its
own, and leave them to the YAML loader when it validates with :data:`DEFER_REFERENCES` in the
validation context: the loader then reports each at the line of its field, with a "did you mean".
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationInfo

Loc = tuple[str | int, ...]

DEFER_REFERENCES = "defer_references"
"""Validation-context key: when true, models leave their cross-reference problems to the caller."""


@dataclass(frozen=True)
class ReferenceProblem:
    """One wrong reference: ``loc`` is the field holding the bad value; ``first`` (for an id used
    twice) where that id was used first."""

    loc: Loc
    message: str
    first: Loc | None = None

    def under(self, *prefix: str | int) -> ReferenceProblem:
        """The same problem seen from a parent model that holds this one at ``prefix``."""
        first = (*prefix, *self.first) if self.first is not None else None
        return ReferenceProblem((*prefix, *self.loc), self.message, first)

    def described(self) -> str:
        """The problem on its own (no file to point into): the path stands in for the line."""
        path = ".".join(map(str, self.loc))
        first = f" (first at {'.'.join(map(str, self.first))})" if self.first is not None else ""
        return f"{path}: {self.message}{first}"


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a mistyped ``value``, else ''."""
    close = difflib.get_close_matches(value, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(what: str, value: str, choices: Iterable[str], where: str) -> str:
    """``unknown zone 'x' (did you mean 'y'?)``; without a close one, the ids there are."""
    known = sorted(set(choices))
    hint = did_you_mean(value, known)
    if hint:
        return f"unknown {what} {value!r}{hint}"
    if not known:
        return f"unknown {what} {value!r}: {where} has none"
    return f"unknown {what} {value!r}; {where} has: {', '.join(known)}"


def duplicates(items: Sequence[tuple[str, Loc]], what: str) -> list[ReferenceProblem]:
    """An id used more than once: one problem at each later use, pointing back to the first."""
    first: dict[str, Loc] = {}
    problems = []
    for value, loc in items:
        if value in first:
            problems.append(
                ReferenceProblem(loc, f"{what} must be unique; used twice: {value}", first[value])
            )
        else:
            first[value] = loc
    return problems


def raise_unless_deferred(problems: Sequence[ReferenceProblem], info: ValidationInfo) -> None:
    """Raise every problem as one error, unless the caller validates with :data:`DEFER_REFERENCES`."""
    context = info.context if isinstance(info.context, dict) else {}
    if problems and not context.get(DEFER_REFERENCES):
        raise ValueError("; ".join(p.described() for p in problems))


def door_problems(devices: Sequence[Any], gates: Sequence[Any]) -> list[ReferenceProblem]:
    """The references of I/O modules' doors and zones (``kind: modbus_io``; duck-typed, this module
    being a leaf): a gate's ``door`` names a Modbus output's ``door``; a door contact's ``door`` names
    a gate's ``door`` or ``turnstile``; a fire alarm's ``zone`` is some gate's ``zone``."""
    relays: dict[str, Loc] = {}
    problems: list[ReferenceProblem] = []
    for i, device in enumerate(devices):
        if getattr(device, "kind", None) != "modbus_io":
            continue
        for j, output in enumerate(device.outputs):
            if output.door:
                loc: Loc = ("devices", i, "outputs", j, "door")
                if output.door in relays:
                    problems.append(
                        ReferenceProblem(loc, f"door {output.door!r} has two relays", relays[output.door])
                    )
                relays.setdefault(output.door, loc)
    doors = {g.door for g in gates if g.door} | {g.turnstile for g in gates if g.turnstile}
    zones = {g.zone for g in gates if g.zone}
    for i, gate in enumerate(gates):
        if gate.door is not None and gate.door not in relays:
            message = unknown("door", gate.door, relays, "`devices[].outputs[].door`")
            problems.append(ReferenceProblem(("gates", i, "door"), f"gate {gate.id}: {message}"))
    for i, device in enumerate(devices):
        if getattr(device, "kind", None) != "modbus_io":
            continue
        for j, item in enumerate(device.inputs):
            if item.role == "door_contact" and item.door not in doors:
                message = unknown("door", item.door, doors, "`gates[].door` / `gates[].turnstile`")
                loc = ("devices", i, "inputs", j, "door")
                problems.append(ReferenceProblem(loc, f"input {item.name}: {message}"))
            if item.role == "fire_alarm" and item.zone not in zones:
                message = unknown("zone", item.zone, zones, "`gates[].zone`")
                loc = ("devices", i, "inputs", j, "zone")
                problems.append(ReferenceProblem(loc, f"input {item.name}: {message}"))
    return problems


__all__ = [
    "DEFER_REFERENCES",
    "Loc",
    "ReferenceProblem",
    "did_you_mean",
    "door_problems",
    "duplicates",
    "raise_unless_deferred",
    "unknown",
]

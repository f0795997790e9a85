"""Reading the configuration file: YAML with line numbers, every problem located at its line."""

from __future__ import annotations

import copy
import os
import re
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from edge_agent.config.references import DEFER_REFERENCES, ReferenceProblem, did_you_mean
from edge_agent.config.root import GatewayConfig
from edge_agent.errors import ConfigError

_SECRET_WORDS = ("password", "secret", "token", "private_key", "psk", "scbk")


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration file, located by YAML line where possible."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"

    def located(self, source: str) -> str:
        """``file:line: path: message``, the form editors and CI logs link to."""
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self}"


class ConfigFileError(ConfigError):
    """A configuration file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.path))
        super().__init__(
            f"{source}: {len(self.issues)} problem(s)\n" + "\n".join(i.located(source) for i in self.issues),
            code="bad_config",
        )


# libyaml's parser where PyYAML was built with it (its wheels are): the pure-Python one reads about
# 120 kB/s, so a 5 MB file posted for validation took 40 s; the constructor, and so what the text
# means, is the same Python code either way.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that refuses duplicate keys: silently keeping the last one hides mistakes."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _mapping_keys(node: yaml.Node | None) -> set[str]:
    if isinstance(node, yaml.MappingNode):
        return {str(k.value) for k, _ in node.value}
    return set()


def _clean_loc(root: yaml.Node | None, loc: Sequence[int | str]) -> list[int | str]:
    """Drop the tags that discriminated unions add to an error path ('card_reader', 'heartbeat')."""
    out: list[int | str] = []
    current = root
    for i, part in enumerate(loc):
        if isinstance(current, yaml.MappingNode) and isinstance(part, str):
            keys = _mapping_keys(current)
            if part not in keys and i + 1 < len(loc) and str(loc[i + 1]) in keys:
                continue
            current = next((v for k, v in current.value if k.value == part), None)
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
        else:
            current = None
        out.append(part)
    return out


def _node_at(node: yaml.Node | None, loc: Sequence[int | str]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at a (cleaned) error location, or the deepest parent found (exact=False)."""
    current = node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if key_node.value == part:
                    current = value_node
                    break
            else:
                return current, False
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int) and part < len(current.value):
            current = current.value[part]
        else:
            return current, False
    return current, True


def _key_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if key_node.value == key:
                return key_node  # type: ignore[no-any-return]
    return None


def _unwrap(tp: Any, value: Any) -> Any:
    """The type a value of annotation ``tp`` has: Annotated stripped, a union resolved by the
    value's ``kind`` (the discriminator every union of models here uses), Optional dropped."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) not in (Union, types.UnionType):
        return tp
    members = [_unwrap(m, value) for m in get_args(tp) if m is not type(None)]
    if len(members) == 1:
        return members[0]
    kind = value.get("kind") if isinstance(value, dict) else None
    for member in members:
        field = member.model_fields.get("kind") if _is_model(member) else None
        if field is not None and kind in get_args(field.annotation):
            return member
    return None


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _annotation_at(loc: Sequence[int | str], data: Any) -> tuple[Any, Any]:
    """The declared type of the settings at ``loc`` (a cleaned error path) and the value found
    there; ``(None, None)`` when the path leaves the model."""
    tp: Any = GatewayConfig
    value = data
    for part in loc:
        tp = _unwrap(tp, value)
        if isinstance(part, int):
            args = get_args(tp)
            if not args or not isinstance(value, list) or part >= len(value):
                return None, None
            tp, value = args[0], value[part]
        elif _is_model(tp) and part in tp.model_fields:
            tp, value = tp.model_fields[part].annotation, value.get(part) if isinstance(value, dict) else None
        elif get_origin(tp) is dict:
            tp, value = get_args(tp)[1], value.get(part) if isinstance(value, dict) else None
        else:
            return None, None
    return tp, value


def _keys_at(loc: Sequence[int | str], data: Any) -> list[str]:
    """The keys the settings block at ``loc`` accepts; [] when unknown."""
    tp = _unwrap(*_annotation_at(loc, data))
    return list(tp.model_fields) if _is_model(tp) else []


def _kinds_at(loc: Sequence[int | str], data: Any) -> list[str]:
    """The ``kind`` values the union at ``loc`` accepts (a device, a rule, a camera)."""
    tp, _ = _annotation_at(loc, data)
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    kinds: list[str] = []
    for member in get_args(tp) if get_origin(tp) in (Union, types.UnionType) else ():
        field = member.model_fields.get("kind") if _is_model(member) else None
        kinds += [str(k) for k in get_args(field.annotation)] if field is not None else []
    return kinds


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    hint = did_you_mean(key, allowed)
    if hint or not allowed:
        return f"unknown key {key!r}{hint}"
    return f"unknown key {key!r}; this block takes: {', '.join(allowed)}"


def _quoted(text: str) -> list[str]:
    """``'a', 'b' or 'c'`` (how pydantic lists expected values) as ['a', 'b', 'c']."""
    return re.findall(r"'([^']*)'", text)


def _got(value: Any) -> str:
    return f" (got {value!r})" if isinstance(value, str | int | float | bool) or value is None else ""


def _message(e: ErrorDetails, choices: Sequence[str]) -> str:
    """One validation error in our words: no pydantic prefixes, the value found, a "did you mean".
    ``choices``: the keys a block takes (an unknown key), the kinds a list takes (a missing kind)."""
    kind, ctx, value = e["type"], e.get("ctx") or {}, e["input"]
    if kind == "extra_forbidden":
        return _unknown_key(str(e["loc"][-1]), choices)
    if kind == "missing":
        return f"required key {str(e['loc'][-1])!r} is missing"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", e["msg"]))
    if kind == "literal_error":
        choices = _quoted(str(ctx.get("expected", "")))
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        return f"must be one of {ctx.get('expected')}{_got(value)}{hint}"
    if kind == "union_tag_invalid":
        tags = _quoted(str(ctx.get("expected_tags", "")))
        hint = did_you_mean(str(ctx.get("tag")), tags)
        return f"unknown kind {ctx.get('tag')!r}{hint}; kinds: {', '.join(tags)}"
    if kind == "union_tag_not_found":
        kinds = f": one of {', '.join(choices)}" if choices else ""
        return f"needs a {ctx.get('discriminator', 'kind')} key saying what this is{kinds}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a block of 'key: value' lines, not {type(value).__name__}{_got(value)}"
    if kind == "list_type":
        return f"must be a list ('- ' items or [a, b]), not {type(value).__name__}{_got(value)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{_got(value)}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{_got(value)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{_got(value)}"
    if kind in ("too_short", "too_long"):
        bound = (
            f"at least {ctx.get('min_length')}" if kind == "too_short" else f"at most {ctx.get('max_length')}"
        )
        return f"needs {bound} item(s), has {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{_got(value)}"
    text = e["msg"]
    for theirs, ours in (
        ("Input should be", "must be"),
        ("String should", "must"),
        ("List should", "must"),
        ("Value should", "must"),
        ("Tuple should", "must"),
        ("Dictionary should", "must"),
    ):
        if text.startswith(theirs):
            text = ours + text[len(theirs) :]
            break
    return f"{text}{_got(value)}"


def _issues(err: ValidationError, root: yaml.Node | None, data: Any) -> Iterator[ConfigIssue]:
    for e in err.errors():
        loc = _clean_loc(root, e["loc"])
        node, exact = _node_at(root, loc)
        choices = (
            _keys_at(loc[:-1], data)
            if e["type"] == "extra_forbidden"
            else _kinds_at(loc, data)
            if e["type"] == "union_tag_not_found"
            else []
        )
        message = _message(e, choices)
        if e["type"] == "extra_forbidden" and loc:
            parent, _ = _node_at(root, loc[:-1])
            key = _key_node(parent, str(loc[-1]))
            node = key or node
            if any(word in str(loc[-1]).lower() for word in _SECRET_WORDS):
                message += (
                    "; secrets never go in the YAML: put them in $CREDENTIALS_DIRECTORY or the environment "
                    "(see the *_credential settings)"
                )
        elif e["type"] == "union_tag_invalid":
            kind_node, kind_exact = _node_at(root, [*loc, "kind"])
            node, exact = (kind_node, True) if kind_exact else (node, exact)
        line = node.start_mark.line + 1 if node is not None else None
        if not exact and node is not None and e["type"] != "extra_forbidden":
            message += " (in this block)"
        yield ConfigIssue(".".join(str(p) for p in loc), line, message)


def _line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    node, _ = _node_at(root, loc)
    return node.start_mark.line + 1 if node is not None else None


def _reference_issue(problem: ReferenceProblem, root: yaml.Node | None) -> ConfigIssue:
    message = problem.message
    if problem.first is not None:
        first = _line(root, problem.first)
        message += f" (first at line {first})" if first is not None else ""
    return ConfigIssue(".".join(map(str, problem.loc)), _line(root, problem.loc), message)


def _references_beside_unknown_keys(
    err: ValidationError, root: yaml.Node | None, data: Any
) -> list[ConfigIssue]:
    """The cross-reference problems of a file whose only field errors are unknown keys (the usual
    typo), checked on the file without those keys, so that both kinds are reported at once. Other
    field errors leave a section that cannot be read, so its references are checked once it is fixed."""
    errors = err.errors()
    if any(e["type"] != "extra_forbidden" for e in errors):
        return []
    pruned = copy.deepcopy(data)
    for e in errors:
        *path, key = _clean_loc(root, e["loc"])
        parent: Any = pruned
        for part in path:
            parent = parent[part]
        parent.pop(key, None)
    try:
        config = GatewayConfig.model_validate(pruned, context={DEFER_REFERENCES: True})
    except ValidationError:
        return []
    return [_reference_issue(p, root) for p in config.reference_problems()]


def _load(text: str) -> tuple[yaml.Node | None, Any]:
    """The YAML's node tree (its line numbers locate the problems) and its data, parsed once."""
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        return root, (None if root is None else loader.construct_document(root))
    finally:
        loader.dispose()


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate configuration text; raises :class:`ConfigFileError` listing every problem.

    Every problem is reported, by line. The cross-references between sections (a gate naming a
    reader) are checked on sections that could be read: beside unknown keys, not beside a value
    that does not validate."""
    try:
        root, data = _load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigFileError(
            source, [ConfigIssue("", line, f"not valid YAML: {err.problem or err}")]
        ) from err
    except yaml.YAMLError as err:
        raise ConfigFileError(source, [ConfigIssue("", None, f"not valid YAML: {err}")]) from err
    if data is None:
        raise ConfigFileError(source, [ConfigIssue("", 1, "the file is empty")])
    if not isinstance(data, dict):
        raise ConfigFileError(source, [ConfigIssue("", 1, "the top level must be a mapping")])
    try:
        config = GatewayConfig.model_validate(data, context={DEFER_REFERENCES: True})
    except ValidationError as err:
        issues = list(_issues(err, root, data)) + _references_beside_unknown_keys(err, root, data)
        raise ConfigFileError(source, sorted(issues, key=lambda i: i.line or 0)) from err
    problems = config.reference_problems()
    if problems:
        raise ConfigFileError(source, [_reference_issue(p, root) for p in problems])
    return config


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a configuration file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigFileError(str(p), [ConfigIssue("", None, f"cannot read: {err.strerror}")]) from err
    except UnicodeDecodeError as err:  # a damaged file, or one saved in another encoding
        problem = f"not UTF-8 text: byte {err.object[err.start]:#04x} at offset {err.start}"
        raise ConfigFileError(str(p), [ConfigIssue("", None, problem)]) from err
    return parse_config(text, str(p))


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file (for editors and CI of configuration repositories)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Campus edge gateway configuration"
    return schema

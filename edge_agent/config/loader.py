"""Reading the configuration file: YAML with line numbers, every problem located at its line."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys: silently keeping the last one hides mistakes."""


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
    return loader.construct_mapping(node, deep=deep)


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


def _issues(err: ValidationError, root: yaml.Node | None) -> Iterator[ConfigIssue]:
    for e in err.errors():
        loc = _clean_loc(root, e["loc"])
        node, exact = _node_at(root, loc)
        message = e["msg"]
        if e["type"] == "extra_forbidden" and loc:
            parent, _ = _node_at(root, loc[:-1])
            key = _key_node(parent, str(loc[-1]))
            node = key or node
            if any(word in str(loc[-1]).lower() for word in _SECRET_WORDS):
                message += (
                    "; secrets never go in the YAML: put them in $CREDENTIALS_DIRECTORY or the environment "
                    "(see the *_credential settings)"
                )
        elif e["type"] == "missing":
            message = f"{message} (required)"
        line = node.start_mark.line + 1 if node is not None else None
        if not exact and node is not None and e["type"] != "extra_forbidden":
            message += " (in this block)"
        yield ConfigIssue(".".join(str(p) for p in loc), line, message)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Validate configuration text; raises :class:`ConfigFileError` listing every problem."""
    try:
        root = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
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
        return GatewayConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigFileError(source, list(_issues(err, root))) from err


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a configuration file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigFileError(str(p), [ConfigIssue("", None, f"cannot read: {err.strerror}")]) from err
    return parse_config(text, str(p))


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the configuration file (for editors and CI of configuration repositories)."""
    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Campus edge gateway configuration"
    return schema

"""Reading firmware profiles: YAML text or files to validated :class:`FirmwareProfile` models, with
errors that name the file, the field and the YAML line; shipped profiles by id."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import ValidationError

from device_drivers.errors import ProfileError
from device_drivers.profiles.config import FirmwareProfile
from firmware_profiles import PROFILE_DIR, profile_paths


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of the deepest ancestor found."""
    line = None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(PROFILE_DIR.parent))
    except ValueError:
        return str(path)


def parse_profile(text: str, path: Path | str = "<string>") -> FirmwareProfile:
    """Validate a profile given as YAML text; errors name ``path``, the field and the line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as err:
        raise ProfileError(f"{_display(path)}: not valid YAML: {err}", path=path) from err
    try:
        return FirmwareProfile.model_validate(raw)
    except ValidationError as err:
        lines = []
        for error in err.errors():
            loc = tuple(p for p in error["loc"] if isinstance(p, int | str))
            # Pydantic puts the tag of a failed union member into loc; keep what maps to YAML.
            line = _line_of(root, loc)
            where = f"{_display(path)}:{line}" if line else _display(path)
            lines.append(f"{where}: {'.'.join(map(str, loc)) or '(root)'}: {error['msg']}")
        raise ProfileError("\n".join(lines), path=path) from err


@functools.lru_cache(maxsize=64)
def _load_cached(path: Path, mtime_ns: int) -> FirmwareProfile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ProfileError(f"{_display(path)}: cannot read: {err.strerror}", path=path) from err
    return parse_profile(text, path)


def load_profile(path: Path | str) -> FirmwareProfile:
    """Load and validate one profile file (cached while the file is unchanged)."""
    path = Path(path).resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise ProfileError(f"{_display(path)}: cannot read: {err.strerror}", path=path) from err
    return _load_cached(path, mtime)


def resolve_profile(ref: str) -> Path:
    """A shipped profile's id (`em4100_id12`) or a path to a YAML file, as a path."""
    if "/" in ref or ref.endswith((".yaml", ".yml")):
        return Path(ref)
    for path in profile_paths():
        if path.stem == ref:
            return path
    known = ", ".join(p.stem for p in profile_paths())
    raise ProfileError(f"unknown firmware profile {ref!r}; shipped: {known}")


__all__ = ["load_profile", "parse_profile", "resolve_profile"]

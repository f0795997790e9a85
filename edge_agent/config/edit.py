"""Changing the configuration file in place: one camera's zones and lines redrawn (the console's
zone editor), and installing a new file with the previous one kept beside it.

The file is an administrator's: it has comments, a layout and quoting of their choosing. So a
redrawing is a splice: the lines of the camera's ``security.reference_size``, ``zones`` and
``lines`` are replaced and every other byte of the file is left as it was. The positions come from
the YAML parser's nodes (PyYAML's pure-Python composer, whose marks count characters of the text).
A camera written in flow style (``- {device: ..., security: {...}}``) has its ``security`` mapping
rewritten in flow style, on one line (a comment inside a flow mapping split over lines goes with
it). New lines end as the file's do (``\r\n`` in a file edited on Windows). A splice must mean the
drawing and nothing else: one that would change anything more (zones shared with another camera
through a YAML anchor) is refused.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from edge_agent.config.loader import ConfigFileError, load_config
from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)

DRAWN_KEYS = ("reference_size", "zones", "lines")


class ConfigEditError(ConfigError):
    """The file cannot take the edit: ``code`` says why (``config_unreadable``,
    ``camera_not_in_config``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def redraw_camera_zones(text: str, camera_id: str, drawing: dict[str, Any]) -> str:
    """``text`` with camera ``camera_id``'s ``security`` zones, lines and reference size replaced by
    ``drawing`` (plain data under :data:`DRAWN_KEYS`), and every other character as it was. Its
    ``security`` mapping is made when the camera has none."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigEditError("config_unreadable", f"the configuration is not YAML: {err}") from err
    index, entry = _camera_entry(root, camera_id)
    # Zones and lines always (``zones: []`` says the camera has none, and keeps a ``security:``
    # that held only them a mapping); a reference size only with pixel coordinates.
    drawn = {k: drawing.get(k) or [] for k in DRAWN_KEYS if k != "reference_size" or drawing.get(k)}
    before = _data(text)
    redrawn_security = _with_drawing(before["cameras"][index].get("security"), drawn)
    redrawn = _splice(text, entry, drawn, redrawn_security, "\r\n" if "\r\n" in text else "\n")
    _check_only_the_drawing_changed(before, redrawn, camera_id, index, redrawn_security)
    return redrawn


def _with_drawing(security: Any, drawn: dict[str, Any]) -> dict[str, Any]:
    """A camera's ``security`` as plain data with its drawn keys replaced by ``drawn``."""
    kept = {k: v for k, v in security.items() if k not in DRAWN_KEYS} if isinstance(security, dict) else {}
    return {**drawn, **kept}


def _splice(
    text: str, entry: yaml.MappingNode, drawn: dict[str, Any], redrawn_security: dict[str, Any], newline: str
) -> str:
    """The text with the drawing (``drawn``) in place of the camera's (see
    :func:`redraw_camera_zones`); new lines end as the file's do (``newline``).
    ``redrawn_security``: the camera's whole ``security`` with the drawing, for a flow-style one."""
    security = _value(entry, "security")
    if entry.flow_style or (security is not None and not _block_mapping(security)):
        return _rewrite_flow_security(text, entry, security, redrawn_security)
    if security is None:
        # A new ``security:`` entry after the camera's last line, at its keys' indentation.
        indent = int(entry.value[0][0].start_mark.column)
        at = _line_end(text, _end(entry))
        if at == len(text) and not text.endswith("\n"):
            text, at = text + newline, at + len(newline)
        return (
            text[:at] + " " * indent + "security:" + newline + _block(drawn, indent + 2, newline) + text[at:]
        )
    assert isinstance(security, yaml.MappingNode)
    indent = int(security.value[0][0].start_mark.column)
    spans = [
        (
            _line_start(text, key.start_mark.index),
            _comments_within(text, _line_end(text, _end(value)), indent),
        )
        for key, value in security.value
        if isinstance(key, yaml.ScalarNode) and key.value in DRAWN_KEYS
    ]
    # The drawing goes where the first drawn entry was (or first, when there was none).
    at = spans[0][0] if spans else _line_start(text, security.value[0][0].start_mark.index)
    for start, end in reversed(spans):
        text = text[:start] + text[end:]
    return text[:at] + _block(drawn, indent, newline) + text[at:]


def _check_only_the_drawing_changed(
    before: Any, after: str, camera_id: str, index: int, redrawn_security: dict[str, Any]
) -> None:
    """Refuse a splice that means more than the drawing. A camera's ``security`` can be shared
    through a YAML anchor (``security: &yard`` on one camera, ``security: *yard`` on another):
    both are then the same lines of the file, and splicing them for one would redraw the other's
    zones too (in the file only: that camera would go on with its old ones until a restart)."""
    expected = copy.deepcopy(before)
    expected["cameras"][index]["security"] = redrawn_security
    if _data(after) != expected:
        raise ConfigEditError(
            "config_layout",
            f"camera {camera_id}'s zones are shared with another part of the file (a YAML anchor "
            "and alias): redrawing them there would change that part too; give the camera a "
            "security section of its own, or paste the YAML",
        )


def _data(text: str) -> Any:
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:  # composed, but not plain data (a tag such as !!python/name)
        raise ConfigEditError(
            "config_unreadable", f"the configuration is not plain YAML data: {err}"
        ) from err


def _camera_entry(root: yaml.Node | None, camera_id: str) -> tuple[int, yaml.MappingNode]:
    """The camera's place in the ``cameras`` list and its node (by the id as written: ``id: 007``
    is camera ``007``, whatever YAML would make of it)."""
    cameras = _value(root, "cameras") if isinstance(root, yaml.MappingNode) else None
    if isinstance(cameras, yaml.SequenceNode):
        for index, entry in enumerate(cameras.value):
            device = _value(entry, "device") if isinstance(entry, yaml.MappingNode) else None
            ident = _value(device, "id") if isinstance(device, yaml.MappingNode) else None
            if isinstance(ident, yaml.ScalarNode) and ident.value == camera_id:
                assert isinstance(entry, yaml.MappingNode)
                return index, entry
    raise ConfigEditError("camera_not_in_config", f"the configuration has no camera {camera_id}")


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _block_mapping(node: yaml.Node) -> bool:
    return isinstance(node, yaml.MappingNode) and not node.flow_style and bool(node.value)


def _end(node: yaml.Node) -> int:
    """Where ``node``'s own text ends. A block collection's end mark is the start of whatever
    follows it (comment lines about the next key included), so it ends where its last item does."""
    if not isinstance(node, yaml.CollectionNode) or node.flow_style:
        return int(node.end_mark.index)
    items = node.value
    if not items:
        return int(node.end_mark.index)
    last = items[-1][1] if isinstance(node, yaml.MappingNode) else items[-1]
    return _end(last)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Just after the newline ending the line ``index`` is on (its trailing comment with it)."""
    end = text.find("\n", index)
    return len(text) if end < 0 else end + 1


def _comments_within(text: str, at: int, indent: int) -> int:
    """Past the comment lines from ``at`` indented deeper than ``indent``: comments inside the
    entry that ends before ``at`` (about the zones it held), not about the next key."""
    while at < len(text):
        line = text[at : _line_end(text, at)]
        stripped = line.lstrip(" ")
        if not stripped.startswith("#") or len(line) - len(stripped) <= indent:
            break
        at += len(line)
    return at


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 30).strip()


def _block(drawn: dict[str, Any], indent: int, newline: str) -> str:
    """``drawn`` as block entries at ``indent``: a list as one flow item per line, anything else in
    flow style after its key (``reference_size: [1280, 720]``)."""
    pad = " " * indent
    lines = []
    for key, value in drawn.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(
                f"{pad}{key}:{newline}" + "".join(f"{pad}  - {_flow(item)}{newline}" for item in value)
            )
        else:
            lines.append(f"{pad}{key}: {_flow(value)}{newline}")
    return "".join(lines)


def _rewrite_flow_security(
    text: str, entry: yaml.MappingNode, security: yaml.Node | None, merged: dict[str, Any]
) -> str:
    """The camera's ``security`` (``merged``: with the drawing in it) written in flow style in
    place of the old value (or added to a flow-style camera that has none)."""
    if security is not None:
        start, end = security.start_mark.index, _end(security)
        # An empty value (``security:`` and nothing) starts right after the colon.
        space = " " if text[start - 1 : start] == ":" else ""
        return text[:start] + space + _flow(merged) + text[end:]
    # A flow-style camera without security: the new entry goes before its closing brace.
    close = int(entry.end_mark.index) - 1
    return text[:close] + f", security: {_flow(merged)}" + text[close:]


def config_file(config_path: Path) -> Path:
    """The file behind ``config_path``. An administrator may keep the file in a directory the agent
    can write and link it from where the unit reads it (docs/OPERATIONS.md): installing replaces the
    file, never the link (a link replaced by a file would leave the writable copy behind, and its
    directory is the only one the agent may write in), and the files kept beside it are beside the
    file."""
    return Path(os.path.realpath(config_path))


def previous_config(config_path: Path) -> Path:
    """Beside the configuration file: the one it replaced, for rolling back."""
    real = config_file(config_path)
    return real.with_name(real.name + ".previous")


def pending_marker(config_path: Path) -> Path:
    """Beside a pushed configuration that still has to prove itself on the next start."""
    real = config_file(config_path)
    return real.with_name(real.name + ".pending")


def write_error_code(err: OSError) -> str:
    """``config_read_only`` when the agent may not write the file (the shipped systemd unit keeps
    /etc/edge-agent read-only to it: docs/OPERATIONS.md says how to allow it), else
    ``write_failed``."""
    return "config_read_only" if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "write_failed"


def install_config(path: Path, text: str) -> Path:
    """Keep the file at ``path`` as :func:`previous_config` and put ``text`` in its place,
    atomically: a power cut leaves either the old file or the new one, never half of one. Returns
    where the previous file is."""
    real = config_file(path)
    previous = previous_config(path)
    tmp = real.with_name(real.name + ".pushed")
    try:
        with open(tmp, "w", newline="") as f:  # the text's line ends as they are
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        shutil.copymode(real, tmp)  # an administrator's 0640 stays 0640
        shutil.copy2(real, previous)
        # On the disk before the new file is: a power cut after the rename must not leave a
        # rollback (the probation's, on the next start) to an empty or half-written previous file.
        with open(previous, "rb") as kept:
            os.fsync(kept.fileno())
    except OSError:
        # A full disk: leave no half-written file behind (the running one is untouched).
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, real)
    return previous


def restore_previous_config(path: Path) -> bool:
    """Put the file :func:`install_config` kept back in place of ``path``'s (atomically, through a
    link as installing does). False, with the file at ``path`` left as it is, when there is none
    or it does not load (damaged, or edited by hand since): a rollback to a file the agent cannot
    start on would stop the gates for good, where the file in place at least runs them."""
    previous = previous_config(path)
    if not previous.exists():
        return False
    try:
        load_config(previous)
    except ConfigFileError as err:
        log.critical("the previous configuration %s is not put back: it does not load: %s", previous, err)
        return False
    _replace(previous, config_file(path))
    return True


def _replace(source: Path, target: Path) -> None:
    os.replace(source, target)
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)

"""Every example in the docs is checked: the docs say what the agent accepts because a test runs it.

Conventions (docs/CAMERAS.md, "About the examples"):

- A ```yaml block with a top-level ``gateway:`` is a complete configuration: the real
  ``edge-agent config check`` must pass on it, run in a subprocess in a temporary directory that
  holds the files it names (a relative ``agent.roster_seed`` gets the documented roster snapshot,
  a relative video file a short real clip).
- Any other ```yaml block is a fragment and must say so on its first line: ``# fragment: <what>``.
  It must parse as YAML; a fragment made of top-level sections (``cameras:``, ``commands:``...) is
  checked by ``config check`` too, under a stand-in ``gateway:`` section.
- A ```json block whose info string says ``roster-snapshot`` or ``roster-delta`` is validated against
  ``sync/schemas/roster/{snapshot,delta}.json`` and applied to a real roster store: the snapshot first,
  then each delta on top of it. A JSON roster message that is not marked fails the test, so an
  example cannot escape the check by omission.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_drivers.camera.config import parse_source
from edge_agent.config import GatewayConfig
from edge_agent.roster import Roster, parse_roster_message
from sync.contract import SCHEMA_DIR, validate
from tests.conftest import REPO_ROOT
from vision.scenes import corridor_background, write_video

FRAGMENT_MARK = re.compile(r"^#\s*fragment:\s*\S")
ROSTER_TAGS = {"roster-snapshot": "snapshot", "roster-delta": "delta"}
# What a fragment of top-level sections is checked under; it names no file and no device.
STAND_IN_IDENTITY = "gateway: {site: doc-example, id: gw-doc-example}\n"


@dataclass(frozen=True)
class DocBlock:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    """Line of the opening fence (1-based)."""
    lang: str
    tags: tuple[str, ...]
    """Words of the info string after the language (```json roster-snapshot)."""
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    return [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]


def fenced_blocks(path: Path, text: str | None = None) -> list[DocBlock]:
    """The fenced blocks of ``path`` (or of ``text``, named ``path``): backtick fences, possibly
    indented as in a list item."""
    blocks: list[DocBlock] = []
    lines = (path.read_text() if text is None else text).splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)```(.*)$", lines[i])
        if opening is None:
            i += 1
            continue
        indent, info = opening.group(1), opening.group(2).split()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            body.append(lines[j].removeprefix(indent))
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.relative_to(REPO_ROOT)}:{i + 1}: code fence never closed")
        lang = info[0].lower() if info else ""
        blocks.append(DocBlock(path, i + 1, lang, tuple(info[1:]), "\n".join(body) + "\n"))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for p in doc_files() for b in fenced_blocks(p)]
YAML_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("yaml", "yml")]
JSON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "json"]
ROSTER_BLOCKS = [b for b in JSON_BLOCKS if set(b.tags) & set(ROSTER_TAGS)]


def roster_kind(block: DocBlock) -> str:
    (tag,) = set(block.tags) & set(ROSTER_TAGS)
    return ROSTER_TAGS[tag]


def documented_snapshot() -> str:
    """The snapshot example of the docs: the seed every complete example gets, and the base the
    delta examples are applied to."""
    snapshots = [b for b in ROSTER_BLOCKS if roster_kind(b) == "snapshot"]
    assert snapshots, "no ```json roster-snapshot example in the docs"
    return snapshots[0].text


def is_complete(data: Any) -> bool:
    return isinstance(data, dict) and "gateway" in data


def _relative_file(url: str) -> str | None:
    """A camera source that is a relative file path (the test creates those), else None."""
    try:
        kind, target = parse_source(url)
    except ValueError:
        return None  # config check reports it
    if kind != "file" or Path(str(target)).is_absolute():
        return None
    return str(target)


def provide_files(data: dict[str, Any], workdir: Path) -> None:
    """Create the relative files a complete example names: its roster seed (beside the file, as the
    agent reads it) and its video files (the agent's working directory)."""
    seed = (data.get("agent") or {}).get("roster_seed")
    if isinstance(seed, str) and not Path(seed).is_absolute():
        (workdir / seed).parent.mkdir(parents=True, exist_ok=True)
        (workdir / seed).write_text(documented_snapshot())
    for camera in data.get("cameras") or []:
        device = (camera.get("device") or {}) if isinstance(camera, dict) else {}
        video = device.get("video") if device.get("kind") == "camera_sim" else None
        if video is None and device.get("kind", "camera") == "camera" and isinstance(device.get("url"), str):
            video = _relative_file(device["url"])
        if isinstance(video, str) and not Path(video).is_absolute():
            (workdir / video).parent.mkdir(parents=True, exist_ok=True)
            write_video([corridor_background(320, 180)] * 5, workdir / video)


def config_check(text: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    config = workdir / "gateway.yaml"
    config.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "config", "check", str(config)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def yaml_problems(block: DocBlock, workdir: Path) -> list[str]:
    """Why a yaml block of the docs is not a working example (empty when it is one)."""
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError as err:
        return [f"{block.where}: not valid YAML: {err}"]
    first_line = block.text.lstrip("\n").splitlines()[0] if block.text.strip() else ""
    if is_complete(data):
        text = block.text
    elif not FRAGMENT_MARK.match(first_line):
        return [
            f"{block.where}: a yaml block without a top-level `gateway:` is a fragment and must start "
            "with a `# fragment: <what it is>` line"
        ]
    elif isinstance(data, dict) and data and set(data) <= set(GatewayConfig.model_fields):
        text = STAND_IN_IDENTITY + block.text
    else:
        return []  # a fragment of one section's content: parsing is all that can be checked
    provide_files(yaml.safe_load(text), workdir)
    result = config_check(text, workdir)
    if result.returncode == 0:
        return []
    # Config check names lines of the file it was given; say which lines of the doc those are.
    offset = block.line + (0 if text == block.text else -1)
    return [
        f"{block.where}: `edge-agent config check` failed (config line N is doc line N + {offset}):\n"
        f"{result.stdout}{result.stderr}"
    ]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_example_is_a_valid_config_or_a_marked_fragment(block: DocBlock, tmp_path: Path) -> None:
    problems = yaml_problems(block, tmp_path)
    assert not problems, "\n".join(problems)


def test_the_guides_have_complete_examples() -> None:
    # Guards the parametrization above: a renamed file or a changed fence must not leave the camera
    # guide's examples unchecked while the test still passes.
    complete = {b.path.name for b in YAML_BLOCKS if is_complete(yaml.safe_load(b.text))}
    assert "CAMERAS.md" in complete
    kinds = {(b.path.name, roster_kind(b)) for b in ROSTER_BLOCKS}
    assert {("ROSTER.md", "snapshot"), ("ROSTER.md", "delta")} <= kinds


def unmarked_roster_message(block: DocBlock) -> str | None:
    """Why a json block escapes the roster checks (a roster message without its mark), or None."""
    try:
        data = json.loads(block.text)
    except json.JSONDecodeError:
        return None  # prose-like JSON (ellipses, placeholders) is not a roster message either
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind in ROSTER_TAGS.values() and not set(block.tags) & set(ROSTER_TAGS):
        return f"{block.where}: a roster {kind} must be marked ```json roster-{kind} to be validated"
    return None


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=[b.where for b in JSON_BLOCKS])
def test_json_roster_messages_are_marked(block: DocBlock) -> None:
    problem = unmarked_roster_message(block)
    assert problem is None, problem


def roster_problems(block: DocBlock, workdir: Path) -> list[str]:
    """Why a roster example is not a message the gateway applies (empty when it is one)."""
    kind = roster_kind(block)
    try:
        message = json.loads(block.text)
        validate(message, SCHEMA_DIR / "roster" / f"{kind}.json")
        parsed = parse_roster_message(block.text.encode())
    except Exception as err:
        return [f"{block.where}: not a valid roster {kind}: {err}"]
    if parsed.kind != kind:
        return [f"{block.where}: marked roster-{kind} but its kind is {parsed.kind!r}"]
    roster = Roster(workdir)
    try:
        if parsed.kind == "delta":
            base = parse_roster_message(documented_snapshot().encode())
            roster.apply_snapshot(base)  # type: ignore[arg-type]
            roster.apply_delta(parsed)
        else:
            roster.apply_snapshot(parsed)
    except Exception as err:
        return [f"{block.where}: the roster store refuses it: {err}"]
    finally:
        roster.close()
    return []


@pytest.mark.parametrize("block", ROSTER_BLOCKS, ids=[b.where for b in ROSTER_BLOCKS])
def test_roster_example_validates_and_applies(block: DocBlock, tmp_path: Path) -> None:
    problems = roster_problems(block, tmp_path)
    assert not problems, "\n".join(problems)


def _doc(text: str) -> list[DocBlock]:
    # Only the name is used (in messages): nothing is read or written there.
    return fenced_blocks(REPO_ROOT / "docs" / "BROKEN_EXAMPLES.md", text)


def test_the_checks_catch_broken_examples(tmp_path: Path) -> None:
    """The checks above fail on a broken example: a misspelt key, a rule naming a missing line, an
    unmarked fragment, a fragment with a wrong value, a roster card of an unknown person, a roster
    message without its mark."""
    misspelt, bad_rule, unmarked, bad_fragment, good_fragment = _doc(
        "```yaml\ngateway: {site: s, id: g}\ncamras: []\n```\n"
        "```yaml\ngateway: {site: s, id: g}\ncameras:\n  - device: {kind: camera_sim, id: c}\n"
        "    security:\n      rules: [{kind: line_crossing, id: r, line: nowhere}]\n```\n"
        "```yaml\ncameras: []\n```\n"
        "```yaml\n# fragment: the cameras section\ncameras:\n"
        "  - device: {kind: camera, id: c, url: 'usb:x'}\n```\n"
        "```yaml\n# fragment: the cameras section\ncameras:\n"
        "  - device: {kind: camera, id: c, url: 'usb:0'}\n```\n",
    )
    for block, expected in [
        (misspelt, "camras"),
        (bad_rule, "nowhere"),
        (unmarked, "# fragment:"),
        (bad_fragment, "usb:x"),
    ]:
        problems = yaml_problems(block, tmp_path)
        assert problems and expected in problems[0], (block.text, problems)
    assert yaml_problems(good_fragment, tmp_path) == []
    (orphan_card,) = _doc(
        '```json roster-snapshot\n{"kind": "snapshot", "version": 1, '
        '"credentials": [{"credential": "0012AB34CD", "person_id": "nobody"}]}\n```\n',
    )
    (tmp_path / "roster").mkdir()
    problems = roster_problems(orphan_card, tmp_path / "roster")
    assert problems and "nobody" in problems[0], problems
    unmarked, marked = _doc(
        '```json\n{"kind": "delta", "from_version": 1, "version": 2}\n```\n'
        '```json roster-delta\n{"kind": "delta", "from_version": 1, "version": 2}\n```\n'
    )
    assert "roster-delta" in (unmarked_roster_message(unmarked) or "")
    assert unmarked_roster_message(marked) is None

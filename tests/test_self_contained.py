"""The repository stands alone: no file reads or links the team folder beside the checkout.

A clone holds everything the tests, benches and docs need: the scene photos in ``vision/scenes/``, the
models and their reference in ``vision/models/`` and ``docs/MODELS.md``. These guards scan every file
git would commit (tracked, plus new files not ignored) for a path that leaves the project towards a
``shared`` folder, and check that relative Markdown links stay inside the project and exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

OUTSIDE_REFERENCES: dict[str, re.Pattern[str]] = {
    # A relative path up and into the team folder: "../shared", "../../shared/x".
    "a relative path to ../shared": re.compile(r"\.\./shared\b"),
    # pathlib arithmetic that builds the same path: REPO.parent / "shared", parents[2] / 'shared'.
    "a parent / 'shared' path": re.compile(r"\bparents?(?:\[\d+\])?\s*/\s*[\"']shared[\"']"),
    # The team folder's own layout, however it is reached (relative, absolute). Only these two
    # subfolders: systemd's "src/shared/..." sources, cited by the seccomp tests, are fine.
    "the team folder's testdata or models": re.compile(r"\bshared/(?:testdata|models)\b"),
}

MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def project_files() -> list[Path]:
    """The files git would commit: tracked ones and new ones that .gitignore does not exclude."""
    git = shutil.which("git")
    assert git is not None, "git is needed to list the project's files"
    listing = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    paths = [REPO_ROOT / name for name in listing.split("\0") if name]
    # A tracked file deleted in the working tree is not there to read (nor to be committed as is).
    return sorted(p for p in paths if p.is_file())


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file (models, photos): they hold no paths to check."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def outside_references(text: str) -> list[tuple[int, str, str]]:
    """(line number, what, the line) for each reference to the team folder in ``text``."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in OUTSIDE_REFERENCES.items():
            if pattern.search(line):
                found.append((number, what, line.strip()))
    return found


def broken_links(markdown: Path, text: str) -> list[tuple[int, str, str]]:
    """(line number, link, why) for each relative link that leaves the project or names no file."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in MARKDOWN_LINK.finditer(line):
            target = match.group(1).split("#", 1)[0]
            if not target or URL_SCHEME.match(target):
                continue  # an anchor in the same page, or a web address
            resolved = (markdown.parent / target).resolve()
            if not resolved.is_relative_to(REPO_ROOT):
                found.append((number, match.group(1), "points outside the project"))
            elif not resolved.exists():
                found.append((number, match.group(1), "names no file in the project"))
    return found


@pytest.mark.parametrize(
    "line",
    [
        "Design: `../shared/DESIGN.md`",
        'SHARED_DIR = REPO_ROOT.parent / "shared"',
        "default=Path(__file__).resolve().parents[2] / 'shared')",
        "photos in shared/testdata/scenes",
        "cv2.imread('/work/shared/testdata/scenes/sample1.jpg')",
        "rebuilt by `shared/models/tools/faceapi_rec_to_onnx.py`",
    ],
)
def test_the_patterns_catch_each_way_of_reaching_the_team_folder(line: str) -> None:
    assert outside_references(line), line


@pytest.mark.parametrize(
    "line",
    [
        "(src/shared/seccomp-util.c, ``seccomp_memory_deny_write_execute``)",  # systemd's sources
        "a shared machine, so each figure comes with a baseline",
        "one shared person detector per session",
        "see docs/models/tools/patch_tfjs.py and vision/scenes/",
    ],
)
def test_the_patterns_leave_other_uses_of_the_word_alone(line: str) -> None:
    assert outside_references(line) == []


def test_no_project_file_reads_or_links_the_team_folder() -> None:
    files = project_files()
    this_file = Path(__file__).resolve()
    assert this_file in files  # the listing holds new, uncommitted files too
    offences = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {what}: {line}"
        for path in files
        # This file's examples of offending lines are there to be offending.
        if path != this_file and (text := text_of(path)) is not None
        for number, what, line in outside_references(text)
    ]
    assert offences == [], "files that reach outside the project:\n" + "\n".join(offences)


def test_markdown_links_stay_inside_the_project_and_exist() -> None:
    markdown = [p for p in project_files() if p.suffix == ".md"]
    assert REPO_ROOT / "docs" / "MODELS.md" in markdown
    problems = [
        f"{path.relative_to(REPO_ROOT)}:{number}: ({link}) {why}"
        for path in markdown
        for number, link, why in broken_links(path, path.read_text(encoding="utf-8"))
    ]
    assert problems == [], "Markdown links a clone cannot follow:\n" + "\n".join(problems)


def test_a_link_out_of_the_project_or_to_a_missing_file_is_reported() -> None:
    page = REPO_ROOT / "docs" / "PAGE.md"  # never written: broken_links only resolves paths
    text = (
        "[design](../../shared/DESIGN.md) [models](MODELS.md) [gone](models/none.md) [web](https://x.org/a)"
    )
    assert broken_links(page, text) == [
        (1, "../../shared/DESIGN.md", "points outside the project"),
        (1, "models/none.md", "names no file in the project"),
    ]

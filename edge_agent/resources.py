"""Where the project's files beside the code are, in a checkout and in an installed wheel alike.

``config/`` (the demo), ``systemd/`` (the unit file) and ``docs/`` (the install notes) live at the top
of the repository, one copy each. The wheel carries them as package data under
``edge_agent/bundled/<folder>/`` (``pyproject.toml`` maps the folders there); a checkout, editable
install included, reads them where they are. :func:`project_file` is the one place that knows both.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DIR = PACKAGE_DIR / "bundled"
SOURCE_ROOT = PACKAGE_DIR.parent
BUNDLED_FOLDERS = ("config", "systemd", "docs")


def project_file(folder: str, *parts: str) -> Path:
    """``project_file("config", "demo.yaml")``: that file in the installed wheel, else in the checkout.

    The path is returned whether or not the file exists (callers report a missing file themselves).
    """
    if folder not in BUNDLED_FOLDERS:
        raise ValueError(f"{folder!r} is not a folder the wheel carries ({', '.join(BUNDLED_FOLDERS)})")
    bundled = BUNDLED_DIR / folder
    base = bundled if bundled.is_dir() else SOURCE_ROOT / folder
    return base.joinpath(*parts)


__all__ = ["BUNDLED_FOLDERS", "project_file"]

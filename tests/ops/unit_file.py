"""Helpers to check systemd unit files offline with the real ``systemd-analyze``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "systemd" / "edge-agent.service"
EXEC_BINARY = "/opt/edge-agent/venv/bin/edge-agent"


def systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
    )


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value (systemd allows repeated keys: DeviceAllow=, LoadCredential=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"setting outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify(unit_text: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on ``unit_text``, with the ExecStart binary swapped for a temp one.

    verify insists that the ExecStart= binary exists and is executable; ``--root=`` would need a
    whole OS tree (sysinit.target, /bin/kill) under the root. So the unit is copied with only that
    path replaced by an executable stub; every other line is verified as shipped. The unit file
    name must stay ``edge-agent.service``: verify derives the unit name from it.
    """
    binary = systemd_analyze()
    assert binary is not None
    stub = workdir / "bin" / "edge-agent"
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert EXEC_BINARY in unit_text
    copy = workdir / "edge-agent.service"
    copy.write_text(unit_text.replace(EXEC_BINARY, str(stub)))
    # --man=no: the unit links a file:, not a man page, and build machines may lack man-db.
    return subprocess.run(
        [binary, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=workdir,
    )


def exposure(unit_text: str, workdir: Path) -> float:
    """The overall exposure score of ``systemd-analyze security --offline=yes`` (0 best, 10 worst)."""
    binary = systemd_analyze()
    assert binary is not None
    copy = workdir / "security" / "edge-agent.service"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(unit_text)
    out = subprocess.run(
        [binary, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in out.stdout.splitlines():
        if "Overall exposure level" in line:
            return float(line.split(":", 1)[1].split()[0])
    raise AssertionError(f"no exposure level in:\n{out.stdout}\n{out.stderr}")

"""ruff and mypy --strict as background processes, started once collection shows they are wanted.

mypy from a cold cache takes ~35 s of one core; the rest of the suite mostly waits on sockets,
ptys and subprocesses. Started when collection ends (tests/conftest.py), niced so the timing-
sensitive tests keep the CPU they need, the check runs beside the suite instead of before or after
it, and test_static_checks.py only collects the result. Each command runs once per session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

COMMANDS: dict[str, list[str]] = {
    "ruff": [sys.executable, "-m", "ruff", "check", "."],
    # The package list and strictness come from [tool.mypy] in pyproject.toml; the incremental
    # cache is mypy's default, .mypy_cache in the repository (git-ignored), so reruns take seconds.
    "mypy": [sys.executable, "-m", "mypy"],
}

_runs: dict[str, subprocess.Popen[str]] = {}


# Niced through nice(1), not preexec_fn (unsafe once any test has started a thread).
NICE = [nice, "-n", "10"] if (nice := shutil.which("nice")) else []


def start(name: str) -> None:
    """Start ``name`` in the background unless it already runs (or ran) in this session."""
    if name not in _runs:
        _runs[name] = subprocess.Popen(
            [*NICE, *COMMANDS[name]],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def start_all() -> None:
    for name in COMMANDS:
        start(name)


def result(name: str, timeout: float = 600) -> tuple[int, str]:
    """The exit code and output of ``name`` (started now if it was not yet)."""
    start(name)
    proc = _runs[name]
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def stop_all() -> None:
    """Kill what is still running (a session stopped early by -x or Ctrl-C)."""
    for proc in _runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""`edge-agent simulate` away from a terminal: under nohup, systemd or `</dev/null` it keeps running
after its input ends, and SIGTERM / SIGINT stop it cleanly, removing its pty symlink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import serial

from device_drivers import CardCodec, drain, load_profile, resolve_profile
from device_drivers.registry import stdin_ends_the_run

CARD = "0012AB34CD"
PROFILE = "em4100_id12"


def _start(link: Path, stdin: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "simulate",
            "card_reader",
            PROFILE,
            f"pty:{link}",
            "--card",
            CARD,
            "--interval",
            "0.2",
        ],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_cards(link: Path, count: int) -> list[str]:
    """``count`` cards read off the simulator's pty with the real reader codec."""
    codec = CardCodec(load_profile(resolve_profile(PROFILE)))
    buffer = bytearray()
    cards: list[str] = []
    with serial.serial_for_url(str(link), timeout=5) as port:
        while len(cards) < count:
            chunk = port.read(64)
            assert chunk, f"no bytes from the simulator within 5 s (cards so far: {cards})"
            buffer += chunk
            cards += [c.credential for c in drain(codec, buffer) if hasattr(c, "credential")]
    return cards[:count]


@pytest.mark.parametrize(
    ("stdin_mode", "stop_with"),
    [
        ("r", signal.SIGTERM),  # `</dev/null`, systemd, `&` in a script
        ("r", signal.SIGINT),
        ("w", signal.SIGTERM),  # nohup: a descriptor that cannot be read at all
    ],
)
def test_runs_on_after_end_of_input_from_dev_null_and_cleans_up_on_signal(
    tmp_path: Path, stdin_mode: str, stop_with: signal.Signals
) -> None:
    link = tmp_path / "ttySIM"
    with open(os.devnull, stdin_mode) as stdin:
        proc = _start(link, stdin.fileno())
    try:
        assert proc.stdout is not None
        assert f"open {link}" in proc.stdout.readline()
        # Cards keep coming long after /dev/null gave end of input: the simulator did not stop.
        assert _read_cards(link, 3) == [CARD] * 3
        assert proc.poll() is None
        proc.send_signal(stop_with)
        proc.wait(timeout=15)
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert proc.returncode == 0, log
        assert not link.exists() and not link.is_symlink()
        assert f"{stop_with.name}, stopping" in log
        assert "end of standard input; running until SIGTERM" in log
        assert ("standard input is not readable" in log) == (stdin_mode == "w")
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_while_a_pipe_is_still_open_removes_the_symlink(tmp_path: Path) -> None:
    link = tmp_path / "ttySIM"
    proc = _start(link, subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert f"open {link}" in proc.stdout.readline()
        assert link.is_symlink()
        proc.terminate()
        proc.wait(timeout=15)
        assert proc.returncode == 0
        assert not link.is_symlink()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_which_inputs_end_the_run(tmp_path: Path) -> None:
    """A terminal or a pipe is someone (or a script) feeding the simulator: its end is the end.
    /dev/null, a file of cards and a closed stream are not."""
    read_end, write_end = os.pipe()
    master, slave = os.openpty()
    cards = tmp_path / "cards.txt"
    cards.write_text(f"{CARD}\n")
    with (
        os.fdopen(read_end) as pipe,
        os.fdopen(write_end, "w"),
        os.fdopen(slave) as terminal,
        open(os.devnull) as devnull,
        cards.open() as card_file,
    ):
        assert stdin_ends_the_run(pipe)
        assert stdin_ends_the_run(terminal)
        assert not stdin_ends_the_run(devnull)
        assert not stdin_ends_the_run(card_file)
    os.close(master)
    with tempfile.TemporaryFile("r") as closed:
        pass
    assert not stdin_ends_the_run(closed)

"""Serial line noise: how fast every framing parser gets through a flood of garbage, against the
same parser on valid frames only (the baseline, measured in the same run).

For each shipped firmware profile the bench builds ``--size`` bytes of each kind of noise (random
bytes; mutated frames: cut, with a flipped bit, between runs of the start byte; a run of the start
byte alone), feeds them to the parser in the chunks the serial driver reads (4 KiB), and reports
MB/s, the ratio to the valid-only baseline, and how many drop events the parser reported (before
the summary, each was a log line). The driver path (``FrameStream``: parser, counters and the drop
summary) is measured too, with the log lines it wrote.

``--before REV`` also runs the parser as it was at git revision ``REV`` (its framing and family codec
modules, loaded from ``git show``) on ``--before-size`` bytes of the same inputs, in the same run:
before and after on one machine at one moment.

Run: ``.venv/bin/python bench/bench_serial_flood.py [--size BYTES] [--repeat N] [--before REV]``
"""

from __future__ import annotations

import argparse
import logging
import random
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the repository root is not on the path

from device_drivers import MalformedFrame, codec_for, drain, load_profile  # noqa: E402
from device_drivers._io.sim import line_noise  # noqa: E402
from device_drivers._io.stream import DropSummary, FrameStream  # noqa: E402
from device_drivers.profiles.config import FirmwareProfile  # noqa: E402
from firmware_profiles import PROFILE_DIR  # noqa: E402

CHUNK = 4096  # what SerialDriver's reader thread hands over at most


class _CountLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1


def _chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


Drain = Callable[[Any, bytearray], Iterator[Any]]


class Parsers:
    """The parser of one git revision: its framing module and family codecs, loaded from
    ``git show`` under private module names, beside today's."""

    def __init__(self, rev: str) -> None:
        framing = self._load(rev, "device_drivers/profiles/framing.py", "_before_framing")
        self.drain: Drain = framing.drain
        self._card = self._load(rev, "device_drivers/card/codec.py", "_before_card_codec").CardCodec
        self._turnstile = self._load(
            rev, "device_drivers/turnstile/codec.py", "_before_turnstile_codec"
        ).TurnstileCodec

    @staticmethod
    def _load(rev: str, path: str, name: str) -> types.ModuleType:
        source = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True, text=True
        ).stdout
        # The family codecs must build on that revision's framing, not today's.
        source = source.replace("from device_drivers.profiles.framing import", "from _before_framing import")
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        return module

    def codec(self, profile: FirmwareProfile) -> Any:
        return self._turnstile(profile) if profile.family == "turnstile" else self._card(profile)


def parse(codec: object, data: bytes, drain_fn: Drain = drain) -> tuple[float, int, int]:
    """Seconds to drain ``data`` in driver-sized chunks, values decoded, drop events."""
    buffer = bytearray()
    values = drops = 0
    chunks = _chunks(data)
    began = time.perf_counter()
    for chunk in chunks:
        buffer += chunk
        for value in drain_fn(codec, buffer):
            if isinstance(value, MalformedFrame):
                drops += 1
            else:
                values += 1
    return time.perf_counter() - began, values, drops


def stream(codec: object, data: bytes, lines: _CountLines) -> tuple[float, int, int]:
    """Seconds through the driver's path (parser, counters, drop summary), values, log lines."""
    counters: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        counters[key] = counters.get(key, 0) + n

    drops = DropSummary("bench", 10.0)
    frames = FrameStream(codec, count=count, drops=drops)  # type: ignore[arg-type]
    before = lines.lines
    values = 0
    now = time.monotonic_ns()
    chunks = _chunks(data)
    began = time.perf_counter()
    for chunk in chunks:
        values += sum(1 for _ in frames.feed(chunk, now))
    drops.close()
    return time.perf_counter() - began, values, lines.lines - before


def best(repeat: int, run: Callable[..., tuple[float, int, int]], *args: object) -> tuple[float, int, int]:
    """The fastest of ``repeat`` runs of ``run(*args)``."""
    return min((run(*args) for _ in range(repeat)), key=lambda r: r[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2 * 1024 * 1024, help="bytes of each noise kind")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the fastest counts")
    parser.add_argument("--before", metavar="REV", help="also run the parser of this git revision")
    parser.add_argument(
        "--before-size",
        type=int,
        default=128 * 1024,
        help="bytes of each input for the --before parser (it may take seconds per 100 KiB)",
    )
    args = parser.parse_args()
    before = Parsers(args.before) if args.before else None
    lines = _CountLines()
    logging.getLogger("device_drivers").addHandler(lines)
    logging.getLogger("device_drivers").propagate = False
    command = f".venv/bin/python bench/bench_serial_flood.py --size {args.size} --repeat {args.repeat}"
    if args.before:
        command += f" --before {args.before} --before-size {args.before_size}"
    print(f"command: {command}")
    print(
        f"{'profile':28} {'input':16} {'MB/s':>8} {'x valid':>8} {'values':>7} {'drops':>7}"
        f" {'stream MB/s':>11} {'log lines':>9}"
        + (f" {'before MB/s':>11} {'x valid':>8} {'drops':>7}" if before else "")
    )
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        profile = load_profile(path)
        codec = codec_for(profile)
        golden = [g.hex for g in profile.golden]
        rng = random.Random(11)
        valid = b"".join(golden) * (args.size // len(b"".join(golden)) + 1)
        inputs = {
            "valid only": valid[: args.size],
            "random": rng.randbytes(args.size),
            "mutated frames": line_noise(args.size, golden, rng, start=profile.framing.start or b""),
            "start byte run": (profile.framing.start or golden[0][:1]) * args.size,
        }
        baseline = before_baseline = 0.0
        for name, data in inputs.items():
            seconds, values, drops = best(args.repeat, parse, codec, data)
            rate = len(data) / seconds / 1e6
            baseline = baseline or rate
            s_seconds, _, log_lines = best(args.repeat, stream, codec, data, lines)
            row = (
                f"{profile.id:28} {name:16} {rate:8.2f} {rate / baseline:8.2f} {values:7d} {drops:7d}"
                f" {len(data) / s_seconds / 1e6:11.2f} {log_lines:9d}"
            )
            if before is not None:
                part = data[: args.before_size]
                b_seconds, _, b_drops = parse(before.codec(profile), part, before.drain)
                b_rate = len(part) / b_seconds / 1e6
                before_baseline = before_baseline or b_rate
                row += f" {b_rate:11.2f} {b_rate / before_baseline:8.2f} {b_drops:7d}"
            print(row)


if __name__ == "__main__":
    main()

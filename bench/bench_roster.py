"""Swipe->open while a 30 MB roster snapshot is taken in (issue 11: p99 under 10 ms).

Runs the scenario of ``tests/agent/test_roster_oversize.py`` (the real agent in this process, a
real Mosquitto, the centre as ``mosquitto_pub``, the reader and turnstile simulators on ptys, a
swipe every 50 ms) ``--rounds`` times. Its idle phase is the same-run baseline: the same swipes
with nothing else to do. Reported per round and over all rounds: p99 idle, p99 while the snapshot
sent in 512 KiB parts is taken in (the goal), and while the same snapshot as one message is taken
in (paho decodes it in one callback on the event loop: measured, no goal), each as a ratio to idle.

Run: ``.venv/bin/python bench/bench_roster.py [--rounds N]``. It starts its own Mosquitto.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from common import MosquittoBroker

from tests.agent.test_roster_oversize import GOAL_P99_MS, p99, take_big_rosters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    idle: list[float] = []
    parts: list[float] = []
    single: list[float] = []
    met = 0
    with (
        tempfile.TemporaryDirectory(prefix="bench-roster-") as tmp,
        MosquittoBroker(Path(tmp) / "broker") as broker,
    ):
        for i in range(args.rounds):
            round_dir = Path(tmp) / f"round-{i}"
            round_dir.mkdir()
            figures = take_big_rosters(round_dir, broker)
            a, b, c = (p99(figures[k]) for k in ("baseline", "in_parts", "single_message"))
            met += b < GOAL_P99_MS
            idle += figures["baseline"]
            parts += figures["in_parts"]
            single += figures["single_message"]
            print(
                f"round {i + 1}: {figures['size_mb']} MB, load {os.getloadavg()[0]:.1f}: p99 idle "
                f"{a:.2f} ms, in parts {b:.2f} ms ({b / a:.1f}x), one message {c:.2f} ms ({c / a:.1f}x)"
            )
    a, b, c = p99(idle), p99(parts), p99(single)
    print(
        f"all {args.rounds} rounds: p99 idle {a:.2f} ms, in parts {b:.2f} ms ({b / a:.1f}x, "
        f"{sum(x > GOAL_P99_MS for x in parts)} of {len(parts)} swipes over {GOAL_P99_MS:.0f} ms), "
        f"one message {c:.2f} ms ({c / a:.1f}x); goal p99 < {GOAL_P99_MS:.0f} ms met in {met} of "
        f"{args.rounds} rounds"
    )


if __name__ == "__main__":
    main()

"""What the benchmarks share: a Mosquitto of their own on a free port, percentiles, process RSS.

Benchmarks run as scripts (``python bench/NAME.py``), so this module is imported as ``common``.
The broker is the tests' (tests/support/broker.py, standard library only): one implementation, so
a benchmark measures against the broker configuration the tests prove, and a fix lands once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the repository root is not on the path

from tests.support.broker import MosquittoBroker, free_port  # noqa: E402

__all__ = ["MosquittoBroker", "free_port", "percentile", "rss_mib", "start_broker"]


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A Mosquitto for this run alone (not the machine's), on loopback; returns (process, port).
    Stop it with ``proc.terminate(); proc.wait()``."""
    broker = MosquittoBroker(workdir)
    broker.start()
    assert broker.proc is not None
    return broker.proc, broker.port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")

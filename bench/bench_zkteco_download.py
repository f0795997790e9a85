"""ZKTeco attendance log download: records/s of the gateway's pull driver next to pyzk alone, on
the same simulator in the same run.

The simulator (device_drivers.zkteco.sim.ZkDeviceSimulator, the protocol pyzk's own client is
tested against) holds ``--records`` 40-byte records and runs on its own thread's event loop, so
both clients meet the same server. Each round times:

- driver: ``ZkPullDriver`` from connect until the last ``TerminalAttendance`` is yielded, each one
  acknowledged as the agent does (high-water mark written to a temp ``state_dir``); the driver also
  reads the clock and the users and registers for real-time events, as in service;
- pyzk: ``ZK(...).connect()``, ``get_attendance()`` (which reads the sizes, the users and the log),
  ``disconnect()``.

Run: ``.venv/bin/python bench/bench_zkteco_download.py [--records 100000] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script: the repository root is not on the path

from zk import ZK  # type: ignore[import-untyped]  # noqa: E402

from device_drivers.readings import TerminalAttendance  # noqa: E402
from device_drivers.zkteco.codec import Record, User  # noqa: E402
from device_drivers.zkteco.config import ZktecoConfig  # noqa: E402
from device_drivers.zkteco.driver import ZkPullDriver  # noqa: E402
from device_drivers.zkteco.sim import ZkDeviceSimulator  # noqa: E402
from tests.support.sim_thread import SimulatorThread  # noqa: E402


async def driver_round(port: int, n: int) -> float:
    with tempfile.TemporaryDirectory() as state:
        config = ZktecoConfig(kind="zkteco", id="bench", host="127.0.0.1", port=port, timeout_s=30)
        started = time.perf_counter()
        got = 0
        async with ZkPullDriver.from_config(config, state_dir=Path(state)) as driver:
            it = driver.readings()
            async for reading in it:
                if isinstance(reading, TerminalAttendance):
                    driver.acknowledge(reading)
                    got += 1
                    if got == n:
                        break
            elapsed = time.perf_counter() - started
            await it.aclose()
        if driver.mark[0] != n:
            raise SystemExit(f"driver mark {driver.mark} after {n} records")
        return elapsed


def pyzk_round(port: int, n: int) -> float:
    started = time.perf_counter()
    conn = ZK("127.0.0.1", port=port, timeout=30, ommit_ping=True).connect()
    records = conn.get_attendance()
    conn.disconnect()
    elapsed = time.perf_counter() - started
    if len(records) != n:
        raise SystemExit(f"pyzk read {len(records)} records, expected {n}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.records
    users = [User(i, str(1000 + i), f"User {i}") for i in range(1, 201)]
    day = datetime(2026, 9, 1, 7, 30)
    records = [
        Record(str(1001 + i % 200), day + timedelta(seconds=i // 3), 1, 0, 1 + i % 200) for i in range(n)
    ]
    print(f"command: .venv/bin/python bench/bench_zkteco_download.py --records {n} --rounds {args.rounds}")
    print(f"{'round':>5} {'driver s':>9} {'driver rec/s':>13} {'pyzk s':>8} {'pyzk rec/s':>11} {'ratio':>6}")
    driver_rates: list[float] = []
    pyzk_rates: list[float] = []
    with SimulatorThread(ZkDeviceSimulator(users=users, records=records)) as sim:
        for r in range(1, args.rounds + 1):
            # Alternate the order so neither client always meets a warm server.
            if r % 2:
                d = asyncio.run(driver_round(sim.port, n))
                p = pyzk_round(sim.port, n)
            else:
                p = pyzk_round(sim.port, n)
                d = asyncio.run(driver_round(sim.port, n))
            driver_rates.append(n / d)
            pyzk_rates.append(n / p)
            print(f"{r:>5} {d:>9.3f} {n / d:>13,.0f} {p:>8.3f} {n / p:>11,.0f} {p / d:>6.2f}")
    dm, pm = statistics.median(driver_rates), statistics.median(pyzk_rates)
    print(f"{'median':>5} {'':>9} {dm:>13,.0f} {'':>8} {pm:>11,.0f} {dm / pm:>6.2f}")


if __name__ == "__main__":
    main()

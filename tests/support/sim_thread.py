"""A simulator on its own thread's event loop: for a client that blocks (pyzk in a bench) or an
agent run as a separate process, neither of which shares the test's loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=Any)


class SimulatorThread(Generic[S]):
    """``with SimulatorThread(sim) as sim:`` enters the simulator (an async context manager) on a
    loop of its own in a daemon thread, and leaves it there on exit."""

    def __init__(self, sim: S) -> None:
        self.sim = sim
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="simulator")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.sim.__aenter__())
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> S:
        self.thread.start()
        if not self.ready.wait(30):
            raise TimeoutError("the simulator did not start within 30 s")
        return self.sim

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.__aexit__(None, None, None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


__all__ = ["SimulatorThread"]

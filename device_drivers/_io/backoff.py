"""The one reconnect backoff: capped, jittered exponential delays. Pure stdlib, no I/O and no
clock: the caller sleeps, so serial ports, cameras and the MQTT link all wait the same way and a
test can read the delays without waiting for them."""

from __future__ import annotations

import random
from typing import Protocol


class BackoffParameters(Protocol):
    """What a backoff is made of (:class:`~device_drivers._io.config.BackoffConfig` has it)."""

    @property
    def initial_s(self) -> float: ...

    @property
    def max_s(self) -> float: ...

    @property
    def multiplier(self) -> float: ...

    @property
    def jitter(self) -> float: ...


class BackoffPolicy(Protocol):
    """The interface a reconnecting link needs: how long to wait now, and "it worked"."""

    def next_delay(self) -> float: ...

    def reset(self) -> None: ...


class Backoff:
    """Delays of ``initial_s`` growing by ``multiplier`` per failed attempt up to ``max_s``; a
    ``jitter`` fraction of each delay is random, so many devices that failed together do not retry
    together. :meth:`reset` after a success.

    ``rng`` (anything with ``uniform(a, b)``, such as ``random.Random(seed)``) makes the delays
    reproducible in tests.
    """

    def __init__(self, parameters: BackoffParameters | None = None, rng: random.Random | None = None) -> None:
        self.initial_s = parameters.initial_s if parameters is not None else 0.5
        self.max_s = parameters.max_s if parameters is not None else 30.0
        self.multiplier = parameters.multiplier if parameters is not None else 2.0
        self.jitter = parameters.jitter if parameters is not None else 0.5
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt (and count this attempt)."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier**self.attempt)
        self.attempt += 1
        return ceiling * (1 - self.jitter) + self._rng.uniform(0, ceiling * self.jitter)

    def reset(self) -> None:
        """The link works again: the next failure starts from ``initial_s``."""
        self.attempt = 0


__all__ = ["Backoff", "BackoffParameters", "BackoffPolicy"]

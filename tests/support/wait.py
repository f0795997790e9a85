"""Wait for a condition instead of sleeping for a guessed time.

A test that sleeps "long enough" is slow when the machine is idle and flaky when it is busy; a
test that polls its condition is as fast as the code under test and fails with a message that
says what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_INTERVAL_S = 0.02


class WaitTimeout(AssertionError):
    """The condition was still false when the time ran out.

    An ``AssertionError``, so pytest shows it as a failed expectation, with ``what`` and the last
    value the predicate returned (or the exception it raised) in the message.
    """

    def __init__(self, what: str, timeout: float, last: object) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        super().__init__(f"timed out after {timeout:g}s waiting for {what}; last result: {last!r}")


def _describe(predicate: Callable[..., object], what: str | None) -> str:
    if what:
        return what
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    return f"{name} to become true"


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    *,
    what: str | None = None,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return that.

    Exceptions of the types in ``ignore`` count as "not yet" (a file not written yet: pass
    ``ignore=(OSError,)``) and the last one is reported if the time runs out; any other exception
    propagates at once. Raises :class:`WaitTimeout`.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
        except ignore as err:
            last = err
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            raise WaitTimeout(_describe(predicate, what), timeout, last)
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT_S,
    interval: float = DEFAULT_INTERVAL_S,
    *,
    what: str | None = None,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """:func:`wait_until` for the event loop: polls with ``asyncio.sleep`` so the code under test
    runs meanwhile. ``predicate`` may be a plain function or return an awaitable."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: object = None
    while True:
        try:
            result = predicate()
            if isinstance(result, Awaitable):
                result = await result
        except ignore as err:
            last = err
        else:
            if result:
                return result
            last = result
        if loop.time() >= deadline:
            raise WaitTimeout(_describe(predicate, what), timeout, last)
        await asyncio.sleep(interval)


async def until(pred: Callable[[], object], what: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """The shape the agent, API and command tests used: ``await until(lambda: ..., "what")``."""
    await async_wait_until(pred, timeout, what=what)

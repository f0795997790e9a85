"""Bulk threads lower their own OS priority, and carry on at their old one where that is refused."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from device_drivers import lower_thread_priority
from device_drivers._io.threads import BULK_NICENESS

T = TypeVar("T")


def in_a_thread(fn: Callable[[], T]) -> list[T]:
    """``fn``'s result, called in a new thread (the nice value is per thread)."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(5)
    return out


def own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_only_the_calling_thread_gets_the_higher_nice_value() -> None:
    ours = own_priority()
    assert in_a_thread(lambda: (lower_thread_priority(), own_priority())) == [
        (True, min(19, ours + BULK_NICENESS))
    ]
    assert own_priority() == ours


def test_a_refused_change_is_logged_and_the_thread_runs_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stands in for a seccomp filter that refuses setpriority (systemd's SystemCallErrorNumber=EPERM):
    # the real filter cannot be installed in the test process without confining the whole session.
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    ours = own_priority()
    with caplog.at_level(logging.DEBUG, logger="device_drivers._io.threads"):
        assert in_a_thread(lambda: (lower_thread_priority(), own_priority())) == [(False, ours)]
    assert any("keeps its priority" in r.getMessage() for r in caplog.records)

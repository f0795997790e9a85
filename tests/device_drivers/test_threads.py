"""Bulk threads lower their own OS priority, and carry on at their old one where that is refused;
our threads show their names to the OS."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from device_drivers import lower_thread_priority, show_thread_name
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


def os_name(name: str, shown: str | None = None) -> list[tuple[bool, str]]:
    """What the OS calls a thread named ``name`` once it showed ``shown`` (None: its own name)."""
    out: list[tuple[bool, str]] = []

    def run() -> None:
        ok = show_thread_name(shown)
        out.append((ok, Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()))

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(5)
    return out


def test_a_thread_shows_its_name_to_the_os_cut_to_what_linux_keeps() -> None:
    assert os_name("inference-0") == [(True, "inference-0")]
    assert os_name("read-turnstile-entrance-3") == [(True, "read-turnstile-")]
    assert os_name("camera-yard-01-0", shown="cam yard-01") == [(True, "cam yard-01")]
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != "inference-0"

"""Running ingest consumers in tests: in a thread (to read their counters) or as a process (to kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from sync.central.config import IngestConfig
from sync.central.ingest import IngestConsumer

REPO_ROOT = Path(__file__).resolve().parents[2]


def unique(prefix: str) -> str:
    """Each test gets its own topic prefix and share group on the session broker, so the persistent
    sessions and retained statuses earlier tests leave behind never reach it."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@contextmanager
def consumer_thread(
    url: str, dsn: str, *, prefix: str, group: str, client_id: str
) -> Iterator[IngestConsumer]:
    config = IngestConfig(
        mqtt_url=url, database=dsn, group=group, client_id=client_id, topic_prefix=prefix, batch_wait_ms=5
    )
    consumer = IngestConsumer(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as err:  # surfaced in the test below, not lost in the thread
            errors.append(err)

    thread = threading.Thread(target=run, name=f"ingest-{client_id}", daemon=True)
    thread.start()
    if not consumer.subscribed.wait(15):
        consumer.stop()
        raise AssertionError(f"consumer {client_id} did not subscribe: {errors}")
    try:
        yield consumer
    finally:
        consumer.stop()
        thread.join(15)
    assert not errors, errors
    assert not thread.is_alive()


def start_consumer_process(
    url: str, dsn: str, *, prefix: str, group: str, client_id: str, log: Path, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "sync.central", "ingest",
        "--mqtt-url", url, "--database", dsn, "--group", group, "--client-id", client_id,
        "--topic-prefix", prefix, "--batch-wait-ms", "5", "--stats-interval", "1", *extra,
    ]  # fmt: skip
    out = open(log, "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=dict(os.environ))


def wait_subscribed(log: Path, count: int = 1, timeout: float = 20.0) -> None:
    """A consumer process logs 'connected as' on each CONNACK; give its SUBSCRIBE a moment after."""
    wait_until(lambda: log.read_text().count("connected as") >= count, timeout, f"{log.name} connected")
    time.sleep(0.3)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def scalar(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    return query(dsn, sql, params)[0][0]


def wait_rows(dsn: str, sql: str, expected: int, timeout: float = 30.0) -> None:
    """Poll ``sql`` (a count) until it reaches ``expected``; fail with the last value seen."""
    seen: list[int] = [-1]

    def reached() -> bool:
        seen[0] = int(scalar(dsn, sql))
        return seen[0] >= expected

    try:
        wait_until(reached, timeout, sql)
    except AssertionError as err:
        raise AssertionError(f"{err}: {seen[0]} of {expected}") from None

"""Shared test fixtures: real parts only (a Mosquitto process of our own, real files)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
ARTIFACT_DIR = REPO_ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class MosquittoBroker:
    """A Mosquitto process owned by the test session, so tests can stop and restart it.

    ``listener_conf`` lines belong to the listener (TLS files); ``extra_conf`` lines are global
    (password file, persistence). ``anonymous=False`` makes the broker demand a user name.
    """

    def __init__(
        self, workdir: Path, extra_conf: str = "", *, listener_conf: str = "", anonymous: bool = True
    ) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.workdir = workdir
        self.port = free_port()
        self.extra_conf = extra_conf
        self.listener_conf = listener_conf
        self.anonymous = anonymous
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        conf = self.workdir / "mosquitto.conf"
        # As root, Mosquitto would drop to the 'mosquitto' user and lose access to our temp files.
        user = "user root\n" if os.geteuid() == 0 else ""
        persistence = "" if "persistence true" in self.extra_conf else "persistence false\n"
        conf.write_text(
            f"{user}"
            f"per_listener_settings false\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            f"{persistence}"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
            f"{self.extra_conf}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{self.listener_conf}\n"
        )
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """The session's broker. Tests that stop it must leave it running (use ``restart``)."""
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker for one test alone: for tests that kill it or reconfigure it."""
    broker = MosquittoBroker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared/ is expected beside the project at {SHARED_DIR}")
    return SHARED_DIR


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    ARTIFACT_DIR.mkdir(exist_ok=True)
    return ARTIFACT_DIR


os.environ.setdefault("EDGE_AGENT_LOG_FORMAT", "plain")

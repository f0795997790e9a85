"""A Mosquitto process of our own on a free loopback port, which a test may stop, kill and restart.

The one implementation for the tests and the benchmarks (``bench/common.py`` imports it). It
needs nothing but the standard library, so a benchmark run as a script can use it without pytest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick; another process may still take
    it before we bind it, which :meth:`MosquittoBroker.start` survives by picking again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 10.0, *, host: str = "127.0.0.1", proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once ``host:port`` accepts a TCP connection; fail early if ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited with {proc.returncode} before {host}:{port} listened")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.02)


class MosquittoBroker:
    """A Mosquitto process owned by a test (or a session, or a benchmark).

    ``listener_conf`` lines belong to the listener (TLS files); ``extra_conf`` lines are global
    (password file, ACL, persistence). ``anonymous=False`` makes the broker demand a user name.
    The port is chosen once and kept across :meth:`restart`, so clients reconnect to the same URL.
    Usable as a context manager (started on entry, stopped on exit).
    """

    def __init__(
        self,
        workdir: Path,
        extra_conf: str = "",
        *,
        listener_conf: str = "",
        anonymous: bool = True,
        port: int | None = None,
    ) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        # Only a port we picked ourselves may be swapped for another when it is taken; a port the
        # test chose (``port=`` or ``broker.port = n`` before start) is the one clients dial.
        self._picked_port: int | None = None if port is not None else self.port
        self.extra_conf = extra_conf
        self.listener_conf = listener_conf
        self.anonymous = anonymous
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        # As root, Mosquitto would drop to the 'mosquitto' user and lose access to our temp files.
        user = "user root\n" if os.geteuid() == 0 else ""
        persistence = "" if "persistence true" in self.extra_conf else "persistence false\n"
        conf.write_text(
            f"{user}"
            "per_listener_settings false\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            f"{persistence}"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
            f"{self.extra_conf}\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{self.listener_conf}\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start the process and return once it accepts connections."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A first start may lose its port to another process between free_port() and bind; then
        # pick another. A restart keeps its port (clients hold the URL), so it does not retry.
        attempts = 3 if (self.proc is None and self.port == self._picked_port) else 1
        for attempt in range(attempts):
            conf = self._write_conf()
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
            try:
                wait_for_port(self.port, timeout, proc=self.proc)
                return
            except RuntimeError:
                if attempt + 1 == attempts:
                    raise RuntimeError(f"mosquitto did not start:\n{self.log_text()[-2000:]}") from None
                self.port = self._picked_port = free_port()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: a clean broker shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without closing its connections (a crash, a power cut)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        self.kill() if kill else self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

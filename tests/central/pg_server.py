"""A throwaway PostgreSQL server in a temp dir on a free port, for tests and benches.

Needs the server binaries (``initdb``, ``postgres``): on PATH, or under /usr/lib/postgresql/*/bin as
the Debian package ``postgresql`` installs them. PostgreSQL refuses to run as root, so when we are
root the data dir is handed to the ``postgres`` user (created by that package) and the binaries run
as that user (``Popen(user=...)``, not ``runuser``, so our signals reach postgres itself). It never
touches a cluster the machine may already run.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``, or None if PostgreSQL is not installed."""
    initdb = shutil.which("initdb")
    if initdb:
        real = Path(initdb).resolve().parent
        if (real / "postgres").exists():
            return real
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    return None


class PostgresServer:
    """``start()`` runs initdb + postgres; ``dsn(db)`` connects as the trusted superuser over TCP."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found (initdb, postgres); install the Debian package "
                "'postgresql'"
            )
        self.bin = pg_bin
        # Its own directory straight under the temp root: pytest's temp dirs are private to root,
        # and the postgres user must be able to reach the data dir.
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-central-pg-"))
        self.datadir = self.workdir / "pgdata"
        self.port = _free_port()
        self.settings = settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def _user(self) -> dict[str, Any]:
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    def start(self) -> None:
        if self._as_postgres:
            shutil.chown(self.workdir, "postgres", "postgres")
        if not self.datadir.exists():
            done = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                **self._user(),
            )
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.workdir),
            **self.settings,
        }
        argv = [str(self.bin / "postgres"), "-D", str(self.datadir)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, **self._user())
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start; see {self.workdir / 'postgres.log'}"
                    ) from None
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"'.encode())
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.dsn(name)

    def stop(self, *, remove: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

"""A real PostgreSQL 15 server for tests: initdb in a temporary folder, a loopback port, no system service.

Debian's postgresql-15 package provides the binaries (make test installs it). initdb and
postgres refuse to run as root, so under root they run as the package's `postgres` user.
Each test gets a database of its own (`fresh_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
_names = itertools.count()


@dataclass
class Postgres:
    """A running server: its superuser's DSN (database postgres), its folder and process."""

    port: int
    folder: Path
    proc: subprocess.Popen

    def dsn(self, database: str = "postgres") -> str:
        """A connection string for one database."""
        return f"postgresql://smls@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """Create an empty database and return its DSN."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove the folder."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(port: int) -> Postgres:
    """initdb a temporary cluster and start postgres on 127.0.0.1:port; fail the test if PostgreSQL 15 is not installed."""
    if not (BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed: make test installs the Debian package postgresql-15")
    folder = Path(tempfile.mkdtemp(prefix="smls-pg-"))
    user = None
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        user = "postgres"
    data = folder / "data"
    subprocess.run([BIN / "initdb", "-D", data, "-U", "smls", "--auth=trust", "-E", "UTF8", "--no-sync"], check=True, capture_output=True, user=user, group=user)
    log = open(folder / "postgres.log", "wb")  # noqa: SIM115 - the server's for its life
    settings = ["-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
    proc = subprocess.Popen([BIN / "postgres", "-D", data, "-p", str(port), "-h", "127.0.0.1", "-k", str(folder), *settings],
                            stdout=log, stderr=log, user=user, group=user)
    server = Postgres(port, folder, proc)
    deadline = time.monotonic() + 60
    while True:
        try:
            psycopg.connect(server.dsn(), connect_timeout=2).close()
            return server
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"postgres did not start:\n{(folder / 'postgres.log').read_text()}") from None
            time.sleep(0.1)

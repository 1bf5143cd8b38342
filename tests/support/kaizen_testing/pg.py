"""A throwaway PostgreSQL cluster for tests and benchmarks (needs root and the PostgreSQL server binaries).

The cluster lives in a temporary directory owned by the `postgres` user, listens on a Unix socket in that
directory only (no TCP), trusts local connections, and is deleted on `stop()`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

__all__ = ["PG_BIN", "PgCluster", "unavailable_reason"]

PG_BIN = Path(os.environ.get("KAIZEN_PG_BIN", "/usr/lib/postgresql/15/bin"))
# For tests only: durability off makes initdb, CREATE DATABASE and commits much faster.
FAST_SETTINGS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def unavailable_reason() -> str | None:
    """Why a throwaway cluster cannot be started here, or None when it can."""
    if os.geteuid() != 0:
        return "a throwaway PostgreSQL cluster needs root (to run initdb as the postgres user)"
    missing = [name for name in ("initdb", "pg_ctl") if not (PG_BIN / name).is_file()]
    if missing:
        return f"PostgreSQL server binaries not found in {PG_BIN} ({', '.join(missing)}); set KAIZEN_PG_BIN"
    if shutil.which("runuser") is None:
        return "runuser not found"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' system user"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self, *, fast: bool = True) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.base = Path(tempfile.mkdtemp(prefix="kaizen-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.options = f"-p {self.port} -k {self.base} -c listen_addresses='' " + (FAST_SETTINGS if fast else "")
        shutil.chown(self.base, user="postgres", group="postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.running = False
        self._databases = 0
        atexit.register(self.destroy)
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", self.options, "-w", "start"
        )
        self.running = True

    def stop(self) -> None:
        """Stop the server (it can be started again); the database goes unreachable meanwhile."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
            self.running = False

    def destroy(self) -> None:
        """Stop the server and delete the cluster."""
        if self.base.exists():
            self.stop()
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}&port={self.port}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = name or f"kaizen_{os.getpid()}_{self._databases}"
        with psycopg.connect(host=str(self.base), port=self.port, user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

"""A throwaway PostgreSQL server for the tests, started from the installed binaries.

``RC_TEST_POSTGRES_URL`` points the tests at a running server instead (then the
test that stops and restarts the server is skipped: it cannot restart a server
it does not own). Without either, the PostgreSQL tests skip with a message
saying how to enable them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

URL_ENV = "RC_TEST_POSTGRES_URL"
HOW_TO_ENABLE = (
    "PostgreSQL tests need the server binaries (initdb, pg_ctl; e.g. apt install postgresql) "
    f"or {URL_ENV}=postgresql://user@host:port/db pointing at a running server"
)


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's layout."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL server: ours (``restartable``) or the one the environment names."""

    def __init__(self, admin_url: str, *, bin_dir: Path | None = None, data: Path | None = None):
        self.admin_url = admin_url
        self.bin_dir = bin_dir
        self.data = data
        self.restartable = data is not None
        self._root: Path | None = None
        self._user: str | None = None
        self.port: int | None = None

    # -- our own server ------------------------------------------------------------

    @classmethod
    def start_throwaway(cls, bin_dir: Path) -> PgServer:
        root = Path(tempfile.mkdtemp(prefix="rc-pg-"))
        user = None
        if os.geteuid() == 0:  # initdb refuses to run as root: run it as postgres
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(root, ignore_errors=True)
                raise RuntimeError(
                    "running as root and no 'postgres' user to run the server as"
                ) from None
            user = "postgres"
            shutil.chown(root, user)
        data = root / "data"
        port = _free_port()
        server = cls(f"postgresql://postgres@127.0.0.1:{port}/postgres", bin_dir=bin_dir, data=data)
        server._root, server._user, server.port = root, user, port
        server._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"
        )
        with open(data / "postgresql.conf", "a") as f:
            f.write(
                f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\nfsync = off\nmax_connections = 50\n"
            )
        server.start()
        return server

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / tool), *args]
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> None:
        """Start (or restart) our server and wait until it takes connections."""
        assert self.data is not None and self._root is not None
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self._root / "log"), "-w", "start")
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        """Stop our server (``fast`` disconnects every client at once)."""
        assert self.data is not None
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        if self.data is not None:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- databases -------------------------------------------------------------------

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"rc_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.admin_url, autocommit=True) as conn,
        ):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url_for(self, name: str) -> str:
        base, _ = self.admin_url.rsplit("/", 1)
        return f"{base}/{name}"

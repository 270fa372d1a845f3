"""A PostgreSQL for the log store's tests and benchmarks: the machine's own on 127.0.0.1:5432 (started if
it is installed and down), else a throwaway cluster of our own; and a fresh database on it per use."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.procs import free_port, wait_until

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _psql(port: int, sql: str, database: str = "postgres") -> str:
    argv = ["psql", "-h", HOST, "-p", str(port), "-U", USER, "-d", database, "-v", "ON_ERROR_STOP=1", "-qtAc", sql]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def _own_cluster() -> Iterator[int]:
    """initdb into a temporary directory, start it on a free port (trust auth, user postgres), stop it after.
    PostgreSQL refuses to run as root: as root, it runs as the postgres user."""
    initdb = shutil.which("initdb") or "/usr/local/bin/initdb"
    pg_ctl = shutil.which("pg_ctl") or "/usr/local/bin/pg_ctl"
    data = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, USER)
        as_user = ["runuser", "-u", USER, "--"]
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", USER, "--auth=trust"], check=True, capture_output=True)
    options = f"-p {port} -k {data} -h {HOST}"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(data / "log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield port
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[int]:
    """The port of a PostgreSQL that listens on 127.0.0.1 (never a silent skip: it fails if none can run)."""
    if not _listening(PORT) and shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql"):
        for version in os.listdir("/etc/postgresql"):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], capture_output=True
            )
        with contextlib.suppress(TimeoutError):  # then a cluster of our own
            wait_until(lambda: _listening(PORT), 10, "postgresql on 5432")
    if _listening(PORT):
        yield PORT
        return
    with _own_cluster() as port:
        yield port


@contextmanager
def fresh_database(port: int, prefix: str = "gateway_test") -> Iterator[str]:
    """A database of a random name, dropped after: its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    _psql(port, f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://{USER}@{HOST}:{port}/{name}"
    finally:
        _psql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def set_connections_allowed(url: str, allowed: bool) -> None:
    """Make a database refuse new connections and end its open ones (or let them in again): the database
    becomes unavailable to the gateway without stopping a server others use."""
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    name = url.rsplit("/", 1)[1]
    _psql(port, f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {str(allowed).lower()}")
    if not allowed:
        # pg_terminate_backend only signals: wait until the sessions are gone, or one could still write
        sessions = f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"
        _psql(port, f"SELECT pg_terminate_backend(pid) FROM ({sessions}) s")
        wait_until(lambda: _psql(port, f"SELECT count(*) FROM ({sessions}) s") == "0", 10, f"{name}'s sessions to end")

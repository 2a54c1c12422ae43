"""A throwaway PostgreSQL server for tests: ``initdb`` into a fresh folder, start it on
127.0.0.1 at a free port, create one database, and stop and delete it afterwards.

PostgreSQL refuses to run as root; under root the server runs as the ``postgres`` user
(or ``nobody``) through ``runuser``, with the data folder owned by that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: Users tried, in order, when the tests run as root.
UNPRIVILEGED_USERS = ("postgres", "nobody")


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server and the database created in it."""

    url: str
    port: int
    data_dir: Path
    user: str


def find_postgres_binary(name: str) -> str | None:
    """Path of a PostgreSQL program (``initdb``, ``pg_ctl``) on PATH or under
    ``/usr/lib/postgresql/*/bin`` (newest version first), or None."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    return candidates[0] if candidates else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_user() -> str | None:
    """The unprivileged user to run the server as under root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def _as_user(user: str | None, command: list[str]) -> list[str]:
    if user is None:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *command]
    return ["su", user, "-s", "/bin/sh", "-c", " ".join(command)]


def missing_requirement() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    for program in ("initdb", "pg_ctl"):
        if find_postgres_binary(program) is None:
            return f"PostgreSQL `{program}` not found on PATH or under /usr/lib/postgresql/*/bin"
    if os.geteuid() == 0 and _server_user() is None:
        return "running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed"
    return None


@contextmanager
def running_postgres(database: str = "nas_search_test") -> Iterator[PostgresServer]:
    """Start a throwaway server with ``database`` in it; stop and delete it on exit."""
    import psycopg2

    initdb, pg_ctl = find_postgres_binary("initdb"), find_postgres_binary("pg_ctl")
    assert initdb and pg_ctl, missing_requirement()
    user = _server_user()
    # /tmp rather than pytest's tmp_path: the server user must be able to reach the folder.
    root = Path(tempfile.mkdtemp(prefix="nas-search-postgres-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if user is not None:
        record = pwd.getpwnam(user)
        for path in (root, data_dir):
            os.chown(path, record.pw_uid, record.pw_gid)
    os.chmod(root, 0o755)
    os.chmod(data_dir, 0o700)
    port = free_port()
    log = root / "server.log"
    role = "postgres"
    try:
        subprocess.run(
            _as_user(user, [initdb, "-D", str(data_dir), "-U", role, "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        subprocess.run(
            _as_user(user, [pg_ctl, "-D", str(data_dir), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
            text=True,
            timeout=90,
        )
        connection = _connect(psycopg2, port, role, "postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
        yield PostgresServer(f"postgresql://{role}@127.0.0.1:{port}/{database}", port, data_dir, user or "")
    finally:
        if (data_dir / "postmaster.pid").exists():
            subprocess.run(
                _as_user(user, [pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"]), capture_output=True, timeout=60
            )
        shutil.rmtree(root, ignore_errors=True)


def _connect(psycopg2, port: int, role: str, database: str, wait_seconds: float = 30.0):
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return psycopg2.connect(host="127.0.0.1", port=port, user=role, dbname=database, connect_timeout=5)
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

"""A private, throwaway PostgreSQL cluster for the load generator and the Director's tests.

``initdb`` + ``pg_ctl`` under a temporary directory, on a free port on 127.0.0.1 with its
socket in that directory, fsync off (nothing here needs to survive a crash). When run as
root the cluster runs as an unprivileged system user (PostgreSQL refuses root), created
on first use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

USER = "uptanepg"


def pg_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first)."""
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class Cluster:
    """A running cluster: :meth:`create_database` gives the SQLAlchemy URL of a new one."""

    port: int
    created: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            admin.dispose()
        self.created.append(name)
        return self.url(name)


def _as_user() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as :data:`USER` (root only)."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
    return ["runuser", "-u", USER, "--"]


@contextlib.contextmanager
def cluster(prefix: str = "uptane-pg-", max_connections: int | None = None) -> Iterator[Cluster]:
    """Start a cluster (RuntimeError if PostgreSQL is not installed); stop and remove it
    on exit."""
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    as_user = _as_user()
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    data, sockdir = base / "data", base / "sock"
    sockdir.mkdir()
    if as_user:
        shutil.chown(base, USER)
        shutil.chown(sockdir, USER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LC_ALL": "C"}
    initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run(
        [*as_user, *initdb, "-E", "UTF8", "--no-sync"], check=True, capture_output=True, env=env
    )
    opts = f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    if max_connections is not None:
        opts += f" -c max_connections={max_connections}"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run(
            [*pg_ctl, "-o", opts, "-l", str(base / "log"), "-w", "start"],
            check=True,
            capture_output=True,
            env=env,
        )
        yield Cluster(port)
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True, env=env)
        shutil.rmtree(base, ignore_errors=True)

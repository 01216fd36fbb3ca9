"""A throwaway PostgreSQL server for the tests: a fresh cluster in a temporary folder, on a free
local port, stopped and deleted afterwards.

It uses the machine's PostgreSQL binaries (`initdb`, `pg_ctl`; Debian's `postgresql` package,
which `make test` installs). PostgreSQL refuses to run as root, so under root the server runs as
the `postgres` user the package creates (`runuser`). Durability is switched off (`fsync=off`):
the cluster lives only as long as the test session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

USER = "dagster"
DATABASE = "postgres"


def postgres_bin() -> Path:
    """The folder holding `initdb` and `pg_ctl` (on PATH, or Debian's /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError("PostgreSQL's initdb was not found: install it (Debian: apt-get install postgresql; `make test` does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_postgres() -> Iterator[str]:
    """Start a server; yield its URL (`postgresql+psycopg2://dagster@127.0.0.1:<port>/postgres`)."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="cardio-postgres-"))
    as_server_user: list[str] = []
    if os.geteuid() == 0:
        as_server_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, log = folder / "data", folder / "server.log"
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run(as_server_user + list(args), capture_output=True, text=True)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stdout}{done.stderr}{server_log}")

    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def instance_yaml(postgres_url: str) -> str:
    """A Dagster instance's dagster.yaml keeping runs, events and schedules in that server."""
    return (
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n"
        f"    postgres_url: \"{postgres_url}\"\n"
    )

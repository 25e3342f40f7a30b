"""A private PostgreSQL server (initdb + pg_ctl in a temp folder, a free port on 127.0.0.1) that a
test may stop, crash and restart: never the machine's shared instance.

PostgreSQL refuses to run as root, so under root (CI, these machines) the server runs as the
``postgres`` system user, in a folder that user owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

POSTGRES_USER = "postgres"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL server package")
    return str(found)


class OwnPostgres:
    """``start()``, ``restart(mode)`` (``immediate`` is a crash: no checkpoint, WAL recovery on start),
    ``stop()``; ``url`` reaches the database ``faults`` over TCP."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hp-own-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, POSTGRES_USER)
            self.root.chmod(0o700)
        self._run(_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/faults"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.as_root:
            command = ("runuser", "-u", POSTGRES_USER, "--", *command)
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def _pg_ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *args)

    def start(self) -> OwnPostgres:
        self._pg_ctl("start")
        self._run(_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "faults", check=False)
        return self

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("stop", "-m", mode)

    def restart(self, mode: str = "immediate", down_s: float = 0.0) -> None:
        """Stop (``immediate`` = crash), stay down ``down_s`` seconds, start again."""
        self.stop(mode)
        time.sleep(down_s)
        self._pg_ctl("start")

    def close(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

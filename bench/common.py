"""Shared shape of a benchmark result: one line per target, ``name: measured (target) OK|MISS``."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from playground.settings import Settings


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    target: float
    unit: str = ""
    higher_is_better: bool = True
    why: str = ""  # a known reason this figure can miss (a deliberate trade, the bench's own set-up), shown with a MISS

    @property
    def ok(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def __post_init__(self) -> None:
        # Written the moment a figure exists, so a module that crashes later (a SIGILL in a native
        # build, an out-of-memory kill) still reports every line it measured (see bench/__main__.py).
        partial = os.environ.get("BENCH_PARTIAL")
        if partial:
            with open(partial, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(self)) + "\n")

    def line(self) -> str:
        sign = "≥" if self.higher_is_better else "≤"
        line = f"{self.name}: {self.measured:.3g}{self.unit} ({sign} {self.target:g}{self.unit}) {'OK' if self.ok else 'MISS'}"
        return f"{line}: {self.why}" if self.why and not self.ok else line


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a benchmark starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def on_free_ports(settings: Settings) -> Settings:
    """``settings`` with the openai engine on as many llama-servers as ``handoff serve`` starts, each on a free port
    (for ``llamacpp_server.llama_servers_running``)."""
    from playground.engine.llamacpp_server import served_by, server_count

    return served_by(settings, tuple(f"http://127.0.0.1:{free_port()}/v1" for _ in range(server_count(settings))))


def report(targets: list[Target]) -> None:
    for target in targets:
        print(target.line(), flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation like numpy's default."""
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


class PeakMemory:
    """Sample this process's resident memory (plus its children's) while the block runs.

    Sampling catches the peak of one phase, which ``ru_maxrss`` cannot (it is a whole-process high
    water mark, including model loading and earlier phases).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)

    def _rss(self) -> int:
        process = psutil.Process()
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self.peak_bytes = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 2**30


def machine() -> str:
    """One line describing where the figures came from: CPU model and the flags that change the figures
    (AVX2 / AVX-512 / AMX / native bf16), the dtype ``auto`` picks here, cores, memory, load at the start."""
    from playground.engine.device import NATIVE_BF16_FLAGS, cpu_flags, resolve_dtype

    flags = cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", *NATIVE_BF16_FLAGS, "amx_tile", "amx_int8") if f in flags]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu_model()} [{' '.join(shown) or 'none of avx2/avx512/amx'}], auto dtype "
        f"{resolve_dtype('auto', 'cpu').dtype}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, load average {load}"
    )


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (``AMD EPYC``, ``Intel(R) Xeon(R) ...``)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# HANDOFF_BENCH_DATA puts the cached demo databases elsewhere (a scratch disk, a per-user folder)
BENCH_DATA = Path(os.environ.get("HANDOFF_BENCH_DATA") or Path(__file__).resolve().parent.parent / "data" / "bench")
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def scratch_postgres(prefix: str) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database on the admin URL's server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    from db import session as db_session

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        db_session.get_engine(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}").dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def demo_database(kind: str, votes: int, seed: int = 0) -> str:
    """URL of a database of ``votes`` seeded demo votes, generated once and kept for later runs.

    Generating 1,000,000 votes takes minutes, so the result is cached per schema head: a SQLite file
    under ``data/bench/``, or a PostgreSQL database ``hp_bench_demo_...`` on 127.0.0.1. Treat it as
    read-only (exports, reports, dashboards); a benchmark that writes makes its own database.
    """
    from sqlalchemy import create_engine, text

    from db import session as db_session
    from feedback.demo_data import generate

    name = f"hp_bench_demo_{votes}_{seed}_{db_session.head_revision()}".lower()
    if kind == "sqlite":
        BENCH_DATA.mkdir(parents=True, exist_ok=True)
        path = BENCH_DATA / f"{name}.db"
        if not path.exists():
            staging = path.with_suffix(".partial")
            for leftover in (staging, Path(f"{staging}-wal"), Path(f"{staging}-shm")):  # an interrupted run's
                leftover.unlink(missing_ok=True)
            url = f"sqlite:///{staging}"
            db_session.upgrade(url)
            generate(url, votes, seed=seed)
            db_session.get_engine(url).dispose()
            staging.rename(path)
        return f"sqlite:///{path}"
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}: sqlite or postgresql")
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        with admin.connect() as connection:
            if connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                return url
            staging = f"{name}_partial"
            connection.execute(text(f'DROP DATABASE IF EXISTS "{staging}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{staging}"'))
        staging_url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{staging}"
        db_session.upgrade(staging_url)
        generate(staging_url, votes, seed=seed)
        db_session.get_engine(staging_url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{staging}" RENAME TO "{name}"'))
        return url
    finally:
        admin.dispose()

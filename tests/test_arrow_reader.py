"""ADBC's Arrow reads of a SQLite file beside the app's own sqlite3 connections (``db.arrow``)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from db.arrow import ArrowReadFailed, SQLiteArrow


def _database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY, verdict TEXT NOT NULL)")
        connection.executemany("INSERT INTO votes (verdict) VALUES (?)", [("a",), ("b",), ("tie",)] * 1000)
    connection.close()


def test_an_arrow_read_leaves_the_apps_connections_their_locks(tmp_path: Path) -> None:
    """ADBC's own SQLite, closing the file in this process, would drop the sqlite3 module's locks here too:
    another process closing its connection would then checkpoint and delete the WAL under ours."""
    path = tmp_path / "app.db"
    _database(path)
    app = sqlite3.connect(path)  # the app's connection stays open throughout
    assert app.execute("SELECT count(*) FROM votes").fetchone() == (3000,)
    with SQLiteArrow(str(path)) as arrow:
        assert arrow.table("SELECT count(*) AS n FROM votes").column("n").to_pylist() == [3000]
    other = (
        f"import sqlite3; c = sqlite3.connect({str(path)!r}); c.execute('SELECT 1 FROM votes').fetchall(); c.close()"
    )
    subprocess.run([sys.executable, "-c", other], check=True)
    assert Path(f"{path}-wal").exists(), "another process took itself for the last connection and removed the WAL"
    app.execute("INSERT INTO votes (verdict) VALUES ('a')")
    app.commit()
    assert app.execute("SELECT count(*) FROM votes").fetchone() == (3001,)
    app.close()


def test_batches_tables_and_errors_come_through_the_reader(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    _database(path)
    with SQLiteArrow(str(path)) as arrow:
        batches = list(arrow.batches("SELECT id, verdict FROM votes ORDER BY id", rows=700))
        assert [b.num_rows for b in batches] == [700, 700, 700, 700, 200]
        assert pa.Table.from_batches(batches).column("verdict").to_pylist()[:4] == ["a", "b", "tie", "a"]
        with pytest.raises(ArrowReadFailed, match="no such table"):
            arrow.table("SELECT * FROM missing")
        first = next(iter(arrow.batches("SELECT id FROM votes WHERE id > ?", [10], rows=100)))
        assert first.column("id").to_pylist()[0] == 11  # left early: the rest is drained before the next query
        assert arrow.table("SELECT max(id) AS m FROM votes").column("m").to_pylist() == [3000]

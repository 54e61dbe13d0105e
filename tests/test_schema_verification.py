"""The schema is verified, not assumed (issue 20, finding 4): on both backends, a table
replay dedups on that lost its unique key, a dropped column or a newer schema version
is refused in one line naming the table and what is missing, so a replayed backup is
never stored twice; what is safe to create (a table, an index) is created.

The PostgreSQL tests use the server of tests/helpers/pgserver.py (or
``RC_TEST_POSTGRES_URL``'s) and skip without one.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector.cli import main
from robust_collector.errors import StorageError
from robust_collector.storage import tables
from robust_collector.storage.backend import SQLiteBackend
from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.recovery import recover
from robust_collector.storage.schema import SchemaError, open_database, verify_schema
from robust_collector.storage.writer import Batch, StorageWriter

RUN = "verify-run"
DEDUP = [t for t in tables.TABLES if t.or_ignore]  # ticks, rejects, runs, trades, trade_rejects


def tick(i: int) -> tuple[Any, ...]:
    return (f"{RUN}:SPY:{i}", "SPY", i, 1_000 + i, 1_001 + i, 1.0, 1.1, 5.0, 6.0, None, "s", RUN)


def without_key(table: tables.Table) -> tables.Table:
    """``table`` with its primary key column made a plain NOT NULL column."""
    cols = tuple(
        dataclasses.replace(c, primary_key=False, not_null=True) if c.primary_key else c
        for c in table.columns
    )
    return dataclasses.replace(table, columns=cols)


def sqlite_without_key(path: Path, name: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for t in tables.TABLES:
        conn.executescript((without_key(t) if t.name == name else t).ddl("sqlite"))
    conn.execute(f"PRAGMA user_version={tables.SCHEMA_VERSION}")
    conn.close()


def backup_of(folder: Path, n: int) -> None:
    with BackupWriter(folder, RUN) as bw:
        bw.write_batch([tick(i) for i in range(n)], [])


# -- SQLite ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", DEDUP, ids=lambda t: t.name)
def test_sqlite_table_without_its_unique_key_is_refused_in_one_line(tmp_path, table):
    path = tmp_path / "nokey.db"
    sqlite_without_key(path, table.name)
    key = table.key[0]
    conn = sqlite3.connect(path)
    expected = f"table {table.name} has no unique key on {key}"
    assert [p for p in verify_schema(conn) if "unique key" in p] == [
        f"{expected} (a replayed backup would be stored twice)"
    ]
    conn.close()
    with pytest.raises(SchemaError) as err:
        open_database(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and expected in text


def test_sqlite_unique_index_on_the_key_is_as_good_as_a_primary_key(tmp_path):
    path = tmp_path / "unique.db"
    sqlite_without_key(path, "ticks")
    conn = sqlite3.connect(path)
    conn.execute("CREATE UNIQUE INDEX ticks_id ON ticks(tick_id)")
    conn.close()
    conn = open_database(path)
    assert verify_schema(conn) == []
    conn.close()


def test_sqlite_replay_into_ticks_without_unique_id_stores_nothing_twice(tmp_path):
    """The writer sends batches to backup, and recovery refuses, instead of doubling rows."""
    path = tmp_path / "nokey.db"
    sqlite_without_key(path, "ticks")
    folder = tmp_path / "backups"
    w = StorageWriter(SQLiteBackend(path), fallback=BackupWriter(folder, RUN))
    w.start()
    try:
        w.submit(Batch([tick(i) for i in range(5)]))
        wait_until(lambda: w.stats().ticks_to_backup == 5, timeout=10, detail=w.stats)
    finally:
        w.stop(10)
    st = w.stats()
    assert st.ticks_written == 0 and st.lost_rows == 0
    assert "table ticks has no unique key on tick_id" in (st.last_error or "")
    for _ in range(2):
        with pytest.raises(StorageError, match="table ticks has no unique key on tick_id"):
            recover(path, folder)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (0,)
    conn.close()


def test_sqlite_database_of_a_newer_schema_version_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={tables.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError) as err:
        open_database(path)
    assert f"schema version {tables.SCHEMA_VERSION + 1} is newer" in str(err.value)
    assert "\n" not in str(err.value)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)  # no tables
    conn.close()


def test_sqlite_missing_index_is_reported_then_created(tmp_path):
    path = tmp_path / "idx.db"
    open_database(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX ticks_symbol_ts")
    assert verify_schema(conn) == ["table ticks has no index ticks_symbol_ts"]
    conn.close()
    conn = open_database(path)
    assert verify_schema(conn) == []
    conn.close()


# -- PostgreSQL ----------------------------------------------------------------------------


def pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    from robust_collector.storage.postgres import connect_postgres

    conn = connect_postgres(url, init=False)
    try:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []
    finally:
        conn.close()


@pytest.mark.integration
@pytest.mark.parametrize("table", DEDUP, ids=lambda t: t.name)
def test_postgres_table_without_its_unique_key_is_refused_by_db_init(pg_url, capsys, table):
    assert main(["db", "init", "--db", pg_url]) == 0
    capsys.readouterr()
    pg(pg_url, f"ALTER TABLE {table.name} DROP CONSTRAINT {table.name}_pkey")
    assert main(["db", "init", "--db", pg_url]) == 2
    out = capsys.readouterr()
    line = f"table {table.name} has no unique key on {table.key[0]}"
    assert line in out.err and "already up to date" not in out.out
    assert len(out.err.strip().splitlines()) == 1


@pytest.mark.integration
def test_postgres_writer_goes_to_backup_and_replay_never_doubles_without_ticks_key(
    pg_url, tmp_path
):
    from robust_collector.storage.postgres import PostgresBackend

    assert main(["db", "init", "--db", pg_url]) == 0
    pg(pg_url, "ALTER TABLE ticks DROP CONSTRAINT ticks_pkey")
    folder = tmp_path / "backups"
    w = StorageWriter(PostgresBackend(pg_url), fallback=BackupWriter(folder, RUN))
    w.start()
    try:
        w.submit(Batch([tick(i) for i in range(5)]))
        wait_until(lambda: w.stats().ticks_to_backup == 5, timeout=10, detail=w.stats)
    finally:
        w.stop(10)
    st = w.stats()
    assert st.ticks_written == 0 and st.lost_rows == 0
    assert "table ticks has no unique key on tick_id" in (st.last_error or "")
    for _ in range(2):  # what stored every row twice before
        with pytest.raises(StorageError, match="table ticks has no unique key on tick_id"):
            recover(pg_url, folder)
    assert pg(pg_url, "SELECT count(*) FROM ticks") == [(0,)]
    # the key restored (as the message says), the backup goes in exactly once
    pg(pg_url, "ALTER TABLE ticks ADD PRIMARY KEY (tick_id)")
    assert recover(pg_url, folder).inserted == 5
    backup_of(folder, 5)  # the same rows again
    assert recover(pg_url, folder).inserted == 0
    assert pg(pg_url, "SELECT count(*), count(DISTINCT tick_id) FROM ticks") == [(5, 5)]


@pytest.mark.integration
def test_postgres_dropped_column_is_refused_not_up_to_date(pg_url, capsys):
    assert main(["db", "init", "--db", pg_url]) == 0
    capsys.readouterr()
    pg(pg_url, "ALTER TABLE errors DROP COLUMN message")
    assert main(["db", "init", "--db", pg_url]) == 2
    out = capsys.readouterr()
    assert "table errors has no column message" in out.err and out.out == ""


@pytest.mark.integration
def test_postgres_newer_schema_version_is_refused_not_migrated_down(pg_url, capsys):
    assert main(["db", "init", "--db", pg_url]) == 0
    newer = tables.SCHEMA_VERSION + 1
    pg(pg_url, f"UPDATE rc_schema SET version = {newer}")
    pg(pg_url, "DROP TABLE gaps")
    capsys.readouterr()
    assert main(["db", "init", "--db", pg_url]) == 2
    err = capsys.readouterr().err
    assert f"schema version {newer} is newer than this robust_collector knows" in err
    assert pg(pg_url, "SELECT version FROM rc_schema") == [(newer,)]
    assert pg(pg_url, "SELECT to_regclass('gaps') IS NULL") == [(True,)]  # left alone


@pytest.mark.integration
def test_postgres_missing_table_and_index_are_created_and_reported(pg_url, capsys):
    assert main(["db", "init", "--db", pg_url]) == 0
    pg(pg_url, "DROP INDEX ticks_symbol_ts")
    pg(pg_url, "DROP TABLE gaps")
    capsys.readouterr()
    assert main(["db", "init", "--db", pg_url]) == 0
    out = capsys.readouterr().out
    assert "created tables gaps" in out and "created indexes ticks_symbol_ts" in out
    assert "already up to date" not in out
    assert main(["db", "init", "--db", pg_url]) == 0
    assert "already up to date" in capsys.readouterr().out

"""On a real PostgreSQL server, the schema made from storage.tables is the one the
backend made before (columns, types, nullability, keys and indexes) plus the trades
tables of version 3, an older database is migrated keeping its rows, the inserts
derived from the table definitions store rows, and trades make the whole round trip
(writer, backup, recovery, reader).

The server is the throwaway one of tests/helpers/pgserver.py (or
``RC_TEST_POSTGRES_URL``'s); without either, these tests skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.waiting import wait_until

from robust_collector.storage import tables
from robust_collector.storage.backup import BackupWriter
from robust_collector.storage.postgres import (
    PostgresBackend,
    connect_postgres,
    init_postgres,
    pg_sql,
)
from robust_collector.storage.reader import read_trade_rejects, read_trades
from robust_collector.storage.recovery import recover
from robust_collector.storage.writer import Batch, StorageWriter

pytestmark = pytest.mark.integration

# What postgres_ddl() returned before storage.tables (the SQLite DDL translated by
# regexes), copied verbatim.
PG_DDL_BEFORE = """
CREATE TABLE IF NOT EXISTS ticks (
    tick_id   TEXT PRIMARY KEY,
    symbol    TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    ts_us     BIGINT NOT NULL,
    recv_us   BIGINT NOT NULL,
    bid       DOUBLE PRECISION,
    ask       DOUBLE PRECISION,
    bid_size  DOUBLE PRECISION,
    ask_size  DOUBLE PRECISION,
    last      DOUBLE PRECISION,
    source    TEXT NOT NULL,
    run_id    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks(symbol, ts_us);
CREATE TABLE IF NOT EXISTS rejects (
    tick_id   TEXT PRIMARY KEY,
    symbol    TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    ts_us     BIGINT NOT NULL,
    recv_us   BIGINT NOT NULL,
    bid       DOUBLE PRECISION,
    ask       DOUBLE PRECISION,
    bid_size  DOUBLE PRECISION,
    ask_size  DOUBLE PRECISION,
    last      DOUBLE PRECISION,
    source    TEXT NOT NULL,
    run_id    TEXT NOT NULL
,
    rule        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_us BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_symbol_ts ON rejects(symbol, ts_us);
CREATE TABLE IF NOT EXISTS errors (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL,
    ts_us      BIGINT NOT NULL,
    component  TEXT NOT NULL,
    symbol     TEXT,
    error_type TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_ts ON errors(ts_us);
CREATE TABLE IF NOT EXISTS health_snapshots (
    id        BIGSERIAL PRIMARY KEY,
    run_id    TEXT NOT NULL,
    ts_us     BIGINT NOT NULL,
    component TEXT NOT NULL,
    level     TEXT NOT NULL,
    reasons   TEXT NOT NULL,
    metrics   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_ts ON health_snapshots(ts_us);
CREATE TABLE IF NOT EXISTS breaker_events (
    id        BIGSERIAL PRIMARY KEY,
    run_id    TEXT NOT NULL,
    ts_us     BIGINT NOT NULL,
    breaker   TEXT NOT NULL,
    old_state TEXT NOT NULL,
    new_state TEXT NOT NULL,
    reason    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started_us BIGINT NOT NULL,
    stopped_us BIGINT,
    status     TEXT NOT NULL,
    pid        BIGINT,
    host       TEXT,
    instance   TEXT,
    symbols    TEXT NOT NULL,
    config     TEXT NOT NULL,
    summary    TEXT
);
CREATE TABLE IF NOT EXISTS gaps (
    id       BIGSERIAL PRIMARY KEY,
    run_id   TEXT NOT NULL,
    symbol   TEXT NOT NULL,
    start_us BIGINT NOT NULL,
    end_us   BIGINT NOT NULL,
    cause    TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_symbol_start ON gaps(symbol, start_us);

CREATE INDEX IF NOT EXISTS ticks_ts ON ticks USING brin (ts_us);
CREATE TABLE IF NOT EXISTS rc_schema (version INTEGER NOT NULL);"""

# What schema version 3 added (issue 19), in PostgreSQL's types.
PG_TRADES_DDL_V3 = """
CREATE TABLE IF NOT EXISTS trades (
    trade_id    TEXT PRIMARY KEY,
    symbol      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    ts_us       BIGINT NOT NULL,
    recv_us     BIGINT NOT NULL,
    price       DOUBLE PRECISION,
    size        DOUBLE PRECISION,
    venue       TEXT,
    conditions  TEXT,
    correction  BIGINT,
    provider_id TEXT,
    tape        TEXT,
    source      TEXT NOT NULL,
    run_id      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON trades(symbol, ts_us);
CREATE TABLE IF NOT EXISTS trade_rejects (
    trade_id    TEXT PRIMARY KEY,
    symbol      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    ts_us       BIGINT NOT NULL,
    recv_us     BIGINT NOT NULL,
    price       DOUBLE PRECISION,
    size        DOUBLE PRECISION,
    venue       TEXT,
    conditions  TEXT,
    correction  BIGINT,
    provider_id TEXT,
    tape        TEXT,
    source      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    rule        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_us BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS trade_rejects_symbol_ts ON trade_rejects(symbol, ts_us);"""
# What schema version 4 added (issue 20): the fleet view's health lookup index.
PG_HEALTH_INDEX_V4 = (
    "CREATE INDEX IF NOT EXISTS health_run_component_ts "
    "ON health_snapshots(run_id, component, ts_us)"
)
PG_DDL_V4 = PG_DDL_BEFORE + ";" + PG_TRADES_DDL_V3 + ";" + PG_HEALTH_INDEX_V4
RUN = "pg-run"
T0 = 1_700_000_000_000_000


def trade(i: int, symbol: str = "SPY") -> tuple[Any, ...]:
    """A trades row in TRADE_COLUMNS order (every optional field filled)."""
    price, size = 100.0 + i / 100, 10.0 * (i + 1)
    head = (f"{RUN}:{symbol}:t{i}", symbol, i, T0 + i, T0 + i + 50, price, size)
    return (*head, "N", "@ F", 0, f"prov-{i}", "A", "sim", RUN)


def trade_reject(i: int) -> tuple[Any, ...]:
    """A trade_rejects row: a trade with its rule, reason and time."""
    head = (f"{RUN}:SPY:t{i}", "SPY", i, T0 + i, T0 + i, -1.0, 5.0)
    return (*head, *[None] * 5, "sim", RUN, "price_positive", "price -1 is not positive", T0 + 99)


def run_ddl(url: str, ddl: str) -> None:
    conn = connect_postgres(url, init=False)
    try:
        for statement in ddl.split(";"):
            if statement.strip():
                conn.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def second_db(pg_server) -> Iterator[str]:
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


def schema_of(url: str) -> dict[str, Any]:
    """Columns, constraints and indexes of every table in ``url``'s public schema."""
    conn = connect_postgres(url, init=False)
    try:
        columns = conn.execute(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, "
            "column_default IS NOT NULL FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conrelid::regclass::text, contype, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2, 3"
        ).fetchall()
        indexes = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY 1, 2"
        ).fetchall()
    finally:
        conn.close()
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def test_init_postgres_makes_the_schema_of_before_plus_versions_3_and_4(pg_url, second_db):
    run_ddl(second_db, PG_DDL_V4)
    conn = connect_postgres(pg_url, init=False)
    try:
        done = init_postgres(conn)
    finally:
        conn.close()
    assert done["created"] == sorted(tables.TABLE_NAMES)
    before, now = schema_of(second_db), schema_of(pg_url)
    assert now == before
    assert {t for t, *_ in now["columns"]} == {*tables.TABLE_NAMES, "rc_schema"}


def test_a_version_2_database_gets_the_trades_tables_and_keeps_its_rows(pg_url, second_db):
    run_ddl(second_db, PG_DDL_V4)  # what a new one looks like
    run_ddl(pg_url, PG_DDL_BEFORE)
    conn = connect_postgres(pg_url, init=False)
    try:
        conn.execute("INSERT INTO rc_schema VALUES (2)")
        tick = ("t1", "SPY", 1, 10, 11, 1.0, 1.1, 5.0, 6.0, None, "s", "old")
        conn.execute(tables.TICKS.insert(dialect="postgresql"), tick)
        done = init_postgres(conn)
        assert done["from_version"] == 2 and done["version"] == tables.SCHEMA_VERSION == 4
        assert done["created"] == ["trade_rejects", "trades"]
        assert done["indexes_created"] == ["health_run_component_ts"]
        assert conn.execute("SELECT * FROM ticks").fetchall() == [tick]
        assert conn.execute("SELECT version FROM rc_schema").fetchall() == [(4,)]
        again = init_postgres(conn)  # a second collector starting: nothing to do
        assert again["from_version"] == 4 and again["created"] == []
        assert again["indexes_created"] == []
    finally:
        conn.close()
    assert schema_of(pg_url) == schema_of(second_db)


def test_a_version_3_database_gets_the_health_index_and_keeps_its_rows(pg_url, second_db, capsys):
    from robust_collector.cli import main

    run_ddl(second_db, PG_DDL_V4)
    run_ddl(pg_url, PG_DDL_BEFORE + ";" + PG_TRADES_DDL_V3)
    conn = connect_postgres(pg_url, init=False)
    try:
        conn.execute("INSERT INTO rc_schema VALUES (3)")
        conn.execute(
            "INSERT INTO health_snapshots (run_id, ts_us, component, level, reasons, metrics) "
            "VALUES ('r', 5, 'system', 'HEALTHY', '[]', '{}')"
        )
    finally:
        conn.close()
    assert main(["db", "init", "--db", pg_url]) == 0
    out = capsys.readouterr().out
    assert "schema version 4" in out and "migrated from version 3" in out
    assert "created indexes health_run_component_ts" in out
    assert schema_of(pg_url) == schema_of(second_db)
    conn = connect_postgres(pg_url, init=False)
    try:
        assert conn.execute("SELECT version FROM rc_schema").fetchall() == [(4,)]
        assert conn.execute("SELECT run_id FROM health_snapshots").fetchall() == [("r",)]
        conn.execute("SET enable_seqscan = off")  # a 1-row table: ask whether it can be used
        plan = conn.execute(
            "EXPLAIN SELECT ts_us FROM health_snapshots "
            "WHERE run_id = 'r' AND component = 'system' ORDER BY ts_us DESC LIMIT 1"
        ).fetchall()
        assert "health_run_component_ts" in str(plan)  # the fleet view's lookup uses it
    finally:
        conn.close()


def test_each_tables_insert_stores_a_row_on_postgres(pg_url):
    sample = {"TEXT": "x", "INTEGER": 1, "REAL": 1.5}
    conn = connect_postgres(pg_url)
    try:
        for table in tables.TABLES:
            row = tuple(sample[table.column(c).type.sqlite] for c in table.writable)
            conn.execute(table.insert(dialect="postgresql"), row)
            conn.execute(pg_sql(table.insert()), row)  # the writer's path for event rows
            (n,) = conn.execute(f"SELECT count(*) FROM {table.name}").fetchone()
            # a keyed table ignores the repeat; an id table stores it again
            assert n == (1 if table.or_ignore else 2), table.name
        conn.execute(pg_sql(tables.STOP_RUN), (5, "{}", "x"))
        assert conn.execute("SELECT status, stopped_us FROM runs").fetchall() == [("stopped", 5)]
    finally:
        conn.close()


# -- trades, the whole round trip ----------------------------------------------------------


def test_trades_round_trip_writer_backup_recovery_reader_on_postgres(pg_url, tmp_path):
    """Trades and trade rejects go in by the writer's COPY (and its staged path when a
    batch repeats stored trades), come back from a backup file by recovery exactly
    once however often it runs, and read back with their values."""
    w = StorageWriter(PostgresBackend(pg_url))
    w.start()
    try:
        w.submit(Batch(trades=[trade(i) for i in range(10)], trade_rejects=[trade_reject(100)]))
        # overlaps the first batch: the direct COPY fails, the staged path skips the repeats
        w.submit(Batch(trades=[trade(i) for i in range(5, 15)]))
        wait_until(lambda: w.stats().batches_written == 2, timeout=15, detail=w.stats)
    finally:
        w.stop(10)
    st = w.stats()
    assert st.trades_written == 20 and st.trade_rejects_written == 1  # rows handed over
    assert st.trades_stored_by_symbol == {"SPY": 20} and st.lost_rows == 0
    stored = read_trades(pg_url)
    assert stored["trade_id"].to_list() == [trade(i)[0] for i in range(15)]
    assert stored.select(tables.TRADE_COLUMNS).rows() == [trade(i) for i in range(15)]
    assert str(stored.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    rejects = read_trade_rejects(pg_url)
    assert rejects.select(tables.TRADE_REJECT_COLUMNS).rows() == [trade_reject(100)]

    folder = tmp_path / "backups"
    with BackupWriter(folder, RUN) as bw:
        bw.write_batch([], [], [trade(i) for i in range(10, 30)], [trade_reject(101)])
    dry = recover(pg_url, folder, dry_run=True)
    assert dry.inserted == 16  # trades 15..29 and the new reject are not stored yet
    first = recover(pg_url, folder)
    assert first.ok and first.totals["trades"] == 20 and first.totals["trade_rejects"] == 1
    assert first.inserted == 16 and first.totals["already_present"] == 5
    # the same file replayed again (moved back from recovered/) stores nothing twice
    shutil.move(first.results[0].moved_to, folder / first.results[0].path.name)
    second = recover(pg_url, folder)
    assert second.inserted == 0 and second.totals["already_present"] == 21
    assert read_trades(pg_url)["seq"].to_list() == list(range(30))
    assert read_trade_rejects(pg_url, rule="price_positive").height == 2
    assert read_trades(pg_url, symbol="QQQ").is_empty()

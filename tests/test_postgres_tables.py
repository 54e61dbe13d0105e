"""On a real PostgreSQL server, the schema made from storage.tables is the one the
backend made before (columns, types, nullability, keys and indexes), and the
inserts derived from the table definitions store rows.

The server is the throwaway one of tests/helpers/pgserver.py (or
``RC_TEST_POSTGRES_URL``'s); without either, these tests skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from robust_collector.storage import tables
from robust_collector.storage.postgres import connect_postgres, init_postgres, pg_sql

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


def test_init_postgres_makes_the_schema_of_before(pg_url, second_db):
    conn = connect_postgres(second_db, init=False)
    try:
        for statement in PG_DDL_BEFORE.split(";"):
            if statement.strip():
                conn.execute(statement)
    finally:
        conn.close()
    conn = connect_postgres(pg_url, init=False)
    try:
        done = init_postgres(conn)
    finally:
        conn.close()
    assert done["created"] == sorted(tables.TABLE_NAMES)
    before, now = schema_of(second_db), schema_of(pg_url)
    assert now == before
    assert {t for t, *_ in now["columns"]} == {*tables.TABLE_NAMES, "rc_schema"}


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

"""storage.tables is the one definition of every table: the DDL, inserts and polars
schemas derived from it match what the collector wrote before (schema 2) plus what
schema 3 added (the trades tables), and opening a database checks (and migrates)
its schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from robust_collector.model import QUOTE_FIELDS
from robust_collector.storage import tables
from robust_collector.storage.backend import SQLiteBackend
from robust_collector.storage.postgres import pg_sql, postgres_ddl
from robust_collector.storage.reader import TICK_SCHEMA
from robust_collector.storage.schema import (
    DDL,
    SCHEMA_VERSION,
    SchemaError,
    connect,
    init_db,
    open_database,
    verify_schema,
)
from robust_collector.validation.frame import QUOTE_SCHEMA

# The SQLite schema as robust_collector wrote it before storage.tables existed (schema
# version 2), copied verbatim: databases made from it must keep working.
QUOTE_COLUMNS_SQL_BEFORE = """
    tick_id   TEXT PRIMARY KEY,
    symbol    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    ts_us     INTEGER NOT NULL,
    recv_us   INTEGER NOT NULL,
    bid       REAL,
    ask       REAL,
    bid_size  REAL,
    ask_size  REAL,
    last      REAL,
    source    TEXT NOT NULL,
    run_id    TEXT NOT NULL
"""
DDL_BEFORE = f"""
CREATE TABLE IF NOT EXISTS ticks ({QUOTE_COLUMNS_SQL_BEFORE});
CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks(symbol, ts_us);
CREATE TABLE IF NOT EXISTS rejects ({QUOTE_COLUMNS_SQL_BEFORE},
    rule        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_symbol_ts ON rejects(symbol, ts_us);
CREATE TABLE IF NOT EXISTS errors (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL,
    ts_us      INTEGER NOT NULL,
    component  TEXT NOT NULL,
    symbol     TEXT,
    error_type TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_ts ON errors(ts_us);
CREATE TABLE IF NOT EXISTS health_snapshots (
    id        INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    ts_us     INTEGER NOT NULL,
    component TEXT NOT NULL,
    level     TEXT NOT NULL,
    reasons   TEXT NOT NULL,
    metrics   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_ts ON health_snapshots(ts_us);
CREATE TABLE IF NOT EXISTS breaker_events (
    id        INTEGER PRIMARY KEY,
    run_id    TEXT NOT NULL,
    ts_us     INTEGER NOT NULL,
    breaker   TEXT NOT NULL,
    old_state TEXT NOT NULL,
    new_state TEXT NOT NULL,
    reason    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started_us INTEGER NOT NULL,
    stopped_us INTEGER,
    status     TEXT NOT NULL,
    pid        INTEGER,
    host       TEXT,
    instance   TEXT,
    symbols    TEXT NOT NULL,
    config     TEXT NOT NULL,
    summary    TEXT
);
CREATE TABLE IF NOT EXISTS gaps (
    id       INTEGER PRIMARY KEY,
    run_id   TEXT NOT NULL,
    symbol   TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us   INTEGER NOT NULL,
    cause    TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS gaps_symbol_start ON gaps(symbol, start_us);
"""

# What schema version 3 added (issue 19): the trades and trade_rejects tables.
TRADE_COLUMNS_SQL_V3 = """
    trade_id    TEXT PRIMARY KEY,
    symbol      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts_us       INTEGER NOT NULL,
    recv_us     INTEGER NOT NULL,
    price       REAL,
    size        REAL,
    venue       TEXT,
    conditions  TEXT,
    correction  INTEGER,
    provider_id TEXT,
    tape        TEXT,
    source      TEXT NOT NULL,
    run_id      TEXT NOT NULL
"""
TRADES_DDL_V3 = f"""
CREATE TABLE IF NOT EXISTS trades ({TRADE_COLUMNS_SQL_V3});
CREATE INDEX IF NOT EXISTS trades_symbol_ts ON trades(symbol, ts_us);
CREATE TABLE IF NOT EXISTS trade_rejects ({TRADE_COLUMNS_SQL_V3},
    rule        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    rejected_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trade_rejects_symbol_ts ON trade_rejects(symbol, ts_us);
"""
DDL_V3 = DDL_BEFORE + TRADES_DDL_V3
TRADE_TABLES = ("trades", "trade_rejects")

# What schema version 4 added (issue 20): the fleet view's health lookup index.
HEALTH_TS = "CREATE INDEX IF NOT EXISTS health_ts ON health_snapshots(ts_us);"
HEALTH_INDEX_V4 = (
    "CREATE INDEX IF NOT EXISTS health_run_component_ts "
    "ON health_snapshots(run_id, component, ts_us);"
)


def with_v4(ddl: str) -> str:
    """``ddl`` with version 4's index, where the generated DDL puts it."""
    assert HEALTH_TS in ddl
    return ddl.replace(HEALTH_TS, f"{HEALTH_TS}\n{HEALTH_INDEX_V4}", 1)


DDL_V4 = with_v4(DDL_V3)

# The statements as they were spelled before (other modules and tests still send them).
STATEMENTS_BEFORE = {
    "INSERT_TICKS": (
        "INSERT OR IGNORE INTO ticks (tick_id, symbol, seq, ts_us, recv_us, bid, ask, "
        "bid_size, ask_size, last, source, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_REJECTS": (
        "INSERT OR IGNORE INTO rejects (tick_id, symbol, seq, ts_us, recv_us, bid, ask, "
        "bid_size, ask_size, last, source, run_id, rule, reason, rejected_us) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_ERROR": (
        "INSERT INTO errors (run_id, ts_us, component, symbol, error_type, message) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_BREAKER_EVENT": (
        "INSERT INTO breaker_events (run_id, ts_us, breaker, old_state, new_state, reason) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_HEALTH": (
        "INSERT INTO health_snapshots (run_id, ts_us, component, level, reasons, metrics) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_GAP": (
        "INSERT INTO gaps (run_id, symbol, start_us, end_us, cause, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_RUN": (
        "INSERT OR IGNORE INTO runs (run_id, started_us, status, pid, host, instance, "
        "symbols, config) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)"
    ),
    "STOP_RUN": (
        "UPDATE runs SET stopped_us = ?, status = 'stopped', summary = ? WHERE run_id = ?"
    ),
    # schema 3
    "INSERT_TRADES": (
        "INSERT OR IGNORE INTO trades (trade_id, symbol, seq, ts_us, recv_us, price, size, "
        "venue, conditions, correction, provider_id, tape, source, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
    "INSERT_TRADE_REJECTS": (
        "INSERT OR IGNORE INTO trade_rejects (trade_id, symbol, seq, ts_us, recv_us, price, "
        "size, venue, conditions, correction, provider_id, tape, source, run_id, rule, reason, "
        "rejected_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ),
}

DTYPE_OF_SQLITE = {"TEXT": pl.String, "INTEGER": pl.Int64, "REAL": pl.Float64}


def _norm(sql: str) -> str:
    """``sql`` with layout whitespace gone: the same statement, however it was indented."""
    return re.sub(r"\s*([(),;])\s*", r"\1", re.sub(r"\s+", " ", sql)).strip()


def schema_of(conn: sqlite3.Connection) -> dict[str, object]:
    """Everything SQLite knows about the tables and indexes in ``conn``."""
    out: dict[str, object] = {}
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    for kind, name, table, sql in rows:
        if kind == "table":
            info = conn.execute(f"PRAGMA table_info({name})").fetchall()
            indexes = conn.execute(f"PRAGMA index_list({name})").fetchall()
            out[name] = (kind, table, _norm(sql), info, sorted(indexes))
        else:
            info = conn.execute(f"PRAGMA index_info({name})").fetchall()
            out[name] = (kind, table, _norm(sql or ""), info)
    return out


def memory_db(ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(ddl)
    return conn


def old_database(path: Path, ddl: str = DDL_BEFORE) -> Path:
    """A WAL database file made by the code before storage.tables."""
    conn = connect(path)
    conn.executescript(ddl)
    conn.execute("PRAGMA user_version=2")
    conn.close()
    return path


# -- the DDL ---------------------------------------------------------------------------------


def test_the_generated_ddl_creates_exactly_the_schema_of_before_plus_version_3():
    before = schema_of(memory_db(DDL_BEFORE))
    indexes = {
        "ticks_symbol_ts",
        "rejects_symbol_ts",
        "errors_ts",
        "health_ts",
        "gaps_symbol_start",
    }
    assert set(before) == {*tables.TABLE_NAMES, *indexes} - set(TRADE_TABLES)
    v3 = schema_of(memory_db(DDL_V3))
    assert set(v3) - set(before) == {*TRADE_TABLES, "trades_symbol_ts", "trade_rejects_symbol_ts"}
    assert {k: v for k, v in v3.items() if k in before} == before  # nothing else changed
    v4 = schema_of(memory_db(DDL_V4))
    assert set(v4) - set(v3) == {"health_run_component_ts"}
    # nothing else changed (health_snapshots' own entry lists its indexes)
    assert {k: v for k, v in v4.items() if k in v3 and k != "health_snapshots"} == {
        k: v for k, v in v3.items() if k != "health_snapshots"
    }
    assert schema_of(memory_db(DDL)) == v4
    assert DDL == tables.SQLITE_DDL


def test_a_new_database_file_has_the_version_4_schema_and_its_version(tmp_path):
    conn = open_database(tmp_path / "new.db")
    try:
        assert schema_of(conn) == schema_of(memory_db(DDL_V4))
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert verify_schema(conn) == []
    finally:
        conn.close()


def test_a_database_made_before_opens_and_takes_writes(tmp_path):
    path = old_database(tmp_path / "old.db")
    conn = open_database(path)
    try:
        assert verify_schema(conn) == []
        conn.execute(
            tables.INSERT_TICKS, ("t1", "SPY", 1, 10, 11, 1.0, 1.1, 5.0, 6.0, 1.05, "s", "r")
        )
        conn.execute(tables.INSERT_RUN, ("r", 1, 123, "host", "desk-1", "[]", "{}"))
        assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (1,)
        assert conn.execute("SELECT status, instance FROM runs").fetchone() == ("running", "desk-1")
    finally:
        conn.close()


def test_a_version_2_database_gets_the_trades_tables_and_keeps_its_rows(tmp_path):
    path = old_database(tmp_path / "v2.db")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO ticks VALUES ('t1', 'SPY', 1, 10, 11, 1, 1.1, 5, 6, 1.05, 's', 'r')")
    conn.execute("INSERT INTO runs VALUES ('r', 1, 2, 'stopped', 1, 'h', 'desk', '[]', '{}', '')")
    conn.commit()
    assert verify_schema(conn) == [
        "table health_snapshots has no index health_run_component_ts",  # version 4's
        *(f"table {t} is missing" for t in TRADE_TABLES),
    ]
    conn.close()
    conn = open_database(path)
    try:
        assert verify_schema(conn) == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        # exactly the schema a new database gets: the tables and indexes versions 3-4 added
        assert schema_of(conn) == schema_of(memory_db(DDL_V4))
        assert conn.execute("SELECT tick_id, run_id FROM ticks").fetchall() == [("t1", "r")]
        assert conn.execute("SELECT run_id, instance FROM runs").fetchall() == [("r", "desk")]
        trade = ("r:SPY:t1", "SPY", 1, 10, 11, 1.0, 100.0, "N", "@", 0, "p1", "A", "s", "r")
        conn.execute(tables.INSERT_TRADES, trade)
        conn.execute(tables.INSERT_TRADE_REJECTS, (*trade, "price_positive", "why", 12))
        assert conn.execute("SELECT * FROM trades").fetchall() == [trade]
        assert conn.execute("SELECT count(*) FROM trade_rejects").fetchone() == (1,)
    finally:
        conn.close()
    again = open_database(path)  # opening again changes nothing
    try:
        assert schema_of(again) == schema_of(memory_db(DDL_V4))
        assert again.execute("SELECT count(*) FROM trades").fetchone() == (1,)
    finally:
        again.close()


def test_a_version_1_database_is_migrated_with_its_rows_kept(tmp_path):
    v1 = DDL_BEFORE.replace("    instance   TEXT,\n", "").split("CREATE TABLE IF NOT EXISTS gaps")[
        0
    ]
    path = old_database(tmp_path / "v1.db", v1)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO runs VALUES ('old', 1, 2, 'stopped', 1, 'h', '[]', '{}', NULL)")
    conn.commit()
    conn.close()
    conn = open_database(path)
    try:
        assert verify_schema(conn) == []
        names = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
        assert set(names) == set(tables.RUNS.names)  # instance added (at the end, by ALTER)
        assert conn.execute("SELECT run_id, instance FROM runs").fetchall() == [("old", None)]
        assert conn.execute("SELECT count(*) FROM gaps").fetchone() == (0,)  # created
        for table in TRADE_TABLES:  # and version 3's tables too
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_every_column_a_migration_adds_may_be_null():
    # ALTER TABLE ADD COLUMN cannot add a NOT NULL column without a default
    added = [c for t in tables.TABLES for c in t.columns if c.added_in > 1]
    assert [c.name for c in added] == ["instance"]
    assert all(not c.not_null and not c.primary_key for c in added)
    assert all(c.added_in <= SCHEMA_VERSION for c in added)


def test_the_tables_a_version_added_say_so():
    added = {t.name: t.added_in for t in tables.TABLES if t.added_in > 1}
    assert added == dict.fromkeys(TRADE_TABLES, 3)
    indexes = {i.name: i.added_in for t in tables.TABLES for i in t.indexes if i.added_in > 1}
    assert indexes == {"health_run_component_ts": 4}
    assert max(*added.values(), *indexes.values()) == SCHEMA_VERSION


def test_a_version_3_database_gets_the_health_index_and_keeps_its_rows(tmp_path):
    path = old_database(tmp_path / "v3.db", DDL_V3)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=3")
    conn.execute("INSERT INTO health_snapshots VALUES (1, 'r', 5, 'system', 'HEALTHY', '[]', '{}')")
    conn.commit()
    assert verify_schema(conn) == ["table health_snapshots has no index health_run_component_ts"]
    conn.close()
    conn = open_database(path)
    try:
        assert verify_schema(conn) == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert schema_of(conn) == schema_of(memory_db(DDL_V4))
        assert conn.execute("SELECT run_id FROM health_snapshots").fetchall() == [("r",)]
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT ts_us FROM health_snapshots "
            "WHERE run_id = ? AND component = ? ORDER BY ts_us DESC LIMIT 1",
            ("r", "system"),
        ).fetchall()
        assert "health_run_component_ts" in str(plan)  # the fleet view's lookup uses it
    finally:
        conn.close()


# -- the statements ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STATEMENTS_BEFORE))
def test_the_statements_are_spelled_as_before(name):
    assert getattr(tables, name) == STATEMENTS_BEFORE[name]


@pytest.mark.parametrize("table", tables.TABLES, ids=lambda t: t.name)
def test_every_insert_has_one_placeholder_per_column_and_stores_a_row(table):
    sql = table.insert()
    columns = re.search(r"\(([^)]*)\) VALUES", sql).group(1).split(", ")
    assert tuple(columns) == table.writable
    assert sql.count("?") == len(table.writable)
    pg = table.insert(dialect="postgresql")
    assert pg.count("%s") == len(table.writable) and "?" not in pg
    conn = memory_db(DDL)
    row = tuple(
        {"TEXT": "x", "INTEGER": 1, "REAL": 1.5}[table.column(c).type.sqlite] for c in columns
    )
    conn.execute(sql, row)
    assert conn.execute(f"SELECT count(*) FROM {table.name}").fetchone() == (1,)


def test_the_fixed_statements_have_one_placeholder_per_parameter():
    assert tables.INSERT_RUN.count("?") == 7  # run_id, started_us, pid, host, instance, ...
    assert tables.STOP_RUN.count("?") == 3


@pytest.mark.parametrize("table", tables.TABLES, ids=lambda t: t.name)
def test_postgres_inserts_are_the_sqlite_ones_translated(table):
    sqlite_sql = table.insert()
    translated = sqlite_sql.replace("?", "%s")
    if translated.startswith("INSERT OR IGNORE INTO"):
        translated = "INSERT INTO" + translated[len("INSERT OR IGNORE INTO") :]
        translated += " ON CONFLICT DO NOTHING"
    assert table.insert(dialect="postgresql") == translated == pg_sql(sqlite_sql)


def _translated(sqlite_ddl: str) -> str:
    """The translation the PostgreSQL backend applied to the SQLite DDL before."""
    for pattern, repl in (
        (r"\bINTEGER PRIMARY KEY\b", "BIGSERIAL PRIMARY KEY"),
        (r"\bINTEGER\b", "BIGINT"),
        (r"\bREAL\b", "DOUBLE PRECISION"),
    ):
        sqlite_ddl = re.sub(pattern, repl, sqlite_ddl)
    return sqlite_ddl


def test_postgres_ddl_is_the_sqlite_schema_translated_as_before():
    pg_only = (
        "\nCREATE INDEX IF NOT EXISTS ticks_ts ON ticks USING brin (ts_us);"
        "\nCREATE TABLE IF NOT EXISTS rc_schema (version INTEGER NOT NULL);"
    )
    before, trades_v3 = with_v4(_translated(DDL_BEFORE)), _translated(TRADES_DDL_V3)
    assert _norm(postgres_ddl()) == _norm(before + trades_v3 + pg_only)
    # a hypertable's key holds its time column: ticks' and, since version 3, trades'
    hyper = before.replace("tick_id   TEXT PRIMARY KEY,", "tick_id   TEXT NOT NULL,", 1)
    hyper = hyper.replace(
        "run_id    TEXT NOT NULL\n);",
        "run_id    TEXT NOT NULL,\n PRIMARY KEY (tick_id, ts_us));",
        1,
    )
    hyper_trades = trades_v3.replace(
        "trade_id    TEXT PRIMARY KEY,", "trade_id    TEXT NOT NULL,", 1
    ).replace(
        "run_id      TEXT NOT NULL\n);",
        "run_id      TEXT NOT NULL,\n PRIMARY KEY (trade_id, ts_us));",
        1,
    )
    assert _norm(postgres_ddl(timescale=True)) == _norm(hyper + hyper_trades + pg_only)
    assert tables.postgres_migrations() == {
        2: ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS instance TEXT",)
    }


# -- the polars schemas -------------------------------------------------------------------------


@pytest.mark.parametrize("table", tables.TABLES, ids=lambda t: t.name)
def test_the_polars_schema_matches_the_sqlite_columns(table):
    conn = memory_db(DDL_V3)
    declared = [(r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({table.name})")]
    assert list(table.polars_schema) == [name for name, _ in declared]
    assert table.polars_schema == {name: DTYPE_OF_SQLITE[t] for name, t in declared}


def test_the_old_polars_schema_names_are_the_tables_ones():
    assert tables.TICKS.polars_schema == TICK_SCHEMA
    assert dict(QUOTE_SCHEMA) == tables.QUOTE_POLARS_SCHEMA
    assert tuple(QUOTE_SCHEMA) == tables.QUOTE_COLUMNS == QUOTE_FIELDS
    assert (*QUOTE_FIELDS, "run_id") == tables.TICK_COLUMNS
    assert tables.REJECTS.polars_schema == {
        **TICK_SCHEMA,
        "rule": pl.String,
        "reason": pl.String,
        "rejected_us": pl.Int64,
    }


def test_stored_rows_read_back_with_the_polars_schema(tmp_path):
    conn = open_database(tmp_path / "db.db")
    conn.execute(tables.INSERT_TICKS, ("t1", "SPY", 1, 10, 11, None, 1.1, 5.0, 6.0, 1.05, "s", "r"))
    rows = conn.execute(f"SELECT {', '.join(tables.TICK_COLUMNS)} FROM ticks").fetchall()
    conn.close()
    df = pl.DataFrame(rows, schema=tables.TICKS.polars_schema, orient="row")
    assert df.schema == pl.Schema(tables.TICKS.polars_schema)
    assert df.row(0) == rows[0]


# -- verification ---------------------------------------------------------------------------------


def test_verify_schema_reports_a_dropped_column_a_missing_table_and_a_wrong_type():
    conn = memory_db(DDL_V4)
    conn.execute("ALTER TABLE errors DROP COLUMN message")
    conn.execute("DROP TABLE gaps")
    conn.execute("DROP TABLE breaker_events")
    conn.execute(
        "CREATE TABLE breaker_events (id INTEGER PRIMARY KEY, run_id TEXT, "
        "ts_us TEXT, breaker TEXT, old_state TEXT, new_state TEXT, reason TEXT)"
    )
    assert verify_schema(conn) == [
        "table errors has no column message",
        "column breaker_events.ts_us is TEXT, not INTEGER",
        "table gaps is missing",
    ]


def test_an_old_database_missing_a_required_column_is_refused_in_one_line(tmp_path):
    path = old_database(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE ticks DROP COLUMN last")
    conn.execute("INSERT INTO ticks VALUES ('t1', 'SPY', 1, 10, 11, 1.0, 1.1, 5.0, 6.0, 's', 'r')")
    conn.commit()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    backend = SQLiteBackend(path)
    with pytest.raises(SchemaError) as err:
        backend.connect()
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text and "table ticks has no column last" in text
    # the writer takes it for a database it cannot use: batches go to the backup files
    assert isinstance(err.value, backend.errors)
    assert not isinstance(err.value, backend.data_errors)
    # and nothing was changed: the row is still there, no column was added
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM ticks").fetchone() == (1,)
    assert "last" not in {r[1] for r in conn.execute("PRAGMA table_info(ticks)")}
    conn.close()


def test_several_missing_columns_are_counted_in_the_one_line():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(DDL_BEFORE)
    conn.execute("ALTER TABLE gaps DROP COLUMN detail")
    conn.execute("ALTER TABLE gaps DROP COLUMN cause")
    with pytest.raises(SchemaError, match=r"table gaps has no column cause \(and 1 more\)"):
        init_db(conn)

"""The SQLite schema every writer and reader shares, and how to open a database.

Ticks are unique on ``tick_id`` and written with ``INSERT OR IGNORE``, so replaying
a backup file twice stores nothing twice. Every connection uses WAL mode (readers
never block the writer) and a busy timeout.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from robust_collector.model import QUOTE_FIELDS

SCHEMA_VERSION = 2  # 2: runs.instance (which collector of a fleet)

QUOTE_COLUMNS_SQL = """
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

DDL = f"""
CREATE TABLE IF NOT EXISTS ticks ({QUOTE_COLUMNS_SQL});
CREATE INDEX IF NOT EXISTS ticks_symbol_ts ON ticks(symbol, ts_us);
CREATE TABLE IF NOT EXISTS rejects ({QUOTE_COLUMNS_SQL},
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

TICK_COLUMNS: tuple[str, ...] = (*QUOTE_FIELDS, "run_id")
INSERT_TICKS = (
    f"INSERT OR IGNORE INTO ticks ({', '.join(TICK_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TICK_COLUMNS))})"
)
REJECT_COLUMNS: tuple[str, ...] = (*TICK_COLUMNS, "rule", "reason", "rejected_us")
INSERT_REJECTS = (
    f"INSERT OR IGNORE INTO rejects ({', '.join(REJECT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(REJECT_COLUMNS))})"
)
TABLES = ("ticks", "rejects", "errors", "health_snapshots", "breaker_events", "runs", "gaps")
# a stream's outages and silences (cause: stream_down | symbol_silent), one row per symbol
INSERT_GAP = (
    "INSERT INTO gaps (run_id, symbol, start_us, end_us, cause, detail) VALUES (?, ?, ?, ?, ?, ?)"
)


def connect(
    path: str | Path, *, timeout: float = 5.0, readonly: bool = False
) -> sqlite3.Connection:
    """Open ``path`` with WAL mode and a busy timeout; ``readonly`` never creates it."""
    if readonly:
        uri = f"{Path(path).resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def init_db(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """Create every table and index if missing; returns the sqlite-utils view of it."""
    conn.executescript(DDL)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    if "instance" not in columns:  # a version-1 database
        conn.execute("ALTER TABLE runs ADD COLUMN instance TEXT")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return sqlite_utils.Database(conn)


def open_database(path: str | Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """Create the folder and the schema if needed and return a WAL connection."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(p, timeout=timeout)
    init_db(conn)
    return conn

"""How to open a SQLite database: create, migrate and verify its schema.

The tables are defined in ``storage.tables``; this module creates them from there,
migrates an older database (with sqlite-utils: the columns later versions added; the
tables they added, like version 3's trades, are created whole by the DDL) and checks
an existing one (``verify_schema``). Ticks are unique on ``tick_id`` and trades on
``trade_id``, written with ``INSERT OR IGNORE``, so replaying a backup file twice
stores nothing twice. Every connection uses WAL mode (readers never block the writer) and a busy
timeout.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from robust_collector.errors import StorageError
from robust_collector.storage.tables import (
    INSERT_GAP,
    INSERT_REJECTS,
    INSERT_TICKS,
    REJECT_COLUMNS,
    SCHEMA_VERSION,
    SQLITE_DDL,
    TABLE_NAMES,
    TICK_COLUMNS,
    Table,
)
from robust_collector.storage.tables import TABLES as TABLE_DEFS

__all__ = [
    "DDL",
    "INSERT_GAP",
    "INSERT_REJECTS",
    "INSERT_TICKS",
    "REJECT_COLUMNS",
    "SCHEMA_VERSION",
    "TABLES",
    "TICK_COLUMNS",
    "SchemaError",
    "connect",
    "init_db",
    "open_database",
    "verify_schema",
]

log = logging.getLogger(__name__)

# the names this module always had; the definitions live in storage.tables
DDL = SQLITE_DDL
TABLES = TABLE_NAMES  # the names, as before (tables.TABLES holds the definitions)


class SchemaError(StorageError, sqlite3.DatabaseError):
    """An existing database lacks a column every collector database has.

    A ``sqlite3.DatabaseError`` too, so the writer treats it like a database it cannot
    use (batches go to the backup files) and readers' error handling covers it.
    """


@dataclass(frozen=True)
class _Problem:
    kind: str  # "table" (missing), "column" (missing) or "type" (declared otherwise)
    table: str
    column: str | None
    text: str


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


def _file(conn: sqlite3.Connection) -> str:
    """The main database file of ``conn``, for messages (``:memory:`` when there is none)."""
    row = conn.execute("PRAGMA database_list").fetchone()
    return (row[2] if row else "") or ":memory:"


def _problems(db: sqlite_utils.Database, tables: tuple[Table, ...] = TABLE_DEFS) -> list[_Problem]:
    """How the tables in ``db`` differ from their definitions (extra columns are fine)."""
    out: list[_Problem] = []
    for table in tables:
        t = db.table(table.name)
        if not t.exists():
            out.append(_Problem("table", table.name, None, f"table {table.name} is missing"))
            continue
        declared = {c.name: c.type.upper() for c in t.columns}
        for col in table.columns:
            have = declared.get(col.name)
            if have is None:
                text = f"table {table.name} has no column {col.name}"
                out.append(_Problem("column", table.name, col.name, text))
            elif have != col.type.sqlite:
                text = (
                    f"column {table.name}.{col.name} is {have or 'untyped'}, not {col.type.sqlite}"
                )
                out.append(_Problem("type", table.name, col.name, text))
    return out


def verify_schema(conn: sqlite3.Connection) -> list[str]:
    """What is wrong with the collector's tables in ``conn``: each missing table, missing
    column and column of another type, one line each (empty when all is well)."""
    db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
    return [p.text for p in _problems(db)]


def _migrate(db: sqlite_utils.Database) -> None:
    """Add the columns later schema versions brought to an older database's tables."""
    for table in TABLE_DEFS:
        t = db.table(table.name)
        if not t.exists():
            continue  # created whole below
        have = t.columns_dict
        for col in table.columns:
            if col.added_in > 1 and col.name not in have:
                try:
                    t.add_column(col.name, col.type.sqlite)
                except sqlite3.OperationalError:
                    # another process opening the database added it first
                    if col.name not in t.columns_dict:
                        raise


def init_db(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """Create every table and index if missing, migrate an older database (columns later
    versions added), and refuse one whose tables lack a column they always had
    (``SchemaError``, one line naming the file, table and column); returns the
    sqlite-utils view of it."""
    db = sqlite_utils.Database(conn)
    _migrate(db)
    problems = _problems(db)
    missing = [p for p in problems if p.kind == "column"]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SchemaError(
            f"database {_file(conn)}: {missing[0].text}{more}; it is not a robust_collector "
            "database of a compatible version, or was altered: move it aside or use another file"
        )
    for p in problems:
        if p.kind == "type":
            log.warning("database %s: %s", _file(conn), p.text)
    conn.executescript(DDL)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return db


def open_database(path: str | Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """Create the folder and the schema if needed (``init_db``) and return a WAL connection."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(p, timeout=timeout)
    try:
        init_db(conn)
    except BaseException:
        conn.close()
        raise
    return conn

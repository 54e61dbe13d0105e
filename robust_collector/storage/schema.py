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
    FoundTable,
    Problem,
    Table,
    schema_problems,
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
    """An existing database cannot be written safely: it lacks a column every collector
    database has, a unique key replay dedups on, or is of a newer schema version.

    A ``sqlite3.DatabaseError`` too, so the writer treats it like a database it cannot
    use (batches go to the backup files) and readers' error handling covers it.
    """


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


def _found(conn: sqlite3.Connection) -> dict[str, FoundTable]:
    """What the database holds for each of its tables (columns, unique keys, indexes)."""
    out: dict[str, FoundTable] = {}
    names = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")]
    for name in names:
        info = conn.execute(f'PRAGMA main.table_info("{name}")').fetchall()
        columns = {r[1]: (r[2] or "").upper() for r in info}
        pk = frozenset(r[1] for r in sorted(info, key=lambda r: r[5]) if r[5])
        unique = [pk] if pk else []
        indexes = set()
        for _seq, index, is_unique, _origin, partial in conn.execute(
            f'PRAGMA main.index_list("{name}")'
        ).fetchall():
            indexes.add(index)
            if is_unique and not partial:
                cols = [r[2] for r in conn.execute(f'PRAGMA main.index_info("{index}")')]
                if cols and None not in cols:  # an expression index keys no column
                    unique.append(frozenset(cols))
        out[name] = FoundTable(columns, tuple(unique), frozenset(indexes))
    return out


def _problems(db: sqlite_utils.Database, tables: tuple[Table, ...] = TABLE_DEFS) -> list[Problem]:
    """How the tables in ``db`` differ from their definitions (extra columns are fine)."""
    return schema_problems(_found(db.conn), "sqlite", tables)


def verify_schema(conn: sqlite3.Connection) -> list[str]:
    """What is wrong with the collector's tables in ``conn``: each missing table, missing
    column, column of another type, missing unique key (replay dedups on it) and missing
    index, one line each (empty when all is well)."""
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


def _refuse_newer(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"database {_file(conn)}: schema version {version} is newer than this "
            f"robust_collector knows ({SCHEMA_VERSION}): upgrade robust_collector to use it"
        )


def init_db(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """Create every table and index if missing, migrate an older database (columns later
    versions added), and refuse (``SchemaError``, one line naming the file and table) one
    whose tables lack a column they always had or a unique key replay dedups on (a
    replayed backup would be stored twice), or whose schema version is newer than this
    code's; returns the sqlite-utils view of it."""
    _refuse_newer(conn)
    db = sqlite_utils.Database(conn)
    _migrate(db)
    problems = _problems(db)
    refused = [p for p in problems if p.refused]
    if refused:
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        hint = (
            "restore its key or move the database aside"
            if refused[0].kind == "key"
            else "move it aside or use another file"
        )
        raise SchemaError(
            f"database {_file(conn)}: {refused[0].text}{more}; it is not a robust_collector "
            f"database of a compatible version, or was altered: {hint}"
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

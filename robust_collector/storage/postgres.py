"""The PostgreSQL backend: one shared server for a fleet of collectors.

Same tables as SQLite (both DDLs come from ``storage.tables``). A live batch
is COPYed straight into its table inside a savepoint (its rows are new); replay,
and a live batch that meets a row already stored, go by COPY into a per-session
staging table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, so replaying
a backup file twice stores nothing twice. A lost connection or a restarted server
is an ordinary storage failure: the breaker opens, batches go to the JSONL
backup, and the writer reconnects and replays them. A table dropped while
connected is set up again (``repair_schema``) by the write or replay that meets
it, which then runs once more. ``psycopg`` (3.x) is an
optional dependency: ``pip install 'robust-collector[postgresql]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from robust_collector.errors import StorageError
from robust_collector.secrets import mask_url, redact, register_url_secrets
from robust_collector.storage.backend import ROW_TABLES, ChunkGuard, SlicedSink
from robust_collector.storage.tables import (
    REJECTS,
    SCHEMA_VERSION,
    TABLE_NAMES,
    TABLES,
    TICKS,
    TRADE_REJECTS,
    TRADES,
    FoundTable,
    Problem,
    Table,
    postgres_ddl,
    postgres_migrations,
    schema_problems,
)

__all__ = [
    "PG_SCHEMA_VERSION",
    "PostgresBackend",
    "PostgresSchemaError",
    "PostgresSink",
    "connect_postgres",
    "init_postgres",
    "pg_sql",
    "postgres_ddl",
    "redact_url",
]

log = logging.getLogger(__name__)

PG_SCHEMA_VERSION = SCHEMA_VERSION
# one lock id for schema changes, so collectors starting together do not race
_SCHEMA_LOCK = 0x7263_5343  # "rcSC"
_CHUNK_US = 86_400 * 1_000_000  # a TimescaleDB chunk per day of ticks

Row = tuple[Any, ...]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - exercised where psycopg is absent
        raise StorageError(
            "the PostgreSQL backend needs psycopg: pip install 'robust-collector[postgresql]'"
        ) from exc
    return psycopg


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***`` in every form libpq accepts (user info, a
    ``password=`` parameter, a keyword DSN; also malformed), for messages and health output."""
    register_url_secrets(url)
    return mask_url(url)


def _masked(psycopg: Any, exc: Exception) -> Exception:
    """``exc`` again, its text redacted: libpq quotes a malformed URL's password in its
    errors, and every caller prints or stores the text."""
    text = redact(str(exc))
    try:
        return type(exc)(text)
    except Exception:
        return psycopg.OperationalError(text)


def _register_password(url: str) -> None:
    register_url_secrets(url)


class PostgresSchemaError(StorageError):
    """The database's schema cannot be written safely: a column every collector database
    has or a unique key replay dedups on is missing, or its version is newer than this
    code's. The writer takes it for a database it cannot use (batches go to backup)."""


# 2: runs name the collector instance (a fleet writes into one database); 3: the trades
# and trade_rejects tables (made by the DDL above, like any missing table); 4: the
# health_snapshots (run_id, component, ts_us) index (likewise: CREATE INDEX IF NOT EXISTS)
_MIGRATIONS: dict[int, tuple[str, ...]] = postgres_migrations()

_NAMESPACE = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"


def _found(conn: Any) -> dict[str, FoundTable]:
    """What the current schema holds for each table: columns, unique keys, indexes."""
    columns: dict[str, dict[str, str]] = {}
    for table, column, type_ in conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        f"WHERE c.relnamespace = {_NAMESPACE} AND c.relkind IN ('r', 'p') "
        "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
    ).fetchall():
        columns.setdefault(table, {})[column] = type_.upper()
    unique: dict[str, list[frozenset[str]]] = {}
    indexes: dict[str, set[str]] = {}
    for table, index, is_unique, keys in conn.execute(
        "SELECT c.relname, ic.relname, i.indisunique AND i.indisvalid "
        "AND i.indpred IS NULL AND i.indexprs IS NULL, "
        "ARRAY(SELECT a.attname FROM unnest(i.indkey) k "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k) "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_class ic ON ic.oid = i.indexrelid "
        f"WHERE c.relnamespace = {_NAMESPACE}"
    ).fetchall():
        indexes.setdefault(table, set()).add(index)
        if is_unique and keys:
            unique.setdefault(table, []).append(frozenset(keys))
    return {
        t: FoundTable(cols, tuple(unique.get(t, ())), frozenset(indexes.get(t, ())))
        for t, cols in columns.items()
    }


def _where(conn: Any) -> str:
    info = conn.info
    return f"database {info.dbname} on {info.host}:{info.port}"


def verify_postgres(conn: Any) -> list[str]:
    """What is wrong with the collector's tables in ``conn``'s current schema: each missing
    table, column, unique key (replay dedups on it) and index, and each column of another
    type, one line each (empty when all is well). Changes nothing."""
    return [p.text for p in schema_problems(_found(conn), "postgresql")]


def _refusal(conn: Any, refused: list[Problem]) -> PostgresSchemaError:
    first = refused[0]
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    if first.kind == "key":
        cols = first.name
        fix = f"restore it (ALTER TABLE {first.table} ADD PRIMARY KEY ({cols})) or use another database"
    else:
        fix = "it was altered or is not a robust_collector database: use another database"
    return PostgresSchemaError(f"{_where(conn)}: {first.text}{more}; refused: {fix}")


def init_postgres(conn: Any) -> dict[str, Any]:
    """Create, migrate and verify the schema (idempotent, safe for collectors starting
    together: under an advisory lock).

    Missing tables, indexes and columns a later version added are created; a database
    lacking a column it always had or a unique key replay dedups on, or at a schema
    version newer than this code's, is refused (``PostgresSchemaError``, one line naming
    the table and what is missing; nothing is changed). Returns what it did:
    ``{"version", "from_version", "timescale", "created", "indexes_created",
    "columns_added", "warnings"}``.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        timescale = bool(
            conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        )
        found = _found(conn)
        existing = set(found)
        from_version = 0
        if "rc_schema" in existing:
            row = conn.execute("SELECT max(version) FROM rc_schema").fetchone()
            from_version = int(row[0] or 0)
        if from_version > PG_SCHEMA_VERSION:
            raise PostgresSchemaError(
                f"{_where(conn)}: schema version {from_version} is newer than this "
                f"robust_collector knows ({PG_SCHEMA_VERSION}): upgrade robust_collector to use it"
            )
        problems = schema_problems(found, "postgresql")
        fixes = [p for p in problems if p.fixable]
        if from_version < PG_SCHEMA_VERSION or fixes:
            # tables already there are left as they are (CREATE TABLE IF NOT EXISTS); those
            # made now (all of them, or what a later version added: trades) get their
            # hypertable key and become hypertables when TimescaleDB is installed
            for statement in postgres_ddl(timescale=timescale).split(";"):
                if statement.strip():
                    conn.execute(statement)
            for version in range(2, PG_SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS.get(version, ()):
                    conn.execute(statement)
            if timescale:
                for table in TABLES:
                    if table.hypertable_key and table.name not in existing:
                        conn.execute(
                            f"SELECT create_hypertable('{table.name}', 'ts_us', "
                            "chunk_time_interval => %s, if_not_exists => TRUE)",
                            (_CHUNK_US,),
                        )
            problems = schema_problems(_found(conn), "postgresql")
        refused = [p for p in problems if p.refused]
        if refused:  # raised inside the transaction: nothing made above is kept
            raise _refusal(conn, refused)
        if from_version != PG_SCHEMA_VERSION:
            conn.execute("DELETE FROM rc_schema")
            conn.execute("INSERT INTO rc_schema (version) VALUES (%s)", (PG_SCHEMA_VERSION,))
    warnings = [f"{_where(conn)}: {p.text}" for p in problems if p.kind == "type"]
    for text in warnings:
        log.warning("%s", text)
    return {
        "version": PG_SCHEMA_VERSION,
        "from_version": from_version,
        "timescale": timescale,
        "created": sorted(set(TABLE_NAMES) - existing),
        "indexes_created": [p.name for p in fixes if p.kind == "index"],
        "columns_added": [f"{p.table}.{p.name}" for p in fixes if p.kind == "column"],
        "warnings": warnings,
    }


def connect_postgres(url: str, *, timeout: float = 5.0, init: bool = True) -> Any:
    """An autocommit psycopg connection to ``url``, schema created or migrated if ``init``."""
    psycopg = _psycopg()
    _register_password(url)
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, round(timeout)),
            application_name="robust-collector",
            # a server that stops answering (not just closing) fails the write in time
            tcp_user_timeout=int(timeout * 1000) + 1000,
            keepalives=1,
            keepalives_idle=max(1, round(timeout)),
        )
    except psycopg.Error as exc:
        raise _masked(psycopg, exc) from None
    if init:
        try:
            init_postgres(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def repair_schema(conn: Any, exc: BaseException) -> None:
    """After ``exc`` (a relation that does not exist: a table dropped while connected),
    run the schema setup again on ``conn`` (``init_postgres``: under the advisory lock,
    verified, a refused schema raising ``PostgresSchemaError``) and re-create this
    session's staging tables."""
    text = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    log.warning("%s: %s; setting up the schema again", _where(conn), text)
    done = init_postgres(conn)
    _stage(conn)
    if done["created"] or done["indexes_created"]:
        made = ", ".join([*done["created"], *done["indexes_created"]])
        log.warning("%s: re-created %s", _where(conn), made)


# our tables' inserts in PostgreSQL's dialect, generated from their definitions
_sql_cache: dict[str, str] = {t.insert(): t.insert(dialect="postgresql") for t in TABLES}


def pg_sql(sql: str) -> str:
    """A SQLite statement of ours in PostgreSQL's dialect (``?`` -> ``%s``, OR IGNORE)."""
    out = _sql_cache.get(sql)
    if out is None:
        out = sql.replace("%", "%%").replace("?", "%s")
        if out.startswith("INSERT OR IGNORE INTO"):
            out = "INSERT INTO" + out[len("INSERT OR IGNORE INTO") :] + " ON CONFLICT DO NOTHING"
        _sql_cache[sql] = out
    return out


# The tables a batch's rows go to, in the order of the write and sink arguments:
# (ticks, rejects, trades, trade_rejects).
_ROW_TABLES: tuple[Table, ...] = (TICKS, REJECTS, TRADES, TRADE_REJECTS)


def _stage_ddl(table: Table) -> str:
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS rc_stage_{table.name} "
        f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )


def _copy_sql(table: Table, *, staged: bool) -> str:
    into = f"rc_stage_{table.name}" if staged else table.name
    return f"COPY {into} ({', '.join(table.names)}) FROM STDIN"


def _move_sql(table: Table) -> str:
    cols = ", ".join(table.names)
    return (
        f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM rc_stage_{table.name} "
        "ON CONFLICT DO NOTHING"
    )


_STAGE_DDL = tuple(_stage_ddl(t) for t in _ROW_TABLES)
COPY_TICKS, COPY_REJECTS, COPY_TRADES, COPY_TRADE_REJECTS = (
    _copy_sql(t, staged=True) for t in _ROW_TABLES
)
COPY_TICKS_DIRECT, COPY_REJECTS_DIRECT, COPY_TRADES_DIRECT, COPY_TRADE_REJECTS_DIRECT = (
    _copy_sql(t, staged=False) for t in _ROW_TABLES
)
MOVE_TICKS, MOVE_REJECTS, MOVE_TRADES, MOVE_TRADE_REJECTS = (_move_sql(t) for t in _ROW_TABLES)
_STAGED = (
    (COPY_TICKS, MOVE_TICKS),
    (COPY_REJECTS, MOVE_REJECTS),
    (COPY_TRADES, MOVE_TRADES),
    (COPY_TRADE_REJECTS, MOVE_TRADE_REJECTS),
)
_DIRECT = (COPY_TICKS_DIRECT, COPY_REJECTS_DIRECT, COPY_TRADES_DIRECT, COPY_TRADE_REJECTS_DIRECT)


def _stage(conn: Any) -> None:
    for statement in _STAGE_DDL:
        conn.execute(statement)


def _copy_in(cur: Any, *kinds: list[Row] | None) -> int:
    """COPY ``(ticks, rejects, trades, trade_rejects)`` (those given) into the staging
    tables and move what is new; returns rows inserted."""
    inserted = 0
    for rows, (copy_sql, move_sql) in zip(kinds, _STAGED, strict=False):
        if not rows:
            continue
        with cur.copy(copy_sql) as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)
        cur.execute(move_sql)
        inserted += max(cur.rowcount, 0)
    return inserted


def _copy_direct(cur: Any, *kinds: list[Row] | None) -> None:
    """COPY straight into the tables: fails on a row already stored (a unique violation)."""
    for rows, copy_sql in zip(kinds, _DIRECT, strict=False):
        if rows:
            with cur.copy(copy_sql) as copy:
                write_row = copy.write_row
                for row in rows:
                    write_row(row)


class PostgresBackend:
    """Writes batches to a PostgreSQL server over one connection (the writer's)."""

    kind = "postgresql"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        psycopg = _psycopg()
        self.url = url
        self.timeout = timeout
        # a schema refused as unsafe is a database the writer cannot use: backup mode
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error, PostgresSchemaError)
        self.data_errors: tuple[type[BaseException], ...] = (
            psycopg.DataError,
            psycopg.IntegrityError,
        )
        self.guard: ChunkGuard | None = None
        self._unique_violation = psycopg.errors.UniqueViolation
        self._undefined_table = psycopg.errors.UndefinedTable
        self._timeout_ms = max(1, int(timeout * 1000))
        _register_password(url)

    def describe(self) -> str:
        return redact_url(self.url)

    def connect(self) -> Any:
        conn = connect_postgres(self.url, timeout=self.timeout)
        try:
            # every statement on this connection (replay, events, dry runs) has a deadline
            conn.execute(f"SET statement_timeout = {self._timeout_ms}")
            _stage(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def set_deadline(self, conn: Any, seconds: float) -> None:
        self._timeout_ms = max(1, int(seconds * 1000))

    def interrupt(self, conn: Any) -> None:
        """Cancel the running statement, then cut the socket: a server process that stopped
        (not closed) answers neither, and the blocked call must fail now, not never."""
        with contextlib.suppress(Exception):
            cancel = getattr(conn, "cancel_safe", None)
            if cancel is not None:
                cancel(timeout=1.0)
            else:  # pragma: no cover - psycopg < 3.2
                conn.cancel()
        with contextlib.suppress(Exception):
            fd = os.dup(conn.fileno())
            with socket.socket(fileno=fd) as sock:
                sock.shutdown(socket.SHUT_RDWR)

    def ensure_file(self, conn: Any) -> tuple[Any, str | None]:
        return conn, None  # a server, not a file: nothing to check

    def write(
        self,
        conn: Any,
        ticks: list[Row],
        rejects: list[Row],
        events: list[tuple[str, Row]],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> None:
        try:
            self._write(conn, ticks, rejects, events, trades, trade_rejects)
        except self._undefined_table as exc:
            # a table was dropped under us: set the schema up again (under its advisory
            # lock, verified as on connect) and write the batch once more
            repair_schema(conn, exc)
            self._write(conn, ticks, rejects, events, trades, trade_rejects)

    def _write(
        self,
        conn: Any,
        ticks: list[Row],
        rejects: list[Row],
        events: list[tuple[str, Row]],
        trades: list[Row] | None,
        trade_rejects: list[Row] | None,
    ) -> None:
        rows = (ticks, rejects, trades, trade_rejects)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
            if any(rows):
                # Live batches are new rows: COPY them straight in (as fast as a bare
                # COPY). A row already stored (a batch that reached both the database
                # and the backup) fails that savepoint; the staged path then skips it.
                try:
                    with conn.transaction():
                        _copy_direct(cur, *rows)
                except self._unique_violation:
                    _copy_in(cur, *rows)
            if events:
                for sql, rows in _grouped(events):
                    cur.executemany(pg_sql(sql), rows)

    def broken(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def sink(self, conn: Any) -> PostgresSink:
        return PostgresSink(conn, guard=self.guard, timeout_ms=self._timeout_ms)


def _grouped(events: list[tuple[str, Row]]) -> Iterator[tuple[str, list[Row]]]:
    """Consecutive events with the same statement, as one executemany each (in order)."""
    sql: str | None = None
    rows: list[Row] = []
    for s, row in events:
        if s != sql and rows:
            yield sql, rows  # type: ignore[misc]
            rows = []
        sql = s
        rows.append(row)
    if rows:
        yield sql, rows  # type: ignore[misc]


class PostgresSink(SlicedSink):
    """Replay into PostgreSQL: the same COPY and staged ``ON CONFLICT DO NOTHING``."""

    def __init__(
        self, conn: Any, *, guard: ChunkGuard | None = None, timeout_ms: int | None = None
    ) -> None:
        psycopg = _psycopg()
        self.conn = conn
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error, PostgresSchemaError)
        self._undefined_table = psycopg.errors.UndefinedTable
        # ON CONFLICT DO NOTHING skips stored rows: only a value can be a row's fault
        self.data_errors: tuple[type[BaseException], ...] = (psycopg.DataError,)
        self._guard = guard
        self._timeout_ms = timeout_ms
        self._seen: set[tuple[str, str]] | None = None
        self._staged = False
        self._tables: set[str] | None = None

    def check_idle(self) -> None:
        from psycopg.pq import TransactionStatus

        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            raise ValueError("replay needs a connection without an open transaction")

    @contextlib.contextmanager
    def durable(self) -> Iterator[None]:
        # commits wait for the server's WAL flush before a file is moved or deleted
        self.conn.execute("SET synchronous_commit TO on")
        yield

    def _insert(
        self, ticks: list[Row], rejects: list[Row], trades: list[Row], trade_rejects: list[Row]
    ) -> int:
        if not self._staged:
            _stage(self.conn)
            self._staged = True
        try:
            return self._insert_once(ticks, rejects, trades, trade_rejects)
        except self._undefined_table as exc:  # a table dropped mid-replay: set it up again
            repair_schema(self.conn, exc)
            return self._insert_once(ticks, rejects, trades, trade_rejects)

    def _insert_once(
        self, ticks: list[Row], rejects: list[Row], trades: list[Row], trade_rejects: list[Row]
    ) -> int:
        with self.conn.transaction(), self.conn.cursor() as cur:
            if self._timeout_ms is not None:  # one chunk, not the whole file
                cur.execute(f"SET LOCAL statement_timeout = {self._timeout_ms}")
            return _copy_in(cur, ticks, rejects, trades, trade_rejects)

    def new_rows(
        self,
        ticks: list[Row],
        rejects: list[Row],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> int:
        if self._seen is None:
            self._seen = set()
        if self._tables is None:  # a dry run creates nothing: a missing table holds nothing
            self._tables = {
                t
                for t, _ in ROW_TABLES
                if self.conn.execute("SELECT to_regclass(%s)", (t,)).fetchone()[0] is not None
            }
        new = 0
        kinds = (ticks, rejects, trades or [], trade_rejects or [])
        for (table, key), rows in zip(ROW_TABLES, kinds, strict=True):
            # seen per table, as SQLite's dry run counts them
            ids = list(dict.fromkeys(r[0] for r in rows if (table, r[0]) not in self._seen))
            if not ids:
                continue
            self._seen.update((table, i) for i in ids)
            if table not in self._tables:
                new += len(ids)
                continue
            present = {
                r[0]
                for r in self.conn.execute(
                    f"SELECT {key} FROM {table} WHERE {key} = ANY(%s)", (ids,)
                ).fetchall()
            }
            new += sum(i not in present for i in ids)
        return new

    def close_dry_run(self) -> None:
        self._seen = None
        self._tables = None

"""The storage backend interface the writer thread drives, and its SQLite form.

The writer (queue, order, breaker, backup, replay) is the same for every
database; a backend only knows how to connect, write one batch as one
transaction, and hand the replay a row sink. ``storage.backend`` picks one:
``sqlite`` (embedded, the default) or ``postgresql`` (a shared server for fleets).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

from robust_collector.storage.schema import init_db, open_database
from robust_collector.storage.tables import (
    INSERT_REJECTS,
    INSERT_TICKS,
    INSERT_TRADE_REJECTS,
    INSERT_TRADES,
)

log = logging.getLogger("robust_collector.storage")

__all__ = ["Backend", "ChunkGuard", "RowSink", "SQLiteBackend", "SQLiteSink", "is_postgres_url"]

Row = tuple[Any, ...]
Event = tuple[str, Row]

# Ticks go in 64 rows per INSERT: each statement then runs longer inside SQLite,
# without the GIL, so the collector thread validates while the writer writes
# (measured: end-to-end 0.50 -> 0.63 of a bare executemany). 64 x 12 parameters
# stays under SQLite's variable limit; OR IGNORE still skips row by row. Trades
# likewise (64 x 14 parameters: still under the oldest limit, 999).
TICKS_PER_STATEMENT = 64
TRADES_PER_STATEMENT = 64


def _multi_row(insert: str, rows: int) -> str:
    head, values = insert.split(" VALUES ")
    return f"{head} VALUES {','.join([values] * rows)}"


INSERT_TICKS_MULTI = _multi_row(INSERT_TICKS, TICKS_PER_STATEMENT)
INSERT_TRADES_MULTI = _multi_row(INSERT_TRADES, TRADES_PER_STATEMENT)


# An in-run replay parses and commits at most this many rows at a time, the writer's
# turn (live batches) and a fresh deadline between. Parsing holds the interpreter; in
# 10,000-line stretches it starved the event loop (measured on the 64 MB production-size
# test: quote gaps up to 128 ms at a 50 ms interval); 2,000 kept them at ~52-56 ms.
REPLAY_SLICE_ROWS = 2_000


Slice = tuple[list[Row], list[Row], list[Row], list[Row]]
"""``(ticks, rejects, trades, trade_rejects)``: the rows of one replay chunk."""


def sliced(
    ticks: list[Row],
    rejects: list[Row],
    size: int = REPLAY_SLICE_ROWS,
    trades: list[Row] | None = None,
    trade_rejects: list[Row] | None = None,
) -> Iterator[Slice]:
    """``(ticks, rejects, trades, trade_rejects)`` in pieces of at most ``size`` rows, in
    that order of kinds."""
    kinds: Slice = (ticks, rejects, trades or [], trade_rejects or [])
    if sum(map(len, kinds)) <= size:
        yield kinds
        return
    for k, rows in enumerate(kinds):
        for i in range(0, len(rows), size):
            piece: list[list[Row]] = [[], [], [], []]
            piece[k] = rows[i : i + size]
            yield piece[0], piece[1], piece[2], piece[3]


def _insert_multi(
    conn: sqlite3.Connection, rows: list[Row], multi: str, single: str, n: int
) -> None:
    full = len(rows) - len(rows) % n
    for i in range(0, full, n):
        conn.execute(multi, list(chain.from_iterable(rows[i : i + n])))
    if full < len(rows):
        conn.executemany(single, rows[full:])


def insert_ticks(conn: sqlite3.Connection, ticks: list[Row]) -> None:
    """``INSERT OR IGNORE`` ``ticks``, ``TICKS_PER_STATEMENT`` rows per statement."""
    _insert_multi(conn, ticks, INSERT_TICKS_MULTI, INSERT_TICKS, TICKS_PER_STATEMENT)


def insert_trades(conn: sqlite3.Connection, trades: list[Row]) -> None:
    """``INSERT OR IGNORE`` ``trades``, ``TRADES_PER_STATEMENT`` rows per statement."""
    _insert_multi(conn, trades, INSERT_TRADES_MULTI, INSERT_TRADES, TRADES_PER_STATEMENT)


def is_postgres_url(target: object) -> bool:
    """True for a ``postgresql://`` or ``postgres://`` URL (not a SQLite path)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


class ChunkGuard(Protocol):
    """What the writer does around each replay chunk: its own turn, deadline and watchdog."""

    def before_chunk(self) -> None:
        """Called with no transaction open, before a chunk's transaction starts."""

    def after_chunk(self) -> None:
        """Called after a chunk's transaction ended (committed or rolled back)."""


class RowSink(Protocol):
    """Where replayed backup rows go: idempotent inserts that report what was new."""

    errors: tuple[type[BaseException], ...]
    # errors that say "this row cannot be stored", not "the database is out"
    data_errors: tuple[type[BaseException], ...]

    def check_idle(self) -> None:
        """Raise ``ValueError`` if a transaction is open (replay commits its own)."""

    @property
    def preferred_chunk_rows(self) -> int | None:
        """Lines per chunk a replay should use by default (None: the replay's default)."""

    def durable(self) -> contextlib.AbstractContextManager[None]:
        """Commits inside are on disk before a replayed file is moved or deleted."""

    def insert(
        self,
        ticks: list[Row],
        rejects: list[Row],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> int:
        """Insert (ignoring rows already stored) in one transaction; returns rows added."""

    def new_rows(
        self,
        ticks: list[Row],
        rejects: list[Row],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> int:
        """Dry run: how many of these rows the database (and earlier calls) lack."""

    def close_dry_run(self) -> None:
        """Drop what ``new_rows`` kept."""


class Backend(Protocol):
    """One database the writer thread owns a connection to."""

    kind: str
    errors: tuple[type[BaseException], ...]
    data_errors: tuple[type[BaseException], ...]
    guard: ChunkGuard | None  # set by the writer while it replays on this backend

    def describe(self) -> str:
        """Where it writes, for messages (never with a password)."""

    def connect(self) -> Any:
        """Open a connection with the schema in place; raises one of ``errors``."""

    def write(
        self,
        conn: Any,
        ticks: list[Row],
        rejects: list[Row],
        events: list[Event],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> None:
        """Write it all in one transaction within ``deadline``; rolled back on failure."""

    def set_deadline(self, conn: Any, seconds: float) -> None:
        """Abort each later write (each one, from its start) that runs longer than ``seconds``."""

    def interrupt(self, conn: Any) -> None:
        """From another thread: make the call running on ``conn`` fail now (the watchdog)."""

    def ensure_file(self, conn: Any) -> tuple[Any, str | None]:
        """The connection to use and, if the database had to be reopened, why."""

    def broken(self, conn: Any) -> bool:
        """True when ``conn`` is unusable and the writer must reconnect."""

    def close(self, conn: Any) -> None:
        """Close ``conn``, ignoring errors."""

    def sink(self, conn: Any) -> RowSink:
        """The replay's view of ``conn``."""


class SQLiteBackend:
    """The embedded default: one WAL file, written by one connection."""

    kind = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    data_errors: tuple[type[BaseException], ...] = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
    )

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.guard: ChunkGuard | None = None
        self._limit = timeout
        # no deadline outside a write or a replay chunk: each one arms and clears its own
        self._deadline = math.inf
        self._identity: dict[int, tuple[int, int]] = {}  # id(conn) -> (st_dev, st_ino)
        # id(conn) -> the (st_dev, st_ino) of its -wal and -shm files, as opened
        self._sidecars: dict[int, dict[str, tuple[int, int]]] = {}

    def describe(self) -> str:
        return str(self.path)

    def connect(self) -> sqlite3.Connection:
        conn = open_database(self.path, timeout=self.timeout)
        # abort a statement that runs past the write timeout (a slow disk, a huge batch)
        conn.set_progress_handler(self._progress, 10_000)
        try:
            st = os.stat(self.path)
            self._identity[id(conn)] = (st.st_dev, st.st_ino)
        except OSError:
            pass
        self._sidecars[id(conn)] = {
            suffix: ident for suffix in _SIDECARS if (ident := _file_id(self._sidecar(suffix)))
        }
        return conn

    def _sidecar(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def set_deadline(self, conn: Any, seconds: float) -> None:
        self._limit = seconds

    def arm(self) -> None:
        """Start the deadline of one write or one replay chunk."""
        self._deadline = time.monotonic() + self._limit

    def disarm(self) -> None:
        """No deadline until the next ``arm``: an idle or replaying connection is never cut."""
        self._deadline = math.inf

    def interrupt(self, conn: Any) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.interrupt()

    def write(
        self,
        conn: sqlite3.Connection,
        ticks: list[Row],
        rejects: list[Row],
        events: list[Event],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> None:
        try:
            self._write(conn, ticks, rejects, events, trades, trade_rejects)
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith("no such table"):
                raise
            # a table dropped under us: set the schema up again (verified, as on open;
            # a refused one raises SchemaError) and write the batch once more
            log.warning("%s: %s; setting up the schema again", self.path, exc)
            init_db(conn)
            self._write(conn, ticks, rejects, events, trades, trade_rejects)

    def _write(
        self,
        conn: sqlite3.Connection,
        ticks: list[Row],
        rejects: list[Row],
        events: list[Event],
        trades: list[Row] | None,
        trade_rejects: list[Row] | None,
    ) -> None:
        self.arm()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if ticks:
                insert_ticks(conn, ticks)
            if rejects:
                conn.executemany(INSERT_REJECTS, rejects)
            if trades:
                insert_trades(conn, trades)
            if trade_rejects:
                conn.executemany(INSERT_TRADE_REJECTS, trade_rejects)
            for sql, row in events:
                conn.execute(sql, row)
            conn.execute("COMMIT")
        except BaseException as exc:
            # any failure (a value the driver cannot bind too) ends the transaction:
            # an open one would keep the database locked for every other writer
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and "interrupted" in str(exc):
                raise TimeoutError(f"database write took longer than {self._limit:g}s") from exc
            raise
        finally:
            self.disarm()

    def ensure_file(self, conn: sqlite3.Connection) -> tuple[sqlite3.Connection, str | None]:
        """Reopen when the file open is no longer the file at ``path`` (deleted, replaced,
        its folder removed), keeping what it holds: it is copied back to ``path`` when
        that is empty, else saved next to it; returns the connection to use and a message."""
        known = self._identity.get(id(conn))
        if known is None:
            return conn, None
        try:
            st = os.stat(self.path)
            now: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            now = None
        except OSError:
            return conn, None  # cannot tell (a permission problem): the write will say
        if now == known:
            return conn, None
        self.disarm()
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        if now is None:
            what = "removed"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = self.path
        else:
            what = "replaced by another file"
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            target = self.path.with_name(f"{self.path.name}.orphaned-{stamp}")
        try:
            # the open (unlinked) file still holds every row written: keep them
            conn.execute("VACUUM INTO ?", (str(target),))
            kept = f"its rows were copied to {target}"
        except sqlite3.Error as exc:
            kept = f"its rows could not be copied ({type(exc).__name__}: {exc})"
        sidecars = self._sidecars.get(id(conn), {})
        self.close(conn)
        # SQLite leaves a moved file's -wal and -shm behind (no checkpoint, no delete at
        # close): opened over the new file they read as "database disk image is
        # malformed". Remove exactly the ones this connection had open.
        for suffix, ident in sidecars.items():
            p = self._sidecar(suffix)
            if _file_id(p) == ident:
                with contextlib.suppress(OSError):
                    p.unlink()
        new = self.connect()
        return new, f"database file {self.path} was {what} while open; {kept}; reopened"

    def broken(self, conn: Any) -> bool:
        return False  # a file connection survives its errors

    def close(self, conn: Any) -> None:
        self._identity.pop(id(conn), None)
        self._sidecars.pop(id(conn), None)
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    def sink(self, conn: sqlite3.Connection) -> SQLiteSink:
        return SQLiteSink(conn, self)


_SIDECARS = ("-wal", "-shm")


def _file_id(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class SlicedSink:
    """What every sink shares: the writer's replay (a sink with a ``ChunkGuard``) goes in
    chunks of ``REPLAY_SLICE_ROWS``, each its own transaction with the writer's turn
    between them; a direct call (``recover``) inserts in one."""

    _guard: ChunkGuard | None = None

    @property
    def preferred_chunk_rows(self) -> int | None:
        return REPLAY_SLICE_ROWS if self._guard is not None else None

    def insert(
        self,
        ticks: list[Row],
        rejects: list[Row],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> int:
        guard = self._guard
        if guard is None:
            return self._insert(ticks, rejects, trades or [], trade_rejects or [])
        n = 0
        for piece in sliced(ticks, rejects, trades=trades, trade_rejects=trade_rejects):
            guard.before_chunk()
            try:
                n += self._insert(*piece)
            finally:
                guard.after_chunk()
        return n

    def _insert(
        self, ticks: list[Row], rejects: list[Row], trades: list[Row], trade_rejects: list[Row]
    ) -> int:
        """Insert one chunk in one transaction; the number of rows new to the database."""
        raise NotImplementedError


class SQLiteSink(SlicedSink):
    """Replay into SQLite: ``INSERT OR IGNORE`` on the unique tick id."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    # OR IGNORE skips constraint conflicts: an IntegrityError here is the database's
    # (a trigger, a broken file), not a row's
    data_errors: tuple[type[BaseException], ...] = (sqlite3.DataError, sqlite3.InterfaceError)

    def __init__(self, conn: sqlite3.Connection, backend: SQLiteBackend | None = None) -> None:
        self.conn = conn
        self._backend = backend
        self._guard = backend.guard if backend is not None else None
        self._dry: Any = None

    def check_idle(self) -> None:
        if self.conn.in_transaction:
            raise ValueError("replay needs a connection without an open transaction")

    @contextlib.contextmanager
    def durable(self) -> Iterator[None]:
        (previous,) = self.conn.execute("PRAGMA synchronous").fetchone()
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute(f"PRAGMA synchronous={int(previous)}")

    def _insert(
        self, ticks: list[Row], rejects: list[Row], trades: list[Row], trade_rejects: list[Row]
    ) -> int:
        conn = self.conn
        backend = self._backend
        if backend is not None:
            backend.arm()  # the write timeout bounds one chunk, never a whole file
        try:
            before = conn.total_changes
            with _transaction(conn):
                if ticks:
                    conn.executemany(INSERT_TICKS, ticks)
                if rejects:
                    conn.executemany(INSERT_REJECTS, rejects)
                if trades:
                    conn.executemany(INSERT_TRADES, trades)
                if trade_rejects:
                    conn.executemany(INSERT_TRADE_REJECTS, trade_rejects)
            return conn.total_changes - before
        except sqlite3.OperationalError as exc:
            if backend is not None and "interrupted" in str(exc):
                raise TimeoutError(
                    f"replaying a chunk took longer than {backend._limit:g}s"
                ) from exc
            raise
        finally:
            if backend is not None:
                backend.disarm()

    def new_rows(
        self,
        ticks: list[Row],
        rejects: list[Row],
        trades: list[Row] | None = None,
        trade_rejects: list[Row] | None = None,
    ) -> int:
        if self._dry is None:
            self._dry = _SQLiteDryRun(self.conn)
        return self._dry.count(ticks, rejects, trades or [], trade_rejects or [])

    def close_dry_run(self) -> None:
        if self._dry is not None:
            self._dry.close()
            self._dry = None


# the tables a replay writes, in the order of a sink's arguments, and each one's key
ROW_TABLES: tuple[tuple[str, str], ...] = (
    ("ticks", "tick_id"),
    ("rejects", "tick_id"),
    ("trades", "trade_id"),
    ("trade_rejects", "trade_id"),
)


class _SQLiteDryRun:
    """Counts which row ids are new to the database (and to this dry run) in temp tables;
    a table the database lacks (trades in a database from before them) holds none."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        tag = uuid.uuid4().hex[:8]
        present = {
            row[0] for row in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table'")
        }
        self.tables = tuple(f"rc_dry_{main}_{tag}" for main, _ in ROW_TABLES)
        self.sql = []
        for temp, (main, key) in zip(self.tables, ROW_TABLES, strict=True):
            conn.execute(f"CREATE TEMP TABLE {temp} (id TEXT PRIMARY KEY)")
            sql = f"INSERT OR IGNORE INTO temp.{temp} (id) SELECT ?1"
            if main in present:
                sql += f" WHERE NOT EXISTS (SELECT 1 FROM main.{main} WHERE {key} = ?1)"
            self.sql.append(sql)

    def count(
        self, ticks: list[Row], rejects: list[Row], trades: list[Row], trade_rejects: list[Row]
    ) -> int:
        before = self.conn.total_changes
        with _transaction(self.conn):
            for sql, rows in zip(self.sql, (ticks, rejects, trades, trade_rejects), strict=True):
                if rows:
                    self.conn.executemany(sql, [(r[0],) for r in rows])
        return self.conn.total_changes - before

    def close(self) -> None:
        for temp in self.tables:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute(f"DROP TABLE IF EXISTS temp.{temp}")


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN")
    try:
        yield
        conn.commit()
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.rollback()
        raise


def make_backend(target: str | Path, *, timeout: float = 5.0) -> Backend:
    """The backend for a SQLite path or a ``postgresql://`` URL."""
    if is_postgres_url(target):
        from robust_collector.storage.postgres import PostgresBackend

        return PostgresBackend(str(target), timeout=timeout)
    return SQLiteBackend(target, timeout=timeout)


def execute_once(backend: Backend, sql: str, params: Row) -> None:
    """Run one of our (SQLite-dialect) statements on a short-lived connection."""
    conn = backend.connect()
    try:
        if backend.kind == "postgresql":
            from robust_collector.storage.postgres import pg_sql

            conn.execute(pg_sql(sql), params)
        else:
            conn.execute(sql, params)
    finally:
        backend.close(conn)

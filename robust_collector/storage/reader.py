"""Read what a collector stored, from any process, as polars DataFrames.

Readers open their own read-only connection (WAL lets them read while the
writer writes) and turn epoch-microsecond columns into tz-aware UTC datetimes.
``db`` is a SQLite file or a ``postgresql://`` URL wherever a reader takes one.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.schema import connect
from robust_collector.storage.tables import TICKS, TRADE_REJECTS, TRADES, Table

DatabaseRef = str | Path
"""A SQLite file path or a ``postgresql://`` URL."""


class _PostgresReader:
    """A read connection to PostgreSQL that takes our SQLite-dialect statements."""

    def __init__(self, url: str, timeout: float) -> None:
        from robust_collector.storage.postgres import connect_postgres

        self._conn = connect_postgres(url, timeout=timeout, init=False)
        try:
            # psycopg's ``read_only`` is ignored under autocommit: make every transaction
            # of this session read-only on the server (a write fails: 25006)
            self._conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        except BaseException:
            self._conn.close()
            raise

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        from robust_collector.storage.postgres import pg_sql

        return self._conn.execute(pg_sql(sql), tuple(params))

    def close(self) -> None:
        self._conn.close()


def open_reader(db: DatabaseRef, *, timeout: float = 5.0) -> Any:
    """A read-only connection with ``execute(sql, params)`` (``?`` placeholders) and
    ``close()``, to a SQLite file or a PostgreSQL URL; a missing file raises
    ``FileNotFoundError``."""
    if is_postgres_url(db):
        return _PostgresReader(str(db), timeout)
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    return connect(path, readonly=True, timeout=timeout)


def reader_errors() -> tuple[type[BaseException], ...]:
    """The database errors a reader may raise (SQLite's, and psycopg's when installed)."""
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


def missing_table(exc: BaseException) -> bool:
    """True when ``exc`` says a table does not exist (not a collector database yet)."""
    text = str(exc)
    return "no such table" in text or ("relation" in text and "does not exist" in text)


TICK_SCHEMA: dict[str, Any] = TICKS.polars_schema
"""The ticks table's polars dtypes (from ``storage.tables``)."""
TRADE_SCHEMA: dict[str, Any] = TRADES.polars_schema
"""The trades table's polars dtypes (from ``storage.tables``)."""
TRADE_REJECT_SCHEMA: dict[str, Any] = TRADE_REJECTS.polars_schema
"""The trade_rejects table's polars dtypes (from ``storage.tables``)."""


def to_epoch_us(value: Any) -> int:
    """Epoch microseconds from a datetime (naive = UTC), an ISO string or an int."""
    if isinstance(value, bool):
        raise TypeError(f"expected a time, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            from datetime import UTC

            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1_000_000)
    raise TypeError(f"expected a datetime, ISO string or epoch microseconds, got {value!r}")


def with_datetimes(df: pl.DataFrame, columns: dict[str, str]) -> pl.DataFrame:
    """Add tz-aware UTC datetime columns computed from epoch-µs columns."""
    return df.with_columns(
        pl.col(src).cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(dst)
        for src, dst in columns.items()
        if src in df.columns
    )


def query_frame(
    db: DatabaseRef, sql: str, params: tuple[Any, ...] = (), schema: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run ``sql`` (``?`` placeholders) on a read-only connection; rows as a DataFrame."""
    conn = open_reader(db)
    try:
        cur = conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except reader_errors() as exc:
        where = _shown(db)
        raise RuntimeError(f"{where}: {str(exc).strip().splitlines()[0]}") from None
    finally:
        conn.close()
    if schema is None:
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return pl.DataFrame(rows, schema={n: schema.get(n, pl.String) for n in names}, orient="row")


def _shown(db: DatabaseRef) -> str:
    if is_postgres_url(db):
        from robust_collector.storage.postgres import redact_url

        return redact_url(str(db))
    return str(db)


def _filters(symbol: str | None, since: Any, run_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (or "") and its parameters for the readers' common filters."""
    where, params = [], []
    if run_id is not None:
        where.append("run_id = ?")
        params.append(run_id)
    if symbol is not None:
        where.append("symbol = ?")
        params.append(symbol)
    if since is not None:
        where.append("ts_us >= ?")
        params.append(to_epoch_us(since))
    return (" WHERE " + " AND ".join(where) if where else ""), tuple(params)


def read_ticks(
    db: str | Path,
    *,
    symbol: str | None = None,
    since: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """The stored ticks (every run, or one ``run_id``) with ``ts``/``recv_ts`` as UTC datetimes.

    Each run has its own tick ids, so replaying the same file twice gives two runs:
    pass ``run_id`` to read one of them.
    """
    where, params = _filters(symbol, since, run_id)
    sql = f"SELECT {', '.join(TICK_SCHEMA)} FROM ticks{where} ORDER BY symbol, ts_us, seq"
    df = query_frame(db, sql, params, TICK_SCHEMA)
    return with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts"})


def _read_trade_table(
    db: DatabaseRef, table: Table, where: str, params: tuple[Any, ...], times: dict[str, str]
) -> pl.DataFrame:
    """Rows of a trades table in exchange-time order; a database from before trades (no
    such table yet: schema 2, not opened by a writer since) reads as an empty frame."""
    schema = table.polars_schema
    sql = f"SELECT {', '.join(schema)} FROM {table.name}{where} ORDER BY symbol, ts_us, seq"
    try:
        df = query_frame(db, sql, params, schema)
    except RuntimeError as exc:
        if not missing_table(exc):
            raise
        df = pl.DataFrame(schema=schema)
    return with_datetimes(df, times)


def read_trades(
    db: DatabaseRef,
    *,
    symbol: str | None = None,
    since: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """The stored trades (every run, or one ``run_id``), ``ts``/``recv_ts`` as UTC datetimes.

    Ordered by symbol, exchange time and sequence; two trades in the same microsecond at
    the same price are two rows.
    """
    where, params = _filters(symbol, since, run_id)
    return _read_trade_table(db, TRADES, where, params, {"ts_us": "ts", "recv_us": "recv_ts"})


def read_trade_rejects(
    db: DatabaseRef,
    *,
    symbol: str | None = None,
    since: Any = None,
    run_id: str | None = None,
    rule: str | None = None,
) -> pl.DataFrame:
    """The trades validation refused, each with its ``rule`` and ``reason``; ``ts``,
    ``recv_ts`` and ``rejected_ts`` as UTC datetimes. ``rule`` keeps one rule's rejects."""
    where, params = _filters(symbol, since, run_id)
    if rule is not None:
        where += (" AND" if where else " WHERE") + " rule = ?"
        params = (*params, rule)
    times = {"ts_us": "ts", "recv_us": "recv_ts", "rejected_us": "rejected_ts"}
    return _read_trade_table(db, TRADE_REJECTS, where, params, times)

"""Read what a collector stored, from any process, as polars DataFrames.

Readers open their own read-only connection (WAL lets them read while the
writer writes) and turn epoch-microsecond columns into tz-aware UTC datetimes.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from robust_collector.storage.schema import connect

TICK_SCHEMA: dict[str, Any] = {
    "tick_id": pl.String,
    "symbol": pl.String,
    "seq": pl.Int64,
    "ts_us": pl.Int64,
    "recv_us": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_size": pl.Float64,
    "ask_size": pl.Float64,
    "last": pl.Float64,
    "source": pl.String,
    "run_id": pl.String,
}


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
    db: str | Path, sql: str, params: tuple[Any, ...] = (), schema: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run ``sql`` on a read-only connection and return the rows as a DataFrame."""
    path = Path(db)
    if not path.exists():
        raise FileNotFoundError(f"no database at {path}")
    conn = connect(path, readonly=True)
    try:
        cur = conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    except sqlite3.OperationalError as exc:
        raise RuntimeError(f"{path}: {exc}") from None
    finally:
        conn.close()
    if schema is None:
        return pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return pl.DataFrame(rows, schema={n: schema.get(n, pl.String) for n in names}, orient="row")


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
    sql = f"SELECT {', '.join(TICK_SCHEMA)} FROM ticks"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY symbol, ts_us, seq"
    df = query_frame(db, sql, tuple(params), TICK_SCHEMA)
    return with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts"})

"""Loaders: the rows a collector stored (ticks, rejects, errors, health, breaker events,
runs) as polars frames, from a SQLite path or a ``postgresql://`` URL.

Each opens its own read-only connection; epoch-µs columns are kept and tz-aware UTC
datetimes added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from robust_collector.analysis.paths import Pathish
from robust_collector.analysis.schemas import (
    BREAKER_EVENT_SCHEMA,
    ERROR_SCHEMA,
    HEALTH_SCHEMA,
    REJECT_SCHEMA,
    RUN_SCHEMA,
)
from robust_collector.health import HealthLevel
from robust_collector.storage.reader import (
    TICK_SCHEMA,
    query_frame,
    read_ticks,
    to_epoch_us,
    with_datetimes,
)


def sql_where(
    filters: Sequence[tuple[str, str, Any]], since: Any = None, until: Any = None
) -> tuple[str, tuple[Any, ...]]:
    """A ``WHERE`` clause and its parameters: ``column op ?`` for each filter whose value
    is not ``None``, then ``since <= ts_us < until``; empty when nothing filters."""
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is None:
            continue
        parts.append(f"{column} {op} ?")
        params.append(value)
    if since is not None:
        parts.append("ts_us >= ?")
        params.append(to_epoch_us(since))
    if until is not None:
        parts.append("ts_us < ?")
        params.append(to_epoch_us(until))
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(params)


def _prices(df: pl.DataFrame) -> pl.DataFrame:
    mid = (pl.col("bid") + pl.col("ask")) / 2.0
    return df.with_columns(
        mid.alias("mid"),
        (pl.col("ask") - pl.col("bid")).alias("spread"),
        pl.coalesce(pl.col("last"), mid).alias("price"),
    )


def load_ticks(
    db: Pathish,
    symbol: str | None = None,
    *,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Stored ticks, oldest first per symbol, with ``ts``/``recv_ts`` datetimes and
    ``mid``, ``spread`` and ``price`` (last, else mid) columns."""
    if until is None and run_id is None:
        return _prices(read_ticks(db, symbol=symbol, since=since))
    where, params = sql_where([("symbol", "=", symbol), ("run_id", "=", run_id)], since, until)
    sql = f"SELECT {', '.join(TICK_SCHEMA)} FROM ticks{where} ORDER BY symbol, ts_us, seq"
    df = query_frame(db, sql, params, TICK_SCHEMA)
    return _prices(with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts"}))


def load_rejects(
    db: Pathish,
    symbol: str | None = None,
    *,
    rule: str | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Rejected quotes with the rule and reason that rejected them, oldest first."""
    where, params = sql_where(
        [("symbol", "=", symbol), ("rule", "=", rule), ("run_id", "=", run_id)], since, until
    )
    sql = f"SELECT {', '.join(REJECT_SCHEMA)} FROM rejects{where} ORDER BY ts_us, symbol"
    df = query_frame(db, sql, params, REJECT_SCHEMA)
    df = with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts", "rejected_us": "rejected_ts"})
    return _prices(df)


def load_errors(
    db: Pathish,
    *,
    component: str | None = None,
    symbol: str | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Error rows (each failed source attempt, each storage error), oldest first."""
    where, params = sql_where(
        [("component", "=", component), ("symbol", "=", symbol), ("run_id", "=", run_id)],
        since,
        until,
    )
    sql = f"SELECT {', '.join(ERROR_SCHEMA)} FROM errors{where} ORDER BY ts_us, id"
    return with_datetimes(query_frame(db, sql, params, ERROR_SCHEMA), {"ts_us": "ts"})


_LEVELS = {lvl.name: int(lvl) for lvl in HealthLevel}


def load_health(
    db: Pathish, *, component: str | None = None, run_id: str | None = None
) -> pl.DataFrame:
    """Health snapshots: one row per component per check (``system`` is the overall level),
    with ``level_value`` 0 (HEALTHY) .. 3 (CRITICAL) and ``reasons`` as a list."""
    where, params = sql_where([("component", "=", component), ("run_id", "=", run_id)])
    sql = (
        "SELECT id, run_id, ts_us, component, level, reasons, metrics "
        f"FROM health_snapshots{where} ORDER BY ts_us, id"
    )
    df = query_frame(db, sql, params, HEALTH_SCHEMA)
    df = df.with_columns(
        pl.col("level")
        .replace_strict(_LEVELS, default=None, return_dtype=pl.Int8)
        .alias("level_value"),
        pl.col("reasons").str.json_decode(pl.List(pl.String)),
        pl.col("metrics").str.json_path_match("$.kind").alias("kind"),
    )
    return with_datetimes(df, {"ts_us": "ts"})


def load_breaker_events(
    db: Pathish,
    symbol: str | None = None,
    *,
    run_id: str | None = None,
    since: Any = None,
    until: Any = None,
) -> pl.DataFrame:
    """Breaker transitions (``symbol`` is the breaker's name), oldest first."""
    where, params = sql_where([("breaker", "=", symbol), ("run_id", "=", run_id)], since, until)
    sql = (
        "SELECT id, run_id, ts_us, breaker AS symbol, old_state, new_state, reason "
        f"FROM breaker_events{where} ORDER BY ts_us, id"
    )
    return with_datetimes(query_frame(db, sql, params, BREAKER_EVENT_SCHEMA), {"ts_us": "ts"})


def load_runs(db: Pathish) -> pl.DataFrame:
    """One row per collector run (oldest first), with ``symbols`` as a list and the
    run's ``config`` and ``summary`` as JSON text."""
    sql = f"SELECT {', '.join(RUN_SCHEMA)} FROM runs ORDER BY started_us"
    df = query_frame(db, sql, (), RUN_SCHEMA)
    df = df.with_columns(pl.col("symbols").str.json_decode(pl.List(pl.String)))
    return with_datetimes(df, {"started_us": "started", "stopped_us": "stopped"})

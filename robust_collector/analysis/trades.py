"""Trades for research: loaders, minute bars, VWAP and realized variance, all as polars
frames (and the validation package's same-timestamp aggregation, re-exported).

Realized variance is the sum of squared log returns of the last price in each
sampling interval (calendar-time sampling, e.g. 5 minutes), per symbol and day;
bars and VWAP use every stored trade of the interval.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from robust_collector.analysis.loaders import sql_where
from robust_collector.analysis.paths import Pathish
from robust_collector.storage.reader import query_frame, with_datetimes
from robust_collector.storage.tables import TRADE_REJECTS, TRADES
from robust_collector.validation.trade_frame import aggregate_same_timestamp

__all__ = [
    "aggregate_same_timestamp",
    "load_trade_rejects",
    "load_trades",
    "realized_variance",
    "trade_bars",
    "vwap",
]

_TRADE_SCHEMA: dict[str, Any] = TRADES.polars_schema
_TRADE_REJECT_SCHEMA: dict[str, Any] = TRADE_REJECTS.polars_schema


def load_trades(
    db: Pathish,
    symbol: str | None = None,
    *,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Stored trades, oldest first per symbol, with ``ts``/``recv_ts`` datetimes (UTC)."""
    where, params = sql_where([("symbol", "=", symbol), ("run_id", "=", run_id)], since, until)
    cols = ", ".join(_TRADE_SCHEMA)
    sql = f"SELECT {cols} FROM trades{where} ORDER BY symbol, ts_us, seq"
    df = query_frame(db, sql, params, _TRADE_SCHEMA)
    return with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts"})


def load_trade_rejects(
    db: Pathish,
    symbol: str | None = None,
    *,
    rule: str | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Rejected trades with the rule and reason that rejected them, oldest first."""
    where, params = sql_where(
        [("symbol", "=", symbol), ("rule", "=", rule), ("run_id", "=", run_id)], since, until
    )
    cols = ", ".join(_TRADE_REJECT_SCHEMA)
    sql = f"SELECT {cols} FROM trade_rejects{where} ORDER BY ts_us, symbol"
    df = query_frame(db, sql, params, _TRADE_REJECT_SCHEMA)
    return with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts", "rejected_us": "rejected_ts"})


def _with_ts(trades: pl.DataFrame) -> pl.DataFrame:
    if "ts" in trades.columns:
        return trades
    return with_datetimes(trades, {"ts_us": "ts"})


def trade_bars(trades: pl.DataFrame, every: str = "1m") -> pl.DataFrame:
    """OHLCV bars per symbol from trades: open, high, low, close, volume, trade count and
    VWAP for each ``every`` interval (polars duration, e.g. ``1m``, ``5m``)."""
    df = _with_ts(trades).sort("symbol", "ts")
    return (
        df.group_by_dynamic("ts", every=every, group_by="symbol", closed="left", label="left")
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            pl.len().alias("trades"),
            ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
        )
        .sort("symbol", "ts")
    )


def vwap(trades: pl.DataFrame, every: str = "5m") -> pl.DataFrame:
    """Volume-weighted average price per symbol and ``every`` bar: sum(p*s) / sum(s)."""
    return trade_bars(trades, every).select("symbol", "ts", "vwap", "volume", "trades")


def realized_variance(
    trades: pl.DataFrame, every: str = "5m", *, tz: str = "America/New_York"
) -> pl.DataFrame:
    """Realized variance per symbol and trading day (the date in ``tz``): the sum of
    squared log returns between the last prices of consecutive ``every`` intervals
    (empty intervals carry no return)."""
    closes = trade_bars(trades, every).select("symbol", "ts", "close")
    returns = closes.with_columns(
        pl.col("ts").dt.convert_time_zone(tz).dt.date().alias("day"),
    ).with_columns(
        (pl.col("close").log() - pl.col("close").log().shift(1).over("symbol", "day")).alias("r")
    )
    return (
        returns.group_by("symbol", "day", maintain_order=True)
        .agg(
            (pl.col("r") ** 2).sum().alias("realized_variance"),
            pl.col("r").drop_nulls().len().alias("returns"),
        )
        .sort("symbol", "day")
    )

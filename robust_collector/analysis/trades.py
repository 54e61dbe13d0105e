"""Trades for research: loaders, minute bars, VWAP and realized variance, all as polars
frames (and the validation package's same-timestamp aggregation, re-exported).

Realized variance is the sum of squared log returns of the last price in each
sampling interval (calendar-time sampling, e.g. 5 minutes), per symbol and day;
bars and VWAP use every stored trade of the interval.

Corrections and cancels are stored as trade rows (``correction`` 12, 10 or 11, see
``validation.trade_rules``); ``apply_corrections`` turns the stored rows into the
trades as they stand after them, before bars, VWAP or realized variance.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from robust_collector.analysis.loaders import sql_where
from robust_collector.analysis.paths import Pathish
from robust_collector.storage.reader import query_frame, with_datetimes
from robust_collector.storage.tables import TRADE_REJECTS, TRADES
from robust_collector.validation.trade_frame import aggregate_same_timestamp
from robust_collector.validation.trade_rules import (
    CORRECTS_PATTERN,
    TRADE_CANCELLED,
    TRADE_CORRECTED,
    TRADE_ERROR,
)

__all__ = [
    "aggregate_same_timestamp",
    "apply_corrections",
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


WITHDRAWN_CORRECTIONS: tuple[int, ...] = (7, 8)
"""TAQ ``CORR`` of an original trade later marked an error (7) or cancelled (8): dropped."""
_NO_VENUE = "\x00"  # stands in for a missing venue when matching ids (null never matches)


def apply_corrections(trades: pl.DataFrame) -> pl.DataFrame:
    """The trades as they stand after the stored corrections and cancels.

    A cancel or error row (``correction`` 10 or 11) removes itself and the trade of
    the same symbol, venue and ``provider_id``; a correction row (12) replaces the
    trade its conditions name (``corrects:<id>``): it keeps its corrected price,
    size and conditions (the token removed), takes the original's exchange time
    when the original is in the frame, and comes out with ``correction`` 0 and
    ``corrected`` true. Chains (a correction corrected or cancelled later) resolve
    in arrival order. TAQ originals later cancelled or in error (``CORR`` 7, 8) are
    dropped. Other rows pass unchanged (``corrected`` false); rows keep their order
    within a symbol and time.
    """
    need = {"symbol", "ts_us", "correction", "conditions", "provider_id"}
    missing = sorted(need - set(trades.columns))
    if missing:
        raise ValueError(f"apply_corrections: the frame lacks {missing} (load_trades has them)")
    corr = pl.col("correction")
    is_fix = (corr == TRADE_CORRECTED).fill_null(False)
    is_cancel = corr.is_in([TRADE_CANCELLED, TRADE_ERROR]).fill_null(False)
    withdrawn = corr.is_in(list(WITHDRAWN_CORRECTIONS)).fill_null(False)
    venue = pl.col("venue") if "venue" in trades.columns else pl.lit(None, dtype=pl.String)
    df = trades.with_row_index("_row").with_columns(
        venue.cast(pl.String).fill_null(_NO_VENUE).alias("_venue"),
        pl.when(is_fix)
        .then(pl.col("conditions").str.extract(CORRECTS_PATTERN, 1))
        .replace("", None)
        .alias("_orig"),
        is_fix.alias("_fix"),
    )
    gone = pl.concat(
        [
            df.filter(is_cancel).select(
                "symbol", "_venue", pl.col("provider_id").alias("_id"), pl.col("_row").alias("_by")
            ),
            df.filter(pl.col("_fix")).select(
                "symbol", "_venue", pl.col("_orig").alias("_id"), pl.col("_row").alias("_by")
            ),
        ]
    ).filter(pl.col("_id").is_not_null())
    candidates = df.filter(~is_cancel & ~withdrawn)
    # a row named by another notice goes; a correction that keeps its id (ci == oi) is not
    # removed by itself
    removed = (
        candidates.select("symbol", "_venue", "provider_id", "_row")
        .join(
            gone,
            left_on=["symbol", "_venue", "provider_id"],
            right_on=["symbol", "_venue", "_id"],
        )
        .filter(pl.col("_by") != pl.col("_row"))
        .get_column("_row")
    )
    kept = candidates.filter(~pl.col("_row").is_in(removed.implode()))
    new_ts = _corrected_times(df)
    out = kept.with_columns(
        pl.when(pl.col("_fix"))
        .then(pl.col("_row").replace_strict(new_ts, default=pl.col("ts_us"), return_dtype=pl.Int64))
        .otherwise(pl.col("ts_us"))
        .cast(trades.schema["ts_us"])
        .alias("ts_us"),
        pl.when(pl.col("_fix"))
        .then(pl.lit(0))
        .otherwise(corr)
        .cast(trades.schema["correction"])
        .alias("correction"),
        pl.when(pl.col("_fix"))
        .then(pl.col("conditions").str.replace(CORRECTS_PATTERN, "").replace("", None))
        .otherwise(pl.col("conditions"))
        .alias("conditions"),
        pl.col("_fix").alias("corrected"),
    )
    if "ts" in out.columns:
        out = out.with_columns(
            pl.col("ts_us").cast(pl.Datetime("us", "UTC")).cast(trades.schema["ts"]).alias("ts")
        )
    return out.sort("symbol", "ts_us", maintain_order=True).drop("_row", "_venue", "_orig", "_fix")


def _corrected_times(df: pl.DataFrame) -> dict[int, int]:
    """Row -> the exchange time a correction row takes: its original's (followed back
    through earlier corrections, in arrival order), or its own when the original is absent."""
    fixes = df.filter(pl.col("_fix"))
    if fixes.is_empty():
        return {}
    order = [c for c in ("recv_us", "seq") if c in df.columns]
    if order:
        fixes = fixes.sort(order, maintain_order=True)
    notice = pl.col("correction").is_in([TRADE_CANCELLED, TRADE_ERROR]).fill_null(False)
    # the originals' times; corrections add theirs below, in arrival order
    with_id = df.filter(pl.col("provider_id").is_not_null() & ~notice & ~pl.col("_fix"))
    ts_of = {
        (s, v, i): t
        for s, v, i, t in with_id.select("symbol", "_venue", "provider_id", "ts_us").iter_rows()
    }
    out: dict[int, int] = {}
    for row, s, v, orig, own_id, ts in fixes.select(
        "_row", "symbol", "_venue", "_orig", "provider_id", "ts_us"
    ).iter_rows():
        t = ts_of.get((s, v, orig), ts) if orig is not None else ts
        out[row] = t
        if own_id is not None:
            ts_of[(s, v, own_id)] = t
    return out


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

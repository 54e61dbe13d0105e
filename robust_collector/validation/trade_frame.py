"""The polars trade engine: the trade rules over a DataFrame, plus same-timestamp aggregation.

The stateless rules are one polars ``when/then`` chain (the twin of
``trade_rules.trade_stateless_failure``); the prevailing quote comes from an
as-of join (backward, per symbol); identity, out of order, the quote band and
price change run row by row through the very ``TradeSymbolState`` the streaming
``TradeValidator`` uses. Reason texts come from the shared Python functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import polars as pl

from robust_collector.boundary import TS_MAX_US, TS_MIN_US
from robust_collector.model import TRADE_FIELDS, Trade
from robust_collector.storage.tables import TRADES
from robust_collector.validation.config import TradeValidationConfig
from robust_collector.validation.frame import FrameResult, _time_us, with_verdicts
from robust_collector.validation.streaming import ACCEPTED
from robust_collector.validation.trade_rules import (
    ASCII_SPACE,
    CORRECTS_PATTERN,
    TRADE_RULES,
    TradeParams,
    trade_stateless_failure,
)
from robust_collector.validation.trade_streaming import (
    TradeSymbolState,
    new_trade_state_table,
    summarize_trades,
)

TRADE_FRAME_FIELDS: Final[tuple[str, ...]] = (
    "symbol",
    "ts_us",
    "recv_us",
    "price",
    "size",
    "venue",
    "conditions",
    "correction",
    "provider_id",
)
"""The trade fields a column mapping may name (keys of ``columns``)."""

TRADE_TAQ_COLUMNS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "symbol": "SYMBOL",
        "ts_us": "DT",
        "price": "PRICE",
        "size": "SIZE",
        "venue": "EX",
        "conditions": "COND",
        "correction": "CORR",
    }
)
"""NYSE TAQ trade files (``DT, EX, SYMBOL, COND, SIZE, PRICE, CORR``)."""

QUOTE_BAND_FIELDS: Final[tuple[str, ...]] = ("symbol", "ts_us", "bid", "ask")
"""The quote fields the band rule reads (a quote mapping such as ``TAQ_COLUMNS`` may name more)."""

_SPACE_CLASS: Final[str] = "[" + "".join(f"\\x{ord(c):02x}" for c in ASCII_SPACE) + "]"
"""``trade_rules.ASCII_SPACE`` as a regex class (the white space conditions lose)."""

TRADE_SCHEMA: Final[Mapping[str, Any]] = MappingProxyType(TRADES.polars_subset(TRADE_FIELDS))
"""polars dtypes of ``Trade`` fields, in ``TRADE_FIELDS`` order (the trades table's columns)."""


@dataclass(frozen=True)
class TradeFrameResult(FrameResult):
    """What ``validate_trade_frame`` returns: ``FrameResult``'s shape, plus ``duplicates``.

    ``summary`` has one row per id in ``TRADE_RULES`` plus ``accepted``; ``stats``
    the ``TradeValidator.stats()`` shape."""

    @property
    def duplicates(self) -> pl.DataFrame:
        """The rows dropped as duplicates (neither stored nor rejects)."""
        return self.frame.filter(pl.col("status") == "duplicate")


def trades_frame(trades: Iterable[Trade]) -> pl.DataFrame:
    """Trades as a frame with ``Trade`` field names, ready for ``validate_trade_frame``."""
    return pl.DataFrame([t.as_row() for t in trades], schema=dict(TRADE_SCHEMA), orient="row")


def _resolve(
    df: pl.DataFrame, columns: Mapping[str, str] | None, known: tuple[str, ...], what: str
) -> dict[str, str]:
    if columns is None:
        return {f: f for f in known if f in df.columns}
    unknown = set(columns) - set(known)
    if unknown:
        raise ValueError(f"{what}: unknown fields {sorted(unknown)}; known: {known}")
    missing = [c for c in columns.values() if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: {missing} not in the frame (has {df.columns})")
    return dict(columns)


def _stateless_expr(p: TradeParams, lo: pl.Expr, hi: pl.Expr, tz_name: str) -> pl.Expr:
    """The first failing stateless rule per row (null: none), like ``trade_stateless_failure``.

    polars orders NaN above every number, so comparisons are guarded to be false on
    NaN, matching Python's."""
    rules = p.rules
    ts, recv = pl.col("_ts"), pl.col("_recv")
    price, size = pl.col("_price"), pl.col("_size")
    checks: list[tuple[str, pl.Expr]] = []
    if rules.bad_timestamp:
        bad_ts = (ts < 0) | (ts > TS_MAX_US) | ((ts < TS_MIN_US) & (recv >= TS_MIN_US))
        checks.append(("bad_timestamp", bad_ts.fill_null(False)))
    checks.append(("bad_price", price.is_null()))
    if rules.bad_price:
        checks.append(("bad_price", ~price.is_finite() | (price <= 0)))
    if rules.bad_size:
        checks.append(("bad_size", (~size.is_finite() | (size <= 0)).fill_null(False)))
    if rules.price_range:
        inside = price.is_not_nan() & (price >= lo) & (price <= hi)
        checks.append(("price_range", ~inside))
    if rules.future_timestamp:
        checks.append(("future_timestamp", (ts - recv) > p.tol_us))
    if rules.outside_session:
        c = p.config.session
        valid_ts = (ts >= 0) & (ts <= TS_MAX_US)
        tod = (
            pl.when(valid_ts)
            .then(ts)
            .otherwise(0)
            .cast(pl.Datetime("us", "UTC"))
            .dt.convert_time_zone(tz_name)
            .dt.time()
        )
        inside = (
            valid_ts
            & (tod >= pl.lit(dt.time.fromisoformat(c.open)))
            & (tod <= pl.lit(dt.time.fromisoformat(c.close)))
        )
        checks.append(("outside_session", ~inside.fill_null(False)))
    if p.exchanges is not None:
        ok = pl.col("_venue").is_in(sorted(p.exchanges))
        checks.append(("exchange", ~ok.fill_null(False)))
    if rules.correction:
        checks.append(("correction", (pl.col("_corr") != 0).fill_null(False)))
    if rules.abnormal_condition:
        norm = (
            pl.col("_cond")
            .fill_null("")
            .str.replace(CORRECTS_PATTERN, "")
            .str.replace_all(_SPACE_CLASS, "")
        )
        checks.append(("abnormal_condition", ~norm.is_in(sorted(p.valid_conditions))))
    expr: Any = pl.when(checks[0][1]).then(pl.lit(checks[0][0]))
    for rule, cond in checks[1:]:
        expr = expr.when(cond).then(pl.lit(rule))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def _prevailing_quotes(
    work: pl.DataFrame,
    quotes: pl.DataFrame | pl.LazyFrame,
    quote_columns: Mapping[str, str] | None,
    tz: str,
    symbol: str,
) -> pl.DataFrame:
    """``work`` plus ``_qbid``/``_qask``: the usable quote at or before each row, per symbol."""
    if isinstance(quotes, pl.LazyFrame):
        quotes = quotes.collect()
    if quote_columns is not None:
        quote_columns = {k: v for k, v in quote_columns.items() if k in QUOTE_BAND_FIELDS}
    qmap = _resolve(quotes, quote_columns, QUOTE_BAND_FIELDS, "quote_columns")
    if not {"ts_us", "bid", "ask"} <= set(qmap):
        raise ValueError("quote_columns: 'ts_us', 'bid' and 'ask' are required")
    qsym = pl.col(qmap["symbol"]).cast(pl.String) if "symbol" in qmap else pl.lit(symbol)
    bid, ask = pl.col("_qbid"), pl.col("_qask")
    q = (
        quotes.select(
            qsym.alias("_sym"),
            _time_us(quotes, qmap["ts_us"], tz).alias("_ts"),
            pl.col(qmap["bid"]).cast(pl.Float64).alias("_qbid"),
            pl.col(qmap["ask"]).cast(pl.Float64).alias("_qask"),
        )
        # usable_quote(): both sides finite, positive, not crossed
        .filter((bid > 0) & (bid <= ask) & ask.is_finite() & bid.is_not_nan())
        .sort("_ts", maintain_order=True)
        .unique(subset=["_sym", "_ts"], keep="last", maintain_order=True)
    )
    left = work.with_row_index("_row").sort("_ts", maintain_order=True)
    joined = left.join_asof(q, on="_ts", by="_sym", strategy="backward", check_sortedness=False)
    return joined.sort("_row").drop("_row")


def validate_trade_frame(
    df: pl.DataFrame | pl.LazyFrame,
    config: TradeValidationConfig | None = None,
    quotes: pl.DataFrame | pl.LazyFrame | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    quote_columns: Mapping[str, str] | None = None,
    tz: str = "UTC",
    symbol: str = "",
) -> TradeFrameResult:
    """Validate a frame of trades exactly as a streaming ``TradeValidator`` would.

    Rows are judged in frame order, each symbol against its own state. ``columns``
    maps trade fields (``TRADE_FRAME_FIELDS``) to column names, e.g.
    ``TRADE_TAQ_COLUMNS`` (default: columns named like the fields); unmapped fields
    are missing (no ``recv_us``: the exchange time stands in; no ``symbol``: every
    row is ``symbol``). ``quotes`` (columns by ``quote_columns``, e.g. ``TAQ_COLUMNS``)
    feed ``outside_quote_band``: each trade meets the last usable quote of its
    symbol at or before its time, as a ``TradeValidator`` that was given every
    quote (``note_quote``) before the trades of the same or a later time. Naive
    Datetime columns are read in ``tz``.
    """
    config = config if config is not None else TradeValidationConfig()
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    mapping = _resolve(df, columns, TRADE_FRAME_FIELDS, "columns")
    if "ts_us" not in mapping or "price" not in mapping:
        raise ValueError("columns: a time ('ts_us') and a 'price' column are required")
    n = df.height

    def col(f: str, dtype: Any, alias: str) -> pl.Expr:
        c = mapping.get(f)
        return (pl.col(c) if c else pl.lit(None)).cast(dtype).alias(alias)

    ts = _time_us(df, mapping["ts_us"], tz)
    recv = _time_us(df, mapping["recv_us"], tz) if "recv_us" in mapping else ts
    sym = pl.col(mapping["symbol"]).cast(pl.String) if "symbol" in mapping else pl.lit(symbol)
    work = df.select(
        sym.alias("_sym"),
        ts.alias("_ts"),
        recv.alias("_recv"),
        col("price", pl.Float64, "_price"),
        col("size", pl.Float64, "_size"),
        col("venue", pl.String, "_venue"),
        col("conditions", pl.String, "_cond"),
        col("correction", pl.Int64, "_corr"),
        col("provider_id", pl.String, "_pid"),
    )
    params, states = new_trade_state_table(config)
    rules_out: list[str | None] = [None] * n
    reasons_out: list[str | None] = [None] * n
    notes_out: list[str | None] = [None] * n

    if not config.enabled:
        for s, cnt in work.group_by("_sym").len().iter_rows():
            st = states[s] = TradeSymbolState(params, s)
            st.counts["accepted"] = cnt
    else:
        symbols = work.get_column("_sym").unique().to_list()
        for s in symbols:
            states[s] = TradeSymbolState(params, s)
        lo: pl.Expr = pl.lit(config.min_price, dtype=pl.Float64)
        hi: pl.Expr = pl.lit(config.max_price, dtype=pl.Float64)
        overrides = {s: config.price_ranges[s] for s in symbols if s in config.price_ranges}
        if overrides:
            lo_map = {s: r.min_price for s, r in overrides.items()}
            hi_map = {s: r.max_price for s, r in overrides.items()}
            lo = pl.col("_sym").replace_strict(lo_map, default=lo, return_dtype=pl.Float64)
            hi = pl.col("_sym").replace_strict(hi_map, default=hi, return_dtype=pl.Float64)
        work = work.with_columns(
            _stateless_expr(params, lo, hi, config.session.timezone).alias("_pre")
        )
        if config.rules.outside_quote_band and quotes is not None:
            work = _prevailing_quotes(work, quotes, quote_columns, tz, symbol)
        else:
            work = work.with_columns(
                pl.lit(None, dtype=pl.Float64).alias("_qbid"),
                pl.lit(None, dtype=pl.Float64).alias("_qask"),
            )
        _run(params, work, states, rules_out, reasons_out, notes_out)

    out = with_verdicts(df, rules_out, reasons_out, notes_out)
    stats = summarize_trades(states)
    return TradeFrameResult(out, _summary(stats["total"], n), stats)


def _run(
    params: TradeParams,
    work: pl.DataFrame,
    states: dict[str, TradeSymbolState],
    rules_out: list[str | None],
    reasons_out: list[str | None],
    notes_out: list[str | None],
) -> None:
    """The stateful pass: row order, each row against its symbol's ``TradeSymbolState``."""
    names = ("_sym", "_ts", "_recv", "_price", "_size", "_venue", "_cond", "_corr", "_pid")
    cols = [work.get_column(c).to_list() for c in (*names, "_qbid", "_qask", "_pre")]
    dup = params.rules.duplicate
    for i, (s, ts, recv, price, size, venue, cond, corr, pid, qbid, qask, pre) in enumerate(
        zip(*cols, strict=True)
    ):
        st = states[s]
        key = (ts, price, size, venue, cond, corr)
        if dup:
            d = st.duplicate(key, pid)
            if d is not None:
                rules_out[i] = "duplicate"
                reasons_out[i] = d.reason
                continue
        if pre is not None:
            fail = trade_stateless_failure(
                params, price, size, ts, recv, venue, cond, corr, st.lo, st.hi
            )
            reason = fail[1] if fail is not None and fail[0] == pre else pre
            st.reject(pre, reason)
            rules_out[i] = pre
            reasons_out[i] = reason
            continue
        v = st.judge(ts, price, key, pid, None if qbid is None else (qbid, qask))
        if v is not ACCEPTED:
            if v.rule is not None:
                rules_out[i] = v.rule
                reasons_out[i] = v.reason
            else:
                notes_out[i] = v.reason


def _summary(total: Mapping[str, int], n: int) -> pl.DataFrame:
    keys = [*TRADE_RULES, "accepted"]
    counts = [total[k] for k in keys]
    return pl.DataFrame(
        {"rule": keys, "count": counts, "share": [c / n if n else 0.0 for c in counts]},
        schema={"rule": pl.String, "count": pl.Int64, "share": pl.Float64},
    )


def aggregate_same_timestamp(
    df: pl.DataFrame | pl.LazyFrame, columns: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """One row per symbol and exchange time: the median price, the summed size, ``trades``.

    An analysis step (highfrequency's ``mergeTradesSameTimestamp``, selection
    "median"), never a storage rule: pass the accepted trades. ``columns`` maps
    ``symbol``, ``ts_us``, ``price`` and ``size`` to column names (default: those
    names; ``TRADE_TAQ_COLUMNS`` works); output columns keep the input names and
    rows are sorted by time, then symbol.
    """
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    wanted = ("symbol", "ts_us", "price", "size")
    if columns is not None:
        columns = {k: v for k, v in columns.items() if k in wanted}
    m = _resolve(df, columns, wanted, "columns")
    if not {"ts_us", "price"} <= set(m):
        raise ValueError("columns: a time ('ts_us') and a 'price' column are required")
    keys = [m["ts_us"], *([m["symbol"]] if "symbol" in m else [])]
    aggs = [pl.col(m["price"]).median()]
    if "size" in m:
        aggs.append(pl.col(m["size"]).sum())
    aggs.append(pl.len().alias("trades"))
    return df.group_by(keys, maintain_order=True).agg(aggs).sort(keys, maintain_order=True)

"""The polars engine: the same rules over a DataFrame of quotes, for files and notebooks.

The stateless rules are vectorised in polars (``_stateless_expr``, the twin of
``rules.stateless_failure``); the rules that need history (duplicate, out of
order, the rolling windows, price change with re-anchoring) run row by row
through the very ``SymbolState.judge`` the streaming ``Validator`` uses. Reason
texts are made by the shared Python functions, for rejected rows only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import polars as pl

from robust_collector.boundary import TS_MAX_US, TS_MIN_US
from robust_collector.model import QUOTE_FIELDS, Quote
from robust_collector.storage.tables import QUOTE_POLARS_SCHEMA
from robust_collector.validation.config import ValidationConfig
from robust_collector.validation.rules import (
    RULES,
    future_tolerance_us,
    has_nan,
    stateless_failure,
)
from robust_collector.validation.streaming import (
    ACCEPTED,
    COUNTER_KEYS,
    DUPLICATE,
    SymbolState,
    new_state_table,
    summarize,
)

FIELDS: Final[tuple[str, ...]] = (
    "symbol",
    "ts_us",
    "recv_us",
    "bid",
    "ask",
    "bid_size",
    "ask_size",
    "last",
)
"""The quote fields a column mapping may name (keys of ``columns``)."""

DEFAULT_COLUMNS: Final[Mapping[str, str]] = MappingProxyType({f: f for f in FIELDS})
"""Columns named like ``Quote`` fields (e.g. a frame of stored ticks)."""

TAQ_COLUMNS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "symbol": "SYMBOL",
        "ts_us": "DT",
        "bid": "BID",
        "ask": "OFR",
        "bid_size": "BIDSIZ",
        "ask_size": "OFRSIZ",
    }
)
"""NYSE TAQ quote files (``DT, BID, OFR, BIDSIZ, OFRSIZ, SYMBOL``). Raw WRDS TAQ
times are New York local time (``tz="America/New_York"``); the highfrequency
sample in ``taq_sample`` is naive UTC (``tz="UTC"``)."""

QUOTE_SCHEMA: Final[Mapping[str, Any]] = MappingProxyType(dict(QUOTE_POLARS_SCHEMA))
"""polars dtypes of ``Quote`` fields, in ``QUOTE_FIELDS`` order: the ticks table's quote
columns (``storage.tables``)."""
assert tuple(QUOTE_SCHEMA) == QUOTE_FIELDS

OUTPUT_COLUMNS: Final[tuple[str, ...]] = ("status", "reject_rule", "reject_reason", "note")
"""Columns ``validate_frame`` appends to the input rows."""


@dataclass(frozen=True)
class FrameResult:
    """What ``validate_frame`` returns.

    ``frame``: the input rows, in order, plus ``status`` ("accepted" | "rejected" |
    "duplicate"), ``reject_rule`` and ``reject_reason`` (null when accepted;
    ``"duplicate"`` for duplicates) and ``note`` (the re-anchor note, else null).
    ``summary``: one row per rule id in ``RULES`` order plus ``accepted``, with
    ``count`` and ``share`` of all rows. ``stats``: the ``Validator.stats()`` shape.
    """

    frame: pl.DataFrame
    summary: pl.DataFrame
    stats: dict[str, Any] = field(repr=False)

    @property
    def accepted(self) -> pl.DataFrame:
        """The rows that would be stored."""
        return self.frame.filter(pl.col("status") == "accepted")

    @property
    def rejects(self) -> pl.DataFrame:
        """The rejected rows (duplicates excluded, as in the rejects table)."""
        return self.frame.filter(pl.col("status") == "rejected")


def quotes_frame(quotes: Iterable[Quote]) -> pl.DataFrame:
    """Quotes as a frame with ``Quote`` field names, ready for ``validate_frame``."""
    return pl.DataFrame([q.as_row() for q in quotes], schema=dict(QUOTE_SCHEMA), orient="row")


def _time_us(df: pl.DataFrame, name: str, tz: str) -> pl.Expr:
    """A time column as Int64 epoch microseconds (UTC); naive datetimes are in ``tz``."""
    dtype = df.schema[name]
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone(tz, ambiguous="earliest")
        return col.dt.epoch("us").cast(pl.Int64)
    if dtype.is_integer():
        return col.cast(pl.Int64)
    raise TypeError(
        f"column {name!r}: expected a Datetime or integer epoch microseconds, got {dtype}"
    )


def _resolve(df: pl.DataFrame, columns: Mapping[str, str] | None) -> dict[str, str]:
    if columns is None:
        mapping = {f: c for f, c in DEFAULT_COLUMNS.items() if c in df.columns}
    else:
        unknown = set(columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"columns: unknown quote fields {sorted(unknown)}; known: {FIELDS}")
        missing = [c for c in columns.values() if c not in df.columns]
        if missing:
            raise ValueError(f"columns: {missing} not in the frame (has {df.columns})")
        mapping = dict(columns)
    if "ts_us" not in mapping:
        raise ValueError("columns: a time column ('ts_us') is required")
    if not any(f in mapping for f in ("bid", "ask", "last")):
        raise ValueError("columns: map at least 'last' or 'bid' and 'ask'")
    return mapping


def _stateless_expr(config: ValidationConfig, lo: pl.Expr, hi: pl.Expr) -> pl.Expr:
    """The first failing stateless rule per row (null: none), like ``stateless_failure``.

    polars orders NaN above every number, so each comparison is guarded to be
    false on NaN, matching Python's comparisons.
    """
    bid, ask, last = pl.col("_bid"), pl.col("_ask"), pl.col("_last")
    bsz, asz, price = pl.col("_bsz"), pl.col("_asz"), pl.col("_price")
    rules = config.rules

    def le0(x: pl.Expr) -> pl.Expr:
        return x.is_not_null() & x.is_not_nan() & (x <= 0)

    def lt0(x: pl.Expr) -> pl.Expr:
        return x.is_not_null() & x.is_not_nan() & (x < 0)

    def not_finite(x: pl.Expr) -> pl.Expr:
        return x.is_not_null() & ~x.is_finite()

    checks: list[tuple[str, pl.Expr]] = []
    if rules.bad_timestamp:
        ts, recv = pl.col("_ts"), pl.col("_recv")
        bad_ts = (ts < 0) | (ts > TS_MAX_US) | ((ts < TS_MIN_US) & (recv >= TS_MIN_US))
        checks.append(("bad_timestamp", bad_ts.fill_null(False)))
    checks.append(("non_finite", price.is_null()))
    if rules.non_finite:
        checks.append(
            (
                "non_finite",
                not_finite(bid)
                | not_finite(ask)
                | not_finite(last)
                | not_finite(bsz)
                | not_finite(asz),
            )
        )
    if rules.non_positive:
        checks.append(("non_positive", le0(bid) | le0(ask) | le0(last) | lt0(bsz) | lt0(asz)))
    if rules.crossed:
        crossed = bid.is_not_nan() & ask.is_not_nan() & (bid > ask)
        checks.append(("crossed", crossed.fill_null(False)))
    if rules.price_range:
        inside = price.is_not_nan() & (price >= lo) & (price <= hi)
        checks.append(("price_range", ~inside.fill_null(True)))
    if rules.future_timestamp:
        tol = future_tolerance_us(config)
        checks.append(("future_timestamp", (pl.col("_ts") - pl.col("_recv")) > tol))
    expr: Any = pl.when(checks[0][1]).then(pl.lit(checks[0][0]))
    for rule, cond in checks[1:]:
        expr = expr.when(cond).then(pl.lit(rule))
    return expr.otherwise(pl.lit(None, dtype=pl.String))


def validate_frame(
    df: pl.DataFrame | pl.LazyFrame,
    config: ValidationConfig | None = None,
    columns: Mapping[str, str] | None = None,
    *,
    tz: str = "UTC",
    symbol: str = "",
) -> FrameResult:
    """Validate a frame of quotes exactly as a streaming ``Validator`` would.

    Rows are judged in frame order, each symbol against its own state (one or
    many symbols, interleaved or not). ``columns`` maps quote fields (``FIELDS``)
    to column names, e.g. ``TAQ_COLUMNS``; unmapped fields are missing (no
    ``last``: prices are mids; no ``recv_us``: the exchange time stands in, so
    ``future_timestamp`` never fires; no ``symbol``: every row is ``symbol``).
    Time columns are Datetime (naive ones are read in ``tz``) or integer epoch
    microseconds.
    """
    config = config if config is not None else ValidationConfig()
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    mapping = _resolve(df, columns)
    n = df.height

    def num(f: str, alias: str) -> pl.Expr:
        c = mapping.get(f)
        return (pl.col(c) if c else pl.lit(None)).cast(pl.Float64).alias(alias)

    ts = _time_us(df, mapping["ts_us"], tz)
    recv = _time_us(df, mapping["recv_us"], tz) if "recv_us" in mapping else ts
    sym = pl.col(mapping["symbol"]).cast(pl.String) if "symbol" in mapping else pl.lit(symbol)
    work = df.select(
        sym.alias("_sym"),
        ts.alias("_ts"),
        recv.alias("_recv"),
        num("bid", "_bid"),
        num("ask", "_ask"),
        num("bid_size", "_bsz"),
        num("ask_size", "_asz"),
        num("last", "_last"),
    ).with_columns(
        ((pl.col("_bid") + pl.col("_ask")) / 2.0).alias("_mid"),
        (pl.col("_ask") - pl.col("_bid")).alias("_spread"),
    )
    work = work.with_columns(pl.coalesce("_last", "_mid").alias("_price"))

    rules_out: list[str | None] = [None] * n
    reasons_out: list[str | None] = [None] * n
    notes_out: list[str | None] = [None] * n
    params, states = new_state_table(config)

    if not config.enabled:
        for s, cnt in work.group_by("_sym").len().iter_rows():
            st = states[s] = SymbolState(params, s)
            st.counts["accepted"] = cnt
    else:
        symbols = work.get_column("_sym").unique().to_list()
        for s in symbols:
            states[s] = SymbolState(params, s)
        lo: pl.Expr = pl.lit(config.min_price, dtype=pl.Float64)
        hi: pl.Expr = pl.lit(config.max_price, dtype=pl.Float64)
        overrides = {s: config.price_ranges[s] for s in symbols if s in config.price_ranges}
        if overrides:
            sym_col = pl.col("_sym")
            lo_map = {s: r.min_price for s, r in overrides.items()}
            hi_map = {s: r.max_price for s, r in overrides.items()}
            lo = sym_col.replace_strict(lo_map, default=lo, return_dtype=pl.Float64)
            hi = sym_col.replace_strict(hi_map, default=hi, return_dtype=pl.Float64)
        work = work.with_columns(_stateless_expr(config, lo, hi).alias("_pre"))
        _run(config, work, states, rules_out, reasons_out, notes_out)

    out = with_verdicts(df, rules_out, reasons_out, notes_out)
    stats = summarize(states)
    return FrameResult(out, _summary(stats["total"], n), stats)


def with_verdicts(
    df: pl.DataFrame,
    rules: list[str | None],
    reasons: list[str | None],
    notes: list[str | None],
) -> pl.DataFrame:
    """``df`` with each row's verdict as the last columns (``OUTPUT_COLUMNS``): status from
    the rule (none: accepted; ``duplicate``; else rejected), rule, reason and note."""
    status = (
        pl.when(pl.col("reject_rule").is_null())
        .then(pl.lit("accepted"))
        .when(pl.col("reject_rule") == "duplicate")
        .then(pl.lit("duplicate"))
        .otherwise(pl.lit("rejected"))
    )
    out = df.with_columns(
        pl.Series("reject_rule", rules, dtype=pl.String),
        pl.Series("reject_reason", reasons, dtype=pl.String),
        pl.Series("note", notes, dtype=pl.String),
    ).with_columns(status.alias("status"))
    return out.select([c for c in out.columns if c not in OUTPUT_COLUMNS] + list(OUTPUT_COLUMNS))


def _run(
    config: ValidationConfig,
    work: pl.DataFrame,
    states: dict[str, SymbolState],
    rules_out: list[str | None],
    reasons_out: list[str | None],
    notes_out: list[str | None],
) -> None:
    """The stateful pass: row order, each row against its symbol's ``SymbolState``."""
    cols = [
        work.get_column(c).to_list()
        for c in (
            "_sym",
            "_ts",
            "_recv",
            "_bid",
            "_ask",
            "_bsz",
            "_asz",
            "_last",
            "_mid",
            "_spread",
            "_price",
            "_pre",
        )
    ]
    dup = config.rules.duplicate
    dup_reason = DUPLICATE.reason
    cur: str | None = None
    st: SymbolState | None = None
    judge: Any = None
    for i, (s, ts, recv, bid, ask, bsz, asz, last, mid, spread, price, pre) in enumerate(
        zip(*cols, strict=True)
    ):
        if s != cur or st is None:
            cur = s
            st = states[s]
            judge = st.judge
        key = (ts, bid, ask, bsz, asz, last)
        if dup and key == st.last_key and not has_nan(key):
            st.counts["duplicate"] += 1
            rules_out[i] = "duplicate"
            reasons_out[i] = dup_reason
            continue
        if pre is not None:
            fail = stateless_failure(config, bid, ask, bsz, asz, last, ts, recv, st.lo, st.hi)
            reason = fail[1] if fail is not None and fail[0] == pre else pre
            st.reject(pre, reason)
            rules_out[i] = pre
            reasons_out[i] = reason
            continue
        v = judge(ts, price, mid, spread, key)
        if v is not ACCEPTED:
            if v.rule is not None:
                rules_out[i] = v.rule
                reasons_out[i] = v.reason
            else:
                notes_out[i] = v.reason


def _summary(total: Mapping[str, int], n: int) -> pl.DataFrame:
    keys = [*RULES, "accepted"]
    counts = [total[k] for k in keys]
    assert all(k in COUNTER_KEYS for k in keys)
    return pl.DataFrame(
        {
            "rule": keys,
            "count": counts,
            "share": [c / n if n else 0.0 for c in counts],
        },
        schema={"rule": pl.String, "count": pl.Int64, "share": pl.Float64},
    )

"""Property: the streaming TradeValidator and validate_trade_frame make the same decisions.

Generated streams over two symbols mix ordinary prints with ties in one microsecond,
exact repeats, re-sent provider ids, corrections, odd sale conditions, other venues,
out-of-order, future and absurd times, NaN and zero fields, spikes and level shifts,
session edges and DST days, and quotes (some unusable) for the band rule, under random
thresholds and rule switches. The real TAQ sample is checked the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_collector.boundary import TS_MAX_US
from robust_collector.model import Trade
from robust_collector.validation import (
    TAQ_COLUMNS,
    TRADE_TAQ_COLUMNS,
    PriceRange,
    TradeRuleSwitches,
    TradeValidationConfig,
    TradeValidator,
    TradingHours,
    trades_frame,
    validate_trade_frame,
)

# Rejection warnings are not under test here; keep them out of failure reports.
logging.getLogger("robust_collector.validation").setLevel(logging.ERROR)

T0 = 1_709_908_199_000_000  # 2024-03-08 14:29:59 UTC: one second before the New York open
EDGES = (
    1_709_908_200_000_000,  # 09:30:00 EST, the open (kept)
    1_709_908_199_999_999,
    1_709_931_600_000_000,  # 16:00:00 EST, the close (kept)
    1_709_931_600_000_001,
    1_710_053_999_999_999,  # 2024-03-10 01:59:59.999999 EST, just before the DST change
    1_710_054_000_000_000,  # 03:00:00 EDT
    1_710_082_800_000_000,  # 2024-03-10 11:00 EDT
    1_730_615_400_000_000,  # 2024-11-03 02:30 EST, after the fall change
)
KINDS = (
    "walk",
    "walk",
    "walk",
    "tie",
    "repeat",
    "repeat_old",
    "with_id",
    "resent_id",
    "quote",
    "quote",
    "quote_tie",
    "bad_quote",
    "correction",
    "conditions",
    "venue",
    "out_of_order",
    "future",
    "bad_time",
    "edge",
    "nan",
    "zero",
    "no_size",
    "spike",
    "jump",
    "out_of_range",
)
CONDITIONS = (None, "", " ", "@", "F I", "@\tF I", "F\x0bI\r\n", "I", "T", "FTI", "4 B", "Z", "@ E")


@st.composite
def configs(draw: st.DrawFn) -> TradeValidationConfig:
    names = [f.name for f in dataclasses.fields(TradeRuleSwitches)]
    switches = {n: draw(st.sampled_from([True, True, False])) for n in names}
    session = draw(
        st.sampled_from(
            [
                TradingHours(),
                TradingHours(open="02:30", close="03:30"),  # a local time DST skips
                TradingHours(timezone="Europe/London", open="08:00", close="16:30"),
            ]
        )
    )
    return TradeValidationConfig(
        enabled=draw(st.sampled_from([True] * 9 + [False])),
        max_price_change_pct=draw(st.sampled_from([10.0, 3.0])),
        reanchor_after=draw(st.integers(1, 3)),
        reanchor_tolerance_pct=draw(st.sampled_from([1.0, 0.1])),
        future_tolerance_seconds=draw(st.sampled_from([0.0, 1.0])),
        price_ranges=draw(
            st.sampled_from([{}, {"B": PriceRange(min_price=250.0, max_price=350.0)}])
        ),
        duplicate_id_window=draw(st.integers(1, 3)),
        exchanges=draw(st.sampled_from([(), ("N",), ("N", "P")])),
        session=session,
        valid_conditions=draw(st.sampled_from([TradeValidationConfig().valid_conditions, ("T",)])),
        allow_no_conditions=draw(st.booleans()),
        quote_band_spreads=draw(st.sampled_from([1.0, 0.0, 2.5])),
        quote_history=1000,  # longer than any stream: the frame sees every quote too
        rules=TradeRuleSwitches(**switches),
    )


Event = Trade | tuple[str, int, float | None, float | None]


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    """Trades and quotes in arrival order. Each quote is stamped after every trade of its
    symbol so far, as a live feed delivers it (and as the frame's as-of join assumes)."""
    level = {"A": 100.0, "B": 300.0}
    clock = {"A": T0, "B": T0}
    latest = {"A": T0, "B": T0}  # the latest trade time seen per symbol
    last_quote = {"A": 0, "B": 0}
    trades: list[Trade] = []
    events: list[Event] = []
    for i in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(KINDS))
        sym = draw(st.sampled_from("AB"))
        if kind in ("quote", "quote_tie", "bad_quote"):
            t = max(clock[sym], latest[sym]) + draw(st.sampled_from([1, 1, 400]))
            if kind == "quote_tie" and last_quote[sym] > latest[sym]:
                t = last_quote[sym]  # a second quote in the same microsecond: the last prevails
            last_quote[sym] = t
            px = level[sym]
            half = draw(st.sampled_from([0.01, 0.02, 0.05]))
            bid: float | None = round(px - half, 2)
            ask: float | None = round(px + half, 2)
            if kind == "bad_quote":
                bid, ask = draw(
                    st.sampled_from([(ask, bid), (None, ask), (math.nan, ask), (0.0, ask)])
                )
            events.append((sym, t, bid, ask))
            continue
        if kind in ("repeat", "repeat_old") and trades:
            prev = trades[-1] if kind == "repeat" else draw(st.sampled_from(trades))
            t = dataclasses.replace(prev, trade_id=f"r{i}", seq=i, recv_us=prev.recv_us + 3)
            trades.append(t)
            events.append(t)
            continue
        if kind == "resent_id":
            with_ids = [t for t in trades if t.provider_id]
            if with_ids:
                prev = draw(st.sampled_from(with_ids))
                t = dataclasses.replace(prev, trade_id=f"s{i}", seq=i, price=prev.price + 0.01)
                trades.append(t)
                events.append(t)
                continue
        if kind != "tie":
            clock[sym] += draw(st.sampled_from([0, 1, 500, 250_000, 1_000_000]))
        ts = clock[sym]
        recv = ts + draw(st.sampled_from([0, 0, 3, 2_000_000]))
        if kind == "out_of_order":
            ts -= draw(st.sampled_from([1, 1_000_000]))
        elif kind == "future":
            ts = recv + draw(st.sampled_from([1_000_000, 1_000_001, 3_000_000]))
        elif kind == "bad_time":
            ts = draw(st.sampled_from([ts // 1_000_000, ts // 1_000, -1, TS_MAX_US + 1]))
        elif kind == "edge":
            ts = recv = draw(st.sampled_from(EDGES))
        if kind == "walk":
            level[sym] = round(
                level[sym] * (1 + draw(st.sampled_from([-2, -1, 0, 1, 2])) / 1000), 2
            )
        elif kind == "jump":
            level[sym] = round(level[sym] * draw(st.sampled_from([1.15, 0.85, 1.05, 1.012])), 2)
        price: float | None = level[sym]
        if kind == "spike":
            price = round(level[sym] * draw(st.sampled_from([1.5, 0.5, 1.12, 1.011, 0.97])), 2)
        elif kind == "tie":
            price = draw(st.sampled_from([level[sym], round(level[sym] + 0.01, 2)]))
        elif kind == "out_of_range":
            price = draw(st.sampled_from([0.5, 20000.0, 250.0, 350.01, 1.0]))
        size: float | None = draw(st.sampled_from([100.0, 100.0, 200.0, 1.0]))
        if kind == "nan":
            if draw(st.booleans()):
                price = draw(st.sampled_from([math.nan, math.inf, None]))
            else:
                size = draw(st.sampled_from([math.nan, -math.inf]))
        elif kind == "zero":
            if draw(st.booleans()):
                price = draw(st.sampled_from([0.0, -1.0]))
            else:
                size = draw(st.sampled_from([0.0, -100.0]))
        elif kind == "no_size":
            size = None
        venue = draw(st.sampled_from(["N", "N", "P", "D", None])) if kind == "venue" else "N"
        conditions = draw(st.sampled_from(CONDITIONS)) if kind == "conditions" else None
        correction = draw(st.sampled_from([1, 8, 12, None])) if kind == "correction" else 0
        pid = f"id{draw(st.integers(0, 5))}" if kind == "with_id" else None
        t = Trade(
            f"t{i}", sym, i, ts, recv, price, size, venue, conditions, correction, pid, None, "gen"
        )
        latest[sym] = max(latest[sym], ts)
        trades.append(t)
        events.append(t)
    return events


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def _frame_decisions(result: Any) -> list[tuple[Any, ...]]:
    return result.frame.select(
        "status", "reject_rule", pl.col("reject_reason").fill_null(pl.col("note"))
    ).rows()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs(), events=streams())
def test_streaming_and_frame_make_the_same_decisions(
    config: TradeValidationConfig, events: list[Event]
) -> None:
    v = TradeValidator(config)
    expected = []
    for e in events:
        if isinstance(e, Trade):
            x = v.check(e)
            expected.append((x.status, x.rule, x.reason))
        else:
            v.note_quote(e[0], e[2], e[3], e[1])
    trades = [e for e in events if isinstance(e, Trade)]
    quotes = pl.DataFrame(
        [e for e in events if not isinstance(e, Trade)],
        schema={"symbol": pl.String, "ts_us": pl.Int64, "bid": pl.Float64, "ask": pl.Float64},
        orient="row",
    )
    result = validate_trade_frame(trades_frame(trades), config, quotes)
    assert _frame_decisions(result) == expected
    assert result.stats == v.stats()
    # The frame keeps every input value, in order.
    assert all(
        _same(a, b)
        for row, t in zip(
            result.frame.select("trade_id", "price", "size").iter_rows(), trades, strict=True
        )
        for a, b in zip(row, (t.trade_id, t.price, t.size), strict=True)
    )


# --- the real TAQ sample ---------------------------------------------------------------------

BNHLS = TradeValidationConfig(
    exchanges=("N",),
    rules=TradeRuleSwitches(
        outside_session=True, correction=True, abnormal_condition=True, outside_quote_band=True
    ),
)


def _us(df: pl.DataFrame) -> list[int]:
    return df["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()


def _taq_trades(df: pl.DataFrame) -> list[Trade]:
    cols = zip(
        _us(df),
        df["SYMBOL"],
        df["PRICE"],
        df["SIZE"],
        df["EX"],
        df["COND"],
        df["CORR"],
        strict=True,
    )
    return [
        Trade(f"taq:t{i}", s, i, t, t, p, float(z), ex, c, corr, None, None, "taq")
        for i, (t, s, p, z, ex, c, corr) in enumerate(cols)
    ]


def _stream(config: TradeValidationConfig, trades: list[Trade], quotes: pl.DataFrame | None):
    """The streaming engine over the sample, each quote noted before the trades at or after it."""
    v = TradeValidator(config)
    qs = (
        []
        if quotes is None
        else list(zip(_us(quotes), quotes["SYMBOL"], quotes["BID"], quotes["OFR"], strict=True))
    )
    j = 0
    out = []
    for t in trades:
        while j < len(qs) and qs[j][0] <= t.ts_us:
            qt, s, bid, ask = qs[j]
            v.note_quote(s, bid, ask, qt)
            j += 1
        x = v.check(t)
        out.append((x.status, x.rule, x.reason))
    return v, out


def test_taq_trade_sample_streaming_agrees_with_frame(taq_dir: Path) -> None:
    raw = pl.read_parquet(taq_dir / "sampleTDataRaw.parquet")
    quotes = pl.read_parquet(taq_dir / "sampleQData.parquet")
    trades = _taq_trades(raw)
    every_rule = dataclasses.replace(BNHLS, exchanges=())
    for config, q in [(TradeValidationConfig(), None), (BNHLS, quotes), (every_rule, quotes)]:
        result = validate_trade_frame(
            raw, config, q, columns=TRADE_TAQ_COLUMNS, quote_columns=TAQ_COLUMNS
        )
        v, decisions = _stream(config, trades, q)
        assert _frame_decisions(result) == decisions
        assert result.stats == v.stats()
    # The last run (every rule, every venue) exercised every rule that the sample can fail.
    fired = {k for k, n in result.stats["total"].items() if n}
    assert {"duplicate", "outside_session", "abnormal_condition", "outside_quote_band"} <= fired

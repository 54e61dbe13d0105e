"""Hypothesis strategies for quote sequences and validation configs, shared by the
agreement and fast-path tests: every kind of good and bad quote over two symbols."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import strategies as st

from robust_collector.model import Quote
from robust_collector.validation import PriceRange, RuleSwitches, ValidationConfig

T0 = 1_700_000_000_000_000
KINDS = (
    "walk",
    "walk",
    "walk",
    "walk",
    "jump",
    "spike",
    "duplicate",
    "same_time",
    "out_of_order",
    "future",
    "locked",
    "crossed",
    "last_only",
    "with_last",
    "non_finite",
    "non_positive",
    "wide",
    "no_price",
    "out_of_range",
    "range_edge",
    "repeat_values",
    "bad_time",
)


@st.composite
def configs(draw: st.DrawFn) -> ValidationConfig:
    switch_names = [f.name for f in dataclasses.fields(RuleSwitches)]
    switches = {n: draw(st.sampled_from([True, True, True, False])) for n in switch_names}
    return ValidationConfig(
        enabled=draw(st.sampled_from([True] * 9 + [False])),
        max_price_change_pct=draw(st.sampled_from([10.0, 3.0])),
        reanchor_after=draw(st.integers(1, 3)),
        reanchor_tolerance_pct=draw(st.sampled_from([1.0, 0.1])),
        spread_outlier_k=draw(st.sampled_from([3.0, 50.0])),
        spread_window=draw(st.integers(1, 8)),
        mid_outlier_k=draw(st.sampled_from([2.0, 10.0])),
        mid_window=draw(st.integers(3, 8)),
        min_window_samples=draw(st.integers(1, 5)),
        mid_mad_floor_pct=draw(st.sampled_from([0.0, 0.01, 0.5])),
        spread_floor_pct=draw(st.sampled_from([0.0, 0.01])),
        future_tolerance_seconds=draw(st.sampled_from([0.0, 1.0])),
        price_ranges=draw(
            st.sampled_from([{}, {"B": PriceRange(min_price=250.0, max_price=350.0)}])
        ),
        rules=RuleSwitches(**switches),
    )


@st.composite
def sequences(draw: st.DrawFn) -> list[Quote]:
    level = {"A": 100.0, "B": 300.0}
    clock = {"A": T0, "B": T0}
    quotes: list[Quote] = []
    for i in range(draw(st.integers(1, 60))):
        kind = draw(st.sampled_from(KINDS))
        if kind == "duplicate" and quotes:
            prev = quotes[-1] if draw(st.booleans()) else draw(st.sampled_from(quotes))
            quotes.append(
                dataclasses.replace(prev, tick_id=f"d{i}", seq=i, recv_us=prev.recv_us + 7)
            )
            continue
        if kind == "repeat_values" and quotes:
            prev = quotes[-1]
            clock[prev.symbol] += 1000
            t = clock[prev.symbol]
            quotes.append(dataclasses.replace(prev, tick_id=f"r{i}", seq=i, ts_us=t, recv_us=t))
            continue
        sym = draw(st.sampled_from("AB"))
        clock[sym] += draw(st.sampled_from([0, 1, 500, 250_000, 1_000_000]))
        ts = clock[sym]
        recv = ts + draw(st.sampled_from([0, 0, 3, 2_000_000]))
        if kind == "out_of_order":
            ts -= draw(st.sampled_from([1, 1_000_000]))
        elif kind == "future":
            ts = recv + draw(st.sampled_from([1_000_000, 1_000_001, 3_000_000]))
        elif kind == "same_time":
            ts = clock[sym]
        elif kind == "bad_time":  # a time in the wrong unit, or garbage
            ts = draw(st.sampled_from([ts // 1_000_000, ts // 1_000, 2**63 - 1, -1]))
        if kind == "walk":
            level[sym] = round(
                level[sym] * (1 + draw(st.sampled_from([-2, -1, 0, 1, 2])) / 1000), 2
            )
        elif kind == "jump":
            level[sym] = round(level[sym] * draw(st.sampled_from([1.15, 0.85, 1.05, 1.012])), 2)
        px = level[sym]
        if kind == "spike":
            px = round(px * draw(st.sampled_from([1.5, 0.5, 1.12, 1.011, 0.97])), 2)
        half = draw(st.sampled_from([0.01, 0.02, 0.05]))
        bid: float | None = round(px - half, 2)
        ask: float | None = round(px + half, 2)
        last: float | None = None
        bsz: float | None = draw(st.sampled_from([1.0, 2.0, 0.0]))
        asz: float | None = 1.0
        if kind == "locked":
            bid = ask = px
        elif kind == "crossed":
            bid, ask = px + 0.01, px - 0.01
        elif kind == "last_only":
            bid = ask = bsz = asz = None
            last = px
        elif kind == "with_last":
            last = round(px + draw(st.sampled_from([-0.01, 0.0, 0.01])), 2)
        elif kind == "non_finite":
            bad = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            field = draw(st.sampled_from(["bid", "ask", "last"]))
            if draw(st.booleans()):
                last = px  # a good last price beside a bad bid or ask
            bid, ask, last = (
                bad if field == "bid" else bid,
                bad if field == "ask" else ask,
                bad if field == "last" else last,
            )
        elif kind == "non_positive":
            choice = draw(st.sampled_from(["bid0", "ask-", "last0", "size-"]))
            if choice == "bid0":
                bid = 0.0
            elif choice == "ask-":
                ask = -1.0
            elif choice == "last0":
                last = 0.0
            else:
                asz = -1.0
        elif kind == "wide":
            bid, ask = round(px * 0.9, 2), round(px * 1.1, 2)
        elif kind == "no_price":
            ask = None
        elif kind == "out_of_range":
            bid, ask = (20000.0, 20000.02) if draw(st.booleans()) else (0.5, 0.52)
        elif kind == "range_edge":
            bid = ask = bsz = asz = None
            last = draw(st.sampled_from([1.0, 0.99, 10000.0, 10000.01, 250.0, 350.0, 350.01]))
        quotes.append(Quote(f"q{i}", sym, i, ts, recv, bid, ask, bsz, asz, last, "gen"))
    return quotes

"""Trade analysis: bars, VWAP, realized variance and same-timestamp aggregation, on
trades whose answers are worked out by hand."""

from __future__ import annotations

import math

import polars as pl
import pytest

from robust_collector.analysis.trades import (
    aggregate_same_timestamp,
    realized_variance,
    trade_bars,
    vwap,
)

T0 = 1_514_903_400_000_000  # 2018-01-02 14:30:00 UTC = 09:30 New York


def trades(rows: list[tuple[str, int, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["symbol", "ts_us", "price", "size"], orient="row")


def test_minute_bars_hold_open_high_low_close_volume_and_vwap():
    df = trades(
        [
            ("XXX", T0 + 1_000_000, 100.0, 10),
            ("XXX", T0 + 20_000_000, 101.0, 30),
            ("XXX", T0 + 40_000_000, 99.0, 10),
            ("XXX", T0 + 61_000_000, 102.0, 5),  # the next minute
        ]
    )
    bars = trade_bars(df, "1m")
    assert bars.height == 2
    first = bars.row(0, named=True)
    assert (first["open"], first["high"], first["low"], first["close"]) == (
        100.0,
        101.0,
        99.0,
        99.0,
    )
    assert first["volume"] == 50 and first["trades"] == 3
    assert first["vwap"] == pytest.approx((100 * 10 + 101 * 30 + 99 * 10) / 50)
    assert vwap(df, "1m")["vwap"].to_list() == pytest.approx([100.4, 102.0])


def test_realized_variance_sums_squared_log_returns_of_interval_closes_per_day():
    five = 300_000_000
    df = trades(
        [
            ("XXX", T0, 100.0, 1),
            ("XXX", T0 + five, 101.0, 1),
            ("XXX", T0 + 2 * five, 100.0, 1),
            ("YYY", T0, 50.0, 1),
        ]
    )
    rv = realized_variance(df, "5m")
    xxx = rv.filter(pl.col("symbol") == "XXX").row(0, named=True)
    expected = math.log(101 / 100) ** 2 + math.log(100 / 101) ** 2
    assert xxx["realized_variance"] == pytest.approx(expected) and xxx["returns"] == 2
    assert str(xxx["day"]) == "2018-01-02"  # the New York trading day
    yyy = rv.filter(pl.col("symbol") == "YYY").row(0, named=True)
    assert yyy["realized_variance"] == 0.0 and yyy["returns"] == 0


def test_same_timestamp_trades_become_one_with_median_price_and_summed_size():
    df = trades(
        [
            ("XXX", T0, 100.0, 1),
            ("XXX", T0, 102.0, 2),
            ("XXX", T0, 101.0, 3),
            ("XXX", T0 + 1, 99.0, 4),
        ]
    )
    agg = aggregate_same_timestamp(df).select("symbol", "ts_us", "price", "size", "trades")
    assert agg.rows() == [("XXX", T0, 101.0, 6.0, 3), ("XXX", T0 + 1, 99.0, 4.0, 1)]

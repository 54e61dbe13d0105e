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


# -- gaps(kind="trades") on a real SQLite file --------------------------------------------------


def test_gaps_of_trades_find_holes_in_the_trade_series_with_their_causes(tmp_path) -> None:
    import orjson

    from robust_collector.analysis import gaps
    from robust_collector.config import SessionConfig
    from robust_collector.model import Trade
    from robust_collector.storage.schema import INSERT_TICKS, open_database
    from robust_collector.storage.tables import INSERT_GAP, INSERT_TRADE_REJECTS, INSERT_TRADES

    run, s = "run1", 1_000_000
    db = tmp_path / "t.db"
    conn = open_database(db)
    config = {"realtime_data": {"collect_interval_seconds": 1.0}}
    conn.execute(
        "INSERT INTO runs (run_id, started_us, stopped_us, status, pid, host, symbols, config)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (run, T0, T0 + 600 * s, "stopped", 1, "h", '["SPY"]', orjson.dumps(config).decode()),
    )

    def trade(seq: int, t: int, corr: int | None = None) -> tuple:
        row = Trade(f"{run}:SPY:t{seq}", "SPY", seq, T0 + t * s, T0 + t * s, 100.0, 10.0, "V",
                    None, corr, str(seq))  # fmt: skip
        return row.trade_row(run)

    # trades every second for 0-59 s, none 60-119 s (rejected ones at 70 s), then 120-179 s,
    # none 180-239 s (the stream's trades were silent; a cancel at 200 s is no print), 240-299 s
    seconds = [*range(0, 60), *range(120, 180), *range(240, 300)]
    conn.executemany(INSERT_TRADES, [trade(i, t) for i, t in enumerate(seconds)])
    conn.execute(INSERT_TRADES, trade(999, 200, corr=10))
    conn.executemany(
        INSERT_TRADE_REJECTS,
        [(*trade(1000 + k, 70)[:-1], run, "price_change", "far", T0) for k in range(3)],
    )
    # the quotes never stopped: no hole in them
    q = [(f"{run}:SPY:{i}", "SPY", i, T0 + i * s, T0 + i * s, 99.9, 100.1, 1.0, 1.0, None,
          "x", run) for i in range(300)]  # fmt: skip
    conn.executemany(INSERT_TICKS, q)
    silent = "trades: no trade for 60.0s (threshold 3.0s)"
    conn.execute(INSERT_GAP, (run, "SPY", T0 + 180 * s, T0 + 240 * s, "symbol_silent", silent))
    conn.execute(  # a silence of the quotes explains nothing about the trades
        INSERT_GAP,
        (run, "SPY", T0 + 60 * s, T0 + 120 * s, "symbol_silent", "no quote for 60.0s"),
    )
    conn.commit()
    conn.close()

    closed = SessionConfig(enabled=False)
    assert gaps(db, session=closed).height == 0  # quotes: the default, unchanged
    g = gaps(db, kind="trades", session=closed)
    assert g.select("start_us", "end_us").rows() == [
        (T0 + 59 * s, T0 + 120 * s),
        (T0 + 179 * s, T0 + 240 * s),
    ]
    assert g["cause"].to_list() == ["rejects", "symbol_silent"]
    assert g["rejects"].to_list() == [3, 0] and g["silent_s"].to_list() == [0.0, 60.0]
    assert g["detail"][0] == "3 rejected trades (price_change)"
    assert "trades: no trade" in g["detail"][1]
    assert gaps(db, kind="trades", session=closed, at=T0 + 200 * s).height == 1
    with pytest.raises(ValueError, match="kind must be one of quotes, trades"):
        gaps(db, kind="bars")

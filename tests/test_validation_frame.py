"""validate_frame: column mappings, time zones, the result shape, and the real TAQ sample."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from robust_collector.model import Quote
from robust_collector.validation import (
    OUTPUT_COLUMNS,
    RULES,
    TAQ_COLUMNS,
    FrameResult,
    ValidationConfig,
    Validator,
    quotes_frame,
    validate_frame,
)

T0 = 1_700_000_000_000_000


def q(
    i: int,
    bid: float | None,
    ask: float | None,
    last: float | None = None,
    symbol: str = "SPY",
    ts: int | None = None,
) -> Quote:
    t = T0 + (i if ts is None else ts)
    return Quote(f"t{i}", symbol, i, t, t, bid, ask, 1.0, 1.0, last, "test")


def decisions(result: FrameResult) -> list[tuple[str, str | None, str | None]]:
    """(status, rule, reason or note) per row, comparable with streaming verdicts."""
    frame = result.frame.select("status", "reject_rule", pl.coalesce("reject_reason", "note"))
    return [tuple(r) for r in frame.iter_rows()]  # type: ignore[misc]


def streamed(
    quotes: list[Quote], config: ValidationConfig
) -> list[tuple[str, str | None, str | None]]:
    v = Validator(config)
    return [(x.status, x.rule, x.reason) for x in map(v.check, quotes)]


def test_result_shape_and_columns() -> None:
    quotes = [
        q(1, 99.99, 100.01),
        q(1, 99.99, 100.01),  # duplicate
        q(2, 100.02, 100.0),  # crossed
        q(3, 100.0, 100.0),  # locked
        q(4, 130.0, 130.02),  # price change
    ]
    df = quotes_frame(quotes)
    result = validate_frame(df)
    assert result.frame.columns == [*df.columns, *OUTPUT_COLUMNS]
    assert result.frame.height == df.height
    assert result.frame["status"].to_list() == [
        "accepted",
        "duplicate",
        "rejected",
        "accepted",
        "rejected",
    ]
    assert result.frame["reject_rule"].to_list() == [
        None,
        "duplicate",
        "crossed",
        None,
        "price_change",
    ]
    assert result.accepted.height == 2
    assert result.rejects["reject_rule"].to_list() == ["crossed", "price_change"]
    summary = dict(result.summary.select("rule", "count").iter_rows())
    assert list(summary) == [*RULES, "accepted"]
    assert summary["duplicate"] == 1 and summary["crossed"] == 1 and summary["accepted"] == 2
    assert result.summary["share"].sum() == pytest.approx(1.0)
    assert result.stats["total"]["locked"] == 1
    assert set(result.stats) == {"total", "symbols"}


def test_same_decisions_as_streaming_on_a_mixed_sequence() -> None:
    quotes = [
        q(1, 99.99, 100.01),
        q(2, math.nan, 100.01),
        q(3, 0.0, 100.01),
        q(4, None, None, last=100.02),
        q(5, 115.0, 115.02),
        q(6, 115.1, 115.12),
        q(7, 115.05, 115.07),
        q(8, 115.2, 115.22),
        q(9, 50.0, 50.02, symbol="QQQ"),
        q(10, 50.0, 50.02, symbol="QQQ", ts=3),
        q(11, 115.2, 115.22, ts=8),
        q(12, 20000.0, 20000.5),
        q(13, 99.0, None),
    ]
    config = ValidationConfig()
    assert decisions(validate_frame(quotes_frame(quotes), config)) == streamed(quotes, config)


def test_taq_style_columns_and_time_zone() -> None:
    df = pl.DataFrame(
        {
            "DT": [datetime(2018, 1, 2, 9, 30), datetime(2018, 1, 2, 9, 30, 1)],
            "EX": ["N", "N"],
            "BID": [156.0, 156.01],
            "BIDSIZ": [1, 2],
            "OFR": [156.05, 156.06],
            "OFRSIZ": [3, 4],
            "SYMBOL": ["XXX", "XXX"],
            "RECV": [datetime(2018, 1, 2, 9, 30, 5, tzinfo=UTC)] * 2,
        }
    )
    columns = {**TAQ_COLUMNS, "recv_us": "RECV"}
    as_utc = validate_frame(df, columns=columns, tz="UTC")
    assert as_utc.frame["status"].to_list() == ["accepted", "accepted"]
    # Read as New York time the same wall-clock rows are 5 hours later (14:30 UTC).
    as_ny = validate_frame(df, columns=columns, tz="America/New_York")
    assert as_ny.frame["reject_rule"].to_list() == ["future_timestamp"] * 2
    assert as_ny.frame["reject_reason"][0].startswith(
        "exchange time 2018-01-02T14:30:00.000000+00:00 is 17995.000 s after receive time"
    )
    # The original columns are kept as they are.
    assert as_ny.frame.select(df.columns).equals(df)


def test_integer_and_tz_aware_time_columns() -> None:
    ts = [T0, T0 + 1]
    ints = pl.DataFrame({"t": ts, "px": [10.0, 10.5]})
    aware = ints.with_columns(pl.from_epoch("t", time_unit="us").dt.replace_time_zone("UTC"))
    for df in (ints, aware):
        result = validate_frame(df, columns={"ts_us": "t", "last": "px"}, symbol="ABC")
        assert result.frame["status"].to_list() == ["accepted", "accepted"]
        assert list(result.stats["symbols"]) == ["ABC"]


def test_last_only_frame_without_bid_ask_columns() -> None:
    df = pl.DataFrame({"ts_us": [T0, T0 + 1, T0 + 2], "last": [100.0, 120.0, 101.0]})
    result = validate_frame(df)
    assert result.frame["reject_rule"].to_list() == [None, "price_change", None]


def test_lazy_frames_and_disabled_config() -> None:
    quotes = [q(1, math.nan, 1.0), q(1, math.nan, 1.0), q(2, 5.0, 1.0, symbol="B")]
    result = validate_frame(quotes_frame(quotes).lazy(), ValidationConfig(enabled=False))
    assert result.frame["status"].to_list() == ["accepted"] * 3
    assert result.stats["symbols"]["SPY"]["accepted"] == 2
    assert result.stats["total"]["accepted"] == 3


def test_bad_mappings_are_refused() -> None:
    df = pl.DataFrame({"ts_us": [T0], "last": [1.0], "when": ["x"]})
    with pytest.raises(ValueError, match="unknown quote fields"):
        validate_frame(df, columns={"ts_us": "ts_us", "price": "last"})
    with pytest.raises(ValueError, match="not in the frame"):
        validate_frame(df, columns={"ts_us": "ts_us", "last": "LAST"})
    with pytest.raises(ValueError, match="time column"):
        validate_frame(df, columns={"last": "last"})
    with pytest.raises(TypeError, match="Datetime or integer"):
        validate_frame(df, columns={"ts_us": "when", "last": "last"})


def test_empty_frame() -> None:
    result = validate_frame(quotes_frame([]))
    assert result.frame.height == 0
    assert result.summary["count"].sum() == 0


# --- the real TAQ sample ------------------------------------------------------------------------


def test_taq_sample_gets_a_decision_for_every_row(taq_dir: Path) -> None:
    df = pl.read_parquet(taq_dir / "sampleQDataRaw.parquet")
    result = validate_frame(df, ValidationConfig(), TAQ_COLUMNS, tz="UTC")
    frame = result.frame
    assert frame.height == df.height == 131_401
    assert frame["status"].null_count() == 0
    assert set(frame["status"].unique()) <= {"accepted", "rejected", "duplicate"}
    # A rule exactly when not accepted; a reason with every rule.
    assert frame.filter(
        (pl.col("status") == "accepted") != pl.col("reject_rule").is_null()
    ).is_empty()
    assert frame.filter(
        pl.col("reject_rule").is_not_null() & pl.col("reject_reason").is_null()
    ).is_empty()
    counts = dict(result.summary.select("rule", "count").iter_rows())
    assert sum(counts.values()) == df.height
    # The sample's documented quirk: 96 rows with a zero bid or ask.
    assert counts["non_positive"] == df.filter((pl.col("BID") <= 0) | (pl.col("OFR") <= 0)).height
    # Every bid above the ask in the sample is a zero ask: non_positive comes first.
    assert (
        counts["crossed"] == df.filter((pl.col("BID") > pl.col("OFR")) & (pl.col("OFR") > 0)).height
    )


def test_taq_sample_streaming_agrees_with_frame(
    taq_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="robust_collector.validation")
    df = pl.read_parquet(taq_dir / "sampleQDataRaw.parquet")
    config = ValidationConfig()
    result = validate_frame(df, config, TAQ_COLUMNS, tz="UTC")
    ts = df["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    quotes = [
        Quote(str(i), s, i, t, t, b, a, bs, az, None, "taq")
        for i, (t, b, a, bs, az, s) in enumerate(
            zip(ts, df["BID"], df["OFR"], df["BIDSIZ"], df["OFRSIZ"], df["SYMBOL"], strict=True)
        )
    ]
    v = Validator(config)
    assert decisions(result) == [(x.status, x.rule, x.reason) for x in map(v.check, quotes)]
    assert v.stats() == result.stats

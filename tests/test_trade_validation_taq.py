"""The trade rules on the real TAQ trade sample: what the default rules keep, and how the
BNHLS rules compare with the R highfrequency package's cleaned output (``sampleTData``).

The figures asserted here are the ones docs/validation.md reports.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import polars as pl
import pytest

from robust_collector.model import Trade
from robust_collector.validation import (
    TAQ_COLUMNS,
    TRADE_TAQ_COLUMNS,
    TradeRuleSwitches,
    TradeValidationConfig,
    TradeValidator,
    aggregate_same_timestamp,
    validate_trade_frame,
)

BNHLS = TradeValidationConfig(
    exchanges=("N",),
    rules=TradeRuleSwitches(
        outside_session=True, correction=True, abnormal_condition=True, outside_quote_band=True
    ),
)
"""highfrequency's tradesCleanup(exchanges = "N") + tradesCleanupUsingQuotes(lagQuotes = 0),
as rules: T1 session, one exchange, T2 corrections, T3 conditions, T4 the quote band."""


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="robust_collector.validation")


def counts(result) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in result.stats["total"].items() if v}


def test_default_rules_keep_every_trade_but_exact_repeats(taq_dir: Path) -> None:
    raw = pl.read_parquet(taq_dir / "sampleTDataRaw.parquet")
    assert raw.height == 77_263
    result = validate_trade_frame(raw, columns=TRADE_TAQ_COLUMNS)
    emitted = raw.height
    accepted, rejected, dups = result.accepted, result.rejects, result.duplicates
    assert accepted.height + rejected.height + dups.height == emitted
    # The sample is clean by the basic rules: nothing rejected, the exact repeats dropped.
    assert counts(result) == {"accepted": 71_413, "duplicate": 5_850}
    assert dups.height == raw.height - raw.unique().height
    # What is kept is exactly each distinct trade once, in order: two trades in one
    # microsecond at one price are two trades (29,156 kept trades share both with an
    # earlier kept trade that has another size, venue or conditions).
    kept = accepted.select(raw.columns)
    assert kept.equals(raw.unique(keep="first", maintain_order=True))
    assert kept.height - kept.unique(["DT", "PRICE"]).height == 29_156

    # The streaming engine, as a replay feeds it, keeps the same trades.
    ts = raw["DT"].dt.replace_time_zone("UTC").dt.epoch("us").to_list()
    v = TradeValidator()
    cols = zip(ts, raw["PRICE"], raw["SIZE"], raw["EX"], raw["COND"], raw["CORR"], strict=True)
    statuses = [
        v.check(Trade(f"t{i}", "XXX", i, t, t, p, float(z), ex, c, corr)).status
        for i, (t, p, z, ex, c, corr) in enumerate(cols)
    ]
    assert statuses == result.frame["status"].to_list()


def _bnhls(raw: pl.DataFrame, quotes: pl.DataFrame, config: TradeValidationConfig):  # type: ignore[no-untyped-def]
    result = validate_trade_frame(
        raw, config, quotes, columns=TRADE_TAQ_COLUMNS, quote_columns=TAQ_COLUMNS
    )
    merged = aggregate_same_timestamp(result.accepted, TRADE_TAQ_COLUMNS)
    return result, merged


def test_bnhls_rules_reproduce_highfrequencys_cleaned_trades(taq_dir: Path) -> None:
    # The raw file's DT is the package's float time truncated to microseconds: 37,558 trades
    # sit 1 us before their millisecond, while sampleQData (and sampleTData) were rounded.
    # Rounded to the millisecond, trades meet the quotes as they did in R.
    raw = pl.read_parquet(taq_dir / "sampleTDataRaw.parquet")
    assert (raw["DT"].dt.epoch("us") % 1000).is_in([0, 999]).all()
    raw = raw.with_columns(pl.col("DT").dt.round("1ms"))
    quotes = pl.read_parquet(taq_dir / "sampleQData.parquet")
    ref = pl.read_parquet(taq_dir / "sampleTData.parquet").with_columns(
        pl.col("SIZE").cast(pl.Int64)
    )
    assert ref.height == 7_168

    result, merged = _bnhls(raw, quotes, BNHLS)
    print("\nBNHLS rules on sampleTDataRaw (DT to the ms):", counts(result))
    # Each filter removes what the package's tradesCleanup report says it removes:
    # 451 outside 09:30-16:00, 65,625 on other exchanges, 0 corrections, 2 conditions.
    assert counts(result) == {
        "accepted": 10_776,
        "rejected": 66_081,
        "duplicate": 406,
        "outside_session": 451,
        "exchange": 65_625,
        "abnormal_condition": 2,
        "outside_quote_band": 3,
    }
    # Merged per timestamp (median price, summed size): the package's 7,168 rows, same times.
    assert merged.height == 7_168
    both = merged.join(ref, on=["DT", "SYMBOL"], suffix="_ref")
    assert both.height == 7_168
    price_differs = both.filter(pl.col("PRICE") != pl.col("PRICE_ref"))
    size_differs = both.filter(pl.col("SIZE") != pl.col("SIZE_ref"))
    print(
        "rows whose median price / summed size differ:", price_differs.height, size_differs.height
    )
    # The package merges exact repeats into the median and the summed size: the duplicate
    # rule drops them first (406 trades). And T4 judges each trade, the package the median.
    assert (price_differs.height, size_differs.height) == (49, 292)

    # Without the duplicate rule only T4's per-trade judgement differs: 3 trades, 1 median.
    no_dups = dataclasses.replace(BNHLS, rules=dataclasses.replace(BNHLS.rules, duplicate=False))
    result, merged = _bnhls(raw, quotes, no_dups)
    both = merged.join(ref, on=["DT", "SYMBOL"], suffix="_ref")
    assert merged.height == both.height == 7_168
    assert both.filter(pl.col("PRICE") != pl.col("PRICE_ref")).height == 1
    assert both.filter(pl.col("SIZE") != pl.col("SIZE_ref")).height == 3


def test_bnhls_rules_on_the_file_as_it_is(taq_dir: Path) -> None:
    # Without rounding, a trade 1 us before the quote it caused meets the previous quote:
    # 62 trades fall outside the band instead of 3, and 7 timestamps lose every trade.
    raw = pl.read_parquet(taq_dir / "sampleTDataRaw.parquet")
    quotes = pl.read_parquet(taq_dir / "sampleQData.parquet")
    result, merged = _bnhls(raw, quotes, BNHLS)
    print("\nBNHLS rules on sampleTDataRaw (DT as stored):", counts(result))
    assert result.stats["total"]["outside_quote_band"] == 62
    assert merged.height == 7_161

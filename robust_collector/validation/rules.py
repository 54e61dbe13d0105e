"""The one definition of the validation rules: ids, order, meaning and the stateless checks.

Both engines (the streaming ``Validator`` and the polars ``validate_frame``) take
the rule ids, the evaluation order and every reason text from here, so a rule
means the same thing in the live collector, the rejects table and a notebook.

Rules run in ``RULES`` order and the first failing rule wins. The stateless rules
(``bad_timestamp`` .. ``future_timestamp``) look at one quote alone; the stateful
ones compare it with what was last *accepted* for the same symbol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from robust_collector.boundary import TS_MAX_US, TS_MIN_US
from robust_collector.validation.config import ValidationConfig


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What one rule checks, where it comes from, and whether it needs history."""

    id: str
    description: str
    reference: str
    stateful: bool


RULE_INFO: Final[tuple[RuleInfo, ...]] = (
    RuleInfo(
        "duplicate",
        "the same quote as the last accepted one of the symbol (exchange time, bid, ask, "
        "sizes and last equal); dropped and counted, not a reject",
        "polling sources repeat unchanged quotes",
        True,
    ),
    RuleInfo(
        "bad_timestamp",
        "exchange time negative, after 2200, or before 1980 while the receive time is a "
        "real clock: a timestamp in the wrong unit (s, ms or ns read as us) or garbage",
        "input boundary",
        False,
    ),
    RuleInfo(
        "non_finite",
        "NaN or infinite bid, ask, last or size, or no price at all (no last and no bid/ask pair)",
        "data hygiene",
        False,
    ),
    RuleInfo(
        "non_positive",
        "zero or negative bid, ask or last, or a negative size",
        "BNHLS P2",
        False,
    ),
    RuleInfo(
        "crossed",
        "bid above ask (bid == ask is a locked quote: accepted, counted)",
        "BNHLS Q2",
        False,
    ),
    RuleInfo(
        "price_range",
        "price outside [min_price, max_price] (per-symbol overrides in price_ranges)",
        "seed",
        False,
    ),
    RuleInfo(
        "future_timestamp",
        "exchange time more than future_tolerance_seconds after the receive time",
        "clock sanity",
        False,
    ),
    RuleInfo(
        "out_of_order",
        "exchange time older than the last accepted quote of the symbol",
        "feed sanity (TAQ files are time-sorted)",
        True,
    ),
    RuleInfo(
        "spread_outlier",
        "spread above spread_outlier_k times the rolling median spread of accepted quotes",
        "BNHLS Q3",
        True,
    ),
    RuleInfo(
        "price_change",
        "price more than max_price_change_pct away from the last accepted price "
        "(re-anchors after reanchor_after agreeing rejected quotes)",
        "seed",
        True,
    ),
    RuleInfo(
        "mid_outlier",
        "mid more than mid_outlier_k mean absolute deviations from the rolling median "
        "of the previous mid_window accepted mids (trailing window)",
        "BNHLS Q4",
        True,
    ),
)

RULES: Final[tuple[str, ...]] = tuple(r.id for r in RULE_INFO)
"""Rule ids in evaluation order: the first failing rule names the verdict."""

STATELESS_RULES: Final[tuple[str, ...]] = tuple(r.id for r in RULE_INFO if not r.stateful)

# Relative slack so a move of exactly the limit (10.0 % written as 100 -> 110) is
# accepted despite binary rounding (110 / 100 - 1 == 0.10000000000000009).
LIMIT_SLACK: Final[float] = 1e-9


def price_range_for(config: ValidationConfig, symbol: str) -> tuple[float, float]:
    """The ``(min_price, max_price)`` that applies to ``symbol``."""
    override = config.price_ranges.get(symbol)
    if override is not None:
        return override.min_price, override.max_price
    return config.min_price, config.max_price


def future_tolerance_us(config: ValidationConfig) -> int:
    """``future_tolerance_seconds`` as whole microseconds (both engines compare ints)."""
    return round(config.future_tolerance_seconds * 1_000_000)


def bad_timestamp(ts_us: int, recv_us: int) -> bool:
    """Whether an exchange time is outside the sane window (see ``bad_timestamp``).

    Before 1980 counts only when the receive time is itself after 1980, so synthetic
    and replayed data with small epoch values stay valid."""
    return ts_us < 0 or ts_us > TS_MAX_US or (ts_us < TS_MIN_US <= recv_us)


def bad_timestamp_reason(ts_us: int) -> str:
    return (
        f"exchange time {ts_us} us ({fmt_us(ts_us)}) is outside 1980..2200: a timestamp in "
        "the wrong unit?"
    )


def fmt_us(us: int) -> str:
    """Epoch microseconds as an ISO UTC time, for reason texts."""
    try:
        return datetime.fromtimestamp(us / 1_000_000, tz=UTC).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return f"{us} us"


def stateless_failure(
    config: ValidationConfig,
    bid: float | None,
    ask: float | None,
    bid_size: float | None,
    ask_size: float | None,
    last: float | None,
    ts_us: int,
    recv_us: int,
    lo: float,
    hi: float,
) -> tuple[str, str] | None:
    """The first failing stateless rule as ``(rule, reason)``, or ``None``.

    Comparisons with NaN are false here (plain Python), so with ``non_finite``
    switched off a NaN fails only ``price_range``; the polars twin in
    ``frame.py`` guards its comparisons to mean the same.
    """
    rules = config.rules
    if rules.bad_timestamp and bad_timestamp(ts_us, recv_us):
        return "bad_timestamp", bad_timestamp_reason(ts_us)
    has_pair = bid is not None and ask is not None
    price = last if last is not None else ((bid + ask) / 2.0 if has_pair else None)  # type: ignore[operator]
    if price is None:
        # Nothing any other rule could judge: rejected even with the switch off.
        return "non_finite", "no price: neither a last price nor a bid/ask pair"
    if rules.non_finite:
        if bid is not None and not math.isfinite(bid):
            return "non_finite", f"bid {bid} is not finite"
        if ask is not None and not math.isfinite(ask):
            return "non_finite", f"ask {ask} is not finite"
        if last is not None and not math.isfinite(last):
            return "non_finite", f"last {last} is not finite"
        if bid_size is not None and not math.isfinite(bid_size):
            return "non_finite", f"bid size {bid_size} is not finite"
        if ask_size is not None and not math.isfinite(ask_size):
            return "non_finite", f"ask size {ask_size} is not finite"
    if rules.non_positive:
        if bid is not None and bid <= 0:
            return "non_positive", f"bid {bid:.2f} is not positive"
        if ask is not None and ask <= 0:
            return "non_positive", f"ask {ask:.2f} is not positive"
        if last is not None and last <= 0:
            return "non_positive", f"last {last:.2f} is not positive"
        if bid_size is not None and bid_size < 0:
            return "non_positive", f"bid size {bid_size:g} is negative"
        if ask_size is not None and ask_size < 0:
            return "non_positive", f"ask size {ask_size:g} is negative"
    if rules.crossed and has_pair and bid > ask:  # type: ignore[operator]
        return "crossed", f"crossed quote: bid {bid:.2f} > ask {ask:.2f}"
    if rules.price_range and not (lo <= price <= hi):
        return "price_range", f"price {price:.2f} out of range [{lo:.2f}, {hi:.2f}]"
    if rules.future_timestamp:
        tol = future_tolerance_us(config)
        if ts_us - recv_us > tol:
            return "future_timestamp", (
                f"exchange time {fmt_us(ts_us)} is {(ts_us - recv_us) / 1e6:.3f} s after "
                f"receive time {fmt_us(recv_us)} (tolerance {config.future_tolerance_seconds:g} s)"
            )
    return None


def has_nan(values: tuple[object, ...]) -> bool:
    """Whether any value is NaN: such a quote is never a duplicate (NaN equals nothing).

    Python's tuple equality sees the *same* NaN object as equal, so without this
    check a re-sent Quote object would be a duplicate live and not in a frame.
    """
    return any(v != v for v in values)  # only NaN differs from itself


def out_of_order_reason(ts_us: int, last_ts_us: int) -> str:
    return (
        f"exchange time {fmt_us(ts_us)} is {(last_ts_us - ts_us) / 1e6:.6f} s older than "
        f"the last accepted {fmt_us(last_ts_us)}"
    )


def spread_reason(spread: float, k: float, median: float, floor: float) -> str:
    base = f"spread {spread:.4f} above {k:g} x rolling median spread {median:.4f}"
    if floor > median:
        base += f" (floored at {floor:.4f})"
    return base


def price_change_reason(price: float, ref: float, limit_pct: float) -> str:
    # ref is 0 only with non_positive and price_range both switched off.
    move = (price / ref - 1.0) * 100 if ref else math.inf
    return f"price {price:.2f} moved {move:+.2f}% from {ref:.2f} (limit {limit_pct:g}%)"


def mid_outlier_reason(mid: float, median: float, mad: float, k: float) -> str:
    dist = abs(mid - median) / mad if mad > 0 else float("inf")
    return (
        f"mid {mid:.4f} is {dist:.1f} MADs from rolling median {median:.4f} "
        f"(limit {k:g}, MAD {mad:.4f})"
    )


def reanchor_note(price: float, count: int) -> str:
    return f"re-anchored at {price:.2f} after {count} agreeing quotes"

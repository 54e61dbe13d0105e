"""The validation section of the config: rule switches and thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from robust_collector.schema import setting


@dataclass(frozen=True)
class PriceRange:
    """A per-symbol override of the price range."""

    min_price: float = setting(doc="lowest accepted price for this symbol", gt=0)
    max_price: float = setting(doc="highest accepted price for this symbol", gt=0)


@dataclass(frozen=True)
class RuleSwitches:
    """Turn single rules on or off (all on by default)."""

    bad_timestamp: bool = setting(
        True, doc="reject exchange times outside 1980..2200 (a timestamp in the wrong unit)"
    )
    non_finite: bool = setting(True, doc="reject NaN or infinite price, bid or ask")
    non_positive: bool = setting(True, doc="reject zero or negative prices, negative sizes")
    price_range: bool = setting(True, doc="reject prices outside [min_price, max_price]")
    crossed: bool = setting(True, doc="reject quotes whose bid is above the ask")
    price_change: bool = setting(True, doc="reject jumps above max_price_change_pct")
    spread_outlier: bool = setting(True, doc="reject spreads far above the rolling median")
    mid_outlier: bool = setting(True, doc="reject mid-quotes far from the rolling median")
    out_of_order: bool = setting(True, doc="reject exchange times older than the last accepted")
    future_timestamp: bool = setting(True, doc="reject exchange times ahead of our clock")
    duplicate: bool = setting(True, doc="drop an unchanged quote seen again (not a reject)")


@dataclass(frozen=True)
class ValidationConfig:
    """Which quotes are good enough to store (the seed's validation section)."""

    enabled: bool = setting(True, doc="validate quotes before storing them")
    max_price_change_pct: float = setting(
        10.0, doc="largest accepted move from the last accepted price, in percent", gt=0
    )
    min_price: float = setting(1.0, doc="lowest accepted price", ge=0)
    max_price: float = setting(10000.0, doc="highest accepted price", gt=0)
    price_ranges: Mapping[str, PriceRange] = setting(
        {}, doc="per-symbol price range overrides, e.g. {BRK.A: {min_price: 1, max_price: 1e6}}"
    )
    reanchor_after: int = setting(
        3,
        doc="consecutive rejected prices agreeing at a new level after which the level is accepted",
        ge=1,
    )
    reanchor_tolerance_pct: float = setting(
        1.0, doc="how close (percent) rejected prices must be to count as agreeing", gt=0
    )
    spread_outlier_k: float = setting(
        50.0, doc="reject a spread above k times the rolling median spread", gt=0
    )
    spread_window: int = setting(500, doc="quotes in the rolling median spread window", ge=1)
    mid_outlier_k: float = setting(
        10.0, doc="reject a mid more than k mean absolute deviations from the rolling median", gt=0
    )
    mid_window: int = setting(50, doc="previous mid-quotes in the rolling median window", ge=3)
    mid_mad_floor_pct: float = setting(
        0.01,
        doc="floor on the mid window's mean absolute deviation, in percent of its median, "
        "so constant mids (MAD 0) do not reject every move",
        ge=0,
    )
    spread_floor_pct: float = setting(
        0.01,
        doc="floor on the rolling median spread, in percent of the mid, so a run of "
        "locked quotes (median 0) does not reject every spread",
        ge=0,
    )
    min_window_samples: int = setting(
        20, doc="samples a rolling window needs before the outlier rules apply", ge=1
    )
    future_tolerance_seconds: float = setting(
        5.0, doc="how far ahead of our clock an exchange time may be", ge=0
    )
    log_interval_seconds: float = setting(
        10.0, doc="at most one rejection warning per symbol and rule in this interval", ge=0
    )
    rules: RuleSwitches = setting(factory=RuleSwitches, doc="turn single rules on or off")

    def _check(self, path: str) -> None:
        from robust_collector.errors import ConfigError

        if self.min_price >= self.max_price:
            where = f"{path}.min_price" if path else "min_price"
            raise ConfigError(
                f"{where}: expected a number below max_price ({self.max_price}), "
                f"got {self.min_price!r}",
                path=where,
            )


HIGHFREQUENCY_VALID_CONDITIONS: tuple[str, ...] = (
    "@",
    "E",
    "@E",
    "F",
    "FI",
    "@F",
    "@FI",
    "I",
    "@I",
)
"""highfrequency's ``validConds`` without its empty string (see ``allow_no_conditions``)."""


@dataclass(frozen=True)
class TradeRuleSwitches:
    """Turn single trade rules on or off: the basics on, the BNHLS T1-T4 rules off."""

    duplicate: bool = setting(
        True, doc="drop a trade seen again (same provider id, or the whole record at its time)"
    )
    bad_timestamp: bool = setting(
        True, doc="reject exchange times outside 1980..2200 (a timestamp in the wrong unit)"
    )
    bad_price: bool = setting(True, doc="reject a NaN, infinite, zero or negative price")
    bad_size: bool = setting(True, doc="reject a NaN, infinite, zero or negative size")
    price_range: bool = setting(True, doc="reject prices outside [min_price, max_price]")
    future_timestamp: bool = setting(True, doc="reject exchange times ahead of our clock")
    out_of_order: bool = setting(True, doc="reject exchange times older than the last accepted")
    price_change: bool = setting(True, doc="reject jumps above max_price_change_pct")
    outside_session: bool = setting(
        False, doc="BNHLS T1: reject trades outside the session (session.open..close)"
    )
    correction: bool = setting(
        False, doc="BNHLS T2: reject corrected trades (correction indicator not 0)"
    )
    abnormal_condition: bool = setting(
        False, doc="BNHLS T3: reject sale conditions not in valid_conditions"
    )
    outside_quote_band: bool = setting(
        False, doc="BNHLS T4: reject prices outside the prevailing quote's band"
    )


@dataclass(frozen=True)
class TradingHours:
    """The session the ``outside_session`` rule keeps (both ends included, as highfrequency)."""

    timezone: str = setting("America/New_York", doc="IANA time zone of open and close")
    open: str = setting("09:30", doc="session open, HH:MM[:SS] local time (kept)")
    close: str = setting("16:00", doc="session close, HH:MM[:SS] local time (kept)")

    def _check(self, path: str) -> None:
        import datetime as dt
        import zoneinfo

        from robust_collector.errors import ConfigError

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{path}.timezone: expected an IANA time zone, got {self.timezone!r}",
                path=f"{path}.timezone",
            ) from None
        times = {}
        for key in ("open", "close"):
            value = getattr(self, key)
            try:
                t = dt.time.fromisoformat(value)
            except ValueError:
                t = None
            if t is None or t.microsecond or ":" not in value:
                raise ConfigError(
                    f"{path}.{key}: expected a time as HH:MM or HH:MM:SS, got {value!r}",
                    path=f"{path}.{key}",
                )
            times[key] = t
        if times["open"] >= times["close"]:
            raise ConfigError(
                f"{path}.close: expected a time after open ({self.open}), got {self.close!r}",
                path=f"{path}.close",
            )


@dataclass(frozen=True)
class TradeValidationConfig:
    """Which trades are good enough to store: basic sanity on, the BNHLS (2009) rules opt-in."""

    enabled: bool = setting(True, doc="validate trades before storing them")
    min_price: float = setting(1.0, doc="lowest accepted trade price", ge=0)
    max_price: float = setting(10000.0, doc="highest accepted trade price", gt=0)
    price_ranges: Mapping[str, PriceRange] = setting(
        {}, doc="per-symbol price range overrides, e.g. {BRK.A: {min_price: 1, max_price: 1e6}}"
    )
    max_price_change_pct: float = setting(
        10.0, doc="largest accepted move from the last accepted trade price, in percent", gt=0
    )
    reanchor_after: int = setting(
        3,
        doc="consecutive rejected trade prices agreeing at a new level after which the level "
        "is accepted",
        ge=1,
    )
    reanchor_tolerance_pct: float = setting(
        1.0, doc="how close (percent) rejected prices must be to count as agreeing", gt=0
    )
    future_tolerance_seconds: float = setting(
        5.0, doc="how far ahead of our clock an exchange time may be", ge=0
    )
    duplicate_id_window: int = setting(
        1000,
        doc="provider trade ids remembered per symbol to spot a re-sent trade",
        ge=1,
        le=1_000_000,
    )
    exchanges: tuple[str, ...] = setting(
        [], doc="keep only trades from these venues (TAQ EX codes, e.g. [N]); empty: every venue"
    )
    session: TradingHours = setting(
        factory=TradingHours, doc="the session of the outside_session rule"
    )
    valid_conditions: tuple[str, ...] = setting(
        list(HIGHFREQUENCY_VALID_CONDITIONS),
        doc="sale conditions (white space removed) of a regular trade, for abnormal_condition",
    )
    allow_no_conditions: bool = setting(
        True, doc="a trade without sale conditions is a regular trade (abnormal_condition)"
    )
    quote_band_spreads: float = setting(
        1.0,
        doc="outside_quote_band keeps prices within bid - k x spread .. ask + k x spread",
        ge=0,
    )
    quote_history: int = setting(
        256,
        doc="recent quotes kept per symbol to find the quote prevailing at a late trade's time",
        ge=1,
        le=1_000_000,
    )
    log_interval_seconds: float = setting(
        10.0, doc="at most one rejection warning per symbol and rule in this interval", ge=0
    )
    rules: TradeRuleSwitches = setting(
        factory=TradeRuleSwitches, doc="turn single trade rules on or off"
    )

    def _check(self, path: str) -> None:
        from robust_collector.errors import ConfigError

        if self.min_price >= self.max_price:
            where = f"{path}.min_price" if path else "min_price"
            raise ConfigError(
                f"{where}: expected a number below max_price ({self.max_price}), "
                f"got {self.min_price!r}",
                path=where,
            )

"""What the collector reports: per-symbol counters and immutable status snapshots."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from robust_collector.model import Quote
from robust_collector.runtime.supervisor import UnitStatus
from robust_collector.storage.writer import WriterStats

__all__ = ["CollectorStatus", "LatestQuote", "SymbolCounters", "SymbolStatus"]


@dataclass(frozen=True)
class SymbolStatus:
    """One symbol's counters and latest state, as of the snapshot."""

    symbol: str
    fetches: int
    quotes: int
    accepted: int
    stored: int
    rejects: int
    duplicates: int
    errors: int
    last_price: float | None
    last_quote_us: int | None
    last_error: str | None
    overruns: int
    breaker_state: str
    breaker_since_us: int | None
    breaker_reason: str | None
    breaker_rejections: int
    retries: int
    retry_successes: int
    give_ups: int
    rejects_by_rule: Mapping[str, int]
    locked: int
    reanchors: int
    lost: int = 0  # quotes a crash of the pipeline dropped (counted, never silent)
    failed_attempts: int = 0  # requests that failed (errors counts failed polls)
    trades: int = 0  # trades received (the counts below are the trades' own)
    trades_accepted: int = 0
    trades_stored: int = 0
    trade_rejects: int = 0
    trade_duplicates: int = 0
    trades_lost: int = 0
    last_trade_price: float | None = None
    last_trade_us: int | None = None
    trade_rejects_by_rule: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # the trade polls' own breaker (SYM:trades); None: no trade poll has run (or a stream)
    trade_breaker_state: str | None = None
    trade_breaker_since_us: int | None = None
    trade_breaker_reason: str | None = None


@dataclass(frozen=True)
class CollectorStatus:
    """An immutable snapshot of the whole collector, safe to read from any thread."""

    run_id: str
    running: bool
    started_us: int | None
    uptime_seconds: float
    database: str
    symbols: Mapping[str, SymbolStatus]
    storage: WriterStats | None
    breaker_transitions: int
    health_level: str | None
    units: Mapping[str, UnitStatus] = dataclasses.field(default_factory=dict)

    @property
    def stored(self) -> int:
        return sum(s.stored for s in self.symbols.values())

    @property
    def rejects(self) -> int:
        return sum(s.rejects for s in self.symbols.values())

    @property
    def trades_stored(self) -> int:
        return sum(s.trades_stored for s in self.symbols.values())

    @property
    def trade_rejects(self) -> int:
        return sum(s.trade_rejects for s in self.symbols.values())

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.symbols.values())

    @property
    def failed_attempts(self) -> int:
        return sum(s.failed_attempts for s in self.symbols.values())

    def line(self, *, accepted: bool = False) -> str:
        """A one-line summary for terminals and logs: the health level (``STARTING`` while
        a running collector has had no health check yet), the totals (with ``accepted``,
        the quotes accepted too), then the ticks stored per symbol."""
        parts = [
            f"stored {self.stored}",
            f"rejects {self.rejects}",
            f"errors {self.errors}",
        ]
        if accepted:
            parts.insert(0, f"accepted {sum(s.accepted for s in self.symbols.values())}")
        if any(s.trades for s in self.symbols.values()):  # only when trades are collected
            parts[1:1] = [f"trades {self.trades_stored}", f"trade rejects {self.trade_rejects}"]
        if self.storage is not None and self.storage.mode != "database":
            parts.append(f"storage {self.storage.mode.upper()}")
        syms = ", ".join(
            f"{s.symbol} {s.stored}"
            + (f" [{s.breaker_state}]" if s.breaker_state not in ("CLOSED", "DISABLED") else "")
            for s in self.symbols.values()
        )
        for u in self.units.values():
            if u.state == "restarting":
                parts.append(f"{u.name} RESTARTING")
        level = self.health_level or ("STARTING" if self.running else None)
        if level is not None:
            parts.insert(0, level)
        return "  ".join(parts) + "  | stored per symbol: " + syms


class SymbolCounters:
    """One symbol's running counters, written by the pipeline and drivers on the loop."""

    __slots__ = (
        "accepted",
        "breaker_reason",
        "breaker_since_us",
        "duplicates",
        "errors",
        "failed_attempts",
        "fetches",
        "last_attempt_error",
        "last_error",
        "last_price",
        "last_quote_us",
        "last_trade_price",
        "last_trade_us",
        "lost",
        "overruns",
        "quotes",
        "rejects",
        "trade_breaker_reason",
        "trade_breaker_since_us",
        "trade_duplicates",
        "trade_rejects",
        "trades",
        "trades_accepted",
        "trades_lost",
    )

    def __init__(self) -> None:
        self.fetches = self.quotes = self.accepted = self.rejects = 0
        self.duplicates = self.errors = self.overruns = self.lost = 0
        self.failed_attempts = 0
        self.trades = self.trades_accepted = self.trade_rejects = 0
        self.trade_duplicates = self.trades_lost = 0
        self.last_trade_price: float | None = None
        self.last_trade_us: int | None = None
        self.last_attempt_error: BaseException | None = None
        self.last_price: float | None = None
        self.last_quote_us: int | None = None
        self.last_error: str | None = None
        self.breaker_since_us: int | None = None
        self.breaker_reason: str | None = None
        self.trade_breaker_since_us: int | None = None
        self.trade_breaker_reason: str | None = None


@dataclass(frozen=True)
class LatestQuote:
    """The last good quote of a symbol, with its age: the cached fallback."""

    quote: Quote
    age_seconds: float
    stale: bool

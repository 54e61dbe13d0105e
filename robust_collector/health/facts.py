"""Typed facts a component reports to its health checker: one dataclass per kind of state.

The runtime writes them (breaker, storage, stream, supervision) and ``rules.evaluate``
reads them; ``Facts`` has slots, so a misspelt fact is an error, not a rule silently off.
``metrics()`` flattens them into the plain keys stored with every snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BreakerFacts:
    """A symbol's circuit breaker: its state, since when (epoch s) and why."""

    state: str  # CLOSED, OPEN, HALF_OPEN or DISABLED
    since: float | None = None
    reason: str | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "breaker_state": self.state,
            "breaker_since": self.since,
            "breaker_reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class TradeFacts:
    """A symbol's trades, counted apart from its quotes (the symbol collects trades)."""

    received: int
    stored: int
    rejected: int
    last_trade_age_seconds: float | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "trades_received": self.received,
            "trades_stored": self.stored,
            "trade_rejects": self.rejected,
            "trade_age_seconds": self.last_trade_age_seconds,
        }


@dataclass(frozen=True, slots=True)
class TroubledUnit:
    """A supervised unit that is restarting or crashed within the last minute."""

    unit: str
    state: str
    restarts: int
    recent_crashes: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class CollectorFacts:
    """The collector's own machinery: troubled supervised units, a stalled event loop."""

    units_troubled: tuple[TroubledUnit, ...] = ()
    crash_loop_threshold: int = 5
    loop_stalled_seconds: float | None = None

    def metrics(self) -> dict[str, Any]:
        return {
            "units_troubled": [asdict(u) for u in self.units_troubled],
            "crash_loop_threshold": self.crash_loop_threshold,
            "loop_stalled_seconds": self.loop_stalled_seconds,
        }


@dataclass(frozen=True, slots=True)
class StorageFacts:
    """The database writer: alive, restarting or crash-looping; its mode, queue, backlog
    and losses."""

    writer_alive: bool = True
    writer_recent_crashes: int = 0  # crashes in the last minute
    writer_crashes: int = 0
    writer_restarting: bool = False  # its loop crashed and has not run a full cycle again
    writer_restarting_since: float | None = None  # wall-clock seconds of the crash
    writer_last_crash: str | None = None
    reopened_at: float | None = None  # epoch s: the database file was found gone or replaced
    reopen_reason: str | None = None
    crash_loop_threshold: int = 5  # recent crashes that make a restarting writer CRITICAL
    storage_mode: str = "database"  # database, backup or failing
    queue_depth: int = 0
    held_rows: int = 0
    lost_rows: int = 0
    queue_full_spills: int = 0
    backup_files: int = 0
    ticks_to_backup: int = 0

    def metrics(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamFacts:
    """A streaming source's connection: state, why it is down, reconnects, its queue."""

    state: str  # connecting, connected, reconnecting, failed, stopped
    error: str | None = None
    down_cause: str | None = None
    down_seconds: float = 0.0
    reconnects: int = 0
    reconnect_attempts: int = 0
    queue_depth: int = 0
    queue_max: int = 0
    spills: int = 0
    spilled_messages: int = 0
    malformed_messages: int = 0

    def metrics(self) -> dict[str, Any]:
        return {
            "stream_state": self.state,
            "stream_error": self.error,
            "stream_down_cause": self.down_cause,
            "stream_down_seconds": self.down_seconds,
            "reconnects": self.reconnects,
            "reconnect_attempts": self.reconnect_attempts,
            "stream_queue_depth": self.queue_depth,
            "stream_queue_max": self.queue_max,
            "stream_spills": self.spills,
            "stream_spilled_messages": self.spilled_messages,
            "malformed_messages": self.malformed_messages,
        }


@dataclass(frozen=True, slots=True)
class SilenceFacts:
    """A streamed symbol's silence: silent or not, for how long, against what threshold."""

    silent: bool = False
    silent_seconds: float = 0.0
    threshold_seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        return {
            "silent": self.silent,
            "silent_seconds": self.silent_seconds,
            "silence_threshold_seconds": self.threshold_seconds,
        }


@dataclass(slots=True)
class Facts:
    """Everything one component reports besides its counts; each part is None until set."""

    breaker: BreakerFacts | None = None
    trade_breaker: BreakerFacts | None = None  # the symbol's trade polls (SYM:trades)
    trades: TradeFacts | None = None  # a symbol that collects trades: their own counts
    collector: CollectorFacts | None = None
    storage: StorageFacts | None = None
    stream: StreamFacts | None = None
    silence: SilenceFacts | None = None
    paused: str | None = None  # why a source was paused (credentials refused)
    refused: str | None = None  # why a stream's server refused this symbol
    expects_data: bool = True  # False once a symbol's source has ended (a finished replay)

    def metrics(self) -> dict[str, Any]:
        """The facts as plain keys, the way snapshots store and dashboards read them."""
        out: dict[str, Any] = {}
        for part in (self.breaker, self.collector, self.storage, self.stream, self.silence):
            if part is not None:
                out.update(part.metrics())
        if self.trades is not None:
            out.update(self.trades.metrics())
        if self.trade_breaker is not None:
            out.update({f"trades_{k}": v for k, v in self.trade_breaker.metrics().items()})
        if self.paused is not None:
            out["source_paused"] = self.paused
        if self.refused is not None:
            out["subscription_refused"] = self.refused
        if not self.expects_data:
            out["expects_data"] = False
        return out

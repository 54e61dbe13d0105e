"""What the dashboard reads from a collector in this process, as Protocols.

``Collector`` satisfies them; the dashboard names them instead of importing it, so it
depends only on storage, health and lower layers, and a stand-in collector works too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import polars as pl

    from robust_collector.config import Config
    from robust_collector.health import HealthSnapshot
    from robust_collector.resilience import BreakerRegistry
    from robust_collector.storage.writer import WriterStats

__all__ = ["CollectorState", "LiveCollector", "SymbolState"]


class SymbolState(Protocol):
    """One symbol's row of a status snapshot (``SymbolStatus``): the fields shown."""

    @property
    def symbol(self) -> str: ...
    @property
    def breaker_state(self) -> str: ...
    @property
    def breaker_since_us(self) -> int | None: ...
    @property
    def breaker_reason(self) -> str | None: ...
    @property
    def last_price(self) -> float | None: ...
    @property
    def last_quote_us(self) -> int | None: ...
    @property
    def stored(self) -> int: ...
    @property
    def rejects(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def trades(self) -> int: ...
    @property
    def trades_stored(self) -> int: ...
    @property
    def trade_rejects(self) -> int: ...


class CollectorState(Protocol):
    """An immutable status snapshot (``CollectorStatus``): the fields shown."""

    @property
    def run_id(self) -> str: ...
    @property
    def running(self) -> bool: ...
    @property
    def started_us(self) -> int | None: ...
    @property
    def database(self) -> str: ...
    @property
    def symbols(self) -> Mapping[str, SymbolState]: ...
    @property
    def storage(self) -> WriterStats | None: ...
    @property
    def stored(self) -> int: ...
    @property
    def rejects(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def trades_stored(self) -> int: ...
    @property
    def trade_rejects(self) -> int: ...


class LiveCollector(Protocol):
    """A running (or not yet started, or stopped) collector the live dashboard watches.

    Optional: ``storage_breaker``, the database's ``CircuitBreaker`` once started (read
    with ``getattr``; missing or ``None`` before that).
    """

    @property
    def config(self) -> Config: ...
    @property
    def run_id(self) -> str: ...
    @property
    def db_path(self) -> Path | str: ...
    @property
    def breakers(self) -> BreakerRegistry | None: ...

    def status(self) -> CollectorState:
        """An immutable snapshot of the counters and breaker states."""
        ...

    def health(self) -> HealthSnapshot:
        """The health levels evaluated now."""
        ...

    def errors(self, limit: int | None = None) -> pl.DataFrame:
        """The newest ``limit`` errors: ts, component, symbol, error_type, message."""
        ...

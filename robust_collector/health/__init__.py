"""Health monitoring: per-component checkers, four ordered levels, reasons for each.

A ``HealthChecker`` per component (the collector, each symbol, the source,
storage) counts operations over a rolling window and holds the component's typed
facts (``facts.py``: breaker, storage, stream, supervision); ``rules.evaluate``
turns them into a level with the reasons that caused it, ``SystemHealthMonitor``
keeps the system's snapshot and bounded history. ``store`` persists snapshots and
the heartbeat, ``report`` answers ``robust-collector health``, ``fleet`` reads
every instance writing into one database. Time is injected throughout.
"""

from robust_collector.health.checker import HealthChecker
from robust_collector.health.facts import (
    BreakerFacts,
    CollectorFacts,
    Facts,
    SilenceFacts,
    StorageFacts,
    StreamFacts,
    TradeFacts,
    TroubledUnit,
)
from robust_collector.health.levels import ComponentHealth, ErrorRecord, HealthLevel, HealthSnapshot
from robust_collector.health.monitor import SystemHealthMonitor
from robust_collector.health.rules import evaluate
from robust_collector.health.session import MarketSession

__all__ = [
    "BreakerFacts",
    "CollectorFacts",
    "ComponentHealth",
    "ErrorRecord",
    "Facts",
    "HealthChecker",
    "HealthLevel",
    "HealthSnapshot",
    "MarketSession",
    "SilenceFacts",
    "StorageFacts",
    "StreamFacts",
    "SystemHealthMonitor",
    "TradeFacts",
    "TroubledUnit",
    "evaluate",
]

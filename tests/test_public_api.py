"""The public API is pinned: a name added to or dropped from ``robust_collector.__all__``
fails here, so the change is made on purpose (and noted in CHANGELOG.md)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import robust_collector

PUBLIC = {
    "AuthenticationError",
    "Backend",
    "BadRequestError",
    "BoundaryError",
    "BreakerRegistry",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "CircuitOpenError",
    "Collector",
    "CollectorError",
    "CollectorStatus",
    "ComponentHealth",
    "Config",
    "ConfigError",
    "EndOfData",
    "FrameResult",
    "HealthChecker",
    "HealthLevel",
    "HealthSnapshot",
    "HttpSource",
    "HttpSourceConfig",
    "InstanceStatus",
    "LatestQuote",
    "MalformedResponseError",
    "ManualClock",
    "MarketSession",
    "PermanentSourceError",
    "PoolWaitError",
    "PostgresBackend",
    "Quote",
    "Trade",
    "TradeValidator",
    "RULES",
    "RateLimitError",
    "RateLimitGate",
    "ReplaySource",
    "ReplaySourceConfig",
    "RetryInterrupted",
    "RetryPolicy",
    "RetryStats",
    "SQLiteBackend",
    "SimulatedSource",
    "Source",
    "SourceError",
    "StorageError",
    "StorageWriter",
    "StreamSource",
    "Supervisor",
    "SymbolStatus",
    "SystemHealthMonitor",
    "TAQ_COLUMNS",
    "TransientSourceError",
    "UnitStatus",
    "UnknownSymbolError",
    "ValidationConfig",
    "Validator",
    "Verdict",
    "WebSocketSource",
    "WebSocketSourceConfig",
    "__version__",
    "create_source",
    "fleet_status",
    "health_history",
    "iter_quotes",
    "latest_snapshot",
    "load_config",
    "make_backend",
    "read_ticks",
    "read_trade_rejects",
    "read_trades",
    "recent_errors",
    "redact",
    "register_secret",
    "register_source",
    "validate_frame",
}


def test_the_public_names_are_exactly_the_pinned_ones():
    assert set(robust_collector.__all__) == PUBLIC
    assert len(robust_collector.__all__) == len(PUBLIC)  # no name listed twice
    for name in PUBLIC:
        assert getattr(robust_collector, name) is not None, name


def test_the_version_has_one_source():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=", pyproject, re.M), "the version lives in __init__.py"
    assert importlib.metadata.version("robust-collector") == robust_collector.__version__

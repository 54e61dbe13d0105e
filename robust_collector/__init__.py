"""robust_collector: a fault-tolerant market-data collector for JupyterLab.

Per-symbol circuit breakers, retry with backoff, data validation, health
monitoring and JSONL backup when the database fails, in a background thread.
"""

import logging

from robust_collector.boundary import BoundaryError
from robust_collector.collector import (
    Collector,
    CollectorStatus,
    LatestQuote,
    SymbolStatus,
)
from robust_collector.config import Config, load_config
from robust_collector.errors import (
    CircuitOpenError,
    CollectorError,
    ConfigError,
    PermanentSourceError,
    PoolWaitError,
    RateLimitError,
    SourceError,
    StorageError,
    TransientSourceError,
)
from robust_collector.health import (
    ComponentHealth,
    HealthChecker,
    HealthLevel,
    HealthSnapshot,
    MarketSession,
    SystemHealthMonitor,
)
from robust_collector.health.fleet import InstanceStatus, fleet_status
from robust_collector.health.store import health_history, latest_snapshot, recent_errors
from robust_collector.model import Quote, Trade
from robust_collector.resilience import (
    BreakerRegistry,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
    ManualClock,
    RateLimitGate,
    RetryInterrupted,
    RetryPolicy,
    RetryStats,
)
from robust_collector.runtime.supervisor import Supervisor, UnitStatus
from robust_collector.secrets import redact, register_secret
from robust_collector.sources import (
    AuthenticationError,
    BadRequestError,
    EndOfData,
    HttpSource,
    HttpSourceConfig,
    MalformedResponseError,
    ReplaySource,
    ReplaySourceConfig,
    SimulatedSource,
    Source,
    StreamSource,
    UnknownSymbolError,
    WebSocketSource,
    WebSocketSourceConfig,
    create_source,
    iter_quotes,
    register_source,
)
from robust_collector.storage.backend import Backend, SQLiteBackend, make_backend
from robust_collector.storage.postgres import PostgresBackend
from robust_collector.storage.reader import read_ticks, read_trade_rejects, read_trades
from robust_collector.storage.writer import StorageWriter
from robust_collector.validation import (
    RULES,
    TAQ_COLUMNS,
    FrameResult,
    TradeValidator,
    ValidationConfig,
    Validator,
    Verdict,
    validate_frame,
)

__version__ = "0.1.0"

# A library logs, the application decides where: without this, warnings from the
# collector's threads would print into whichever notebook cell ran last.
logging.getLogger("robust_collector").addHandler(logging.NullHandler())

__all__ = [
    "RULES",
    "TAQ_COLUMNS",
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
    "Trade",
    "TradeValidator",
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
]

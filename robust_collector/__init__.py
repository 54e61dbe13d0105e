"""robust_collector: a fault-tolerant market-data collector for JupyterLab."""

from robust_collector.errors import (
    CircuitOpenError,
    CollectorError,
    ConfigError,
    PermanentSourceError,
    RateLimitError,
    SourceError,
    StorageError,
    TransientSourceError,
)

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "CollectorError",
    "ConfigError",
    "PermanentSourceError",
    "RateLimitError",
    "SourceError",
    "StorageError",
    "TransientSourceError",
    "__version__",
]

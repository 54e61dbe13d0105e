"""robust_collector: a fault-tolerant market-data collector for JupyterLab."""

from robust_collector.collector import Collector, CollectorStatus, SymbolStatus
from robust_collector.config import Config, load_config
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
from robust_collector.model import Quote
from robust_collector.sources import SimulatedSource, Source, create_source, register_source
from robust_collector.storage.reader import read_ticks

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "Collector",
    "CollectorError",
    "CollectorStatus",
    "Config",
    "ConfigError",
    "PermanentSourceError",
    "Quote",
    "RateLimitError",
    "SimulatedSource",
    "Source",
    "SourceError",
    "StorageError",
    "SymbolStatus",
    "TransientSourceError",
    "__version__",
    "create_source",
    "load_config",
    "read_ticks",
    "register_source",
]

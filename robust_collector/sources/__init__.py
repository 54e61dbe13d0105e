"""Market-data sources, picked by ``source.type`` in the config.

- ``simulated``: the offline random-walk feed with fault injection;
- ``http``: latest quotes from a REST API (alpaca, polygon, finnhub, custom);
- ``replay``: a recorded CSV, Parquet or JSONL file replayed as a feed.

Importing this package registers all three with ``create_source``.
"""

from robust_collector.sources.base import Source, create_source, register_source
from robust_collector.sources.http import (
    AuthenticationError,
    BadRequestError,
    HttpSource,
    MalformedResponseError,
    UnknownSymbolError,
)
from robust_collector.sources.replay import EndOfData, ReplaySource, read_quotes_file
from robust_collector.sources.settings import (
    FieldMapConfig,
    HttpSourceConfig,
    ReplaySourceConfig,
)
from robust_collector.sources.simulated import FaultState, SimulatedSource

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "EndOfData",
    "FaultState",
    "FieldMapConfig",
    "HttpSource",
    "HttpSourceConfig",
    "MalformedResponseError",
    "ReplaySource",
    "ReplaySourceConfig",
    "SimulatedSource",
    "Source",
    "UnknownSymbolError",
    "create_source",
    "read_quotes_file",
    "register_source",
]

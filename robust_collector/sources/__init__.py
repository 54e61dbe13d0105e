"""Market-data sources, picked by ``source.type`` in the config.

- ``simulated``: the offline random-walk feed with fault injection;
- ``http``: latest quotes from a REST API (alpaca, polygon, finnhub, custom);
- ``replay``: a recorded CSV, Parquet or JSONL file replayed as a feed;
- ``websocket``: quotes streamed over one WebSocket (alpaca, polygon), the
  streaming form of the protocol (``StreamSource``).

Importing this package registers all four with ``create_source``.
"""

from robust_collector.sources.base import (
    Source,
    SourceTraits,
    TradeSource,
    create_source,
    kinds_for,
    register_source,
    traits_of,
)
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
    TradeFieldMapConfig,
    WebSocketSourceConfig,
)
from robust_collector.sources.simulated import FaultState, SimulatedSource
from robust_collector.sources.stream import (
    ReconnectBackoff,
    SilenceDetector,
    StreamAuthError,
    StreamClosed,
    StreamRefused,
    StreamSource,
    is_streaming,
    iter_quotes,
)
from robust_collector.sources.websocket import WebSocketSource

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "EndOfData",
    "FaultState",
    "FieldMapConfig",
    "HttpSource",
    "HttpSourceConfig",
    "MalformedResponseError",
    "ReconnectBackoff",
    "ReplaySource",
    "ReplaySourceConfig",
    "SilenceDetector",
    "SimulatedSource",
    "Source",
    "SourceTraits",
    "StreamAuthError",
    "StreamClosed",
    "StreamRefused",
    "StreamSource",
    "TradeFieldMapConfig",
    "TradeSource",
    "UnknownSymbolError",
    "WebSocketSource",
    "WebSocketSourceConfig",
    "create_source",
    "is_streaming",
    "iter_quotes",
    "kinds_for",
    "read_quotes_file",
    "register_source",
    "traits_of",
]

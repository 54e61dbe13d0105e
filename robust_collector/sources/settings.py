"""Config sections of the real sources: ``source: {type: http | replay | websocket, ...}``.

Built with ``schema.setting`` like every other section, so ``load_config`` checks
them with key-path errors and ``configdoc`` documents them. Credentials are never
config values: the config NAMES the environment variables that hold them.
"""

from __future__ import annotations

import string
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from robust_collector.boundary import INT64_MAX, INT64_MIN
from robust_collector.errors import ConfigError
from robust_collector.schema import setting
from robust_collector.validation.frame import FIELDS

DATA_KINDS: tuple[str, ...] = ("quotes", "trades")
DataKind = Literal["quotes", "trades"]


def data_setting() -> Any:
    """The ``data`` key every source section has: which kinds it collects."""
    return setting(
        ["quotes"],
        doc="what this source collects for every symbol not in data_by_symbol: "
        "[quotes], [trades] or [quotes, trades]",
    )


def data_by_symbol_setting() -> Any:
    """The ``data_by_symbol`` key: the kinds of one symbol, overriding ``data``."""
    return setting(
        {},
        doc="the kinds of a symbol, overriding data, e.g. {SPY: [quotes, trades], IWM: [trades]}",
    )


def wanted_kinds(config: Any) -> frozenset[str]:
    """Every kind some symbol of ``config`` may collect (``data`` and each override)."""
    kinds = set(config.data)
    for value in config.data_by_symbol.values():
        kinds.update(value)
    return frozenset(kinds)


def check_kinds(config: Any, path: str, serves: frozenset[str], why: str = "") -> None:
    """One-line ``ConfigError`` for an empty kind list, or a kind the source cannot serve
    (``why`` says what it lacks)."""
    p = f"{path}." if path else ""
    lists = [(f"{p}data", config.data)]
    lists += [(f"{p}data_by_symbol.{s}", v) for s, v in config.data_by_symbol.items()]
    for where, kinds in lists:
        if not kinds:
            raise ConfigError(
                f"{where}: empty; list at least one of {', '.join(DATA_KINDS)}", path=where
            )
        for kind in kinds:
            if kind not in serves:
                hint = f": {why}" if why else ""
                raise ConfigError(f"{where}: this source cannot collect {kind}{hint}", path=where)


@dataclass(frozen=True)
class OutageConfig:
    """A stretch of time during which every fetch fails."""

    start_seconds: float = setting(doc="seconds after the source starts", ge=0)
    duration_seconds: float = setting(doc="how long every fetch fails", gt=0)


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection for the simulated source (all off by default)."""

    error_rate: float = setting(
        0.0, doc="probability a fetch fails with a transient error", ge=0, le=1
    )
    latency_seconds: float = setting(0.0, doc="latency added to every fetch", ge=0)
    symbol_latency_seconds: Mapping[str, float] = setting(
        {}, doc="latency added to one symbol's fetches, e.g. {IWM: 5.0}", ge=0
    )
    outages: tuple[OutageConfig, ...] = setting([], doc="windows in which every fetch fails")
    failing_symbols: tuple[str, ...] = setting([], doc="symbols whose every fetch fails")
    bad_tick_rate: float = setting(
        0.0, doc="probability a quote is bad (spike, crossed, NaN, zero)", ge=0, le=1
    )
    duplicate_rate: float = setting(
        0.0, doc="probability a fetch repeats the previous quote", ge=0, le=1
    )
    rate_limit_rate: float = setting(
        0.0, doc="probability a fetch is rate-limited (429-like)", ge=0, le=1
    )
    rate_limit_retry_after_seconds: float = setting(
        1.0, doc="retry-after carried by a rate-limit error", ge=0
    )


@dataclass(frozen=True)
class SimulatedSourceConfig:
    """The built-in offline feed: per-symbol random walks, deterministic with a seed."""

    type: Literal["simulated"] = setting("simulated", doc="source type")
    data: tuple[DataKind, ...] = data_setting()
    data_by_symbol: Mapping[str, tuple[DataKind, ...]] = data_by_symbol_setting()
    seed: int = setting(
        42, doc="random seed; the same seed gives the same quotes", ge=INT64_MIN, le=INT64_MAX
    )
    start_prices: Mapping[str, float] = setting(
        {},
        doc="starting mid price per symbol (defaults: SPY 520, QQQ 450, IWM 210, others 100)",
        gt=0,
    )
    volatility_bps: float = setting(
        2.0, doc="standard deviation of each step, in basis points", ge=0
    )
    faults: FaultConfig = setting(factory=FaultConfig, doc="fault injection knobs")

    def _check(self, path: str) -> None:
        check_kinds(self, path, frozenset(DATA_KINDS))


HTTP_PRESETS: tuple[str, ...] = ("alpaca", "polygon", "finnhub", "custom")
HTTP_TRADE_PRESETS: tuple[str, ...] = ("alpaca", "polygon")
"""The REST presets whose provider serves a symbol's latest trade."""
_NO_REST_TRADES = {
    "finnhub": "finnhub's REST API has no latest-trade endpoint (/quote is a last price "
    "without size or venue, and its trades stream only over its WebSocket); use alpaca or "
    "polygon",
    "custom": "the custom preset maps no trade fields (set trade_fields.price and "
    "trade_fields.timestamp)",
}
TIMESTAMP_FORMATS: tuple[str, ...] = ("rfc3339", "unix_s", "unix_ms", "unix_us", "unix_ns")
TEMPLATE_FIELDS: frozenset[str] = frozenset({"symbol", "base_url", "api_key", "api_secret"})


def _check_template(text: str, where: str) -> None:
    """Refuse placeholders other than ``TEMPLATE_FIELDS`` (and malformed braces)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: bad template {text!r} ({exc})", path=where) from None
    for name in names:
        if name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + n + "}" for n in sorted(TEMPLATE_FIELDS))
            raise ConfigError(
                f"{where}: unknown placeholder {{{name}}} in {text!r}; known: {known}", path=where
            )


@dataclass(frozen=True)
class FieldMapConfig:
    """Where the ``custom`` preset finds each quote field in the JSON body (dotted paths)."""

    timestamp: str | None = setting(
        None,
        doc="path of the quote time, e.g. 'data.time' (null: use our receive time)",
    )
    timestamp_format: Literal["rfc3339", "unix_s", "unix_ms", "unix_us", "unix_ns"] = setting(
        "unix_ms", doc="how the timestamp is written"
    )
    bid: str | None = setting(None, doc="path of the bid price, e.g. 'data.bid'")
    ask: str | None = setting(None, doc="path of the ask price")
    bid_size: str | None = setting(None, doc="path of the bid size")
    ask_size: str | None = setting(None, doc="path of the ask size")
    last: str | None = setting(None, doc="path of the last (trade) price")
    symbol: str | None = setting(
        None, doc="path of the symbol echoed by the API; checked against the one asked for"
    )


@dataclass(frozen=True)
class TradeFieldMapConfig:
    """Where the ``custom`` preset finds each trade field in the JSON body (dotted paths)."""

    timestamp: str | None = setting(
        None, doc="path of the trade's time, e.g. 'trade.time' (required to collect trades)"
    )
    timestamp_format: Literal["rfc3339", "unix_s", "unix_ms", "unix_us", "unix_ns"] = setting(
        "unix_ms", doc="how the timestamp is written"
    )
    price: str | None = setting(
        None, doc="path of the trade price, e.g. 'trade.price' (required to collect trades)"
    )
    size: str | None = setting(None, doc="path of the trade size (absent in a body: no size)")
    venue: str | None = setting(None, doc="path of the venue (exchange code)")
    conditions: str | None = setting(
        None, doc="path of the sale conditions: a list of codes or a string"
    )
    correction: str | None = setting(None, doc="path of the correction indicator (an integer)")
    provider_id: str | None = setting(None, doc="path of the provider's trade id")
    tape: str | None = setting(None, doc="path of the tape")
    symbol: str | None = setting(
        None, doc="path of the symbol echoed by the API; checked against the one asked for"
    )


@dataclass(frozen=True)
class HttpSourceConfig:
    """Latest quotes from a REST API (alpaca, polygon, finnhub or custom); keys come from env vars."""

    type: Literal["http"] = setting("http", doc="source type")
    preset: Literal["alpaca", "polygon", "finnhub", "custom"] | None = setting(
        None, doc="the API (required): alpaca, polygon, finnhub or custom"
    )
    name: str | None = setting(
        None, doc="name in errors and the ticks' source column (default: the preset)"
    )
    data: tuple[DataKind, ...] = data_setting()
    data_by_symbol: Mapping[str, tuple[DataKind, ...]] = data_by_symbol_setting()
    base_url: str | None = setting(
        None,
        doc="API root (default per preset: https://data.alpaca.markets, https://api.polygon.io, "
        "https://finnhub.io); point it at a local server in tests",
    )
    api_key_env: str | None = setting(
        None,
        doc="environment variable holding the API key (default per preset: APCA_API_KEY_ID, "
        "POLYGON_API_KEY, FINNHUB_API_KEY; custom: none)",
    )
    api_secret_env: str | None = setting(
        None,
        doc="environment variable holding the API secret (alpaca default: APCA_API_SECRET_KEY)",
    )
    auth: Literal["header", "query"] | None = setting(
        None,
        doc="how the key is sent: header or query parameter (polygon default header, "
        "finnhub default query; alpaca always headers)",
    )
    feed: str | None = setting(
        None, doc="alpaca data feed, e.g. iex or sip (null: the account's default)"
    )
    timeout_seconds: float = setting(5.0, doc="timeout of each request, in seconds", gt=0)
    max_connections: int | None = setting(
        None,
        doc="connections in the pool (null: one per symbol, at most 100, so a hanging "
        "symbol never holds a healthy one's connection; each symbol has one request in "
        "flight at a time)",
        ge=1,
    )
    pool_timeout_seconds: float = setting(
        30.0,
        doc="how long a request may wait for a free connection of the pool; not part of "
        "timeout_seconds (waiting for a slot is not the API being slow)",
        gt=0,
    )
    proxy: str = setting(
        "env",
        doc="env: the HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY variables (loopback "
        "hosts are never proxied; a SOCKS proxy without the socksio package is ignored with "
        "a warning); none: connect directly; or a proxy URL such as http://proxy:3128",
    )
    verify_tls: bool = setting(
        True,
        doc="check the API's TLS certificate (SSL_CERT_FILE / SSL_CERT_DIR are honoured); "
        "a certificate failure is permanent, never retried. false only for a test server",
    )
    auth_retry_seconds: float = setting(
        60.0,
        doc="after a 401/403 every symbol pauses (the credentials are wrong for all); one "
        "request probes them again this often",
        gt=0,
    )
    url: str | None = setting(
        None,
        doc="custom: URL template with {base_url}, {symbol}, {api_key}, {api_secret}, "
        "e.g. '{base_url}/v1/quote/{symbol}'",
    )
    params: Mapping[str, str] = setting(
        {}, doc="extra query parameters (templates as in url), e.g. {token: '{api_key}'}"
    )
    headers: Mapping[str, str] = setting(
        {}, doc="extra request headers (templates as in url), e.g. {X-Api-Key: '{api_key}'}"
    )
    fields: FieldMapConfig = setting(
        factory=FieldMapConfig, doc="custom: where each quote field is in the JSON body"
    )
    trade_url: str | None = setting(
        None,
        doc="custom: URL template of the latest trade (templates as in url; null: url, "
        "for an API whose one answer holds the quote and the last trade)",
    )
    trade_fields: TradeFieldMapConfig = setting(
        factory=TradeFieldMapConfig,
        doc="custom: where each trade field is in the JSON body (map price and timestamp "
        "to collect trades)",
    )
    rate_limit_remaining_header: str | None = setting(
        "X-RateLimit-Remaining",
        doc="header with the requests left in the window (null: ignore rate-limit headers)",
    )
    rate_limit_reset_header: str | None = setting(
        "X-RateLimit-Reset",
        doc="header with the window's reset: epoch seconds (or ms), or seconds from now if small",
    )
    default_retry_after_seconds: float = setting(
        1.0, doc="wait after a 429 that says nothing about when to come back", ge=0
    )
    max_retry_after_seconds: float = setting(
        300.0, doc="cap on any wait the API asks for (Retry-After, reset headers)", ge=0
    )

    def _check(self, path: str) -> None:
        where = f"{path}.preset" if path else "preset"
        if self.preset is None:
            choices = ", ".join(repr(p) for p in HTTP_PRESETS)
            raise ConfigError(f"{where}: required key is missing; one of {choices}", path=where)
        p = f"{path}." if path else ""
        if self.preset == "custom":
            self._check_custom(p)
        else:
            for key in ("url", "trade_url"):
                if getattr(self, key) is not None:
                    raise ConfigError(
                        f"{p}{key}: only for preset 'custom' (preset {self.preset!r} knows its "
                        "URL; use base_url to change the host)",
                        path=f"{p}{key}",
                    )
        if self.preset in HTTP_TRADE_PRESETS or self.maps_trades:
            check_kinds(self, path, frozenset(DATA_KINDS))
        else:
            check_kinds(self, path, frozenset({"quotes"}), _NO_REST_TRADES[self.preset])
        if self.preset == "alpaca" and self.auth == "query":
            raise ConfigError(
                f"{p}auth: alpaca takes its keys in headers only, got 'query'", path=f"{p}auth"
            )
        if self.proxy not in ("env", "none") and not self.proxy.startswith(
            ("http://", "https://", "socks5://", "socks5h://")
        ):
            raise ConfigError(
                f"{p}proxy: expected env, none or a proxy URL (http://, https://, socks5://), "
                f"got {self.proxy!r}",
                path=f"{p}proxy",
            )
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{p}base_url: expected an http:// or https:// URL, got {self.base_url!r}",
                path=f"{p}base_url",
            )
        for key in ("url", "trade_url"):
            if getattr(self, key) is not None:
                _check_template(getattr(self, key), f"{p}{key}")
        for section in ("params", "headers"):
            for key, value in getattr(self, section).items():
                _check_template(value, f"{p}{section}.{key}")

    @property
    def maps_trades(self) -> bool:
        """True for a custom preset whose ``trade_fields`` map a price (it serves trades)."""
        return self.preset == "custom" and self.trade_fields.price is not None

    def _wants(self, kind: str) -> bool:
        """Whether any symbol's data (the default or an override) includes ``kind``."""
        return kind in self.data or any(kind in v for v in self.data_by_symbol.values())

    def _check_custom(self, p: str) -> None:
        """The custom preset's URL templates and field mappings."""
        if self.url is None:
            raise ConfigError(
                f"{p}url: required for preset 'custom' (a URL template such as "
                "'{base_url}/quote/{symbol}')",
                path=f"{p}url",
            )
        f = self.fields
        if self._wants("quotes") and f.bid is None and f.ask is None and f.last is None:
            raise ConfigError(
                f"{p}fields: map at least 'last' or 'bid' and 'ask' for preset 'custom'",
                path=f"{p}fields",
            )
        t = self.trade_fields
        if self.maps_trades and self._wants("trades") and t.timestamp is None:
            raise ConfigError(
                f"{p}trade_fields.timestamp: required to collect trades with preset 'custom' "
                "(a trade's exchange time)",
                path=f"{p}trade_fields.timestamp",
            )
        for key in ("url", "trade_url"):
            template = getattr(self, key)
            if template is not None and "{base_url}" in template and self.base_url is None:
                raise ConfigError(
                    f"{p}base_url: required when {key} uses {{base_url}}", path=f"{p}base_url"
                )


TRADE_COLUMN_FIELDS: tuple[str, ...] = (
    "symbol",
    "ts_us",
    "recv_us",
    "price",
    "size",
    "venue",
    "conditions",
    "correction",
    "provider_id",
    "tape",
)
"""The trade fields a trades file's columns can map to."""


@dataclass(frozen=True)
class ReplaySourceConfig:
    """Replays a recorded CSV, Parquet or JSONL file as a feed, at a chosen speed, then stops."""

    type: Literal["replay"] = setting("replay", doc="source type")
    data: tuple[DataKind, ...] = data_setting()
    data_by_symbol: Mapping[str, tuple[DataKind, ...]] = data_by_symbol_setting()
    path: str | None = setting(
        None, doc="the quotes file to replay (required when data includes quotes)"
    )
    trades_path: str | None = setting(
        None, doc="the trades file to replay (required when data includes trades)"
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = setting(
        "auto",
        doc="format of both files; auto: from each file's extension (.csv, .parquet, "
        ".jsonl/.ndjson)",
    )
    columns_preset: Literal["quote", "taq"] = setting(
        "quote",
        doc="column names: quote (columns named like the fields: symbol, ts_us, bid, ask, "
        "bid_size, ask_size, last; trades: symbol, ts_us, price, size, venue, conditions, "
        "correction, provider_id, tape) or taq (quotes: SYMBOL, DT, BID, OFR, BIDSIZ, OFRSIZ; "
        "trades: SYMBOL, DT, PRICE, SIZE, EX, COND, CORR)",
    )
    columns: Mapping[str, str] = setting(
        {}, doc="quote field -> column, overriding the preset, e.g. {ts_us: time, last: price}"
    )
    trade_columns: Mapping[str, str] = setting(
        {}, doc="trade field -> column of the trades file, overriding the preset, e.g. {venue: ex}"
    )
    timezone: str = setting(
        "UTC", doc="IANA time zone of naive timestamps (raw WRDS TAQ: America/New_York)"
    )
    time_unit: Literal["s", "ms", "us", "ns"] = setting(
        "us", doc="unit of integer epoch time columns"
    )
    symbol: str | None = setting(
        None, doc="the symbol of every row when the file has no symbol column"
    )
    speed: float = setting(
        1.0, doc="1 = real time, 60 = a minute of data per second, 0 = as fast as possible", ge=0
    )

    def _check(self, path: str) -> None:
        p = f"{path}." if path else ""
        check_kinds(self, path, frozenset(DATA_KINDS))
        kinds = wanted_kinds(self)
        for kind, key, value in (
            ("quotes", "path", self.path),
            ("trades", "trades_path", self.trades_path),
        ):
            if kind in kinds and value is None:
                raise ConfigError(
                    f"{p}{key}: required key is missing (the {kind} file to replay)",
                    path=p + key,
                )
            if kind not in kinds and value is not None:
                raise ConfigError(
                    f"{p}{key}: set, but no symbol's data includes {kind} (add {kind} to data)",
                    path=p + key,
                )
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{p}timezone: expected an IANA time zone, got {self.timezone!r}",
                path=f"{p}timezone",
            ) from None
        for key in self.columns:
            if key not in FIELDS:
                raise ConfigError(
                    f"{p}columns.{key}: unknown quote field; known: {', '.join(FIELDS)}",
                    path=f"{p}columns.{key}",
                )
        for key in self.trade_columns:
            if key not in TRADE_COLUMN_FIELDS:
                raise ConfigError(
                    f"{p}trade_columns.{key}: unknown trade field; known: "
                    f"{', '.join(TRADE_COLUMN_FIELDS)}",
                    path=f"{p}trade_columns.{key}",
                )


WEBSOCKET_PRESETS: tuple[str, ...] = ("alpaca", "polygon")


@dataclass(frozen=True)
class WebSocketSourceConfig:
    """Streamed quotes over one WebSocket (alpaca or polygon); keys come from env vars."""

    type: Literal["websocket"] = setting("websocket", doc="source type")
    data: tuple[DataKind, ...] = data_setting()
    data_by_symbol: Mapping[str, tuple[DataKind, ...]] = data_by_symbol_setting()
    preset: Literal["alpaca", "polygon"] | None = setting(
        None, doc="the stream protocol (required): alpaca or polygon"
    )
    name: str | None = setting(
        None, doc="name in errors and the ticks' source column (default: the preset)"
    )
    base_url: str | None = setting(
        None,
        doc="stream root (default per preset: wss://stream.data.alpaca.markets, "
        "wss://socket.polygon.io); point it at a local server in tests",
    )
    feed: str | None = setting(
        None,
        doc="alpaca: the feed in {base_url}/v2/{feed} (default iex); polygon: the cluster in "
        "{base_url}/{feed} (default stocks)",
    )
    api_key_env: str | None = setting(
        None,
        doc="environment variable holding the API key (default: APCA_API_KEY_ID, POLYGON_API_KEY)",
    )
    api_secret_env: str | None = setting(
        None,
        doc="environment variable holding the API secret (alpaca default: APCA_API_SECRET_KEY)",
    )
    open_timeout_seconds: float = setting(
        10.0, doc="time allowed to open the connection and authenticate", gt=0
    )
    ping_interval_seconds: float = setting(
        10.0, doc="seconds between pings that check the connection is alive", gt=0
    )
    ping_timeout_seconds: float = setting(
        10.0,
        doc="no pong and no frame for this long closes the connection as dead (a busy stream is not a dead one)",
        gt=0,
    )
    reconnect_delay_seconds: float = setting(
        0.5, doc="first wait before reconnecting; doubles per failed attempt, with jitter", ge=0
    )
    reconnect_max_delay_seconds: float = setting(
        30.0, doc="cap on the wait between reconnect attempts", ge=0
    )
    silence_factor: float = setting(
        3.0,
        doc="a symbol is silent after this many times its recent 99th-percentile gap "
        "between quotes (inside the session only)",
        gt=0,
    )
    silence_floor_seconds: float = setting(
        2.0, doc="never call a symbol silent sooner than this", gt=0
    )
    silence_ceiling_seconds: float = setting(
        120.0, doc="always call a symbol silent after this long without a quote", gt=0
    )
    silence_window: int = setting(
        100, doc="recent gaps between quotes kept per symbol to learn its threshold", ge=2
    )
    silence_min_samples: int = setting(
        10, doc="gaps needed before the learned threshold replaces the ceiling", ge=1
    )
    silence_check_interval_seconds: float = setting(
        0.5, doc="how often symbols are checked for silence", gt=0
    )
    queue_max_messages: int = setting(
        10_000,
        doc="messages held between the reader and validation; when full, queued messages "
        "are validated at once and spilled to the backup files",
        ge=1,
    )
    max_message_bytes: int = setting(
        1_048_576, doc="largest message accepted from the server", ge=1024
    )
    refresh_preset: Literal["alpaca", "polygon"] | None = setting(
        None,
        doc="after each reconnect, fetch every symbol's latest quote over this REST preset "
        "(null: no refresh)",
    )
    refresh_base_url: str | None = setting(
        None, doc="REST root for the refresh (default: the REST preset's)"
    )

    def _check(self, path: str) -> None:
        p = f"{path}." if path else ""
        check_kinds(self, path, frozenset(DATA_KINDS))
        if self.preset is None:
            choices = ", ".join(repr(x) for x in WEBSOCKET_PRESETS)
            raise ConfigError(
                f"{p}preset: required key is missing; one of {choices}", path=f"{p}preset"
            )
        if self.base_url is not None and not self.base_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"{p}base_url: expected a ws:// or wss:// URL, got {self.base_url!r}",
                path=f"{p}base_url",
            )
        if self.refresh_base_url is not None:
            if self.refresh_preset is None:
                raise ConfigError(
                    f"{p}refresh_base_url: set refresh_preset too (the REST API to ask)",
                    path=f"{p}refresh_base_url",
                )
            if not self.refresh_base_url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"{p}refresh_base_url: expected an http:// or https:// URL, "
                    f"got {self.refresh_base_url!r}",
                    path=f"{p}refresh_base_url",
                )
        if self.silence_floor_seconds > self.silence_ceiling_seconds:
            raise ConfigError(
                f"{p}silence_floor_seconds: {self.silence_floor_seconds:g} is above "
                f"silence_ceiling_seconds ({self.silence_ceiling_seconds:g})",
                path=f"{p}silence_floor_seconds",
            )
        if self.feed is not None and (not self.feed or "/" in self.feed or "?" in self.feed):
            raise ConfigError(
                f"{p}feed: expected a plain name such as 'iex' or 'stocks', got {self.feed!r}",
                path=f"{p}feed",
            )

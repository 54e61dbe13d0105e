"""The collector's configuration: typed, frozen, loaded from YAML with key-path errors.

``load_config(path)`` reads the YAML (``yaml.safe_load`` only) and returns a
``Config`` with a documented default for every missing key. The seed's
``realtime_data`` section keeps its exact shape; ``symbols``, ``source`` and
``storage`` sit beside it.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, unquote_plus

import yaml

from robust_collector.boundary import clean_text
from robust_collector.errors import ConfigError
from robust_collector.schema import _shown, build, setting, to_dict
from robust_collector.secrets import register_url_secrets
from robust_collector.sources.settings import (  # each source's section lives beside it
    HttpSourceConfig,
    ReplaySourceConfig,
    SimulatedSourceConfig,
    WebSocketSourceConfig,
)
from robust_collector.validation.config import TradeValidationConfig, ValidationConfig

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = Path("config/spy_qqq_config.yaml")


@dataclass(frozen=True)
class RetryConfig:
    """How a failed fetch is retried (the seed's retry section)."""

    max_retries: int = setting(
        3, doc="attempts per fetch, the first included (0 or 1: no retry)", ge=0, le=1000
    )
    retry_delay: float = setting(1.0, doc="seconds to wait before the second attempt", ge=0)
    exponential_backoff: bool = setting(True, doc="double the wait after each failed attempt")
    max_delay: float = setting(30.0, doc="cap on a single wait, in seconds", ge=0)
    jitter: Literal["none", "full", "equal", "decorrelated"] = setting(
        "none", doc="randomise waits so many clients do not retry in lockstep"
    )
    deadline_seconds: float | None = setting(
        None,
        doc="give up when the next wait would pass this many seconds (null: no deadline)",
        gt=0,
    )

    def _check(self, path: str) -> None:
        if self.retry_delay > self.max_delay:
            raise ConfigError(
                f"{path}.retry_delay: {self.retry_delay:g} is above max_delay "
                f"({self.max_delay:g}); expected retry_delay <= max_delay",
                path=f"{path}.retry_delay",
            )


@dataclass(frozen=True)
class CircuitBreakerConfig:
    """Per-symbol circuit breakers (the seed's circuit_breaker section)."""

    enabled: bool = setting(True, doc="guard each symbol's fetches with its own breaker")
    failure_threshold: int = setting(5, doc="consecutive failures that open the breaker", ge=1)
    timeout_seconds: float = setting(60.0, doc="seconds an open breaker waits before a trial", ge=0)
    success_threshold: int = setting(3, doc="half-open successes that close the breaker", ge=1)
    half_open_max_calls: int = setting(
        1,
        doc="trial calls let through at once when half-open; that many must succeed before it closes",
        ge=1,
    )


@dataclass(frozen=True)
class SessionConfig:
    """Market hours: outside them, silence is expected and does not count as stale."""

    enabled: bool = setting(
        False, doc="only count staleness inside the session (false: the market never closes)"
    )
    timezone: str = setting("America/New_York", doc="IANA time zone of open and close")
    open: str = setting("09:30", doc="session open, HH:MM local time")
    close: str = setting("16:00", doc="session close, HH:MM local time")
    weekdays: tuple[int, ...] = setting(
        [0, 1, 2, 3, 4], doc="trading weekdays, 0 = Monday ... 6 = Sunday", ge=0, le=6
    )
    holidays: tuple[str, ...] = setting([], doc="closed dates, YYYY-MM-DD")

    def _check(self, path: str) -> None:
        import datetime as dt
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"{path}.timezone: expected an IANA time zone, got {self.timezone!r}",
                path=f"{path}.timezone",
            ) from None
        for key in ("open", "close"):
            value = getattr(self, key)
            try:
                dt.time.fromisoformat(value)
            except ValueError:
                raise ConfigError(
                    f"{path}.{key}: expected a time as HH:MM, got {value!r}", path=f"{path}.{key}"
                ) from None
        for i, day in enumerate(self.holidays):
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise ConfigError(
                    f"{path}.holidays[{i}]: expected a date as YYYY-MM-DD, got {day!r}",
                    path=f"{path}.holidays[{i}]",
                ) from None


@dataclass(frozen=True)
class HealthCheckConfig:
    """Health monitoring thresholds (the seed's health_check section)."""

    enabled: bool = setting(True, doc="track health and write snapshots")
    check_interval_seconds: float = setting(
        60.0, doc="seconds between health snapshots written to the database", gt=0, le=86_400
    )
    max_errors_per_minute: float = setting(
        10, doc="errors per minute above which a component is UNHEALTHY", ge=0
    )
    max_stale_seconds: float = setting(
        300, doc="data older than this makes a component UNHEALTHY", gt=0
    )
    window_seconds: float = setting(
        60.0, doc="rolling window for success rate and errors per minute", gt=0
    )
    degraded_success_rate: float = setting(
        0.95, doc="success rate (in the window) below which a component is DEGRADED", ge=0, le=1
    )
    unhealthy_success_rate: float = setting(
        0.5, doc="success rate (in the window) below which a component is UNHEALTHY", ge=0, le=1
    )
    recovery_successes: int = setting(
        10,
        doc="successful operations in a row after which a component reads as recovered: the "
        "window's error rate and success rate no longer hold it below HEALTHY",
        ge=1,
        le=1_000_000,
    )
    history_size: int = setting(1000, doc="health snapshots kept in memory", ge=1, le=1_000_000)
    max_recent_errors: int = setting(200, doc="recent errors kept in memory", ge=1, le=100_000)
    session: SessionConfig = setting(factory=SessionConfig, doc="market hours for staleness")

    def _check(self, path: str) -> None:
        if self.degraded_success_rate < self.unhealthy_success_rate:
            raise ConfigError(
                f"{path}.degraded_success_rate: {self.degraded_success_rate:g} is below "
                f"unhealthy_success_rate ({self.unhealthy_success_rate:g}); expected "
                "degraded >= unhealthy",
                path=f"{path}.degraded_success_rate",
            )


@dataclass(frozen=True)
class BackupConfig:
    """JSONL backup files used while the database fails (the seed's backup section)."""

    enabled: bool = setting(True, doc="fall back to backup files when the database fails")
    backup_to_file: bool = setting(
        True,
        doc="deprecated second switch, kept for the seed's config: false turns backups off "
        "like enabled: false (and warns); use enabled",
    )
    backup_path: str = setting("data/tick_backups", doc="folder of the backup files")
    fsync: Literal["batch", "never"] = setting(
        "batch", doc="fsync each batch before it counts as saved"
    )
    max_file_mb: float = setting(
        64.0, doc="rotate to a new backup file past this size", ge=0.01, le=1_000_000
    )
    after_recovery: Literal["move", "delete"] = setting(
        "move", doc="what to do with a backup file once it is in the database (move to recovered/)"
    )

    @property
    def active(self) -> bool:
        """Whether failed writes go to backup files: the one switch every reader asks."""
        return self.enabled and self.backup_to_file

    def _check(self, path: str) -> None:
        if self.enabled and not self.backup_to_file:
            log.warning(
                "%s.backup_to_file: false is deprecated and turns backups off; write "
                "%s.enabled: false instead",
                path,
                path,
            )


@dataclass(frozen=True)
class RealtimeDataConfig:
    """The seed's realtime_data section: collection, retry, validation, health, breakers, backup."""

    enabled: bool = setting(True, doc="collect real-time data")
    collect_interval_seconds: float = setting(
        1.0, doc="seconds between polls of each symbol", gt=0, le=86_400
    )
    buffer_size: int = setting(
        100, doc="accepted quotes buffered before a batch is written", ge=1, le=1_000_000
    )
    retry: RetryConfig = setting(factory=RetryConfig, doc="retry with backoff")
    validation: ValidationConfig = setting(factory=ValidationConfig, doc="data validation rules")
    trade_validation: TradeValidationConfig = setting(
        factory=TradeValidationConfig, doc="trade validation rules (BNHLS T1-T4 opt-in)"
    )
    health_check: HealthCheckConfig = setting(factory=HealthCheckConfig, doc="health monitoring")
    circuit_breaker: CircuitBreakerConfig = setting(
        factory=CircuitBreakerConfig, doc="circuit breakers"
    )
    backup: BackupConfig = setting(factory=BackupConfig, doc="backup storage")


SOURCE_TYPES: dict[str, type] = {
    "simulated": SimulatedSourceConfig,
    "http": HttpSourceConfig,
    "replay": ReplaySourceConfig,
    "websocket": WebSocketSourceConfig,
}


DATABASE_URL_ENV = "ROBUST_COLLECTOR_DATABASE_URL"


@dataclass(frozen=True)
class StorageConfig:
    """Where accepted quotes are written and how the writer behaves."""

    backend: Literal["sqlite", "postgresql"] = setting(
        "sqlite",
        doc="storage backend: sqlite (one embedded file) or postgresql (a server a fleet shares)",
    )
    database: str = setting("data/market_data.db", doc="SQLite database file (WAL mode)")
    url: str = setting(
        "",
        doc="PostgreSQL URL (postgresql://user@host:5432/db) for backend postgresql; "
        f"empty: the {DATABASE_URL_ENV} environment variable (keeps a password out of the file)",
    )
    instance: str = setting(
        "",
        doc="this collector's name in a fleet (shown per instance by health and watch); "
        "empty: the host name",
    )
    write_timeout_seconds: float = setting(
        5.0, doc="a write slower than this goes to the backup files instead", gt=0, le=3600
    )
    flush_interval_seconds: float = setting(
        1.0, doc="write a partial buffer after this many seconds", gt=0
    )
    queue_max_batches: int = setting(
        64, doc="batches waiting for the writer before the queue is full", ge=1, le=100_000
    )
    queue_full_block_ms: float = setting(
        200.0,
        doc="how long a full queue may go without the writer taking a batch before the waiting batches are spilled to backup (submit never blocks)",
        ge=0,
    )
    breaker_failure_threshold: int = setting(
        1,
        doc="failed writes that open the database's breaker (batches then go straight to backup)",
        ge=1,
    )
    breaker_timeout_seconds: float = setting(
        5.0, doc="seconds the database's breaker stays open before a trial write", ge=0
    )
    replay_on_start: bool = setting(
        True, doc="replay backup files left by earlier runs once the database takes a write"
    )

    def _check(self, path: str) -> None:
        register_url_secrets(self.url)
        if "://" in self.database or re.search(r"(?i)\bpassword\s*=", self.database):
            raise ConfigError(
                f"{path}.database: expected a SQLite file path, got a connection string; "
                "give a postgresql:// URL as storage.url (password in "
                f"{DATABASE_URL_ENV})",
                path=f"{path}.database",
            )
        if self.url and not self.url.startswith(("postgresql://", "postgres://")):
            shown = self.url.split("://", 1)[0] + "://..." if "://" in self.url else "..."
            raise ConfigError(
                f"{path}.url: expected a postgresql:// URL, got {shown!r}", path=f"{path}.url"
            )

    def target(self) -> str:
        """Where rows go: the SQLite file, or the PostgreSQL URL (from the environment
        when ``url`` is empty)."""
        if self.backend == "sqlite":
            return self.database
        url = self.url or os.environ.get(DATABASE_URL_ENV, "")
        register_url_secrets(url)  # before anything can print or log it
        if not url:
            raise ConfigError(
                f"storage.url: backend is postgresql but no URL is set: give storage.url "
                f"or set {DATABASE_URL_ENV}",
                path="storage.url",
            )
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"{DATABASE_URL_ENV}: expected a postgresql:// URL", path="storage.url"
            )
        return url

    def instance_name(self) -> str:
        """This collector's name in a fleet: ``instance``, else the host name."""
        return self.instance or socket.gethostname()


SYMBOL_MAX = 32
SYMBOL_CHARS = "A-Z a-z 0-9 . - / ^ = _ : +"
SYMBOL_RULE = (
    f"a symbol of 1 to {SYMBOL_MAX} characters from {SYMBOL_CHARS}, with a letter or digit, "
    "and no empty, '.' or '..' part between slashes"
)
_SYMBOL = re.compile(rf"[A-Za-z0-9.\-/^=_:+]{{1,{SYMBOL_MAX}}}")


def symbol_ok(sym: str) -> bool:
    """True for real tickers (``BRK.B``, ``BF-B``, ``^VIX``, ``BTC/USD``, ``ES=F``); false for
    control characters, blanks, overlong text and path tricks (``.``, ``..``, ``a//b``) that
    would redirect an HTTP source's URL after normalisation."""
    if not _SYMBOL.fullmatch(sym) or not any(c.isalnum() for c in sym):
        return False
    return all(part not in ("", ".", "..") for part in sym.split("/"))


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    symbols: tuple[str, ...] = setting(["SPY", "QQQ", "IWM"], doc="symbols to collect")
    source: (
        SimulatedSourceConfig | HttpSourceConfig | ReplaySourceConfig | WebSocketSourceConfig
    ) = setting(factory=SimulatedSourceConfig, doc="where quotes come from")
    storage: StorageConfig = setting(factory=StorageConfig, doc="database and writer")
    realtime_data: RealtimeDataConfig = setting(
        factory=RealtimeDataConfig, doc="the seed's collector settings"
    )

    def _check(self, path: str) -> None:
        if not self.symbols:
            raise ConfigError("symbols: expected at least one symbol, got []", path="symbols")
        seen: set[str] = set()
        for i, sym in enumerate(self.symbols):
            if sym != sym.strip() or " " in sym:
                raise ConfigError(
                    f"symbols[{i}]: expected a symbol without spaces, got {_shown(sym)}",
                    path=f"symbols[{i}]",
                )
            if not symbol_ok(sym):
                raise ConfigError(
                    f"symbols[{i}]: expected {SYMBOL_RULE}, got {_shown(sym)}",
                    path=f"symbols[{i}]",
                )
            if sym in seen:
                raise ConfigError(f"symbols[{i}]: {sym!r} is listed twice", path=f"symbols[{i}]")
            seen.add(sym)

    def as_dict(self) -> dict[str, Any]:
        """The config as plain data (stored with each run)."""
        return to_dict(self)


_FILE_KEYS = ("symbols", "source", "storage", "realtime_data")
_PATH_KEYS = (("storage", "database"), ("realtime_data", "backup", "backup_path"))


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build_source(data: Any) -> Any:
    if data is None:
        data = {}
    if isinstance(data, str):
        data = {"type": data}
    if not isinstance(data, Mapping):
        raise ConfigError(f"source: expected a mapping, got {_shown(data)}", path="source")
    kind = data.get("type", "simulated")
    cls = SOURCE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        choices = ", ".join(repr(k) for k in SOURCE_TYPES)
        raise ConfigError(
            f"source.type: expected one of {choices}, got {_shown(kind)}", path="source.type"
        )
    _refuse_literal_credentials(data)  # first: no other message may quote a credential
    source = build(cls, data, "source")
    _refuse_literal_credentials(source)
    return source


# a header or parameter whose name says it carries a credential, and values that are one
_CREDENTIAL_NAME = re.compile(
    r"auth|token|key|secret|passw|signature|credential|cookie|bearer", re.IGNORECASE
)
_CREDENTIAL_VALUE = re.compile(r"^\s*(?:bearer|basic|token|digest)\s+\S", re.IGNORECASE)
# a value where a placeholder stands for the whole credential (with at most its scheme
# word): 'Bearer {api_key}' is fine, 'Bearer realsecret {api_key}' is not
_PLACEHOLDER = r"\{api_(?:key|secret)\}"
_WHOLE_PLACEHOLDER = re.compile(
    rf"\s*(?:(?:bearer|token|basic|apikey|digest)\s*)?{_PLACEHOLDER}(?::{_PLACEHOLDER})?\s*",
    re.IGNORECASE,
)
_URL_FIELDS = ("url", "base_url", "refresh_base_url", "proxy")
_USE_ENV = (
    "put it in an environment variable named by source.api_key_env (or api_secret_env) and "
    "write '{api_key}' (or '{api_secret}')"
)
_PROXY_ENV = (
    "set source.proxy: env and give the proxy URL, credentials included, in the standard "
    "HTTPS_PROXY / HTTP_PROXY (or ALL_PROXY) environment variables"
)


def _url_credential(url: str) -> str | None:
    """What credential ``url`` holds written literally (user info, or a query key that names
    one, percent-encoded or not), or None: placeholders for the whole credential are fine."""
    scheme = url.find("://")
    if scheme >= 0:
        authority = url[scheme + 3 :].split("/", 1)[0]
        if "@" in authority:
            userinfo = authority.rsplit("@", 1)[0]
            in_host = userinfo.split(":", 1)[0]
            if "?" not in in_host and "#" not in in_host:  # an '@' in a query is no user info
                parts = [unquote(part) for part in userinfo.split(":")]
                if not all(re.fullmatch(_PLACEHOLDER, part) for part in parts):
                    return "user info (user:password@)"
    if "?" in url:
        query = url.split("?", 1)[1].split("#", 1)[0]
        for pair in re.split(r"[&;]", query):
            key, _, value = pair.partition("=")
            name = unquote_plus(key)
            if (
                _CREDENTIAL_NAME.search(name)
                and value
                and not _WHOLE_PLACEHOLDER.fullmatch(unquote_plus(value))
            ):
                return f"the query parameter {clean_text(name, 40)!r}"
    return None


def _refuse_literal_credentials(source: Any) -> None:
    """Refuse a key written literally into ``source.headers`` or ``source.params``, or into a
    URL (``url``, ``base_url``, ``refresh_base_url``: user info or a credential query key;
    ``proxy``: its user info): the config is stored with every run and shown by tools, so
    credentials come only from environment variables, through the ``{api_key}`` and
    ``{api_secret}`` placeholders (a proxy's from ``HTTPS_PROXY`` with ``proxy: env``).

    ``source`` is the built section or its raw mapping: checked before it is built too,
    so no other error message of the section quotes the credential."""

    def get(name: str) -> Any:
        return source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)

    for field_name in _URL_FIELDS:
        value = get(field_name)
        what = _url_credential(value) if isinstance(value, str) else None
        if what is not None:
            where = f"source.{field_name}"
            hint = (
                _PROXY_ENV
                if field_name == "proxy"
                else f"{_USE_ENV} in source.url, params or headers"
            )
            raise ConfigError(
                f"{where}: a credential may not be written in the config (it is stored with "
                f"every run): {what}; {hint}",
                path=where,
            )
    for section in ("headers", "params"):
        entries = get(section)
        for key, value in entries.items() if isinstance(entries, Mapping) else ():
            if not isinstance(key, str) or not isinstance(value, str):
                continue  # the section's own check names the wrong type
            if _WHOLE_PLACEHOLDER.fullmatch(value):
                continue
            if _CREDENTIAL_NAME.search(key) or _CREDENTIAL_VALUE.search(value):
                where = f"source.{section}.{clean_text(key, 80)}"
                raise ConfigError(
                    f"{where}: a credential may not be written in the config (it is stored "
                    f"with every run); {_USE_ENV} here",
                    path=where,
                )


def config_from_dict(
    data: Mapping[str, Any] | None, *, base_dir: str | Path | None = None
) -> Config:
    """Build a ``Config`` from plain data; relative paths are resolved against ``base_dir``."""
    data = dict(data or {})
    source = _build_source(data.pop("source", None))
    config = build(Config, data)
    object.__setattr__(config, "source", source)
    if base_dir is not None:
        config = _resolve_paths(config, Path(base_dir))
    if config.storage.backend == "sqlite":
        _check_database_path(config.storage.database)
    return config


def _check_database_path(database: str) -> None:
    """Refuse a SQLite path that is not a regular file (``/dev/null``, a folder, a FIFO):
    SQLite cannot use it, and the heartbeat file would land beside it
    (``/dev/null.health.json``)."""
    try:
        mode = os.stat(database).st_mode
    except OSError:
        return  # not there yet: created as a regular file
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(
            f"storage.database: {clean_text(database, 200)!r} is {kind}; "
            "expected a SQLite database file",
            path="storage.database",
        )


def _resolve_paths(config: Config, base: Path) -> Config:
    for keys in _PATH_KEYS:
        obj: Any = config
        for k in keys[:-1]:
            obj = getattr(obj, k)
        value = Path(getattr(obj, keys[-1]))
        if not value.is_absolute():
            object.__setattr__(obj, keys[-1], str((base / value).resolve()))
    return config


MAX_CONFIG_BYTES = 1_000_000
"""A config file larger than this is refused (real ones are a few kilobytes)."""
MAX_CONFIG_NODES = 100_000
"""Values a config may expand to, aliases counted each time they are used (an alias bomb
of a few lines expands to billions)."""


def _read_config_bytes(p: Path, label: str) -> bytes:
    """The file's bytes, refusing what is not a regular file (``/dev/zero`` would fill memory,
    a FIFO would block: checked with ``stat`` first, opened ``O_NONBLOCK``) or too big."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ConfigError("file not found", source=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror})", source=label) from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ConfigError(f"{kind}; expected a YAML file", source=label)
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"file of {st.st_size} bytes is larger than {MAX_CONFIG_BYTES} bytes", source=label
        )
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read file ({exc.strerror})", source=label) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped since the stat
            raise ConfigError("not a regular file; expected a YAML file", source=label)
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"file is larger than {MAX_CONFIG_BYTES} bytes", source=label)
    return data


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the last one
    would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if dup:
                mark = key_node.start_mark
                raise ConfigError(
                    f"line {mark.line + 1}, column {mark.column + 1}: key "
                    f"{_shown(key)} is given twice in the same mapping",
                )
        return super().construct_mapping(node, deep=deep)


def _check_expansion(data: Any, label: str) -> None:
    """Refuse a document that expands to more than ``MAX_CONFIG_NODES`` values (aliases
    counted at every use), before anything walks, copies or prints it."""
    stack = [data]
    count = 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            raise ConfigError(
                f"the YAML expands to more than {MAX_CONFIG_NODES} values (alias expansion)",
                source=label,
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load_config(
    path: str | Path | None = None,
    *,
    base_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load a YAML config file, applying ``overrides`` (a nested dict) on top.

    ``path=None`` gives the documented defaults. Relative paths in the config
    (database, backup folder) are resolved against ``base_dir`` (default: the
    current directory). Every problem raises ``ConfigError`` with a one-line
    message naming the file and key path.
    """
    label = clean_text(path, 500) if path is not None else ""
    raw: Any = {}
    if path is not None:
        data = _read_config_bytes(Path(path), label)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8",
                source=label,
            ) from None
        try:
            raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
        except ConfigError as exc:  # a duplicate key
            raise ConfigError(str(exc), source=label) from None
        except RecursionError:
            raise ConfigError("invalid YAML (nested too deeply)", source=label) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{where}invalid YAML ({problem})", source=label) from None
        _check_expansion(raw, label)
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"expected a mapping at the top level, got {_shown(raw)}", source=label
            )
    raw = dict(raw)
    # The seed's file may hold other sections of a larger project: those are left
    # alone, but a key that looks like a typo of one of ours is refused.
    for key in raw:
        if key not in _FILE_KEYS:
            close = difflib.get_close_matches(str(key), _FILE_KEYS, n=1, cutoff=0.75)
            if close:
                msg = f"{key}: unknown key; did you mean {close[0]!r}?"
                raise ConfigError(msg, path=str(key), source=label)
    ours = {k: raw[k] for k in _FILE_KEYS if k in raw}
    if overrides:
        ours = _merge(ours, overrides)
    try:
        return config_from_dict(ours, base_dir=base_dir if base_dir is not None else Path.cwd())
    except ConfigError as exc:
        if label and not exc.source:
            raise ConfigError(str(exc), path=exc.path, source=label) from None
        raise

"""Latest quotes (and trades) from REST APIs over httpx: alpaca, polygon, finnhub, or custom.

``fetch(symbol)`` asks the preset's latest-quote endpoint; ``fetch_trade(symbol)``
its latest-trade endpoint (alpaca ``/v2/stocks/{symbol}/trades/latest``, polygon
``/v2/last/trade/{symbol}``; finnhub and custom serve none). Both go through the
same pool, rate-limit budget, errors and redaction below; trades are numbered per
symbol apart from quotes (``run:symbol:t<seq>``).

``HttpSource`` keeps one pooled ``httpx.AsyncClient`` for the run and turns every
way a request can go wrong into a typed ``SourceError`` whose message starts
with the source and the symbol (``polygon SPY: ...``):

==========================================  ====================================
what happened                               error (retried?)
==========================================  ====================================
timeout, connection error, HTTP 5xx/408     ``TransientSourceError`` (yes)
no free connection of our pool in time      ``PoolWaitError`` (yes; the pool's fault,
                                            never a breaker failure)
HTTP 429, 503 with Retry-After, no budget   ``RateLimitError`` with retry_after (slows
left until the rate-limit window resets     the whole source; never a breaker failure)
a proxy's 502/504 or a refused CONNECT      ``ProxyError`` (yes)
a 2xx body that is not JSON                 ``TransientSourceError`` (yes)
TLS certificate refused                     ``TlsCertificateError`` (no)
HTTP 401/403                                ``AuthenticationError`` (no; source-wide)
HTTP 404, empty body, empty results         ``UnknownSymbolError`` (no)
HTTP 400/422 and other 4xx                  ``BadRequestError`` (no)
JSON of the wrong shape                     ``MalformedResponseError`` (no)
==========================================  ====================================

Credentials come from environment variables named in the config; each value is
registered with ``secrets.register_secret`` (also in its URL-encoded forms) and
every message is redacted, then cleaned (``boundary.clean_text``: no lone
surrogates, NUL, control characters or terminal escapes; length-capped) before
it is raised: API bodies are outside text. Bodies are decoded within the
boundary's size and depth bounds, so whatever a server sends ends as a quote or
one of the errors below, nothing else. httpx's own request log lines
(which hold the URL, and so a key sent as a query parameter) are redacted by a
filter on the ``httpx`` and ``httpcore`` loggers.

Being a good API citizen: the pool has one connection per symbol (up to 100) and a
wait for a free connection is bounded by ``pool_timeout_seconds``, apart from the
request's ``timeout_seconds`` (running out of it is a ``PoolWaitError``, not the API's); ``X-RateLimit-Remaining``/``Reset`` are a client-side
budget shared by concurrent polls; proxies come from ``source.proxy`` (by default the
environment, never for loopback hosts).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import ipaddress
import logging
import math
import os
import re
import ssl
from collections.abc import Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from robust_collector.boundary import BoundaryError, clamp_int64, clean_text
from robust_collector.errors import (
    ConfigError,
    PermanentSourceError,
    PoolWaitError,
    RateLimitError,
    SourceError,
    TransientSourceError,
    format_seconds,
)
from robust_collector.model import Quote, Trade, make_tick_id, make_trade_id, now_us
from robust_collector.secrets import redact, register_secret
from robust_collector.sources.base import register_source
from robust_collector.sources.presets import (
    ApiErrorAnswer,
    Credentials,
    NoQuote,
    ParsedQuote,
    ParsedTrade,
    RequestSpec,
    ShapeProblem,
    decode_json,
    make_preset,
)
from robust_collector.sources.settings import TEMPLATE_FIELDS, HttpSourceConfig

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "HttpSource",
    "MalformedResponseError",
    "ProxyError",
    "TlsCertificateError",
    "UnknownSymbolError",
    "parse_rate_limit_reset",
    "parse_retry_after",
    "proxy_for",
]

POOL_CAP = 100  # connections when max_connections is null: one per symbol, at most this
_ANSWER_WAIT_SECONDS = 0.05  # a spent new window with no answer yet: ask again this soon

log = logging.getLogger(__name__)


class AuthenticationError(PermanentSourceError):
    """HTTP 401/403: the credentials are missing, wrong or lack the permission.

    ``source_wide``: the same keys serve every symbol, so the collector pauses the
    whole source (and no breaker counts it) rather than learn it symbol by symbol.
    """

    source_wide = True


class TlsCertificateError(PermanentSourceError):
    """The API's TLS certificate was refused: retrying cannot make it valid."""


class ProxyError(TransientSourceError):
    """The proxy between us and the API failed (its 502/504, or a refused CONNECT)."""


class UnknownSymbolError(PermanentSourceError):
    """The API has no quote (or trade) for this symbol (404, empty body or empty results)."""


class BadRequestError(PermanentSourceError):
    """The API called the request malformed (400/422) or refused it (other 4xx)."""


class MalformedResponseError(PermanentSourceError):
    """A body that is JSON but not the expected shape; ``field`` is the path at fault."""

    def __init__(self, message: str, *, symbol: str | None = None, field: str = "") -> None:
        super().__init__(message, symbol=symbol)
        self.field = field


# (httpx's and httpcore's log lines are masked by secrets.install_log_filters)


# -- headers -----------------------------------------------------------------------------

_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """``Retry-After`` in seconds: delta seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS_RE.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)


def parse_rate_limit_reset(value: str | None, now_s: float) -> float | None:
    """Seconds until a rate-limit window resets, from an ``X-RateLimit-Reset``-style header.

    Large values are epoch times (>= 1e12: milliseconds, >= 1e9: seconds, as
    Alpaca, Finnhub and GitHub send); smaller ones are seconds from now (as the
    IETF ``RateLimit-Reset`` draft). None when absent or not a number.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number >= 1e12:
        return max(0.0, number / 1000.0 - now_s)
    if number >= 1e9:
        return max(0.0, number - now_s)
    return number


def _micros(seconds: float) -> int:
    """Seconds as whole microseconds, bounded (a wait of 1e308 s stays an int)."""
    return int(min(max(seconds, 0.0), 1e12) * 1e6)


def _snippet(text: str, limit: int = 120) -> str:
    """Outside text for a message: secrets redacted before the cut (so no piece of one
    survives it), whitespace folded, at most ``limit`` characters."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _register(value: str) -> None:
    """Register a secret and the forms it takes in URLs (path, form and httpx query encoding)."""
    for form in (
        value,
        quote(value),
        quote(value, safe=""),
        quote_plus(value),
        quote_plus(value, safe=""),
        str(httpx.QueryParams({"k": value}))[2:],
    ):
        register_secret(form)


def _is_loopback(host: str) -> bool:
    """True for localhost names and loopback addresses: never sent through a proxy."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _no_proxy_matches(host: str, no_proxy: str) -> bool:
    """``NO_PROXY`` as curl reads it: ``*``, names (and their subdomains), IPs, CIDRs."""
    host = host.strip("[]").lower()
    try:
        addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        addr = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        if addr is not None:
            try:
                if addr in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
                continue
            except ValueError:
                pass
        name = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        name = name.lstrip("*").lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def proxy_for(url: str, setting: str, environ: Mapping[str, str]) -> str | None:
    """The proxy URL to reach ``url`` through, per ``source.proxy`` (None: directly).

    ``env`` reads ``<scheme>_proxy`` then ``all_proxy`` (lower case first, as curl), and
    ``no_proxy``; loopback hosts (127.0.0.0/8, ::1, localhost) are never proxied.
    """
    if setting == "none":
        return None
    if setting != "env":
        return setting
    target = httpx.URL(url)
    host = target.host
    if not host or _is_loopback(host):
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    if _no_proxy_matches(host, no_proxy):
        return None
    for name in (f"{target.scheme}_proxy", "all_proxy"):
        value = environ.get(name) or environ.get(name.upper())
        if value:
            return value if "://" in value else f"http://{value}"
    return None


def _proxy_usable(proxy: str) -> str | None:
    """Why httpx cannot use ``proxy`` here (one line), or None when it can."""
    scheme = proxy.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        return None
    if scheme in ("socks5", "socks5h"):
        if importlib.util.find_spec("socksio") is None:
            return "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
        return None
    return f"proxy scheme {scheme!r} is not supported (http, https or socks5)"


def _where(proxy: str) -> str:
    """A proxy URL without its credentials, for messages."""
    try:
        u = httpx.URL(proxy)
    except Exception:
        return "the proxy"
    return f"{u.scheme}://{u.host}:{u.port}" if u.port else f"{u.scheme}://{u.host}"


def _tls_context() -> ssl.SSLContext:
    """Certificate checking as httpx does with trust_env (SSL_CERT_FILE / SSL_CERT_DIR)."""
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if (cafile and os.path.isfile(cafile)) or (capath and os.path.isdir(capath)):
        return _shared_tls_context(cafile or None, capath or None)
    return _shared_tls_context(None, None)


@functools.lru_cache(maxsize=8)
def _shared_tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One context per trust store: loading the CA bundle costs ~40 ms, paid once, not
    at every source (re)start. Contexts are made to be shared between connections."""
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    return httpx.create_ssl_context()  # certifi's bundle, as httpx builds it itself


def _tls_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a refused certificate."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


# -- the source --------------------------------------------------------------------------


class HttpSource:
    """A polling source over a REST API's latest-quote endpoint (see the module docs).

    ``clock_us`` stamps ``recv_us`` and is the "now" for HTTP-date and reset
    headers; ``transport`` replaces the network (e.g. ``httpx.MockTransport``);
    ``environ`` replaces ``os.environ`` for reading the credentials.
    """

    def __init__(
        self,
        config: HttpSourceConfig,
        *,
        clock_us: Callable[[], int] = now_us,
        transport: httpx.AsyncBaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if config.preset is None:
            raise ConfigError("source.preset: required key is missing", path="source.preset")
        self.config = config
        self.preset = make_preset(config)
        self.name: str = config.name or self.preset.name
        base = config.base_url or self.preset.default_base_url or ""
        self.base_url = base.rstrip("/")
        self._clock_us = clock_us
        self._transport = transport
        self._creds = self._read_credentials(os.environ if environ is None else environ)
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pool_size = config.max_connections or 10
        self._run_id = "http"
        self._seq: dict[str, int] = {}
        self._trade_seq: dict[str, int] = {}
        self._blocked_until_us = 0
        # the client-side rate-limit budget: requests left in the window (None: unknown)
        self._budget: int | None = None
        self._budget_reset_us = 0
        self._window_limit = 0  # the most requests a window was seen to allow (0: unknown)
        self._in_flight = 0
        self._proxy = self._choose_proxy(os.environ if environ is None else environ)
        target = httpx.URL(self.base_url or "http://localhost")
        self._host = f"{target.host}:{target.port or (443 if target.scheme == 'https' else 80)}"
        self.requests = 0

    # -- credentials -------------------------------------------------------------------

    def _uses(self, placeholder: str) -> bool:
        c = self.config
        texts = [c.url or "", *c.params.values(), *c.headers.values()]
        return any("{" + placeholder + "}" in t for t in texts)

    def _read_credentials(self, environ: Mapping[str, str]) -> Credentials:
        p = self.preset
        custom = self.config.preset == "custom"
        key_env = self.config.api_key_env or (None if custom else p.key_env)
        secret_env = self.config.api_secret_env or (None if custom else p.secret_env)
        need_key = not custom or self._uses("api_key")
        need_secret = (not custom and p.secret_env is not None) or self._uses("api_secret")
        values: dict[str, str | None] = {}
        for key, env, needed in (
            ("api_key_env", key_env, need_key),
            ("api_secret_env", secret_env, need_secret),
        ):
            value = environ.get(env) if env else None
            if value:
                _register(value)
            elif needed:
                path = f"source.{key}"
                if env is None:
                    raise ConfigError(
                        f"{path}: the {self.name} source needs it (templates use "
                        f"{{{key.removesuffix('_env')}}}); name an environment variable",
                        path=path,
                    )
                raise ConfigError(
                    f"{path}: environment variable {env} is not set (the {self.name} source "
                    "reads its credentials from it)",
                    path=path,
                )
            values[key] = value or None
        return Credentials(values["api_key_env"], values["api_secret_env"], key_env, secret_env)

    # -- lifecycle ------------------------------------------------------------------------

    def _choose_proxy(self, environ: Mapping[str, str]) -> str | None:
        """The proxy for ``base_url`` per ``source.proxy``; an unusable one from the
        environment is ignored with a warning, one named in the config is a ConfigError."""
        if self._transport is not None or not self.base_url:
            return None
        proxy = proxy_for(self.base_url, self.config.proxy, environ)
        if proxy is None:
            return None
        why = _proxy_usable(proxy)
        if why is None:
            return proxy
        if self.config.proxy == "env":
            log.warning(
                "%s: ignoring the proxy %s from the environment: %s; connecting directly "
                "(set source.proxy to choose)",
                self.name,
                _where(proxy),
                why,
            )
            return None
        raise ConfigError(f"source.proxy: {why}", path="source.proxy")

    def plan(self, symbols: tuple[str, ...] | list[str]) -> None:
        """Size the pool for the symbols polled: one connection each (up to ``POOL_CAP``)
        unless ``max_connections`` is set; call before ``start``. Fewer connections than
        symbols is warned about once: a hanging symbol can then delay the others."""
        wanted = self.config.max_connections
        if wanted is None:
            self._pool_size = max(1, min(len(symbols), POOL_CAP))
        elif wanted < len(symbols):
            log.warning(
                "%s: source.max_connections is %d for %d symbols: symbols share connections, "
                "so a hanging symbol can delay the others (each waits up to "
                "pool_timeout_seconds = %s for a free one); leave max_connections unset for "
                "one connection per symbol",
                self.name,
                wanted,
                len(symbols),
                format_seconds(self.config.pool_timeout_seconds),
            )

    def _open(self) -> httpx.AsyncClient:
        cfg = self.config
        size = self._pool_size
        self._slots = asyncio.Semaphore(size)
        self._client = httpx.AsyncClient(
            # the pool wait is ours (``_slots``, pool_timeout_seconds): httpx never waits
            timeout=httpx.Timeout(cfg.timeout_seconds, pool=cfg.pool_timeout_seconds),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            headers={"Accept": "application/json", "User-Agent": "robust-collector"},
            follow_redirects=False,
            transport=self._transport,
            proxy=self._proxy,
            verify=_tls_context() if cfg.verify_tls else False,
            trust_env=False,  # proxies are chosen above (NO_PROXY, loopback never proxied)
        )
        return self._client

    async def start(self, run_id: str) -> None:
        """Open the connection pool; ``run_id`` goes into every tick id."""
        self._run_id = run_id
        if self._client is None:
            self._open()

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    # -- one fetch --------------------------------------------------------------------------

    def _msg(self, symbol: str, text: str) -> str:
        """A message for an exception: redacted, then cleaned (``text`` holds API words)."""
        return clean_text(redact(f"{self.name} {symbol}: {text}"))

    def _request(self, symbol: str, trade: bool = False) -> RequestSpec:
        if trade:
            spec = self.preset.trade_request(self.base_url, symbol, self._creds)
        else:
            spec = self.preset.request(self.base_url, symbol, self._creds)
        cfg = self.config
        if cfg.params or cfg.headers:
            values = {
                "symbol": symbol,
                "base_url": self.base_url,
                "api_key": self._creds.api_key or "",
                "api_secret": self._creds.api_secret or "",
            }
            assert set(values) == TEMPLATE_FIELDS
            params = {**spec.params, **{k: v.format_map(values) for k, v in cfg.params.items()}}
            headers = {**spec.headers, **{k: v.format_map(values) for k, v in cfg.headers.items()}}
            spec = RequestSpec(spec.url, params, headers)
        return spec

    def _budget_left(self, symbol: str, now: int) -> None:
        """Refuse a request the rate-limit window has no room for (every symbol waits on
        the shared gate until the reset); otherwise take one request from the budget."""
        if self._blocked_until_us > now:
            wait = (self._blocked_until_us - now) / 1e6
            raise RateLimitError(
                self._msg(
                    symbol,
                    "no requests left until the rate-limit window resets in "
                    f"{format_seconds(wait)}",
                ),
                symbol=symbol,
                retry_after=wait,
            )
        if self._budget is None:
            return
        if self._budget_reset_us and now >= self._budget_reset_us:
            self._new_window()
            if self._budget is None:
                return
        if self._budget <= 0:
            if self._budget_reset_us:
                wait = self._cap(max(0.0, (self._budget_reset_us - now) / 1e6))
                why = "the window resets in"
            else:  # a new window's room was all taken by requests in flight: await their answers
                wait = self._cap(_ANSWER_WAIT_SECONDS)
                why = "a new window's size is asked again in"
            if wait <= 0:  # max_retry_after_seconds: 0 (never wait): the API will say
                self._budget = None
                return
            self._blocked_until_us = now + _micros(wait)
            raise RateLimitError(
                self._msg(
                    symbol,
                    f"rate-limit budget spent by requests in flight; {why} {format_seconds(wait)}",
                ),
                symbol=symbol,
                retry_after=wait,
            )
        self._budget -= 1

    def _new_window(self) -> None:
        """A window has reset: its budget is the largest window seen, less the requests still
        in flight (they may land in the new window); unknown until one answer is seen."""
        self._budget_reset_us = 0
        if self._window_limit <= 0:
            self._budget = None
        else:
            self._budget = max(0, self._window_limit - self._in_flight)

    async def _slot(self, symbol: str) -> None:
        """Wait for a free connection, at most ``pool_timeout_seconds`` (not the API's time)."""
        slots = self._slots
        assert slots is not None
        wait = self.config.pool_timeout_seconds
        try:
            async with asyncio.timeout(wait):
                await slots.acquire()
        except TimeoutError:
            raise self._pool_wait_error(symbol, wait) from None

    def _pool_wait_error(self, symbol: str, wait: float) -> PoolWaitError:
        """No connection of our pool came free in ``wait`` seconds: the pool's fault."""
        return PoolWaitError(
            self._msg(
                symbol,
                f"no free connection within {format_seconds(wait)} (all {self._pool_size} "
                "of our pool in use by other symbols; the API was not asked: raise "
                "source.max_connections or leave it unset)",
            ),
            symbol=symbol,
        )

    async def fetch(self, symbol: str) -> Quote:
        """The latest quote of ``symbol``; a typed ``SourceError`` on any failure."""
        response = await self._get(symbol, False)
        return self._quote(symbol, response)

    @property
    def serves_trades(self) -> bool:
        """True when the preset's API serves a latest trade (alpaca, polygon, and the custom
        preset with ``trade_fields``)."""
        return self.preset.serves_trades

    async def fetch_trade(self, symbol: str) -> Trade:
        """The latest trade of ``symbol``; a typed ``SourceError`` on any failure (the same
        errors, rate-limit budget and redaction as ``fetch``)."""
        if not self.preset.serves_trades:
            raise BadRequestError(
                self._msg(symbol, f"the {self.preset.name} API serves no latest trade over REST"),
                symbol=symbol,
            )
        response = await self._get(symbol, True)
        return self._trade(symbol, response)

    async def _get(self, symbol: str, trade: bool) -> httpx.Response:
        """One GET of the latest quote (or trade) of ``symbol``: the answer, any status."""
        self._budget_left(symbol, self._clock_us())
        spec = self._request(symbol, trade)
        client = self._client or self._open()
        await self._slot(symbol)
        failure: SourceError | None = None
        response: httpx.Response | None = None
        self.requests += 1
        self._in_flight += 1
        timeout = self.config.timeout_seconds
        try:
            async with asyncio.timeout(timeout):
                response = await client.get(spec.url, params=spec.params, headers=spec.headers)
        except httpx.PoolTimeout:  # httpx's own pool was full: still not the API's time
            failure = self._pool_wait_error(symbol, self.config.pool_timeout_seconds)
        except (TimeoutError, httpx.TimeoutException) as exc:
            failure = self._timeout_error(symbol, exc)
        except httpx.ProxyError as exc:
            failure = ProxyError(
                self._msg(
                    symbol,
                    f"proxy error at {_where(self._proxy or '')} ({type(exc).__name__}: {exc}); "
                    "check source.proxy / HTTPS_PROXY",
                ),
                symbol=symbol,
            )
        except httpx.HTTPError as exc:
            failure = self._connect_error(symbol, exc)
        except httpx.InvalidURL as exc:
            failure = BadRequestError(self._msg(symbol, f"invalid URL ({exc})"), symbol=symbol)
        finally:
            self._in_flight -= 1
            assert self._slots is not None
            self._slots.release()
        # raised outside the except blocks, so the httpx error (whose request URL may
        # carry a key) is not chained as the context of ours
        if failure is not None:
            raise failure
        assert response is not None
        return response

    def _timeout_error(self, symbol: str, exc: BaseException) -> SourceError:
        kind = type(exc).__name__
        where = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return TransientSourceError(
            self._msg(
                symbol,
                f"timed out after {format_seconds(self.config.timeout_seconds)} ({kind}; "
                f"{where} {self._host})",
            ),
            symbol=symbol,
        )

    def _connect_error(self, symbol: str, exc: BaseException) -> SourceError:
        if _tls_failure(exc):
            return TlsCertificateError(
                self._msg(
                    symbol,
                    f"TLS certificate of {self._host} refused ({exc}); not retried. Fix the "
                    "server's certificate or SSL_CERT_FILE (source.verify_tls: false only "
                    "for a test server)",
                ),
                symbol=symbol,
            )
        via = f" via the proxy {_where(self._proxy)}" if self._proxy else ""
        return TransientSourceError(
            self._msg(
                symbol,
                f"connection error to {self._host}{via} ({type(exc).__name__}: {exc}); "
                "check source.base_url and that the API is reachable",
            ),
            symbol=symbol,
        )

    def _parsed(
        self, symbol: str, response: httpx.Response, parse: Callable[[Any, str], Any]
    ) -> tuple[Any, int]:
        """The parsed answer and our receive time; every failure a typed ``SourceError``."""
        recv = self._clock_us()
        self._note_rate_limit(response.headers, recv)
        if not 200 <= response.status_code < 300:
            raise self._status_error(symbol, response, recv)
        body = self._decode(symbol, response)
        parsed: Any = None
        failure: SourceError | None = None
        try:
            parsed = parse(body, symbol)
        except ShapeProblem as exc:
            failure = MalformedResponseError(
                self._msg(symbol, f"{exc.field}: {exc.problem}"), symbol=symbol, field=exc.field
            )
        except NoQuote as exc:
            failure = UnknownSymbolError(self._msg(symbol, f"unknown symbol: {exc}"), symbol=symbol)
        except ApiErrorAnswer as exc:
            failure = BadRequestError(
                self._msg(symbol, f"the API answered with an error: {_snippet(str(exc))}"),
                symbol=symbol,
            )
        except Exception as exc:  # a parser bug must not escape as anything but a typed error
            log.warning("%s %s: parsing the answer raised", self.name, symbol, exc_info=True)
            failure = MalformedResponseError(
                self._msg(symbol, f"unreadable answer ({type(exc).__name__}: {exc})"),
                symbol=symbol,
            )
        if failure is not None:  # raised outside the handlers: nothing of the body is chained
            raise failure
        assert parsed is not None
        return parsed, recv

    def _quote(self, symbol: str, response: httpx.Response) -> Quote:
        parsed: ParsedQuote
        parsed, recv = self._parsed(symbol, response, self.preset.parse)
        seq = self._seq.get(symbol, 0) + 1
        self._seq[symbol] = seq
        return Quote(
            tick_id=make_tick_id(self._run_id, symbol, seq),
            symbol=symbol,
            seq=seq,
            ts_us=clamp_int64(parsed.ts_us) if parsed.ts_us is not None else recv,
            recv_us=recv,
            bid=parsed.bid,
            ask=parsed.ask,
            bid_size=parsed.bid_size,
            ask_size=parsed.ask_size,
            last=parsed.last,
            source=self.name,
        )

    def _trade(self, symbol: str, response: httpx.Response) -> Trade:
        parsed: ParsedTrade
        parsed, recv = self._parsed(symbol, response, self.preset.parse_trade)
        seq = self._trade_seq.get(symbol, 0) + 1
        self._trade_seq[symbol] = seq
        return Trade(
            trade_id=make_trade_id(self._run_id, symbol, seq),
            symbol=symbol,
            seq=seq,
            ts_us=clamp_int64(parsed.ts_us),
            recv_us=recv,
            price=parsed.price,
            size=parsed.size,
            venue=parsed.venue,
            conditions=parsed.conditions,
            correction=parsed.correction,
            provider_id=parsed.provider_id,
            tape=parsed.tape,
            source=self.name,
        )

    def _decode(self, symbol: str, response: httpx.Response) -> Any:
        content = response.content
        if not content.strip():
            raise UnknownSymbolError(
                self._msg(symbol, f"unknown symbol: empty answer (HTTP {response.status_code})"),
                symbol=symbol,
            )
        why = ""
        try:
            # NaN/Infinity some APIs send are accepted, so the validator sees them
            return decode_json(content)
        except BoundaryError as exc:
            why = str(exc)  # raised below, outside the handler: nothing of the body is chained
        kind = response.headers.get("content-type", "no content-type")
        text = content[:200].decode("utf-8", "replace")
        what = "is not JSON" if why.startswith("not valid JSON") else f"refused ({why})"
        raise TransientSourceError(
            self._msg(
                symbol,
                f"answer {what} ({kind}, {len(content)} bytes): {_snippet(text)!r}",
            ),
            symbol=symbol,
        )

    # -- statuses and rate limits -------------------------------------------------------------

    def _cap(self, seconds: float) -> float:
        return min(max(0.0, seconds), self.config.max_retry_after_seconds)

    def _reset_in(self, headers: httpx.Headers, now_us_: int) -> float | None:
        name = self.config.rate_limit_reset_header
        if name is None or self.config.rate_limit_remaining_header is None:
            return None
        return parse_rate_limit_reset(headers.get(name), now_us_ / 1e6)

    def _note_rate_limit(self, headers: httpx.Headers, now_us_: int) -> None:
        """The window's remaining requests, less those still in flight (which the server
        may not have counted yet), become the budget every symbol's requests draw on;
        remaining 0 with a known reset refuses requests until then (all symbols)."""
        name = self.config.rate_limit_remaining_header
        if name is None:
            return
        remaining = headers.get(name)
        if remaining is None:
            return
        try:
            left = float(remaining.strip())
        except ValueError:
            return
        if not math.isfinite(left):
            return
        reset = self._reset_in(headers, now_us_)
        if reset is None or reset <= 0:
            return  # a budget without a reset could never refill: not used
        reset_us = now_us_ + _micros(self._cap(reset))
        if left <= 0:
            self._blocked_until_us = reset_us
        left_now = max(0, int(left) - self._in_flight)
        self._window_limit = max(self._window_limit, int(min(left, 1e9)) + 1)
        if self._budget is None or not self._budget_reset_us or now_us_ >= self._budget_reset_us:
            self._budget = left_now  # the first answer of a window
            self._budget_reset_us = reset_us
        else:
            # answers come back out of order: one counted earlier may arrive later and tell
            # of more room than is left, so within a window the budget only shrinks
            self._budget = min(self._budget, left_now)
            self._budget_reset_us = max(self._budget_reset_us, reset_us)

    def _api_detail(self, response: httpx.Response) -> str:
        """The API's own words about a failure, short and redacted (or nothing)."""
        try:
            text = response.text
        except Exception:
            return ""
        message = None
        try:
            body = decode_json(text)
        except BoundaryError:
            body = None
        if isinstance(body, Mapping):
            for key in ("message", "error", "msg", "detail", "status"):
                value = body.get(key)
                if isinstance(value, str) and value:
                    message = value
                    break
        elif text.strip() and "<" not in text[:50]:
            message = text
        return f": {_snippet(message)}" if message else ""

    def _status_error(self, symbol: str, response: httpx.Response, now_us_: int) -> SourceError:
        code = response.status_code
        reason = response.reason_phrase or ""
        status = f"HTTP {code}" + (f" {reason}" if reason else "")
        detail = self._api_detail(response)
        now_s = now_us_ / 1e6
        retry_after = parse_retry_after(response.headers.get("retry-after"), now_s)
        if code == 429:
            wait = retry_after
            if wait is None:
                wait = self._reset_in(response.headers, now_us_)
            if wait is None:
                wait = self.config.default_retry_after_seconds
            wait = self._cap(wait)
            return RateLimitError(
                self._msg(
                    symbol, f"rate limited ({status}); retry after {format_seconds(wait)}{detail}"
                ),
                symbol=symbol,
                retry_after=wait,
            )
        if code == 503 and retry_after is not None:
            # "busy, come back in N s": slow the whole source, not a failure of this symbol
            wait = self._cap(retry_after)
            return RateLimitError(
                self._msg(
                    symbol,
                    f"server busy ({status}); retry after {format_seconds(wait)}{detail}",
                ),
                symbol=symbol,
                retry_after=wait,
            )
        if code in (502, 504) and self._proxy is not None:
            return ProxyError(
                self._msg(
                    symbol,
                    f"proxy error ({status} from the proxy {_where(self._proxy)} or the API "
                    "behind it); check source.proxy / HTTPS_PROXY",
                ),
                symbol=symbol,
            )
        if code in (401, 403):
            return AuthenticationError(
                self._msg(
                    symbol,
                    f"not authorized ({status}); check the credentials in "
                    f"{self._creds.describe()}{detail}",
                ),
                symbol=symbol,
            )
        if code == 404:
            return UnknownSymbolError(
                self._msg(symbol, f"unknown symbol ({status}){detail}"), symbol=symbol
            )
        if code >= 500 or code in (408, 425):
            return TransientSourceError(
                self._msg(symbol, f"server error ({status}){detail}"),
                symbol=symbol,
                retry_after=None if retry_after is None else self._cap(retry_after),
            )
        if code in (400, 422):
            return BadRequestError(
                self._msg(symbol, f"request rejected as malformed ({status}){detail}"),
                symbol=symbol,
            )
        if 300 <= code < 400:
            return BadRequestError(
                self._msg(symbol, f"unexpected redirect ({status}); check base_url"),
                symbol=symbol,
            )
        return BadRequestError(
            self._msg(symbol, f"request refused ({status}){detail}"), symbol=symbol
        )


def _build(config: HttpSourceConfig, **kwargs: Any) -> HttpSource:
    return HttpSource(config, **kwargs)


register_source("http", _build)

"""A real HTTP server on 127.0.0.1 that answers like each quote provider.

``QuoteServer`` is a small threaded ``http.server`` on a free port; ``Provider``
answers each preset's latest-quote endpoint (and alpaca's and polygon's
latest-trade endpoints) in that provider's documented shape, with per-symbol
faults (slow, 5xx, 429, 401, 404, not JSON, wrong shape, odd values). Shared by
the HTTP source tests, the end-to-end collector tests, the chaos tests and the
secrets-leak tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from robust_collector.config import config_from_dict
from robust_collector.errors import (
    SourceError,
)
from robust_collector.model import Quote, Trade
from robust_collector.sources import (
    HttpSource,
)

KEY = "pk-test/7Hq+Zr9=Lw"  # has characters that URL encoding changes
SECRET = "sk-test-9d8f7e6a5b4c3d2e"
ENV = {"RC_TEST_KEY": KEY, "RC_TEST_SECRET": SECRET}
T0_US = 1_767_000_000_000_000  # 2025-12-29, the providers' quote times start here
NOW_US = T0_US + 5_000_000  # our clock in source-level tests: 5 s after the first quote


# -- a real HTTP server ------------------------------------------------------------------


@dataclass
class Request:
    """What the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    """What the server answers: a JSON-able object (or raw bytes/str), headers, a delay."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # bursts of new connections are not refused by a full backlog


class QuoteServer:
    """A threaded HTTP/1.1 server on a free port of 127.0.0.1; ``app(request) -> Reply``."""

    def __init__(self, app: Callable[[Request], Reply]) -> None:
        self.app = app
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one send per answer (no delayed-ACK stall on keep-alive)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                req = Request("GET", unquote(parts.path), query, dict(self.headers.items()))
                with outer._lock:
                    outer.requests.append(req)
                reply = outer.app(req)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.raw is not None:
                    data = reply.raw
                elif reply.body is None:
                    data = b""
                else:
                    data = json.dumps(reply.body).encode()  # NaN and Infinity as Python writes them
                try:
                    self.send_response(reply.status)
                    ctype = "application/json" if reply.raw is None else "text/html"
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> QuoteServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, symbol: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if symbol_of(r) == symbol)


# -- fake providers ------------------------------------------------------------------------

PRESETS = ("alpaca", "polygon", "finnhub", "custom")
CUSTOM = {
    "url": "{base_url}/v1/quote/{symbol}",
    "headers": {"X-Api-Key": "{api_key}"},
    "api_key_env": "RC_TEST_KEY",
    "fields": {
        "timestamp": "data.time",
        "timestamp_format": "unix_ms",
        "bid": "data.bid",
        "ask": "data.ask",
        "bid_size": "data.bidSize",
        "ask_size": "data.askSize",
        "symbol": "data.sym",
    },
}
# the provider's JSON path of each quote field (finnhub has only the last price)
FIELD_PATHS = {
    "alpaca": {"bid": "quote.bp", "ask": "quote.ap", "t": "quote.t"},
    "polygon": {"bid": "results.p", "ask": "results.P", "t": "results.t"},
    "finnhub": {"last": "c", "t": "t"},
    "custom": {"bid": "data.bid", "ask": "data.ask", "t": "data.time"},
}


# the provider's JSON path of each trade field (alpaca and polygon serve a latest trade)
TRADE_PATHS = {
    "alpaca": {"price": "trade.p", "size": "trade.s", "t": "trade.t", "c": "trade.c"},
    "polygon": {"price": "results.p", "size": "results.s", "t": "results.t", "c": "results.c"},
}


def symbol_of(req: Request) -> str | None:
    """The symbol a request asks for, whatever the provider's URL shape."""
    if "symbol" in req.query:
        return req.query["symbol"]
    p = req.path.split("/")
    if req.path.startswith("/v2/stocks/"):
        return p[3]
    if req.path.startswith(("/v2/last/nbbo/", "/v2/last/trade/", "/v1/quote/")):
        return p[-1]
    return None


def is_trade_request(req: Request) -> bool:
    """True for alpaca's ``/v2/stocks/{sym}/trades/latest`` and polygon's ``/v2/last/trade/``."""
    return req.path.endswith("/trades/latest") or req.path.startswith("/v2/last/trade/")


def rfc3339(us: int) -> str:
    """Epoch µs as Alpaca writes it: RFC 3339 with nanoseconds."""
    d = dt.datetime.fromtimestamp(us // 1_000_000, tz=dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}123Z"


def quote_body(
    preset: str,
    symbol: str,
    bid: Any = 100.0,
    ask: Any = 100.02,
    ts_us: int = T0_US,
    *,
    bid_size: Any = 300,
    ask_size: Any = 200,
) -> Any:
    """A latest-quote answer in the provider's documented shape."""
    if preset == "alpaca":
        return {
            "symbol": symbol,
            "quote": {
                "t": rfc3339(ts_us),
                "ax": "V",
                "ap": ask,
                "as": ask_size,
                "bx": "V",
                "bp": bid,
                "bs": bid_size,
                "c": ["R"],
                "z": "B",
            },
        }
    if preset == "polygon":
        return {
            "status": "OK",
            "request_id": "b84e24636301f19f88e0dfbf9a45ed5c",
            "results": {
                "T": symbol,
                "P": ask,
                "S": ask_size,
                "p": bid,
                "s": bid_size,
                "t": ts_us * 1000 + 123,
                "q": 23_547_000 + ts_us % 1000,
                "x": 11,
                "X": 19,
                "y": ts_us * 1000,
                "z": 3,
            },
        }
    if preset == "finnhub":
        return {
            "c": bid,
            "d": 0.5,
            "dp": 0.1,
            "h": 101.0,
            "l": 99.0,
            "o": 99.5,
            "pc": 99.6,
            "t": ts_us // 1_000_000,
        }
    return {
        "data": {
            "sym": symbol,
            "time": ts_us // 1000,
            "bid": bid,
            "ask": ask,
            "bidSize": bid_size,
            "askSize": ask_size,
        }
    }


def trade_body(
    preset: str,
    symbol: str,
    price: Any = 100.01,
    size: Any = 100,
    ts_us: int = T0_US,
    *,
    trade_id: int = 52983525029461,
) -> Any:
    """A latest-trade answer in the provider's documented shape (alpaca, polygon)."""
    if preset == "alpaca":
        return {
            "symbol": symbol,
            "trade": {
                "t": rfc3339(ts_us),
                "x": "V",
                "p": price,
                "s": size,
                "c": ["@", "I"],
                "i": trade_id,
                "z": "B",
            },
        }
    if preset == "polygon":
        return {
            "status": "OK",
            "request_id": "f05562305bd26ced64b98ed68b3c5d96",
            "results": {
                "T": symbol,
                "c": [37, 14],
                "f": ts_us * 1000 + 400,
                "i": str(trade_id),
                "p": price,
                "q": 3_135_876 + ts_us % 1000,
                "r": 202,
                "s": size,
                "t": ts_us * 1000 + 123,
                "x": 4,
                "y": ts_us * 1000 - 2000,
                "z": 2,
            },
        }
    raise ValueError(f"{preset} serves no latest trade")


def set_path(body: Any, path: str, value: Any) -> Any:
    node = body
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return body


class Provider:
    """Answers one preset's endpoint; ``faults[symbol](n) -> Reply | None`` overrides (n = 1, 2, ...).

    Without a fault, each request gets a fresh quote: price and time move on. Requests
    to the latest-trade endpoint are counted apart (``trade_n``), get a fresh trade,
    and take their faults from ``trade_faults``.
    """

    def __init__(self, preset: str) -> None:
        self.preset = preset
        self.faults: dict[str, Callable[[int], Reply | None]] = {}
        self.trade_faults: dict[str, Callable[[int], Reply | None]] = {}
        self.n: dict[str, int] = {}
        self.trade_n: dict[str, int] = {}
        self._lock = threading.Lock()
        self.rate_headers: dict[str, str] = {}

    def fresh(self, symbol: str, n: int) -> Reply:
        price = 100.0 + 0.01 * (n % 7)
        body = quote_body(
            self.preset, symbol, bid=round(price, 2), ask=round(price + 0.02, 2),
            ts_us=T0_US + n * 1000,
        )  # fmt: skip
        return Reply(200, body, dict(self.rate_headers))

    def fresh_trade(self, symbol: str, n: int) -> Reply:
        body = trade_body(
            self.preset, symbol, price=round(100.0 + 0.01 * (n % 5), 2), size=100 * (n % 3 + 1),
            ts_us=T0_US + n * 1000, trade_id=1000 + n,
        )  # fmt: skip
        return Reply(200, body, dict(self.rate_headers))

    def __call__(self, req: Request) -> Reply:
        sym = symbol_of(req)
        if sym is None:
            return Reply(404, {"message": "no such route"})
        if is_trade_request(req):
            if self.preset not in TRADE_PATHS:
                return Reply(404, {"message": "no such route"})
            with self._lock:
                n = self.trade_n[sym] = self.trade_n.get(sym, 0) + 1
            fault = self.trade_faults.get(sym)
            reply = fault(n) if fault is not None else None
            return reply if reply is not None else self.fresh_trade(sym, n)
        with self._lock:
            n = self.n[sym] = self.n.get(sym, 0) + 1
        fault = self.faults.get(sym)
        reply = fault(n) if fault is not None else None
        return reply if reply is not None else self.fresh(sym, n)


def source_config(preset: str, base_url: str, **over: Any) -> dict[str, Any]:
    """The ``source`` section pointing ``preset`` at the test server."""
    cfg: dict[str, Any] = {"type": "http", "preset": preset, "base_url": base_url}
    if preset == "custom":
        cfg.update(CUSTOM)
    else:
        cfg["api_key_env"] = "RC_TEST_KEY"
    if preset == "alpaca":
        cfg["api_secret_env"] = "RC_TEST_SECRET"
    cfg["timeout_seconds"] = 0.5
    cfg.update(over)
    return cfg


def make_source(preset: str, base_url: str, clock_us: int = NOW_US, **over: Any) -> HttpSource:
    config = config_from_dict({"source": source_config(preset, base_url, **over)}).source
    return HttpSource(config, clock_us=lambda: clock_us, environ=ENV)


def fetch(src: HttpSource, *symbols: str) -> list[Quote | SourceError]:
    """Fetch each symbol in turn (one event loop); errors are returned, not raised."""

    async def go() -> list[Quote | SourceError]:
        await src.start("run1")
        out: list[Quote | SourceError] = []
        try:
            for s in symbols:
                try:
                    out.append(await src.fetch(s))
                except SourceError as exc:
                    out.append(exc)
        finally:
            await src.aclose()
        return out

    return asyncio.run(go())


def one(src: HttpSource, symbol: str = "SPY") -> Quote | SourceError:
    return fetch(src, symbol)[0]


def fetch_trades(src: HttpSource, *symbols: str) -> list[Trade | SourceError]:
    """Fetch each symbol's latest trade in turn (one event loop); errors are returned."""

    async def go() -> list[Trade | SourceError]:
        await src.start("run1")
        out: list[Trade | SourceError] = []
        try:
            for s in symbols:
                try:
                    out.append(await src.fetch_trade(s))
                except SourceError as exc:
                    out.append(exc)
        finally:
            await src.aclose()
        return out

    return asyncio.run(go())


def assert_clean(exc: BaseException) -> None:
    """No credential in the message, the repr, or any chained exception."""
    for text in (str(exc), repr(exc), str(exc.args)):
        assert KEY not in text and SECRET not in text
    assert exc.__cause__ is None and exc.__context__ is None

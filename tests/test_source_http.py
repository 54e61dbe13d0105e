"""The HTTP source against a real HTTP server on 127.0.0.1 that answers like each provider.

``QuoteServer`` is a small threaded ``http.server`` on a free port; ``Provider``
answers each preset's latest-quote endpoint in that provider's documented shape,
with per-symbol faults (slow, 5xx, 429, 401, 404, not JSON, wrong shape, odd
values); both live in ``helpers.http_server``, shared with the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from helpers.http_server import (
    ENV,
    FIELD_PATHS,
    KEY,
    NOW_US,
    PRESETS,
    SECRET,
    T0_US,
    Provider,
    QuoteServer,
    Reply,
    assert_clean,
    fetch,
    make_source,
    one,
    quote_body,
    set_path,
    source_config,
)

from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text, ts_in_window
from robust_collector.config import config_from_dict
from robust_collector.errors import (
    ConfigError,
    PermanentSourceError,
    RateLimitError,
    SourceError,
    TransientSourceError,
)
from robust_collector.model import Quote
from robust_collector.secrets import redact
from robust_collector.sources import (
    AuthenticationError,
    BadRequestError,
    HttpSource,
    MalformedResponseError,
    UnknownSymbolError,
    create_source,
)
from robust_collector.sources.http import parse_rate_limit_reset, parse_retry_after
from robust_collector.sources.presets import (
    ShapeProblem,
    parse_rfc3339_us,
    parse_timestamp_us,
    to_number,
)

pytestmark = pytest.mark.integration  # real HTTP servers on 127.0.0.1


@pytest.fixture
def provider_server() -> Iterator[Callable[[str], tuple[Provider, QuoteServer]]]:
    """``start(preset)`` -> (provider, running server); servers stop at the end."""
    servers: list[QuoteServer] = []

    def start(preset: str) -> tuple[Provider, QuoteServer]:
        prov = Provider(preset)
        srv = QuoteServer(prov).__enter__()
        servers.append(srv)
        return prov, srv

    yield start
    for s in servers:
        s.__exit__()


# -- normal quotes ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_normal_quotes_in_each_providers_shape(provider_server, preset):
    _, srv = provider_server(preset)
    src = make_source(preset, srv.url)
    q1, q2, q3 = fetch(src, "SPY", "SPY", "QQQ")
    assert isinstance(q1, Quote) and isinstance(q2, Quote) and isinstance(q3, Quote)
    assert (q1.symbol, q1.seq, q2.seq, q3.seq) == ("SPY", 1, 2, 1)
    assert q1.tick_id == "run1:SPY:1" and q3.tick_id == "run1:QQQ:1"
    assert q1.recv_us == NOW_US  # our clock
    assert q1.source == preset
    if preset == "finnhub":  # a last price, to the second
        assert (q1.last, q1.bid, q1.ask) == (100.01, None, None)
        assert q1.ts_us == (T0_US + 1000) // 1_000_000 * 1_000_000
    else:
        assert (q1.bid, q1.ask, q1.bid_size, q1.ask_size) == (100.01, 100.03, 300.0, 200.0)
        assert q1.ts_us == T0_US + 1000  # the provider's time (ns and ms truncated to µs)
        assert q1.last is None


@pytest.mark.parametrize("preset", PRESETS)
def test_requests_carry_the_credentials_where_the_provider_wants_them(provider_server, preset):
    _, srv = provider_server(preset)
    fetch(make_source(preset, srv.url), "BRK.B")
    req = srv.requests[0]
    if preset == "alpaca":
        assert req.path == "/v2/stocks/BRK.B/quotes/latest"
        assert req.headers["APCA-API-KEY-ID"] == KEY
        assert req.headers["APCA-API-SECRET-KEY"] == SECRET
    elif preset == "polygon":
        assert req.path == "/v2/last/nbbo/BRK.B"
        assert req.headers["Authorization"] == f"Bearer {KEY}"
        assert "apiKey" not in req.query
    elif preset == "finnhub":
        assert req.path == "/api/v1/quote"
        assert req.query == {"symbol": "BRK.B", "token": KEY}
    else:
        assert req.path == "/v1/quote/BRK.B"
        assert req.headers["X-Api-Key"] == KEY


def test_polygon_key_as_query_parameter_and_alpaca_feed(provider_server):
    _, srv = provider_server("polygon")
    fetch(make_source("polygon", srv.url, auth="query"), "SPY")
    assert srv.requests[0].query == {"apiKey": KEY}
    assert "Authorization" not in srv.requests[0].headers
    _, srv = provider_server("alpaca")
    fetch(make_source("alpaca", srv.url, feed="iex"), "SPY")
    assert srv.requests[0].query == {"feed": "iex"}


def test_connections_are_pooled(provider_server):
    _, srv = provider_server("polygon")
    src = make_source("polygon", srv.url)
    before = threading.active_count()
    quotes = fetch(src, *["SPY"] * 20)
    assert all(isinstance(q, Quote) for q in quotes)
    # HTTP/1.1 keep-alive: 20 sequential requests reuse one connection (one server thread)
    assert threading.active_count() - before <= 2


# -- transient failures ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_a_response_slower_than_the_timeout_is_transient(provider_server, preset):
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(delay=1.0) if n == 1 else None
    src = make_source(preset, srv.url, timeout_seconds=0.1)
    t = time.monotonic()
    err, ok = fetch(src, "SPY", "SPY")
    assert time.monotonic() - t < 0.9  # gave up at the timeout, did not wait for the answer
    assert isinstance(err, TransientSourceError) and not err.permanent
    assert f"{preset} SPY: timed out after 0.1s" in str(err)
    assert_clean(err)
    assert isinstance(ok, Quote)  # the next attempt works


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(provider_server, preset, status):
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(status, {"message": "upstream exploded"})
    err = one(make_source(preset, srv.url))
    assert isinstance(err, TransientSourceError) and not isinstance(err, RateLimitError)
    assert f"HTTP {status}" in str(err) and "upstream exploded" in str(err)


def test_connection_refused_is_transient():
    src = make_source("polygon", "http://127.0.0.1:9")  # discard port: nothing listens
    err = one(src)
    assert isinstance(err, TransientSourceError) and "connection error" in str(err)
    assert_clean(err)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_body_that_is_not_json_is_transient(provider_server, preset):
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(raw=b"<html><body>502 Bad Gateway</body></html>")
    err = one(make_source(preset, srv.url))
    assert isinstance(err, TransientSourceError) and not err.permanent
    assert "answer is not JSON (text/html, 41 bytes)" in str(err)
    assert_clean(err)


# -- rate limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_429_with_retry_after_in_seconds(provider_server, preset):
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(
        429, {"message": "too many requests"}, {"Retry-After": "7"}
    )
    err = one(make_source(preset, srv.url))
    assert isinstance(err, RateLimitError) and err.retry_after == 7.0
    assert "rate limited (HTTP 429 Too Many Requests); retry after 7s" in str(err)


@pytest.mark.parametrize("preset", PRESETS)
def test_429_with_retry_after_as_an_http_date(provider_server, preset):
    prov, srv = provider_server(preset)
    when = dt.datetime.fromtimestamp(NOW_US / 1e6 + 30, tz=dt.UTC)
    header = format_datetime(when, usegmt=True)  # e.g. 'Mon, 29 Dec 2025 09:20:35 GMT'
    prov.faults["SPY"] = lambda n: Reply(429, None, {"Retry-After": header})
    err = one(make_source(preset, srv.url))
    assert isinstance(err, RateLimitError)
    assert err.retry_after == pytest.approx(30.0, abs=1.0)  # HTTP dates have 1 s resolution


def test_429_without_retry_after_uses_the_reset_header_then_the_default(provider_server):
    prov, srv = provider_server("alpaca")
    reset = str(NOW_US // 1_000_000 + 12)  # epoch seconds, as Alpaca sends
    prov.faults["SPY"] = lambda n: Reply(
        429, None, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    )
    prov.faults["QQQ"] = lambda n: Reply(429, None)
    err1 = one(make_source("alpaca", srv.url), "SPY")
    err2 = one(make_source("alpaca", srv.url, default_retry_after_seconds=2.5), "QQQ")
    assert isinstance(err1, RateLimitError) and err1.retry_after == pytest.approx(12.0, abs=1)
    assert isinstance(err2, RateLimitError) and err2.retry_after == 2.5


def test_retry_after_is_capped(provider_server):
    prov, srv = provider_server("polygon")
    prov.faults["SPY"] = lambda n: Reply(429, None, {"Retry-After": "86400"})
    err = one(make_source("polygon", srv.url, max_retry_after_seconds=60))
    assert isinstance(err, RateLimitError) and err.retry_after == 60.0


def test_503_with_retry_after_slows_the_source_like_a_429(provider_server):
    prov, srv = provider_server("polygon")
    prov.faults["SPY"] = lambda n: Reply(503, None, {"Retry-After": "3"})
    err = one(make_source("polygon", srv.url))
    assert type(err) is RateLimitError and err.retry_after == 3.0
    assert "server busy (HTTP 503" in str(err) and "retry after 3s" in str(err)
    prov.faults["SPY"] = lambda n: Reply(503, None)  # no Retry-After: a plain server error
    err = one(make_source("polygon", srv.url))
    assert type(err) is TransientSourceError and err.retry_after is None


def test_no_requests_left_makes_the_next_fetch_wait_until_the_reset(provider_server):
    """X-RateLimit-Remaining: 0 on a good answer: the quote is kept, then every symbol
    waits (RateLimitError, no request sent) until X-RateLimit-Reset."""
    prov, srv = provider_server("alpaca")
    now = [NOW_US]
    reset_s = NOW_US // 1_000_000 + 10
    prov.rate_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_s)}
    config = config_from_dict({"source": source_config("alpaca", srv.url)}).source
    src = HttpSource(config, clock_us=lambda: now[0], environ=ENV)

    async def go() -> list[Any]:
        out: list[Any] = []
        await src.start("r")
        for step in (0, 0, 4_000_000, 7_000_000):
            now[0] += step
            try:
                out.append(await src.fetch("SPY" if step < 4_000_000 else "QQQ"))
            except SourceError as exc:
                out.append(exc)
        await src.aclose()
        return out

    first, blocked, still, after = asyncio.run(go())
    assert isinstance(first, Quote)
    assert isinstance(blocked, RateLimitError)
    assert blocked.retry_after == pytest.approx(reset_s - NOW_US / 1e6)
    assert isinstance(still, RateLimitError)  # another symbol, 4 s later: still waiting
    assert still.retry_after == pytest.approx(reset_s - NOW_US / 1e6 - 4)
    assert isinstance(after, Quote)  # past the reset: asks again
    assert len(srv.requests) == 2


def test_rate_limit_headers_can_be_ignored(provider_server):
    prov, srv = provider_server("alpaca")
    prov.rate_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}
    src = make_source("alpaca", srv.url, rate_limit_remaining_header=None)
    assert all(isinstance(q, Quote) for q in fetch(src, "SPY", "SPY", "SPY"))


# -- permanent failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("status", [401, 403])
def test_bad_credentials_are_permanent_with_a_clear_message(provider_server, preset, status):
    prov, srv = provider_server(preset)
    # some APIs echo the key they refused: it must not reach our message
    prov.faults["SPY"] = lambda n: Reply(status, {"error": f"invalid api key {KEY} / {SECRET}"})
    err = one(make_source(preset, srv.url))
    assert isinstance(err, AuthenticationError) and err.permanent
    assert f"{preset} SPY: not authorized (HTTP {status}" in str(err)
    assert "RC_TEST_KEY" in str(err)  # says where the key came from
    assert "invalid api key ***" in str(err)
    assert_clean(err)


@pytest.mark.parametrize("preset", PRESETS)
def test_404_is_permanent_for_that_symbol_only(provider_server, preset):
    prov, srv = provider_server(preset)
    prov.faults["NOPE"] = lambda n: Reply(404, {"message": "Data not found."})
    ok1, bad, ok2 = fetch(make_source(preset, srv.url), "SPY", "NOPE", "QQQ")
    assert isinstance(bad, UnknownSymbolError) and bad.permanent and bad.symbol == "NOPE"
    assert str(bad) == f"{preset} NOPE: unknown symbol (HTTP 404 Not Found): Data not found."
    assert isinstance(ok1, Quote) and isinstance(ok2, Quote)


@pytest.mark.parametrize(
    ("preset", "answer"),
    [
        ("alpaca", {"symbol": "NOPE", "quote": {}}),
        ("alpaca", set_path(quote_body("alpaca", "NOPE"), "quote.t", "0001-01-01T00:00:00Z")),
        ("polygon", {"status": "NOT_FOUND", "request_id": "x", "message": "Data not found."}),
        ("polygon", {"status": "OK", "request_id": "x", "results": {}}),
        ("finnhub", {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}),
        ("custom", {}),
        ("custom", None),  # an empty body
    ],
)
def test_empty_answers_mean_an_unknown_symbol(provider_server, preset, answer):
    prov, srv = provider_server(preset)
    prov.faults["NOPE"] = lambda n: Reply(200, answer)
    err = one(make_source(preset, srv.url), "NOPE")
    assert isinstance(err, UnknownSymbolError) and err.permanent
    assert str(err).startswith(f"{preset} NOPE: unknown symbol")
    assert_clean(err)


@pytest.mark.parametrize("status", [400, 422])
def test_a_request_the_api_calls_malformed_is_permanent(provider_server, status):
    prov, srv = provider_server("alpaca")
    prov.faults["SPY"] = lambda n: Reply(status, {"message": "invalid feed"})
    err = one(make_source("alpaca", srv.url, feed="nope"))
    assert isinstance(err, BadRequestError) and err.permanent
    assert f"request rejected as malformed (HTTP {status}" in str(err)
    assert "invalid feed" in str(err)


# -- bodies of the wrong shape and odd values -------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "answer", "message"),
    [
        ("alpaca", [1, 2], "(body): expected a JSON object, got a list"),
        ("alpaca", {"symbol": "SPY"}, "quote: missing"),
        ("alpaca", {"quote": "yes"}, "quote: expected a JSON object, got 'yes'"),
        ("alpaca", {"quote": {"ap": 1.0}}, "quote.t: missing"),
        ("alpaca", {"quote": {"t": "yesterday", "ap": 1.0}}, "quote.t: expected an RFC 3339"),
        ("alpaca", {"quote": {"t": "2025-12-29T09:00:00Z"}}, "quote.ap: missing"),
        ("alpaca", {"symbol": "QQQ", "quote": {}}, "symbol: expected 'SPY', got 'QQQ'"),
        (
            "polygon",
            {"status": "OK", "results": [1]},
            "results: expected a JSON object, got a list",
        ),
        ("polygon", {"status": "OK", "results": {"P": 1.0}}, "results.t: missing"),
        ("polygon", {"results": {"t": "abc", "P": 1}}, "results.t: expected a SIP timestamp"),
        ("polygon", {"foo": 1}, "results: missing"),
        ("finnhub", {"d": 1}, "c: missing"),
        ("finnhub", {"c": 1.0}, "t: missing"),
        ("finnhub", {"c": {"v": 1}, "t": 1}, "c: expected a number, got an object"),
        ("custom", {"data": {"time": 1}}, "data.bid: missing"),
        ("custom", {"items": []}, "data.bid: missing"),
    ],
)
def test_json_of_the_wrong_shape_names_the_field(provider_server, preset, answer, message):
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(200, answer)
    err = one(make_source(preset, srv.url))
    assert isinstance(err, MalformedResponseError) and err.permanent, err
    assert str(err).startswith(f"{preset} SPY: {message}")
    assert_clean(err)
    assert err.field == message.split(":")[0]


@pytest.mark.parametrize("preset", PRESETS)
def test_values_that_are_not_numbers_are_named_errors(provider_server, preset):
    prov, srv = provider_server(preset)
    f = next(iter(FIELD_PATHS[preset].items()))  # (field, path): bid, or finnhub's c
    prov.faults["SPY"] = lambda n: Reply(200, set_path(quote_body(preset, "SPY"), f[1], "abc"))
    prov.faults["QQQ"] = lambda n: Reply(200, set_path(quote_body(preset, "QQQ"), f[1], True))
    e1, e2 = fetch(make_source(preset, srv.url), "SPY", "QQQ")
    assert isinstance(e1, MalformedResponseError) and isinstance(e2, MalformedResponseError)
    assert str(e1) == f"{preset} SPY: {f[1]}: expected a number, got 'abc'"
    assert str(e2) == f"{preset} QQQ: {f[1]}: expected a number, got True"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("101.25", 101.25),
        (" 1e2 ", 100.0),
        (None, None),
        ("NaN", math.nan),
        (math.nan, math.nan),
        (1e300, 1e300),
        (10**400, math.inf),
        (math.inf, math.inf),
    ],
)
def test_odd_values_pass_to_the_validator(provider_server, preset, raw, expected):
    """Numeric strings are read; null is a missing side; NaN and huge values are kept so
    the validator rejects them (non_finite, price_range)."""
    prov, srv = provider_server(preset)
    field_name, path = next(iter(FIELD_PATHS[preset].items()))
    body = set_path(quote_body(preset, "SPY"), path, raw)
    text = json.dumps(body).replace(str(10**400), "1" + "0" * 400)
    prov.faults["SPY"] = lambda n: Reply(200, raw=text.encode())
    q = one(make_source(preset, srv.url))
    if preset == "finnhub" and raw is None:  # finnhub: null c with a time is a quote without price
        assert isinstance(q, Quote) and q.last is None
        return
    assert isinstance(q, Quote), q
    got = getattr(q, field_name)
    if expected is None or not math.isnan(expected):
        assert got == expected
    else:
        assert got is not None and math.isnan(got)


def test_null_sizes_and_absent_polygon_sizes_are_none(provider_server):
    prov, srv = provider_server("polygon")
    body = quote_body("polygon", "SPY")
    del body["results"]["s"]  # polygon omits zero-valued fields
    body["results"]["S"] = None
    prov.faults["SPY"] = lambda n: Reply(200, body)
    q = one(make_source("polygon", srv.url))
    assert isinstance(q, Quote) and q.bid_size is None and q.ask_size is None and q.bid == 100.0


def test_unchanged_quotes_keep_the_providers_time(provider_server):
    """A poll that sees the same quote again yields the same ts_us and prices (a new seq),
    so the validator's duplicate rule can drop it."""
    prov, srv = provider_server("alpaca")
    prov.faults["SPY"] = lambda n: Reply(200, quote_body("alpaca", "SPY"))
    q1, q2 = fetch(make_source("alpaca", srv.url), "SPY", "SPY")
    assert isinstance(q1, Quote) and isinstance(q2, Quote)
    assert (q1.ts_us, q1.bid, q1.ask) == (q2.ts_us, q2.bid, q2.ask)
    assert (q1.seq, q2.seq) == (1, 2)


def test_custom_preset_with_query_templates_and_timestamp_formats(provider_server):
    prov, srv = provider_server("custom")
    prov.faults["SPY"] = lambda n: Reply(
        200, {"result": [{"px": "42.5", "ts": "2025-12-29T09:20:00.5+01:00"}]}
    )
    src = make_source(
        "custom",
        srv.url,
        url="{base_url}/v1/quote/{symbol}",
        params={"apikey": "{api_key}", "s": "{symbol}"},
        headers={},
        fields={"last": "result.0.px", "timestamp": "result.0.ts", "timestamp_format": "rfc3339"},
    )
    q = one(src)
    assert isinstance(q, Quote) and q.last == 42.5
    assert q.ts_us == int(
        dt.datetime(2025, 12, 29, 8, 20, 0, 500000, tzinfo=dt.UTC).timestamp() * 1e6
    )
    assert srv.requests[0].query == {"apikey": KEY, "s": "SPY"}


def test_custom_preset_without_a_timestamp_uses_the_receive_time(provider_server):
    prov, srv = provider_server("custom")
    prov.faults["SPY"] = lambda n: Reply(200, {"price": 7})
    src = make_source("custom", srv.url, fields={"last": "price"}, headers={})
    q = one(src)
    assert isinstance(q, Quote) and q.ts_us == q.recv_us == NOW_US and q.last == 7.0


def test_custom_preset_reads_a_plain_url_without_credentials(provider_server):
    prov, srv = provider_server("custom")
    prov.faults["SPY"] = lambda n: Reply(200, {"p": 1.5, "t": 1_767_000_000_000_000_000})
    config = config_from_dict(
        {
            "source": {
                "type": "http",
                "preset": "custom",
                "url": srv.url + "/v1/quote/{symbol}",
                "fields": {"last": "p", "timestamp": "t", "timestamp_format": "unix_ns"},
            }
        }
    ).source
    q = one(HttpSource(config, environ={}))
    assert isinstance(q, Quote) and q.ts_us == T0_US and q.last == 1.5


# -- config and construction -------------------------------------------------------------------


def test_create_source_from_config_reads_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("RC_TEST_KEY", KEY)
    monkeypatch.setenv("RC_TEST_SECRET", SECRET)
    cfg = config_from_dict({"source": source_config("alpaca", "http://127.0.0.1:1")})
    src = create_source(cfg.source)
    assert isinstance(src, HttpSource) and src.name == "alpaca"
    assert redact(f"x {KEY} y") == "x *** y"  # registered for redaction
    assert KEY not in repr(vars(src)) and SECRET not in repr(vars(src))


def test_a_missing_environment_variable_is_a_config_error():
    cfg = config_from_dict({"source": source_config("polygon", "http://x", api_key_env="RC_NOPE")})
    with pytest.raises(
        ConfigError, match=re.escape("source.api_key_env: environment variable RC_NOPE is not set")
    ):
        HttpSource(cfg.source, environ={})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"type": "http"}, "source.preset: required key is missing"),
        ({"type": "http", "preset": "nope"}, "source.preset: expected one of"),
        ({"type": "http", "preset": "custom"}, "source.url: required for preset 'custom'"),
        (
            {"type": "http", "preset": "custom", "url": "http://x/{sym}", "fields": {"last": "p"}},
            "source.url: unknown placeholder {sym}",
        ),
        ({"type": "http", "preset": "polygon", "url": "http://x"}, "source.url: only for preset"),
        ({"type": "http", "preset": "alpaca", "auth": "query"}, "source.auth: alpaca takes"),
        ({"type": "http", "preset": "alpaca", "base_url": "ftp://x"}, "source.base_url: expected"),
        ({"type": "http", "preset": "alpaca", "timeout_seconds": 0}, "source.timeout_seconds"),
        ({"type": "http", "preset": "alpaca", "api_key": "x"}, "source.api_key: unknown key"),
    ],
)
def test_config_errors_name_the_key(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"source": section})


def test_mock_transport_replaces_the_network():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=quote_body("polygon", "SPY"))

    config = config_from_dict({"source": source_config("polygon", "http://api.test")}).source
    src = HttpSource(config, environ=ENV, transport=httpx.MockTransport(handler))
    q = one(src)
    assert isinstance(q, Quote) and q.ask == 100.02


# -- parsing helpers ---------------------------------------------------------------------------------


def test_retry_after_and_reset_parsing():
    now = 1_767_000_000.0
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("Mon, 29 Dec 2025 09:20:30 GMT", now) == 30.0
    assert parse_retry_after("Mon, 29 Dec 2025 09:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_rate_limit_reset(str(int(now) + 9), now) == 9.0  # epoch seconds
    assert parse_rate_limit_reset(str(int(now * 1000) + 2500), now) == 2.5  # epoch ms
    assert parse_rate_limit_reset("42", now) == 42.0  # seconds from now
    assert parse_rate_limit_reset("x", now) is None


def test_timestamp_and_number_parsing():
    assert parse_rfc3339_us("2025-12-29T09:20:00.123456789Z", "t") == 1_767_000_000_123_456
    assert parse_rfc3339_us("2025-12-29T04:20:00.1-05:00", "t") == 1_767_000_000_100_000
    with pytest.raises(ShapeProblem, match=r"t: timestamp out of range \(year 0\)"):
        parse_rfc3339_us("0000-01-01T00:00:00Z", "t")  # found by the alpaca property test
    base = 1_767_000_000
    for fmt, raw in [
        ("unix_s", base),
        ("unix_s", float(base)),
        ("unix_s", str(base)),
        ("unix_ms", base * 1000),
        ("unix_us", base * 1_000_000),
        ("unix_ns", base * 1_000_000_000),
        ("unix_ns", str(base * 1_000_000_000)),
    ]:
        assert parse_timestamp_us(raw, fmt, "t") == base * 1_000_000, (fmt, raw)
    assert parse_timestamp_us(1_767_000_000.25, "unix_s", "t") == 1_767_000_000_250_000
    assert to_number("-3.5e-1", "x") == -0.35
    for bad in ("1_000", "0x10", "", "12abc", [], {}):
        with pytest.raises(Exception, match=re.escape("x: expected a number")):
            to_number(bad, "x")


def test_every_error_is_a_typed_source_error():
    # the classes the retry stage reads: permanent ones are never retried
    for cls in (AuthenticationError, UnknownSymbolError, BadRequestError, MalformedResponseError):
        assert issubclass(cls, PermanentSourceError) and cls.permanent
    assert not TransientSourceError.permanent


def test_each_call_counts_requests(provider_server):
    _, srv = provider_server("finnhub")
    src = make_source("finnhub", srv.url)
    fetch(src, *itertools.repeat("SPY", 3))
    assert src.requests == 3 == srv.count("SPY")


# -- the boundary: hostile bodies and values ---------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "path", "raw"),
    [
        ("finnhub", "t", 10_000_000_000_000),  # ms where seconds belong: 1e19 µs
        ("finnhub", "t", 2**64),
        ("finnhub", "t", 1e308),
        ("polygon", "results.t", 10**30),
        ("custom", "data.time", 2**63),  # unix_ms
        ("custom", "data.time", "9" * 30),
    ],
)
def test_a_timestamp_in_the_wrong_unit_is_clamped_into_int64(provider_server, preset, path, raw):
    """Finding 2's source side: a time far out of range is a quote whose ts_us is clamped
    into int64 (the validator rejects it as bad_timestamp), never an int storage cannot hold."""
    prov, srv = provider_server(preset)
    body = set_path(quote_body(preset, "SPY"), path, raw)
    prov.faults["SPY"] = lambda n: Reply(200, body)
    q = one(make_source(preset, srv.url))
    assert isinstance(q, Quote), q
    assert q.ts_us == INT64_MAX and not ts_in_window(q.ts_us)


DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(
    ("status", "raw", "error"),
    [
        (200, DEEP, TransientSourceError),
        (200, '{"quote": ' * 2000 + "1" + "}" * 2000, TransientSourceError),
        (401, DEEP, AuthenticationError),
        (500, '{"error": ' * 5000 + '"x"' + "}" * 5000, TransientSourceError),
    ],
)
def test_a_deeply_nested_body_is_a_typed_error(provider_server, preset, status, raw, error):
    """A 10,000-deep body raised RecursionError out of fetch (the stdlib json decoder)."""
    prov, srv = provider_server(preset)
    prov.faults["SPY"] = lambda n: Reply(status, raw=raw.encode())
    err = one(make_source(preset, srv.url))
    assert type(err) is error or isinstance(err, error), err
    assert clean_text(str(err)) == str(err)


HOSTILE_TEXTS = [
    "quota exceeded for \ud83d",
    "bad\x00key",
    "\x1b[2J\x1b]0;pwned\x07cleared",
    "x" * 100_000,
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS, ids=["surrogate", "nul", "escapes", "long"])
@pytest.mark.parametrize("status", [200, 400, 401, 429, 503])
def test_api_error_texts_are_cleaned_before_they_reach_an_exception(provider_server, status, text):
    """Finding 1's source side: an API error body with a lone surrogate, NUL or terminal
    escapes becomes an exception whose message every sink accepts."""
    prov, srv = provider_server("alpaca")
    prov.faults["SPY"] = lambda n: Reply(status, {"message": text})
    err = one(make_source("alpaca", srv.url))
    assert isinstance(err, SourceError), err
    msg = str(err)
    assert clean_text(msg) == msg and len(msg) <= 2000
    msg.encode("utf-8")  # no lone surrogate left
    assert "\x00" not in msg and "\x1b" not in msg
    assert_clean(err)


def test_an_http_date_past_year_9999_is_no_retry_after():
    assert parse_retry_after("Mon, 01 Jan 9999999999999999999 00:00:00 GMT", 0.0) is None
    assert parse_retry_after("Mon, 01 Jan 99999 00:00:00 GMT", 0.0) is None


def test_parsing_helpers_stay_bounded():
    assert parse_timestamp_us(1e308, "unix_s", "t") == INT64_MAX
    assert parse_timestamp_us(-1e308, "unix_ms", "t") == INT64_MIN
    assert parse_timestamp_us(2**80, "unix_ns", "t") == INT64_MAX
    for fmt in ("unix_s", "unix_ns"):
        with pytest.raises(Exception, match="expected a"):
            parse_timestamp_us("1" * 5000, fmt, "t")  # int() would refuse it: ValueError
    assert parse_rfc3339_us("9999-12-31T23:59:59.999999Z", "t") < INT64_MAX

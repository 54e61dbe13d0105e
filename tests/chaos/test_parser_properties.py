"""Properties of every source parser: whatever arrives, a bounded quote (or trade) or a typed error.

Each HTTP preset's response parser (``Preset.parse`` and, for alpaca and polygon,
``Preset.parse_trade`` on a decoded body, and the whole ``HttpSource`` answer path of
``fetch`` and ``fetch_trade`` on raw bytes and any status) and each WebSocket preset's
frame parser (quote and trade messages) is given arbitrary bytes, arbitrary JSON (nested lists and objects of
integers up to and past 2**64, floats including NaN, infinities and 1e308, text with
lone surrogates, NUL and terminal escapes) and payloads of the right shape with
hostile field values. Each must return a bounded result (every integer inside int64,
every symbol, source and error text clean: ``clean_text(s) == s``) or raise its typed
error (``ShapeProblem``/``NoQuote``/``ApiErrorAnswer`` for a preset, a ``SourceError``
for the source, never an exception from a stream parser); nothing else.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_collector.boundary import INT64_MAX, INT64_MIN, BoundaryError, clean_text
from robust_collector.config import config_from_dict
from robust_collector.errors import SourceError
from robust_collector.model import Quote, Trade
from robust_collector.sources.http import HttpSource
from robust_collector.sources.presets import (
    ApiErrorAnswer,
    NoQuote,
    ParsedQuote,
    ParsedTrade,
    ShapeProblem,
    decode_json,
    make_preset,
)
from robust_collector.sources.stream import ParsedFrame
from robust_collector.sources.websocket_presets import AlpacaStream, PolygonStream

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
ENV = {"RC_TEST_KEY": "pk-test-123", "RC_TEST_SECRET": "sk-test-456"}

# -- strategies ----------------------------------------------------------------------------

POISON_TEXT = ["\ud83d", "\udc00", "\x00", "\x1b", "\x1b[2J", "\x1b]0;x\x07", "\u202e", "\x7f"]
HOSTILE_TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(POISON_TEXT)), max_size=12).map(
    "".join
) | st.sampled_from(["", "SPY", "x" * 5000, "NaN", "1e308", "-0", "0"])
HUGE_INTS = st.sampled_from([2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, -(10**30)])
INTS = st.integers(min_value=-(2**70), max_value=2**70) | HUGE_INTS
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [1e308, -1e308, math.nan, math.inf, -math.inf, 5e-324]
)
LEAVES = st.none() | st.booleans() | INTS | FLOATS | HOSTILE_TEXT
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            HOSTILE_TEXT | st.sampled_from(["T", "S", "t", "ev", "sym", "p", "c", "trade"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=16,
)
DEEP = st.integers(min_value=60, max_value=10_000).map(lambda n: "[" * n + "]" * n)
TIMES = (
    LEAVES
    | st.sampled_from(
        [
            "2025-12-29T09:20:00.123456789Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2025-13-45T99:99:99Z",
            "2025-12-29T09:20:00+99:99",
            "١٢٣٤-01-01T00:00:00Z",
        ]
    )
    | st.integers(min_value=0, max_value=2**64)
)


def dumps(value: Any) -> str:
    """JSON text as a hostile server writes it: NaN/Infinity literals, escaped surrogates."""
    return json.dumps(value, allow_nan=True)


def frame_bytes(value: Any) -> bytes:
    return dumps(value).encode()


# -- what "bounded" means ---------------------------------------------------------------------


def is_clean(text: Any) -> bool:
    return isinstance(text, str) and clean_text(text) == text


def in_int64(value: Any) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    )


def is_float_or_none(value: Any) -> bool:
    return value is None or type(value) is float


def is_text_or_none(value: Any, limit: int = 128) -> bool:
    return value is None or (is_clean(value) and len(value) <= limit)


def assert_bounded_trade_fields(
    ts: Any, price: Any, size: Any, venue: Any, conds: Any, provider_id: Any, tape: Any
) -> None:
    assert in_int64(ts), ts
    assert is_float_or_none(price) and is_float_or_none(size), (price, size)
    assert all(is_text_or_none(v, 64) for v in (venue, provider_id, tape)), (venue, tape)
    assert is_text_or_none(conds), conds


def assert_bounded_frame(out: Any) -> None:
    assert isinstance(out, ParsedFrame)
    for sym, ts, bid, ask, bsz, asz in out.quotes:
        assert is_clean(sym) and sym, sym
        assert ts is None or in_int64(ts), ts
        assert all(is_float_or_none(v) for v in (bid, ask, bsz, asz)), (bid, ask, bsz, asz)
    for sym, *fields in out.trades:
        assert is_clean(sym) and sym, sym
        assert_bounded_trade_fields(*fields)
    assert all(is_clean(p) for p in out.problems), out.problems
    for c in out.controls:
        assert is_clean(c.message) and is_clean(c.kind), c
        assert c.code is None or in_int64(c.code) or is_clean(c.code), c
        assert all(is_clean(s) for s in c.symbols), c
        for channel, syms in c.channels:
            assert is_clean(channel) and all(is_clean(s) and s in c.symbols for s in syms), c
    assert in_int64(out.ignored)


def parse_frame(parser: Any, frame: str | bytes) -> None:
    assert_bounded_frame(parser.parse(frame))


STREAMS = [AlpacaStream(), PolygonStream()]

# -- the stream presets --------------------------------------------------------------------


@pytest.mark.parametrize("parser", STREAMS, ids=lambda p: p.name)
@SETTINGS
@given(data=st.binary(max_size=300))
def test_stream_parsers_on_arbitrary_bytes(parser: Any, data: bytes) -> None:
    parse_frame(parser, data)


@pytest.mark.parametrize("parser", STREAMS, ids=lambda p: p.name)
@SETTINGS
@given(text=HOSTILE_TEXT | DEEP)
def test_stream_parsers_on_arbitrary_text(parser: Any, text: str) -> None:
    parse_frame(parser, text)


@pytest.mark.parametrize("parser", STREAMS, ids=lambda p: p.name)
@SETTINGS
@given(value=JSON, as_bytes=st.booleans())
def test_stream_parsers_on_arbitrary_json(parser: Any, value: Any, as_bytes: bool) -> None:
    parse_frame(parser, frame_bytes(value) if as_bytes else dumps(value))


# condition lists as providers send them, and hostile ones (huge, nested, too many)
CONDITIONS = (
    st.lists(st.sampled_from(["@", "I", "F", "T", " ", "\x1b[2J", "x" * 300]) | INTS, max_size=40)
    | LEAVES
    | JSON
)
CODES = LEAVES | st.sampled_from(["V", "D", "", "x" * 5000, "\x00\ud83d"]) | JSON
ALPACA_ITEMS = st.one_of(
    st.fixed_dictionaries(
        {"T": st.just("q"), "S": HOSTILE_TEXT | LEAVES, "t": TIMES},
        optional={"bp": LEAVES, "ap": LEAVES, "bs": LEAVES, "as": LEAVES},
    ),
    st.fixed_dictionaries(
        {"T": st.just("t"), "S": st.just("SPY") | HOSTILE_TEXT | LEAVES, "t": TIMES},
        optional={"p": LEAVES, "s": LEAVES, "x": CODES, "c": CONDITIONS, "i": CODES, "z": CODES},
    ),
    st.fixed_dictionaries({"T": st.just("error"), "code": LEAVES, "msg": JSON}),
    st.fixed_dictionaries({"T": st.just("success"), "msg": JSON}),
    st.fixed_dictionaries(
        {"T": st.just("subscription"), "quotes": JSON}, optional={"trades": JSON}
    ),
)
POLYGON_ITEMS = st.one_of(
    st.fixed_dictionaries(
        {"ev": st.just("Q"), "sym": HOSTILE_TEXT | LEAVES, "t": TIMES},
        optional={"bp": LEAVES, "ap": LEAVES, "bs": LEAVES, "as": LEAVES},
    ),
    st.fixed_dictionaries(
        {"ev": st.just("T"), "sym": st.just("SPY") | HOSTILE_TEXT | LEAVES, "t": TIMES},
        optional={"p": LEAVES, "s": LEAVES, "x": CODES, "c": CONDITIONS, "i": CODES, "z": CODES},
    ),
    st.fixed_dictionaries(
        {
            "ev": st.just("status"),
            "status": st.sampled_from(["success", "auth_failed", "connected"]) | LEAVES,
            "message": st.sampled_from(
                [
                    "subscribed to: Q.SPY,Q.\ud83d",
                    "subscribed to: T.SPY,Q.,T.,X.Y",
                    "subscribed to:",
                ]
            )
            | JSON,
        }
    ),
)


@SETTINGS
@given(items=st.lists(ALPACA_ITEMS, max_size=5))
def test_alpaca_stream_on_plausible_frames_with_hostile_values(items: list[Any]) -> None:
    parse_frame(AlpacaStream(), dumps(items))


@SETTINGS
@given(items=st.lists(POLYGON_ITEMS, max_size=5))
def test_polygon_stream_on_plausible_frames_with_hostile_values(items: list[Any]) -> None:
    parse_frame(PolygonStream(), dumps(items))


# -- the HTTP presets --------------------------------------------------------------------------

CUSTOM = {
    "url": "{base_url}/v1/quote/{symbol}",
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
HTTP_PRESETS = ["alpaca", "polygon", "finnhub", "custom"]


def http_config(preset: str, **over: Any) -> Any:
    cfg: dict[str, Any] = {"type": "http", "preset": preset, "base_url": "http://api.test"}
    if preset == "custom":
        cfg.update(CUSTOM)
    else:
        cfg["api_key_env"] = "RC_TEST_KEY"
    if preset == "alpaca":
        cfg["api_secret_env"] = "RC_TEST_SECRET"
    cfg.update(over)
    return config_from_dict({"source": cfg}).source


PRESET_PARSERS = {p: make_preset(http_config(p)) for p in HTTP_PRESETS}


def check_preset(preset: str, body: Any) -> None:
    try:
        out = PRESET_PARSERS[preset].parse(body, "SPY")
    except (ShapeProblem, NoQuote, ApiErrorAnswer):
        return
    assert isinstance(out, ParsedQuote)
    assert out.ts_us is None or in_int64(out.ts_us), out.ts_us
    for v in (out.bid, out.ask, out.bid_size, out.ask_size, out.last):
        assert is_float_or_none(v), v


@pytest.mark.parametrize("preset", HTTP_PRESETS)
@SETTINGS
@given(body=JSON)
def test_http_preset_parsers_on_arbitrary_json(preset: str, body: Any) -> None:
    check_preset(preset, body)


TRADE_PRESETS = ["alpaca", "polygon"]


def check_trade_preset(preset: str, body: Any) -> None:
    try:
        out = PRESET_PARSERS[preset].parse_trade(body, "SPY")
    except (ShapeProblem, NoQuote, ApiErrorAnswer):
        return
    assert isinstance(out, ParsedTrade)
    assert_bounded_trade_fields(
        out.ts_us, out.price, out.size, out.venue, out.conditions, out.provider_id, out.tape
    )
    assert out.correction is None or in_int64(out.correction)


@pytest.mark.parametrize("preset", TRADE_PRESETS)
@SETTINGS
@given(body=JSON)
def test_http_trade_parsers_on_arbitrary_json(preset: str, body: Any) -> None:
    check_trade_preset(preset, body)


NUMBERS = LEAVES | st.sampled_from(["101.25", " 1e2 ", "NaN", "-inf", "1e400", "0x10"])
PLAUSIBLE_BODIES = {
    "alpaca": st.fixed_dictionaries(
        {"symbol": st.just("SPY") | LEAVES},
        optional={
            "quote": st.fixed_dictionaries(
                {"t": TIMES}, optional={"bp": NUMBERS, "ap": NUMBERS, "bs": NUMBERS, "as": NUMBERS}
            )
            | LEAVES,
            "message": HOSTILE_TEXT,
        },
    ),
    "polygon": st.fixed_dictionaries(
        {"status": st.sampled_from(["OK", "NOT_FOUND", "ERROR", "DELAYED"]) | LEAVES},
        optional={
            "results": st.fixed_dictionaries(
                {"T": st.just("SPY") | LEAVES, "t": TIMES},
                optional={"p": NUMBERS, "P": NUMBERS, "s": NUMBERS, "S": NUMBERS},
            )
            | LEAVES,
            "error": HOSTILE_TEXT,
        },
    ),
    "finnhub": st.fixed_dictionaries({}, optional={"c": NUMBERS, "t": TIMES, "error": LEAVES}),
    "custom": st.fixed_dictionaries(
        {
            "data": st.fixed_dictionaries(
                {"sym": st.just("SPY") | LEAVES, "time": TIMES},
                optional={
                    "bid": NUMBERS,
                    "ask": NUMBERS,
                    "bidSize": NUMBERS,
                    "askSize": NUMBERS,
                },
            )
        }
    ),
}


@pytest.mark.parametrize("preset", HTTP_PRESETS)
@SETTINGS
@given(data=st.data())
def test_http_preset_parsers_on_plausible_bodies_with_hostile_values(
    preset: str, data: st.DataObject
) -> None:
    check_preset(preset, data.draw(PLAUSIBLE_BODIES[preset]))


PLAUSIBLE_TRADE_BODIES = {
    "alpaca": st.fixed_dictionaries(
        {"symbol": st.just("SPY") | LEAVES},
        optional={
            "trade": st.fixed_dictionaries(
                {"t": TIMES},
                optional={
                    "p": NUMBERS,
                    "s": NUMBERS,
                    "x": CODES,
                    "c": CONDITIONS,
                    "i": CODES,
                    "z": CODES,
                },
            )
            | LEAVES,
            "message": HOSTILE_TEXT,
        },
    ),
    "polygon": st.fixed_dictionaries(
        {"status": st.sampled_from(["OK", "NOT_FOUND", "ERROR", "DELAYED"]) | LEAVES},
        optional={
            "results": st.fixed_dictionaries(
                {"T": st.just("SPY") | LEAVES, "t": TIMES},
                optional={
                    "p": NUMBERS,
                    "s": NUMBERS,
                    "ds": NUMBERS,
                    "x": CODES,
                    "c": CONDITIONS,
                    "e": LEAVES,
                    "i": CODES,
                    "z": CODES | INTS,
                },
            )
            | LEAVES,
            "error": HOSTILE_TEXT,
        },
    ),
}


@pytest.mark.parametrize("preset", TRADE_PRESETS)
@SETTINGS
@given(data=st.data())
def test_http_trade_parsers_on_plausible_bodies_with_hostile_values(
    preset: str, data: st.DataObject
) -> None:
    check_trade_preset(preset, data.draw(PLAUSIBLE_TRADE_BODIES[preset]))


@pytest.mark.parametrize("fmt", ["unix_s", "unix_us", "unix_ns", "rfc3339"])
@SETTINGS
@given(raw=TIMES)
def test_custom_timestamp_formats_stay_in_int64(fmt: str, raw: Any) -> None:
    cfg = http_config("custom", fields={**CUSTOM["fields"], "timestamp_format": fmt})
    body = {"data": {"sym": "SPY", "time": raw, "bid": 1.0, "ask": 2.0}}
    try:
        out = make_preset(cfg).parse(body, "SPY")
    except (ShapeProblem, NoQuote, ApiErrorAnswer):
        return
    assert out.ts_us is None or in_int64(out.ts_us)


# -- the whole HTTP answer path: raw bytes and any status ----------------------------------


def fetch_answer(
    preset: str, status: int, content: bytes, headers: dict[str, str], trade: bool = False
) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    src = HttpSource(http_config(preset), environ=ENV, transport=httpx.MockTransport(handler))

    async def go() -> Any:
        await src.start("run1")
        try:
            return await (src.fetch_trade("SPY") if trade else src.fetch("SPY"))
        except SourceError as exc:
            return exc
        finally:
            await src.aclose()

    return asyncio.run(go())


def assert_trade_or_typed_error(out: Any) -> None:
    if isinstance(out, SourceError):
        assert is_clean(str(out)), str(out)
        return
    assert isinstance(out, Trade), out
    assert out.symbol == "SPY" and is_clean(out.source) and out.trade_id == "run1:SPY:t1"
    assert in_int64(out.recv_us) and in_int64(out.seq)
    assert_bounded_trade_fields(
        out.ts_us, out.price, out.size, out.venue, out.conditions, out.provider_id, out.tape
    )


def assert_quote_or_typed_error(out: Any, preset: str) -> None:
    if isinstance(out, SourceError):
        assert is_clean(str(out)), str(out)
        return
    assert isinstance(out, Quote), out
    assert out.symbol == "SPY" and is_clean(out.source)
    assert in_int64(out.ts_us) and in_int64(out.recv_us) and in_int64(out.seq)
    for v in (out.bid, out.ask, out.bid_size, out.ask_size, out.last):
        assert is_float_or_none(v), v


STATUSES = st.sampled_from([200, 200, 200, 204, 301, 400, 401, 404, 408, 422, 429, 500, 503])
HEADER_VALUES = st.sampled_from(
    ["1", "1e400", "-5", "nan", "Mon, 01 Jan 9999999999999999999 00:00:00 GMT", "soon", "0"]
)


@pytest.mark.parametrize("preset", HTTP_PRESETS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=STATUSES,
    content=st.binary(max_size=200)
    | JSON.map(frame_bytes)
    | DEEP.map(str.encode)
    | st.just(b"")
    | st.just(json.dumps({"error": "quota exceeded for \ud83d\x00\x1b[2J"}).encode()),
    retry_after=HEADER_VALUES,
)
def test_http_source_answers_are_quotes_or_typed_errors(
    preset: str, status: int, content: bytes, retry_after: str
) -> None:
    out = fetch_answer(preset, status, content, {"Retry-After": retry_after})
    assert_quote_or_typed_error(out, preset)


@pytest.mark.parametrize("preset", HTTP_PRESETS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_http_source_on_plausible_bodies_with_hostile_values(
    preset: str, data: st.DataObject
) -> None:
    body = data.draw(PLAUSIBLE_BODIES[preset])
    out = fetch_answer(preset, 200, frame_bytes(body), {})
    assert_quote_or_typed_error(out, preset)


@pytest.mark.parametrize("preset", TRADE_PRESETS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    status=STATUSES,
    content=st.binary(max_size=200) | JSON.map(frame_bytes) | DEEP.map(str.encode),
    retry_after=HEADER_VALUES,
)
def test_http_trade_answers_are_trades_or_typed_errors(
    preset: str, status: int, content: bytes, retry_after: str
) -> None:
    out = fetch_answer(preset, status, content, {"Retry-After": retry_after}, trade=True)
    assert_trade_or_typed_error(out)


@pytest.mark.parametrize("preset", TRADE_PRESETS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_http_trade_source_on_plausible_bodies_with_hostile_values(
    preset: str, data: st.DataObject
) -> None:
    body = data.draw(PLAUSIBLE_TRADE_BODIES[preset])
    assert_trade_or_typed_error(fetch_answer(preset, 200, frame_bytes(body), {}, trade=True))


# -- the shared decoder ------------------------------------------------------------------------


@SETTINGS
@given(data=st.binary(max_size=300) | JSON.map(frame_bytes) | DEEP.map(str.encode))
def test_decode_json_returns_bounded_json_or_a_boundary_error(data: bytes) -> None:
    try:
        decode_json(data)
    except BoundaryError as exc:
        assert is_clean(str(exc))

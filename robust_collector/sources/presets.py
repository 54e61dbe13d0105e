"""What each REST API looks like: how to ask for a symbol's latest quote and read the answer.

A preset builds the request (``request``) and turns the decoded JSON body into
quote fields (``parse``); the presets whose provider serves a latest trade
(``serves_trades``: alpaca, polygon, and custom with ``trade_fields``) do the same for
it (``trade_request``, ``parse_trade``). Parsing never crashes on a bad body: a field of the
wrong shape raises ``ShapeProblem`` naming the field (``results.P: expected a
number, got 'abc'``), and an answer that means "no such symbol" raises
``NoQuote``; ``HttpSource`` turns both into typed source errors.

Value rules, the same for every preset:

- numbers may arrive as JSON numbers or as strings that spell a number
  (``"531.2"``, ``"1e3"``, ``"NaN"``); other strings, booleans, lists and
  objects are shape errors;
- ``null`` (or an absent key) for a price or size means "no value": the quote
  lacks that side, and the validator decides (no price at all: ``non_finite``);
- NaN, infinities and absurdly large numbers are passed on as floats, so the
  validator rejects them (``non_finite``, ``price_range``) into the rejects table;
- timestamps are clamped into int64 (``boundary.clamp_int64``): a time in the
  wrong unit (ms where s belong, ns where ms belong) gives a quote whose time
  the validator rejects (``bad_timestamp``), never an overflow in storage.
- a trade's venue, id and tape are text (an integer id or exchange number is
  written out: polygon's ``x: 4`` is venue ``"4"``; its tape ``z: 1..3`` is
  ``"A".."C"`` as its docs define), bounded by ``base.trade_text``; its sale
  conditions, a list of codes, are joined with single spaces (alpaca ``["@",
  "I"]`` is ``"@ I"``, polygon ``[14, 41]`` is ``"14 41"``; TAQ writes
  ``COND`` as a padded string, so rules compare with white space removed or
  split on it).

Bodies are decoded by ``decode_json`` within the boundary's size and depth
bounds (``boundary.loads_bounded``), so a hostile body is one typed error, never
a ``RecursionError``; every message built from a body is cleaned by the source.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote as urlquote

from robust_collector.boundary import (
    INT64_MAX,
    INT64_MIN,
    MAX_DEPTH,
    BoundaryError,
    JSONSyntaxError,
    clamp_int64,
    json_depth_ok,
    loads_bounded,
)
from robust_collector.sources.base import trade_text
from robust_collector.sources.settings import (
    FieldMapConfig,
    HttpSourceConfig,
    TradeFieldMapConfig,
)

__all__ = [
    "PRESETS",
    "AlpacaPreset",
    "Credentials",
    "CustomPreset",
    "FinnhubPreset",
    "NoQuote",
    "ParsedQuote",
    "ParsedTrade",
    "PolygonPreset",
    "Preset",
    "RequestSpec",
    "ShapeProblem",
    "decode_json",
    "make_preset",
    "parse_rfc3339_us",
    "parse_timestamp_us",
    "to_number",
    "trade_code",
    "trade_conditions",
]


class ShapeProblem(Exception):
    """The body does not have the expected shape; ``field`` is the dotted path at fault."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NoQuote(Exception):
    """The API answered, but has no quote (or trade) for the symbol (unknown or never quoted)."""


class ApiErrorAnswer(Exception):
    """A 2xx answer whose body is the API's error object (e.g. ``{"error": "..."}``)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The secrets read from the environment, with the variable names (for messages)."""

    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    key_env: str | None = None
    secret_env: str | None = None

    def describe(self) -> str:
        """The variables to check, e.g. ``APCA_API_KEY_ID / APCA_API_SECRET_KEY``."""
        names = [n for n in (self.key_env, self.secret_env) if n]
        return " / ".join(names) if names else "(no credentials configured)"


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One GET request: URL without the query, query parameters and headers."""

    url: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class ParsedQuote:
    """The quote fields read from a body; ``ts_us`` None means "use our receive time"."""

    ts_us: int | None
    bid: float | None = None
    ask: float | None = None
    bid_size: float | None = None
    ask_size: float | None = None
    last: float | None = None


@dataclass(frozen=True, slots=True)
class ParsedTrade:
    """The trade fields read from a body or a stream message (text already bounded)."""

    ts_us: int
    price: float | None
    size: float | None = None
    venue: str | None = None
    conditions: str | None = None
    correction: int | None = None
    provider_id: str | None = None
    tape: str | None = None


# -- value parsing --------------------------------------------------------------------

_NUMBER_RE = re.compile(
    r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)", re.I
)
_INT_RE = re.compile(r"[+-]?\d+")
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))"
)
_MISSING = object()
_MAX_DIGITS = 40  # an integer string longer than this is no timestamp (int() would refuse >4300)


def decode_json(data: str | bytes) -> Any:
    """A JSON body or frame within the boundary's size and depth bounds; ``BoundaryError``
    otherwise. orjson first; the stdlib when orjson refuses, for the ``NaN`` and
    ``Infinity`` some APIs send (the validator must see them) and integers past 64 bits."""
    try:
        return loads_bounded(data)
    except JSONSyntaxError as exc:
        refused = exc
    try:
        body = json.loads(data)
    except RecursionError:
        raise BoundaryError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        raise refused from None
    if isinstance(body, dict | list) and not json_depth_ok(body):
        raise BoundaryError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return body


def _show(value: Any) -> str:
    """A short repr of a bad value for an error message."""
    try:
        text = repr(value)
    except Exception:  # e.g. an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return _show(value)


def to_number(value: Any, field: str) -> float | None:
    """A price or size as a float (``None`` for null); numeric strings are accepted.

    NaN, infinities and huge values pass through (the validator rejects them);
    anything else that is not a number raises ``ShapeProblem`` naming ``field``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ShapeProblem(field, f"expected a number, got {_show(value)}")
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: absurd, let the validator say so
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER_RE.fullmatch(text):
            return float(text)
        raise ShapeProblem(field, f"expected a number, got {_show(value)}")
    raise ShapeProblem(field, f"expected a number, got {_kind(value)}")


def _to_int(value: Any, field: str, what: str) -> int:
    """An integer (int, integral float or digit string) or ``ShapeProblem``."""
    if isinstance(value, bool) or value is None:
        raise ShapeProblem(field, f"expected {what}, got {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _MAX_DIGITS and _INT_RE.fullmatch(text):
            return int(text)
    raise ShapeProblem(field, f"expected {what}, got {_kind(value)}")


MAX_CONDITIONS = 32  # condition codes of one trade; more is not a trade message
_CODE_BOUND = 10**9  # an integer code (exchange, condition) larger than this is no code
TAPES = {1: "A", 2: "B", 3: "C"}  # polygon's integer tapes (its docs: 1 = A, 2 = B, 3 = C)


def trade_code(value: Any, field: str, limit: int = 64) -> str | None:
    """A venue, trade id or tape: text (bounded) or an integer written out; ``None`` for
    null or an empty string; anything else is a ``ShapeProblem``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return trade_text(value, limit)
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return str(value)
    raise ShapeProblem(field, f"expected a code or an id, got {_kind(value)}")


def trade_conditions(value: Any, field: str) -> str | None:
    """Sale-condition codes (a list of strings or small integers) joined with single
    spaces; a string is kept as given (bounded); ``None`` for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return trade_text(value, 128)
    if not isinstance(value, list):
        raise ShapeProblem(field, f"expected a list of condition codes, got {_kind(value)}")
    if len(value) > MAX_CONDITIONS:
        raise ShapeProblem(
            field, f"expected at most {MAX_CONDITIONS} condition codes, got {len(value)}"
        )
    codes = []
    for i, code in enumerate(value):
        if isinstance(code, str):
            codes.append(code)
        elif isinstance(code, int) and not isinstance(code, bool) and abs(code) < _CODE_BOUND:
            codes.append(str(code))
        else:
            raise ShapeProblem(f"{field}[{i}]", f"expected a condition code, got {_kind(code)}")
    return trade_text(" ".join(codes), 128)


def trade_correction(value: Any, field: str) -> int | None:
    """A correction indicator: an integer inside int64, or ``None``."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX:
        return value
    raise ShapeProblem(field, f"expected an integer correction indicator, got {_kind(value)}")


def parse_rfc3339_us(value: Any, field: str) -> int:
    """An RFC 3339 timestamp (any number of fraction digits) as epoch microseconds.

    Digits past the microsecond are truncated, not rounded, so order is kept.
    """
    if not isinstance(value, str):
        raise ShapeProblem(field, f"expected an RFC 3339 timestamp, got {_kind(value)}")
    m = _RFC3339_RE.fullmatch(value.strip())
    if m is None:
        raise ShapeProblem(field, f"expected an RFC 3339 timestamp, got {_show(value)}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise ShapeProblem(field, f"expected an RFC 3339 timestamp, got {_show(value)}")
    if year < 1:  # RFC 3339 allows 0000; no calendar does (and no quote was made then)
        raise ShapeProblem(field, f"timestamp out of range (year 0): {_show(value)}")
    frac = (m.group(7) or "")[:6].ljust(6, "0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60
        seconds -= offset if m.group(9) == "+" else -offset
    return clamp_int64(seconds * 1_000_000 + int(frac))


_UNIX_SCALE = {"unix_s": 1_000_000, "unix_ms": 1_000, "unix_us": 1}


def parse_timestamp_us(value: Any, fmt: str, field: str) -> int:
    """A timestamp in ``fmt`` (rfc3339 | unix_s | unix_ms | unix_us | unix_ns) as epoch µs,
    clamped into int64 (a time in the wrong unit is the validator's to reject)."""
    if fmt == "rfc3339":
        return parse_rfc3339_us(value, field)
    what = f"a {fmt} timestamp"
    if fmt == "unix_ns":
        return clamp_int64(_to_int(value, field, what) // 1000)
    scale = _UNIX_SCALE[fmt]
    if isinstance(value, int) and not isinstance(value, bool):
        return clamp_int64(value * scale)
    if isinstance(value, str):
        text = value.strip()
        if len(text) <= _MAX_DIGITS and _INT_RE.fullmatch(text):
            return clamp_int64(int(text) * scale)
    number = to_number(value, field)
    if number is None or not math.isfinite(number):
        raise ShapeProblem(field, f"expected {what}, got {_show(value)}")
    scaled = number * scale
    if not math.isfinite(scaled):  # finite in, but out of float range once scaled
        return INT64_MAX if scaled > 0 else INT64_MIN
    return clamp_int64(round(scaled))


def get_path(body: Any, path: str) -> Any:
    """The value at dotted ``path`` (list items by index), or ``_MISSING``."""
    node = body
    for part in path.split("."):
        if isinstance(node, Mapping):
            if part not in node:
                return _MISSING
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            i = int(part)
            if not -len(node) <= i < len(node):
                return _MISSING
            node = node[i]
        else:
            return _MISSING
    return node


def _object(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ShapeProblem(field, f"expected a JSON object, got {_kind(value)}")
    return value


def _numbers(
    obj: Mapping[str, Any], prefix: str, keys: Mapping[str, str], prices: tuple[str, ...]
) -> dict[str, float | None]:
    """Read ``keys`` (quote field -> JSON key) from ``obj``; at least one of ``prices`` present."""
    if not any(keys[p] in obj for p in prices):
        raise ShapeProblem(f"{prefix}{keys[prices[0]]}", "missing")
    return {f: to_number(obj.get(k), f"{prefix}{k}") for f, k in keys.items()}


def _check_symbol(echoed: Any, symbol: str, field: str) -> None:
    if echoed is not None and echoed != symbol:
        raise ShapeProblem(field, f"expected {symbol!r}, got {_show(echoed)}")


def _error_message(body: Mapping[str, Any]) -> str | None:
    for key in ("message", "error", "msg"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _path_symbol(symbol: str) -> str:
    return urlquote(symbol, safe="")


# -- the presets --------------------------------------------------------------------------


class Preset:
    """Base of the presets: defaults, request building and body parsing."""

    name: ClassVar[str] = ""
    default_base_url: ClassVar[str | None] = None
    key_env: ClassVar[str | None] = None
    secret_env: ClassVar[str | None] = None
    default_auth: ClassVar[str] = "header"

    def __init__(self, config: HttpSourceConfig) -> None:
        self.config = config
        self.auth = config.auth or self.default_auth

    def request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        """The request for ``symbol``'s latest quote."""
        raise NotImplementedError

    def parse(self, body: Any, symbol: str) -> ParsedQuote:
        """Quote fields from the decoded body; ``ShapeProblem`` or ``NoQuote`` otherwise."""
        raise NotImplementedError

    serves_trades: bool = False  # a class default; the custom preset decides per config

    def trade_request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        """The request for ``symbol``'s latest trade (``serves_trades`` presets only)."""
        raise NotImplementedError(f"the {self.name} preset serves no trades")

    def parse_trade(self, body: Any, symbol: str) -> ParsedTrade:
        """Trade fields from the decoded body; ``ShapeProblem`` or ``NoQuote`` otherwise."""
        raise NotImplementedError(f"the {self.name} preset serves no trades")


class AlpacaPreset(Preset):
    """Alpaca market data v2: ``GET /v2/stocks/{symbol}/quotes/latest``.

    Keys in the ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY`` headers; optional
    ``feed`` (iex, sip, ...). Times are RFC 3339 with nanoseconds. Alpaca answers
    a symbol it has no quote for with a zero time (``0001-01-01T00:00:00Z``) or
    an empty quote: both mean ``NoQuote``.
    """

    name = "alpaca"
    default_base_url = "https://data.alpaca.markets"
    key_env = "APCA_API_KEY_ID"
    secret_env = "APCA_API_SECRET_KEY"
    KEYS: ClassVar[dict[str, str]] = {
        "bid": "bp",
        "ask": "ap",
        "bid_size": "bs",
        "ask_size": "as",
    }

    serves_trades = True

    def _spec(self, base_url: str, symbol: str, creds: Credentials, what: str) -> RequestSpec:
        params = {"feed": self.config.feed} if self.config.feed else {}
        headers = {}
        if creds.api_key is not None:
            headers["APCA-API-KEY-ID"] = creds.api_key
        if creds.api_secret is not None:
            headers["APCA-API-SECRET-KEY"] = creds.api_secret
        url = f"{base_url}/v2/stocks/{_path_symbol(symbol)}/{what}/latest"
        return RequestSpec(url, params, headers)

    def request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        return self._spec(base_url, symbol, creds, "quotes")

    def trade_request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        """``GET /v2/stocks/{symbol}/trades/latest`` (same headers and feed as quotes)."""
        return self._spec(base_url, symbol, creds, "trades")

    @staticmethod
    def _item(body: Any, symbol: str, key: str) -> tuple[Mapping[str, Any], int]:
        """The ``quote``/``trade`` object of a latest answer and its time; ``NoQuote`` for
        an empty one or Alpaca's zero time."""
        obj = _object(body, "(body)")
        _check_symbol(obj.get("symbol"), symbol, "symbol")
        if key not in obj:
            message = _error_message(obj)
            if message is not None:
                raise ApiErrorAnswer(message)
            raise ShapeProblem(key, "missing")
        item = obj[key]
        if item is None or item == {}:
            raise NoQuote(f"the answer has no {key}")
        item = _object(item, key)
        if "t" not in item:
            raise ShapeProblem(f"{key}.t", "missing")
        ts = parse_rfc3339_us(item["t"], f"{key}.t")
        if ts <= 0:
            raise NoQuote(f"the {key} has no time ({item['t']!r})")
        return item, ts

    def parse(self, body: Any, symbol: str) -> ParsedQuote:
        q, ts = self._item(body, symbol, "quote")
        values = _numbers(q, "quote.", self.KEYS, ("ask", "bid"))
        return ParsedQuote(ts_us=ts, **values)

    def parse_trade(self, body: Any, symbol: str) -> ParsedTrade:
        """``{"symbol", "trade": {"t", "x", "p", "s", "c": [...], "i", "z"}}``."""
        t, ts = self._item(body, symbol, "trade")
        if "p" not in t:
            raise ShapeProblem("trade.p", "missing")
        return ParsedTrade(
            ts_us=ts,
            price=to_number(t["p"], "trade.p"),
            size=to_number(t.get("s"), "trade.s"),
            venue=trade_code(t.get("x"), "trade.x"),
            conditions=trade_conditions(t.get("c"), "trade.c"),
            provider_id=trade_code(t.get("i"), "trade.i"),
            tape=trade_code(t.get("z"), "trade.z"),
        )


class PolygonPreset(Preset):
    """Polygon (Massive) v2: ``GET /v2/last/nbbo/{symbol}``, the last NBBO quote.

    The key goes in an ``Authorization: Bearer`` header (``auth: header``, the
    default) or the ``apiKey`` query parameter (``auth: query``). ``t`` is the
    SIP time in nanoseconds. A ``NOT_FOUND`` status or empty ``results`` is
    ``NoQuote``. Polygon omits zero-valued fields, so an absent size is None.
    """

    name = "polygon"
    default_base_url = "https://api.polygon.io"
    key_env = "POLYGON_API_KEY"
    KEYS: ClassVar[dict[str, str]] = {"bid": "p", "ask": "P", "bid_size": "s", "ask_size": "S"}
    OK_STATUS: ClassVar[frozenset[str]] = frozenset({"OK", "DELAYED", "success"})

    serves_trades = True

    def _spec(self, url: str, creds: Credentials) -> RequestSpec:
        params: dict[str, str] = {}
        headers: dict[str, str] = {}
        if creds.api_key is not None:
            if self.auth == "query":
                params["apiKey"] = creds.api_key
            else:
                headers["Authorization"] = f"Bearer {creds.api_key}"
        return RequestSpec(url, params, headers)

    def request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        return self._spec(f"{base_url}/v2/last/nbbo/{_path_symbol(symbol)}", creds)

    def trade_request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        """``GET /v2/last/trade/{symbol}`` (same key as quotes)."""
        return self._spec(f"{base_url}/v2/last/trade/{_path_symbol(symbol)}", creds)

    def _results(self, body: Any, symbol: str) -> tuple[Mapping[str, Any], int]:
        """The ``results`` object and its SIP time in µs; ``NoQuote`` for NOT_FOUND or
        empty results, ``ApiErrorAnswer`` for an error status."""
        obj = _object(body, "(body)")
        status = obj.get("status")
        results = obj.get("results")
        if status == "NOT_FOUND":
            raise NoQuote(_error_message(obj) or "status NOT_FOUND")
        if status is not None and status not in self.OK_STATUS and not results:
            message = _error_message(obj)
            raise ApiErrorAnswer(f"status {status}" + (f": {message}" if message else ""))
        if results is None or results == {} or results == []:
            if "results" not in obj and status is None:
                raise ShapeProblem("results", "missing")
            raise NoQuote("the answer has no results")
        r = _object(results, "results")
        _check_symbol(r.get("T"), symbol, "results.T")
        if "t" not in r:
            raise ShapeProblem("results.t", "missing")
        t_ns = _to_int(r["t"], "results.t", "a SIP timestamp in nanoseconds")
        if t_ns <= 0:
            raise ShapeProblem(
                "results.t", f"expected a SIP timestamp in nanoseconds, got {_show(t_ns)}"
            )
        return r, clamp_int64(t_ns // 1000)

    def parse(self, body: Any, symbol: str) -> ParsedQuote:
        r, ts = self._results(body, symbol)
        values = _numbers(r, "results.", self.KEYS, ("ask", "bid"))
        return ParsedQuote(ts_us=ts, **values)

    def parse_trade(self, body: Any, symbol: str) -> ParsedTrade:
        """``results: {"T", "t" (SIP ns), "y", "p", "s" (or "ds"), "x", "c": [...], "e",
        "i", "z", ...}``; ``t`` is the time, as for quotes (the same clock as the NBBO)."""
        r, ts = self._results(body, symbol)
        if "p" not in r:
            raise ShapeProblem("results.p", "missing")
        size_key = "s" if "s" in r or "ds" not in r else "ds"
        z = r.get("z")
        tape = TAPES.get(z) if type(z) is int else None
        return ParsedTrade(
            ts_us=ts,
            price=to_number(r["p"], "results.p"),
            size=to_number(r.get(size_key), f"results.{size_key}"),
            venue=trade_code(r.get("x"), "results.x"),
            conditions=trade_conditions(r.get("c"), "results.c"),
            correction=trade_correction(r.get("e"), "results.e"),
            provider_id=trade_code(r.get("i"), "results.i"),
            tape=tape if tape is not None else trade_code(z, "results.z"),
        )


class FinnhubPreset(Preset):
    """Finnhub: ``GET /api/v1/quote?symbol=...``, the last price (no bid/ask).

    The key goes in the ``token`` query parameter (``auth: query``, the default)
    or the ``X-Finnhub-Token`` header. ``c`` is the current price and ``t`` unix
    seconds. Finnhub answers an unknown symbol with zeros (``c: 0, t: 0``): ``NoQuote``.
    """

    name = "finnhub"
    default_base_url = "https://finnhub.io"
    key_env = "FINNHUB_API_KEY"
    default_auth = "query"

    def request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        params = {"symbol": symbol}
        headers: dict[str, str] = {}
        if creds.api_key is not None:
            if self.auth == "query":
                params["token"] = creds.api_key
            else:
                headers["X-Finnhub-Token"] = creds.api_key
        return RequestSpec(f"{base_url}/api/v1/quote", params, headers)

    def parse(self, body: Any, symbol: str) -> ParsedQuote:
        obj = _object(body, "(body)")
        if "c" not in obj:
            message = _error_message(obj)
            if message is not None:
                raise ApiErrorAnswer(message)
            raise ShapeProblem("c", "missing")
        if "t" not in obj:
            raise ShapeProblem("t", "missing")
        last = to_number(obj["c"], "c")
        if obj["t"] in (0, None, "0") and last in (0.0, None):
            raise NoQuote("finnhub answered with zeros (its answer for an unknown symbol)")
        ts = parse_timestamp_us(obj["t"], "unix_s", "t")
        if ts <= 0:
            raise ShapeProblem("t", f"expected unix seconds, got {_show(obj['t'])}")
        return ParsedQuote(ts_us=ts, last=last)


class CustomPreset(Preset):
    """Any JSON API: a URL template, headers, query parameters and a field mapping; with
    ``trade_fields`` (and optionally ``trade_url``) it serves the latest trade too."""

    name = "custom"

    def __init__(self, config: HttpSourceConfig) -> None:
        super().__init__(config)
        self.serves_trades = config.maps_trades

    @staticmethod
    def _spec(template: str, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        values = {
            "base_url": base_url,
            "symbol": _path_symbol(symbol),
            "api_key": urlquote(creds.api_key or "", safe=""),
            "api_secret": urlquote(creds.api_secret or "", safe=""),
        }
        return RequestSpec(template.format_map(values), {}, {})

    def request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        assert self.config.url is not None  # checked by HttpSourceConfig._check
        return self._spec(self.config.url, base_url, symbol, creds)

    def trade_request(self, base_url: str, symbol: str, creds: Credentials) -> RequestSpec:
        """``trade_url`` (or ``url``: one answer with the quote and the last trade)."""
        if not self.serves_trades:
            return super().trade_request(base_url, symbol, creds)
        template = self.config.trade_url or self.config.url
        assert template is not None  # checked by HttpSourceConfig._check
        return self._spec(template, base_url, symbol, creds)

    def parse_trade(self, body: Any, symbol: str) -> ParsedTrade:
        """The trade at ``trade_fields``' paths: price and time must be there; size,
        venue, conditions, correction, id and tape are ``None`` where the body lacks them."""
        f: TradeFieldMapConfig = self.config.trade_fields
        if not self.serves_trades or f.price is None or f.timestamp is None:
            return super().parse_trade(body, symbol)
        if body is None or body == {} or body == []:
            raise NoQuote("the answer is empty")
        if f.symbol is not None:
            echoed = get_path(body, f.symbol)
            if echoed is _MISSING:
                raise ShapeProblem(f.symbol, "missing")
            _check_symbol(echoed, symbol, f.symbol)
        raw = get_path(body, f.timestamp)
        if raw is _MISSING:
            raise ShapeProblem(f.timestamp, "missing")
        ts = parse_timestamp_us(raw, f.timestamp_format, f.timestamp)
        if ts <= 0:
            raise ShapeProblem(f.timestamp, f"expected a timestamp after 1970, got {_show(raw)}")
        price = get_path(body, f.price)
        if price is _MISSING:
            raise ShapeProblem(f.price, "missing")

        def opt(path: str | None) -> Any:
            value = None if path is None else get_path(body, path)
            return None if value is _MISSING else value

        return ParsedTrade(
            ts_us=ts,
            price=to_number(price, f.price),
            size=to_number(opt(f.size), f.size or "size"),
            venue=trade_code(opt(f.venue), f.venue or "venue"),
            conditions=trade_conditions(opt(f.conditions), f.conditions or "conditions"),
            correction=trade_correction(opt(f.correction), f.correction or "correction"),
            provider_id=trade_code(opt(f.provider_id), f.provider_id or "provider_id"),
            tape=trade_code(opt(f.tape), f.tape or "tape"),
        )

    def parse(self, body: Any, symbol: str) -> ParsedQuote:
        f: FieldMapConfig = self.config.fields
        if body is None or body == {} or body == []:
            raise NoQuote("the answer is empty")
        out: dict[str, float | None] = {}
        for name in ("bid", "ask", "bid_size", "ask_size", "last"):
            path = getattr(f, name)
            if path is None:
                continue
            value = get_path(body, path)
            if value is _MISSING:
                raise ShapeProblem(path, "missing")
            out[name] = to_number(value, path)
        if f.symbol is not None:
            echoed = get_path(body, f.symbol)
            if echoed is _MISSING:
                raise ShapeProblem(f.symbol, "missing")
            _check_symbol(echoed, symbol, f.symbol)
        ts: int | None = None
        if f.timestamp is not None:
            raw = get_path(body, f.timestamp)
            if raw is _MISSING:
                raise ShapeProblem(f.timestamp, "missing")
            ts = parse_timestamp_us(raw, f.timestamp_format, f.timestamp)
            if ts <= 0:
                raise ShapeProblem(
                    f.timestamp, f"expected a timestamp after 1970, got {_show(raw)}"
                )
        return ParsedQuote(ts_us=ts, **out)


PRESETS: dict[str, type[Preset]] = {
    p.name: p for p in (AlpacaPreset, PolygonPreset, FinnhubPreset, CustomPreset)
}


def make_preset(config: HttpSourceConfig) -> Preset:
    """The preset ``config.preset`` names."""
    try:
        cls = PRESETS[config.preset or ""]
    except KeyError:
        raise ValueError(f"unknown preset {config.preset!r}; known: {', '.join(PRESETS)}") from None
    return cls(config)

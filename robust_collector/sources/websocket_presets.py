"""The wire protocols of the streaming presets: alpaca and polygon.

Each preset says where to connect, what to send to authenticate and subscribe,
how to read the server's answers to those, and how to turn a frame into quote
and trade fields (``parse``). Parsing never raises: a frame that is not JSON, or
an item of the wrong shape, becomes one line in ``ParsedFrame.problems`` and
every valid item of the same frame is still kept ("half-valid" messages).

Trades (``ParsedFrame.trades``, tuples ``(symbol, ts_us, price, size, venue,
conditions, provider_id, tape)``): alpaca ``{"T": "t", "S", "i", "x", "p", "s",
"c": [...], "t": RFC 3339, "z"}`` on the ``trades`` channel; polygon ``{"ev":
"T", "sym", "x", "i", "z", "p", "s", "c": [...], "t": SIP ms}`` on the ``T.``
channel. Conditions are the codes joined with single spaces; polygon's integer
exchange and tape are written out (``x: 4`` -> ``"4"``, ``z: 1..3`` -> ``"A".."C"``).
A subscription asks each symbol's channels: quotes, trades or both.

Corrections and cancels (``PresetFrame.notices``, the trade tuple plus the correction
code): alpaca sends them to a ``trades`` subscription. A correction ``{"T": "c", "S",
"x", "oi", "op", "os", "oc", "ci", "cp", "cs", "cc", "z", "t"}`` is the corrected trade
(``cp``, ``cs``, ``ci``, conditions ``cc`` then ``corrects:<oi>``) with correction 12
(``TRADE_CORRECTED``); a cancel or error ``{"T": "x", "S", "i", "x", "p", "s", "a": "C" |
"E", "z", "t"}`` is the named trade's id, price and size with correction 10
(``TRADE_CANCELLED``) or 11 (``TRADE_ERROR``), no conditions. The original values
(``op``, ``os``, ``oc``) are the original trade's own row. Polygon's stocks stream has
no such messages (its trades carry no correction field); ``analysis.apply_corrections``
applies them.

Everything in a ``ParsedFrame`` is bounded: frames are decoded within the
boundary's size and depth bounds (a 10,000-deep frame is one problem, not a
``RecursionError``), times are clamped into int64 (the validator rejects a time
in the wrong unit as ``bad_timestamp``), and every symbol, problem and control
text is clean (``boundary.clean_text``); a symbol that is not clean is a problem.

Error codes, permanent (the source stops) or transient (back off, reconnect):

- alpaca ``{"T":"error","code":N,"msg":...}``: 400 invalid syntax, 401 not
  authenticated, 402 auth failed, 403 already authenticated, 405 symbol limit,
  409 insufficient subscription are permanent; 404 auth timeout, 406 connection
  limit exceeded, 407 slow client, 500 internal error (and unknown codes) are transient.
- polygon ``{"ev":"status","status":...}``: ``auth_failed`` is permanent;
  ``max_connections`` and other errors are transient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import orjson

from robust_collector.boundary import INT64_MAX, INT64_MIN, BoundaryError, clamp_int64, clean_text
from robust_collector.sources.presets import (
    TAPES,
    ShapeProblem,
    _show,
    decode_json,
    parse_rfc3339_us,
    to_number,
    trade_code,
    trade_conditions,
)
from robust_collector.sources.stream import Control, NoticeFields, ParsedFrame, TradeFields
from robust_collector.validation.trade_rules import (
    TRADE_CANCELLED,
    TRADE_CORRECTED,
    TRADE_ERROR,
    correction_conditions,
)

__all__ = [
    "STREAM_PRESETS",
    "AlpacaStream",
    "NoticeFields",
    "PolygonStream",
    "PresetFrame",
    "StreamPreset",
    "decode_frame",
]

PresetFrame = ParsedFrame
"""The frame a preset parses (``notices`` now live on ``ParsedFrame`` itself)."""


_NOT_JSON = object()
MAX_SYMBOL = 64  # characters of a symbol; a longer one is a problem, not a quote


def decode_frame(frame: str | bytes) -> Any:
    """JSON of a frame within the boundary's bounds; ``_NOT_JSON`` when it is not."""
    try:
        return decode_json(frame)
    except BoundaryError:
        return _NOT_JSON


def _snippet(frame: str | bytes, limit: int = 80) -> str:
    text = (
        frame[: limit * 2]
        if isinstance(frame, str)
        else frame[: limit * 2].decode("utf-8", "replace")
    )
    text = " ".join(text.split())
    return repr(clean_text(text if len(text) <= limit else text[: limit - 3] + "..."))


def _symbol(value: Any, key: str) -> str:
    """A quote's symbol: a non-empty clean string of at most ``MAX_SYMBOL`` characters."""
    if not isinstance(value, str) or not value or clean_text(value, MAX_SYMBOL) != value:
        raise ShapeProblem(key, f"expected a symbol, got {clean_text(_show(value), 80)}")
    return value


def _code(value: Any) -> int | str | None:
    """A control's code as a bounded int or a clean string (anything else: None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, str):
        return clean_text(value, 200)
    return None


def _text(value: Any) -> str:
    """Outside text for a control message, cleaned and capped."""
    return clean_text(value if isinstance(value, str) else _show(value), 500)


def _clean(out: PresetFrame) -> PresetFrame:
    """Every problem line clean (they quote outside values)."""
    out.problems = [clean_text(p) for p in out.problems]
    return out


def _items(frame: str | bytes, out: ParsedFrame) -> list[Any]:
    try:
        body = decode_json(frame)
    except BoundaryError as exc:
        why = "" if str(exc).startswith("not valid JSON") else f" ({exc})"
        out.problems.append(f"frame is not JSON{why}: {_snippet(frame)}")
        return []
    if isinstance(body, list):
        return body
    if isinstance(body, Mapping):
        return [body]
    out.problems.append(f"frame is neither a JSON array nor an object: {_snippet(frame)}")
    return []


def _add_item(
    out: ParsedFrame,
    into: list[Any],
    i: int,
    item: Mapping[str, Any],
    parse: Callable[[Mapping[str, Any]], tuple[Any, ...]],
    symbol_key: str,
) -> None:
    """Parse item ``i`` into ``into`` (the quotes or the trades), or say what is wrong with
    it (and for which symbol) in ``out.problems``: a half-valid frame keeps its good items."""
    try:
        into.append(parse(item))
    except ShapeProblem as exc:
        sym = item.get(symbol_key)
        shown = f" ({clean_text(sym, MAX_SYMBOL)})" if isinstance(sym, str) else ""
        out.problems.append(f"item {i}{shown}: {exc}")


def _clean_symbols(value: Any) -> tuple[str, ...]:
    """The clean symbols of an acknowledged list (anything else is left out)."""
    if not isinstance(value, list):
        return ()
    return tuple(s for s in value if isinstance(s, str) and s and clean_text(s, MAX_SYMBOL) == s)


def _channels(
    pairs: Sequence[tuple[str, tuple[str, ...]]],
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The union of the channels' symbols (in order) and the non-empty channels."""
    kept = tuple((name, syms) for name, syms in pairs if syms)
    union = tuple(dict.fromkeys(s for _, syms in kept for s in syms))
    return union, kept


class StreamPreset:
    """Base of the streaming presets (see the module docs)."""

    name: ClassVar[str] = ""
    default_base_url: ClassVar[str] = ""
    default_feed: ClassVar[str] = ""
    key_env: ClassVar[str | None] = None
    secret_env: ClassVar[str | None] = None

    def url(self, base_url: str, feed: str | None) -> str:
        """Where to connect."""
        raise NotImplementedError

    def auth_message(self, key: str | None, secret: str | None) -> str:
        """The authentication message (holds the secrets: never logged)."""
        raise NotImplementedError

    def subscribe_message(self, symbols: Sequence[str], trades: Sequence[str] = ()) -> str:
        """The subscription to the quotes of ``symbols`` and the trades of ``trades``."""
        raise NotImplementedError

    def parse(self, frame: str | bytes) -> PresetFrame:
        """Quote and trade fields, problems and controls of one frame (never raises)."""
        raise NotImplementedError

    def greeting_ok(self, controls: Sequence[Control]) -> bool:
        """True when the controls hold the server's 'connected' greeting."""
        return any(c.kind == "status" and c.code == "connected" for c in controls)

    def auth_ok(self, controls: Sequence[Control]) -> bool:
        """True when the controls hold the server's 'authenticated' answer."""
        return any(c.kind == "status" and c.code == "authenticated" for c in controls)


class AlpacaStream(StreamPreset):
    """Alpaca market data v2 stream: ``{base_url}/v2/{feed}``, quotes as ``T: q``, trades
    as ``T: t``."""

    name = "alpaca"
    default_base_url = "wss://stream.data.alpaca.markets"
    default_feed = "iex"
    key_env = "APCA_API_KEY_ID"
    secret_env = "APCA_API_SECRET_KEY"
    PERMANENT: ClassVar[frozenset[int]] = frozenset({400, 401, 402, 403, 405, 409})

    def url(self, base_url: str, feed: str | None) -> str:
        return f"{base_url}/v2/{feed or self.default_feed}"

    def auth_message(self, key: str | None, secret: str | None) -> str:
        return orjson.dumps({"action": "auth", "key": key or "", "secret": secret or ""}).decode()

    def subscribe_message(self, symbols: Sequence[str], trades: Sequence[str] = ()) -> str:
        message: dict[str, Any] = {"action": "subscribe"}
        if symbols or not trades:
            message["quotes"] = list(symbols)
        if trades:
            message["trades"] = list(trades)
        return orjson.dumps(message).decode()

    def parse(self, frame: str | bytes) -> PresetFrame:
        out = PresetFrame()
        for i, item in enumerate(_items(frame, out)):
            if not isinstance(item, Mapping):
                out.problems.append(f"item {i}: expected a JSON object, got {type(item).__name__}")
                continue
            kind = item.get("T")
            if kind == "q":
                _add_item(out, out.quotes, i, item, self._quote, "S")
            elif kind == "t":
                _add_item(out, out.trades, i, item, self._trade, "S")
            elif kind == "c":
                _add_item(out, out.notices, i, item, self._correction, "S")
            elif kind == "x":
                _add_item(out, out.notices, i, item, self._cancel, "S")
            elif kind == "error":
                code = _code(item.get("code"))
                msg = _text(item.get("msg", ""))
                permanent = isinstance(code, int) and code in self.PERMANENT
                shown = "" if code is None else code
                out.controls.append(Control("error", f"{shown} {msg}".strip(), code, permanent))
            elif kind == "success":
                msg_value = item.get("msg")
                out.controls.append(Control("status", _text(msg_value), _code(msg_value)))
            elif kind == "subscription":
                quotes = _clean_symbols(item.get("quotes"))
                trades = _clean_symbols(item.get("trades"))
                syms, channels = _channels((("quotes", quotes), ("trades", trades)))
                message = f"quotes: {', '.join(quotes)}"
                if trades:
                    message += f"; trades: {', '.join(trades)}"
                # alpaca acknowledges with the whole current subscription ("full")
                out.controls.append(Control("subscribed", message, "full", False, syms, channels))
            elif isinstance(kind, str):
                out.ignored += 1  # bars, statuses and other kinds we do not collect
            else:
                out.problems.append(f"item {i}: no message type 'T'")
        return _clean(out)

    @staticmethod
    def _quote(item: Mapping[str, Any]) -> tuple[Any, ...]:
        sym = _symbol(item.get("S"), "S")
        if "t" not in item:
            raise ShapeProblem("t", "missing")
        if "bp" not in item and "ap" not in item:
            raise ShapeProblem("bp", "missing")
        return (
            sym,
            parse_rfc3339_us(item["t"], "t"),
            to_number(item.get("bp"), "bp"),
            to_number(item.get("ap"), "ap"),
            to_number(item.get("bs"), "bs"),
            to_number(item.get("as"), "as"),
        )

    @staticmethod
    def _trade(item: Mapping[str, Any]) -> TradeFields:
        sym = _symbol(item.get("S"), "S")
        if "t" not in item:
            raise ShapeProblem("t", "missing")
        if "p" not in item:
            raise ShapeProblem("p", "missing")
        return (
            sym,
            parse_rfc3339_us(item["t"], "t"),
            to_number(item["p"], "p"),
            to_number(item.get("s"), "s"),
            trade_code(item.get("x"), "x"),
            trade_conditions(item.get("c"), "c"),
            trade_code(item.get("i"), "i"),
            trade_code(item.get("z"), "z"),
        )

    ACTIONS: ClassVar[dict[str, int]] = {"C": TRADE_CANCELLED, "E": TRADE_ERROR}

    @staticmethod
    def _correction(item: Mapping[str, Any]) -> NoticeFields:
        """``T: c``: the corrected trade, naming the original in its conditions."""
        sym = _symbol(item.get("S"), "S")
        if "t" not in item:
            raise ShapeProblem("t", "missing")
        if "cp" not in item:
            raise ShapeProblem("cp", "missing")
        original = trade_code(item.get("oi"), "oi")
        if original is None:
            raise ShapeProblem("oi", "missing (the id of the trade corrected)")
        return (
            sym,
            parse_rfc3339_us(item["t"], "t"),
            to_number(item["cp"], "cp"),
            to_number(item.get("cs"), "cs"),
            trade_code(item.get("x"), "x"),
            correction_conditions(trade_conditions(item.get("cc"), "cc"), original),
            trade_code(item.get("ci"), "ci"),
            trade_code(item.get("z"), "z"),
            TRADE_CORRECTED,
        )

    @classmethod
    def _cancel(cls, item: Mapping[str, Any]) -> NoticeFields:
        """``T: x``: the cancelled (``a: C``) or erroneous (``a: E``) trade's id and values."""
        sym = _symbol(item.get("S"), "S")
        if "t" not in item:
            raise ShapeProblem("t", "missing")
        if "p" not in item:
            raise ShapeProblem("p", "missing")
        action = item.get("a")
        code = cls.ACTIONS.get(action) if isinstance(action, str) else None
        if code is None:
            raise ShapeProblem("a", f"expected 'C' (cancel) or 'E' (error), got {_show(action)}")
        trade_id = trade_code(item.get("i"), "i")
        if trade_id is None:
            raise ShapeProblem("i", "missing (the id of the trade cancelled)")
        return (
            sym,
            parse_rfc3339_us(item["t"], "t"),
            to_number(item["p"], "p"),
            to_number(item.get("s"), "s"),
            trade_code(item.get("x"), "x"),
            None,
            trade_id,
            trade_code(item.get("z"), "z"),
            code,
        )


class PolygonStream(StreamPreset):
    """Polygon stocks stream: ``{base_url}/{feed}``, quotes as ``ev: Q`` and trades as
    ``ev: T`` (``t`` in ms)."""

    name = "polygon"
    default_base_url = "wss://socket.polygon.io"
    default_feed = "stocks"
    key_env = "POLYGON_API_KEY"
    PERMANENT: ClassVar[frozenset[str]] = frozenset({"auth_failed"})
    OK: ClassVar[frozenset[str]] = frozenset({"connected", "auth_success", "success"})

    def url(self, base_url: str, feed: str | None) -> str:
        return f"{base_url}/{feed or self.default_feed}"

    def auth_message(self, key: str | None, secret: str | None) -> str:
        return orjson.dumps({"action": "auth", "params": key or ""}).decode()

    CHANNELS: ClassVar[dict[str, str]] = {"Q.": "quotes", "T.": "trades"}

    def subscribe_message(self, symbols: Sequence[str], trades: Sequence[str] = ()) -> str:
        params = ",".join([*(f"Q.{s}" for s in symbols), *(f"T.{s}" for s in trades)])
        return orjson.dumps({"action": "subscribe", "params": params}).decode()

    def _acknowledged(self, message: str) -> Control:
        """``subscribed to: Q.SPY`` (or ``T.SPY``, or several, comma-separated)."""
        by_channel: dict[str, list[str]] = {}
        for part in message.split(":", 1)[1].split(","):
            name = part.strip()
            if not name or len(name) > MAX_SYMBOL + 2:
                continue
            channel = self.CHANNELS.get(name[:2])
            if channel is not None:
                name = name[2:]
            if name:
                by_channel.setdefault(channel or "other", []).append(name)
        syms, channels = _channels([(k, tuple(v)) for k, v in by_channel.items()])
        return Control("subscribed", message, "success", False, syms, channels)

    def parse(self, frame: str | bytes) -> PresetFrame:
        out = PresetFrame()
        for i, item in enumerate(_items(frame, out)):
            if not isinstance(item, Mapping):
                out.problems.append(f"item {i}: expected a JSON object, got {type(item).__name__}")
                continue
            kind = item.get("ev")
            if kind == "Q":
                _add_item(out, out.quotes, i, item, self._quote, "sym")
            elif kind == "T":
                _add_item(out, out.trades, i, item, self._trade, "sym")
            elif kind == "status":
                raw_status = item.get("status", "")
                status = clean_text(raw_status, 200) if isinstance(raw_status, str) else ""
                message = _text(item.get("message", ""))
                if status in self.OK:
                    code = "authenticated" if status == "auth_success" else status
                    if status == "success" and message.startswith("subscribed to:"):
                        out.controls.append(self._acknowledged(message))
                    else:
                        out.controls.append(Control("status", message, code))
                else:
                    permanent = status in self.PERMANENT
                    out.controls.append(
                        Control("error", f"{status}: {message}".strip(": "), status, permanent)
                    )
            elif isinstance(kind, str):
                out.ignored += 1
            else:
                out.problems.append(f"item {i}: no event type 'ev'")
        return _clean(out)

    @staticmethod
    def _quote(item: Mapping[str, Any]) -> tuple[Any, ...]:
        sym = _symbol(item.get("sym"), "sym")
        t = item.get("t")
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise ShapeProblem("t", f"expected a unix time in ms, got {_show(t)}")
        if "bp" not in item and "ap" not in item:
            raise ShapeProblem("bp", "missing")
        return (
            sym,
            clamp_int64(t * 1000),  # ns or µs sent as ms: out of the window, rejected
            to_number(item.get("bp"), "bp"),
            to_number(item.get("ap"), "ap"),
            to_number(item.get("bs"), "bs"),
            to_number(item.get("as"), "as"),
        )

    @staticmethod
    def _trade(item: Mapping[str, Any]) -> TradeFields:
        sym = _symbol(item.get("sym"), "sym")
        t = item.get("t")
        if isinstance(t, bool) or not isinstance(t, int) or t <= 0:
            raise ShapeProblem("t", f"expected a unix time in ms, got {_show(t)}")
        if "p" not in item:
            raise ShapeProblem("p", "missing")
        z = item.get("z")
        tape = TAPES.get(z) if type(z) is int else None
        return (
            sym,
            clamp_int64(t * 1000),
            to_number(item["p"], "p"),
            to_number(item.get("s"), "s"),
            trade_code(item.get("x"), "x"),
            trade_conditions(item.get("c"), "c"),
            trade_code(item.get("i"), "i"),
            tape if tape is not None else trade_code(z, "z"),
        )


STREAM_PRESETS: dict[str, type[StreamPreset]] = {p.name: p for p in (AlpacaStream, PolygonStream)}

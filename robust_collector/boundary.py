"""The one boundary for everything that enters from outside: bounded text, numbers and JSON.

Source payloads, error texts from APIs and servers, replay files, backup lines and
config values are all untrusted. Before they reach a database, a JSONL file, a
log or a terminal they pass through these functions, which either return a value
every later stage can store and print, or raise ``BoundaryError`` naming what was
wrong. Nothing here ever raises anything else.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "MAX_TEXT",
    "TS_MAX_US",
    "TS_MIN_US",
    "BoundaryError",
    "JSONSyntaxError",
    "bounded_float",
    "bounded_int",
    "clamp_int64",
    "clean_text",
    "json_depth_ok",
    "loads_bounded",
    "safe_row",
    "ts_in_window",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# a sane window for exchange timestamps: 1980-01-01 .. 2200-01-01 (epoch microseconds)
TS_MIN_US = 315_532_800_000_000
TS_MAX_US = 7_258_118_400_000_000
MAX_TEXT = 2000  # characters kept of one outside string (error texts, reasons)
MAX_DEPTH = 64  # nesting levels a JSON payload may have
MAX_FRAME_BYTES = 8 * 1024 * 1024  # one message or line

# lone surrogates, NUL and C0/C1 control characters (tab, CR and LF become a space)
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# terminal escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), others
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")


class BoundaryError(ValueError):
    """An outside value that cannot be made safe (too deep, too long, not JSON...)."""


class JSONSyntaxError(BoundaryError):
    """Text that orjson refuses as JSON (within the size bound): a caller may try a
    more lenient parser, e.g. for the ``NaN`` some APIs send."""


def _replace(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch in "\t\r\n":
        return " "
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean_text(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as a string that every sink accepts: UTF-8 encodable, no NUL, no control
    characters or terminal escapes (shown escaped), at most ``limit`` characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif not isinstance(value, str):
        try:
            value = str(value)
        except Exception as exc:  # a hostile __str__
            value = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    if len(value) > limit * 4:  # cut long inputs before the regexes scan them
        value = value[: limit * 4]
    if not value.isascii() or not value.isprintable():
        value = _ESCAPES.sub(lambda m: repr(m.group(0))[1:-1], value)
        value = _BAD_CHARS.sub(_replace, value)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return value


def clamp_int64(value: int) -> int:
    """``value`` forced into SQLite's and PostgreSQL's signed 64-bit range."""
    if value > INT64_MAX:
        return INT64_MAX
    if value < INT64_MIN:
        return INT64_MIN
    return value


def bounded_int(value: Any, what: str = "value") -> int:
    """An integer inside int64, from an int or an integral float; ``BoundaryError`` else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BoundaryError(f"{what}: expected an integer, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise BoundaryError(f"{what}: expected an integer, got {clean_text(value, 40)}")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise BoundaryError(f"{what}: {clean_text(value, 40)} is outside the 64-bit range")
    return value


def bounded_float(value: Any, what: str = "value") -> float | None:
    """A float (finite or not: the validator judges), ``None`` for null; else ``BoundaryError``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise BoundaryError(f"{what}: expected a number, got a boolean")
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise BoundaryError(f"{what}: {clean_text(value, 40)} is too large") from None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise BoundaryError(f"{what}: not a number: {clean_text(value, 40)!r}") from None
    raise BoundaryError(f"{what}: expected a number, got {type(value).__name__}")


def ts_in_window(ts_us: int) -> bool:
    """True when an exchange timestamp lies in the sane window (1980 to 2200)."""
    return TS_MIN_US <= ts_us <= TS_MAX_US


def json_depth_ok(data: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``data`` nests at most ``limit`` containers deep (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return True


def _brackets(data: str | bytes) -> int:
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def loads_bounded(data: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Any:
    """Parse one JSON message or line within the size and depth bounds, or ``BoundaryError``."""
    if len(data) > max_bytes:
        raise BoundaryError(f"message of {len(data)} bytes exceeds the {max_bytes}-byte bound")
    try:
        parsed = orjson.loads(data)
    except (orjson.JSONDecodeError, RecursionError, TypeError) as exc:
        raise JSONSyntaxError(f"not valid JSON: {clean_text(exc, 120)}") from None
    # a text with at most MAX_DEPTH brackets cannot nest deeper (a C-speed count spares
    # the walk for most messages)
    if (
        isinstance(parsed, dict | list)
        and _brackets(data) > MAX_DEPTH
        and not json_depth_ok(parsed)
    ):
        raise BoundaryError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return parsed


def safe_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A storage row every backend and the JSONL encoder accept: ints in int64, clean text,
    non-finite floats as ``None`` (SQLite stores NaN as NULL anyway, orjson writes null)."""
    out = []
    for v in row:
        if type(v) is int:
            v = clamp_int64(v)
        elif type(v) is str:
            if not v.isascii() or not v.isprintable():
                v = clean_text(v, max(len(v), MAX_TEXT))
        elif type(v) is float and not math.isfinite(v):
            v = None
        out.append(v)
    return tuple(out)

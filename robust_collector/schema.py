"""Typed, frozen config sections built from plain YAML dicts, with key-path errors.

Each config section is a frozen dataclass whose fields carry a ``setting(...)``
with the default, the constraint and a one-line doc; ``build(cls, data, path)``
checks a dict against it and says exactly which key was wrong and why. The same
metadata feeds the configuration reference docs, so docs and schema cannot drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text
from robust_collector.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Constraint:
    """Bounds and choices for one setting; ``describe`` says them in words."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float) -> bool:
        return not (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        )

    def bounded(self) -> Constraint:
        """This constraint with ``DEFAULT_MAX`` as its upper bound when it has none: every
        number gets one, so a setting added without a bound cannot take 1e308."""
        if self.le is not None or self.lt is not None:
            return self
        return dataclasses.replace(self, le=DEFAULT_MAX)

    def describe(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {_num(self.ge)}")
        if self.gt is not None:
            parts.append(f"> {_num(self.gt)}")
        if self.le is not None:
            parts.append(f"<= {_num(self.le)}")
        if self.lt is not None:
            parts.append(f"< {_num(self.lt)}")
        return " and ".join(parts)


DEFAULT_MAX = 1_000_000_000
"""The upper bound of every numeric setting that declares none (about 31 years in seconds)."""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare one config key: its default, bounds and a one-line meaning."""
    meta = {"doc": doc, "constraint": Constraint(ge=ge, gt=gt, le=le, lt=lt)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, (list, dict, set)):
        frozen = default
        return field(default_factory=lambda: _freeze(frozen), metadata=meta)
    return field(default=default, metadata=meta)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return types.MappingProxyType(dict(value))
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    if origin in (dict, Mapping) or tp is Mapping:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    return getattr(tp, "__name__", str(tp))


def _shown(value: Any) -> str:
    """At most ~80 characters of a value's repr, safe to print (an alias bomb is not
    rendered whole; escapes and surrogates are shown escaped)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a hostile object: its type is enough
        text = f"<{type(value).__name__}>"
    return clean_text(text, 80)


_REPR = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def _fail(path: str, expected: str, value: Any) -> typing.NoReturn:
    raise ConfigError(
        f"{clean_text(path, 200)}: expected {expected}, got {_shown(value)}", path=path
    )


def _convert(tp: Any, value: Any, path: str, constraint: Constraint | None) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and type(None) in get_args(tp):
            return None
        if len(args) == 1:
            return _convert(args[0], value, path, constraint)
        for arg in args:
            try:
                return _convert(arg, value, path, constraint)
            except ConfigError:
                continue
        _fail(path, _type_name(tp), value)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            _fail(path, "a mapping", value)
        return build(tp, value, path)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            _fail(path, _type_name(tp), value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, "true or false", value)
        return value
    if tp in (int, float):
        constraint = (constraint or Constraint()).bounded()
        ok_types = (int,) if tp is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            bound = constraint.describe() if constraint else ""
            _fail(path, _type_name(tp) + (f" {bound}" if bound else ""), value)
        if tp is int and not INT64_MIN <= value <= INT64_MAX:
            _fail(path, "an integer inside the 64-bit range", value)
        if tp is float:
            try:
                value = float(value)
            except OverflowError:
                _fail(path, "a finite number", value)
            if not math.isfinite(value):
                _fail(path, "a finite number", value)
        if constraint is not None and not constraint.check(value):
            _fail(path, f"{_type_name(tp)} {constraint.describe()}", value)
        return value
    if tp is str:
        if not isinstance(value, str) or not value:
            _fail(path, "a non-empty string", value)
        if clean_text(value, len(value) + 1) != value:
            _fail(path, "text without control characters or unencodable characters", value)
        return value
    if origin in (tuple, list):
        (item_tp, *_rest) = get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            _fail(path, "a list", value)
        return tuple(
            _convert(item_tp, item, f"{path}[{i}]", constraint) for i, item in enumerate(value)
        )
    if origin in (dict, Mapping) or origin is typing.Mapping:
        key_tp, val_tp = get_args(tp)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            _fail(path, "a mapping", value)
        out = {}
        for k, v in value.items():
            key = _convert(key_tp, k, f"{path}.{k}", None)
            out[key] = _convert(val_tp, v, f"{path}.{k}", constraint)
        return types.MappingProxyType(out)
    if tp is Any:
        return value
    raise TypeError(f"schema type {tp!r} at {path} is not supported")  # programming error


def _numeric(tp: Any) -> bool:
    """True when ``tp`` holds numbers (directly, optionally, or as list items or values)."""
    if tp in (int, float):
        return True
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple, list):
        return any(_numeric(a) for a in get_args(tp) if a is not type(None) and a is not ...)
    if origin in (dict, Mapping) or origin is typing.Mapping:
        return _numeric(get_args(tp)[1])
    return False


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def build(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``, defaults for missing keys.

    Unknown keys are refused with a "did you mean" suggestion; every error names
    the dotted key path, the bad value and what was expected.
    """
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
            )
            raise ConfigError(f"{where}: unknown key{hint}", path=where)
    kwargs = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name in data and data[name] == "" and f.default == "":
            kwargs[name] = ""  # a key whose default is empty means "unset" when empty
        elif name in data:
            kwargs[name] = _convert(hints[name], data[name], where, f.metadata.get("constraint"))
        elif f.default is MISSING and f.default_factory is MISSING:
            tp = hints[name]
            if dataclasses.is_dataclass(tp):
                kwargs[name] = build(tp, {}, where)
            else:
                raise ConfigError(f"{where}: required key is missing", path=where)
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(path)
    return obj


def to_dict(obj: Any) -> Any:
    """A plain (YAML/JSON-ready) view of a config object."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


@dataclass(frozen=True)
class KeyDoc:
    """One documented config key, for the configuration reference."""

    path: str
    type: str
    default: Any
    doc: str


def describe(cls: type, path: str = "") -> list[KeyDoc]:
    """Every key of ``cls`` (recursively) with its type, default and meaning."""
    out: list[KeyDoc] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        where = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.append(KeyDoc(where, "mapping", None, f.metadata.get("doc", "")))
            out.extend(describe(tp, where))
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = to_dict(f.default_factory())
        else:
            default = None
        c = f.metadata.get("constraint")
        if c is not None and _numeric(tp):
            c = c.bounded()
        kind = _type_name(tp)
        if c is not None and c.describe():
            kind += f" {c.describe()}"
        out.append(KeyDoc(where, kind, default, f.metadata.get("doc", "")))
    return out

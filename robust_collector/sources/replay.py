"""Replay recorded files (CSV, Parquet or JSONL) as a feed, through the live pipeline.

A replay reads a quotes file (``path``), a trades file (``trades_path``) or both,
as ``data`` and ``data_by_symbol`` ask. Each file is read once with polars; each
symbol's rows are kept as compact ``array.array`` columns (8 bytes a value) in
file order and turned into a ``Quote`` or a ``Trade`` only when fetched, so
memory stays at the size of the columns used. A symbol's quotes and trades are
merged by time (quotes first on equal times; each file keeps its own order) and
numbered apart: quotes seq 1, 2, 3, ... and trades seq 1, 2, 3, ...
``fetch(symbol)`` returns that symbol's next item:

- at ``speed > 0`` it first waits until the row's replay time: the row with
  time ``t`` is due ``(t - t0) / speed`` seconds after ``start``, where ``t0`` is
  the earliest time in the files (one timeline for every symbol and both kinds);
- at ``speed == 0`` it returns at once (the source is ``self_paced``: the
  collector should poll it without its interval);
- after a symbol's last quote and trade it raises ``EndOfData`` (every later fetch too);
- a symbol the files do not hold raises ``PermanentSourceError`` naming it.

A trades file's columns: the ``quote`` preset maps the columns named like the
fields (symbol, ts_us, price, size, venue, conditions, correction, provider_id,
tape, recv_us); ``taq`` maps TAQ's ``SYMBOL, DT, PRICE, SIZE, EX, COND, CORR``
(each present column: the package's cleaned samples lack ``COND`` and ``CORR``).
A time and a price are required. Text (venue, conditions, ids, tape) is kept as
given, bounded by ``base.trade_text``; a list column of conditions is joined with
spaces; ``correction`` must be an integer column.

``ts_us`` is the row's time (naive times are read in ``timezone``); ``recv_us``
is our clock when fetched, unless the file maps a ``recv_us`` column. A file is
outside input: an integer time beyond int64 (or that overflows it once scaled to
µs) is clamped into int64, so the validator rejects that row (``bad_timestamp``)
instead of polars wrapping it around or refusing the file; a file polars cannot
read, or a time it cannot parse, is a one-line ``ConfigError``, never a traceback (text
from the file in it, a column's type or names, cleaned and capped). A symbol that is not
clean text (NUL, control characters, terminal escapes) or is longer than 64 characters is
kept under its cleaned, capped form, which no config can ask for. Rows keep
their values exactly (nulls stay None, NaN stays NaN), so the collector's
``Validator`` decides as ``validate_frame`` does on the same file.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from time import time_ns
from types import MappingProxyType
from typing import Any

import polars as pl

from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text, ts_in_window
from robust_collector.errors import ConfigError, EndOfData, PermanentSourceError
from robust_collector.model import Quote, Trade, make_tick_id, make_trade_id, new_quote, now_us
from robust_collector.sources.base import kinds_for, register_source, trade_text
from robust_collector.sources.settings import (
    TRADE_COLUMN_FIELDS,
    ReplaySourceConfig,
    wanted_kinds,
)
from robust_collector.validation.frame import DEFAULT_COLUMNS, TAQ_COLUMNS

__all__ = [
    "TAQ_TRADE_COLUMNS",
    "EndOfData",
    "ReplaySource",
    "read_quotes_file",
    "replay_columns",
    "trade_replay_columns",
]

_VALUE_FIELDS = ("bid", "ask", "bid_size", "ask_size", "last")
_TRADE_VALUES = ("price", "size")
_SYMBOL_BOUND = 64  # characters of a file's symbol kept as is (a config's are at most 32)
_TRADE_TEXT = {"venue": 64, "conditions": 128, "provider_id": 64, "tape": 64}  # field: bound
TAQ_TRADE_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "symbol": "SYMBOL",
        "ts_us": "DT",
        "price": "PRICE",
        "size": "SIZE",
        "venue": "EX",
        "conditions": "COND",
        "correction": "CORR",
    }
)
"""The TAQ trades file's columns (``DT, EX, SYMBOL, COND, SIZE, PRICE, CORR``)."""
_UNIT_TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1}
_EXTENSIONS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def _first_row(df: pl.DataFrame, mask: pl.Expr | pl.Series, column: str | None) -> str:
    """``", first at row K (value V)"`` for the first row where ``mask`` holds (rows count
    from 1, the header not counted): so a user can find the bad line in the file."""
    try:
        flags = mask if isinstance(mask, pl.Series) else df.select(mask).to_series()
        hits = flags.fill_null(False).arg_true()
        if hits.is_empty():
            return ""
        i = int(hits[0])
        shown = ""
        if column is not None and column in df.columns:
            v = df.get_column(column)[i]
            shown = f" (value {clean_text(repr(v) if isinstance(v, str) else str(v), 60)})"
        return f", first at row {i + 1}{shown}"
    except Exception:  # the location is a courtesy: never let it hide the error itself
        return ""


def _first_line(exc: BaseException) -> str:
    """An exception as one clean line (polars errors run to many lines and quote values)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return clean_text(first, 300)


def _shown_columns(available: list[str]) -> str:
    """A file's column names for an error message: outside text, so each is cleaned and
    the list is capped (a header can hold any text, and any number of columns)."""
    names = [repr(clean_text(c, 40)) for c in available[:20]]
    more = f", ... ({len(available)} columns)" if len(available) > 20 else ""
    return f"[{', '.join(names)}{more}]"


def read_quotes_file(path: str | Path, format: str = "auto", key: str = "path") -> pl.DataFrame:
    """Read a CSV (dates parsed), Parquet or JSONL file with polars; errors name
    ``source.<key>`` (``path`` or ``trades_path``)."""
    p = Path(path)
    fmt = format
    if fmt == "auto":
        fmt = _EXTENSIONS.get(p.suffix.lower(), "")
        if not fmt:
            known = ", ".join(sorted(_EXTENSIONS))
            raise ConfigError(
                f"source.format: cannot tell the format of {p.name} from its extension "
                f"(known: {known}); set source.format",
                path="source.format",
            )
    if not p.exists():
        raise ConfigError(f"source.{key}: file not found: {p}", path=f"source.{key}")
    try:
        if fmt == "csv":
            return pl.read_csv(p, try_parse_dates=True)
        if fmt == "parquet":
            return pl.read_parquet(p)
        if fmt == "jsonl":
            return pl.read_ndjson(p)
    except (pl.exceptions.PolarsError, OSError, ValueError, OverflowError) as exc:
        raise ConfigError(
            f"source.{key}: cannot read {p} as {fmt}: {_first_line(exc)}", path=f"source.{key}"
        ) from None
    raise ConfigError(f"source.format: unknown format {format!r}", path="source.format")


def replay_columns(config: ReplaySourceConfig, available: list[str]) -> dict[str, str]:
    """Quote field -> column for this config: the preset, then the ``columns`` overrides.

    The ``quote`` preset maps the fields whose names are columns of the file;
    ``taq`` maps ``TAQ_COLUMNS``. A time column is required, and a price.
    """
    if config.columns_preset == "taq":
        mapping = dict(TAQ_COLUMNS)
    else:
        mapping = {f: c for f, c in DEFAULT_COLUMNS.items() if c in available}
    mapping.update(config.columns)
    missing = sorted(c for c in mapping.values() if c not in available)
    if missing:
        raise ConfigError(
            f"source.columns: {missing} not in the file (it has {_shown_columns(available)})",
            path="source.columns",
        )
    if "ts_us" not in mapping:
        raise ConfigError(
            "source.columns: a time column is required, e.g. {ts_us: time}",
            path="source.columns",
        )
    if not any(f in mapping for f in ("bid", "ask", "last")):
        raise ConfigError(
            "source.columns: map at least 'last' or 'bid' and 'ask'", path="source.columns"
        )
    return mapping


def trade_replay_columns(config: ReplaySourceConfig, available: list[str]) -> dict[str, str]:
    """Trade field -> column of the trades file: the preset's columns the file has, then
    the ``trade_columns`` overrides (which must exist). A time and a price are required."""
    if config.columns_preset == "taq":
        preset: Mapping[str, str] = TAQ_TRADE_COLUMNS
    else:
        preset = {f: f for f in TRADE_COLUMN_FIELDS}
    mapping = {f: c for f, c in preset.items() if c in available}
    mapping.update(config.trade_columns)
    missing = sorted(c for c in config.trade_columns.values() if c not in available)
    if missing:
        raise ConfigError(
            f"source.trade_columns: {missing} not in the trades file "
            f"(it has {_shown_columns(available)})",
            path="source.trade_columns",
        )
    for f in ("ts_us", "price"):
        if f not in mapping:
            raise ConfigError(
                f"source.trade_columns: the trades file has no {f} column "
                f"({preset.get(f, f)!r}); map one, e.g. {{{f}: ...}} "
                f"(it has {_shown_columns(available)})",
                path="source.trade_columns",
            )
    return mapping


def _time_expr(
    df: pl.DataFrame,
    column: str,
    tz: str,
    unit: str,
    key: str = "columns",
    label: str = "the file",
) -> pl.Expr:
    """A time column as Int64 epoch µs (UTC), exactly as ``validate_frame`` converts it."""
    dtype = df.schema[column]
    col = pl.col(column)
    if dtype == pl.String:  # unparseable times become nulls: "N rows have no time"
        col = col.str.to_datetime(time_unit="us", strict=False)
        dtype = pl.Datetime("us")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            # a local time in a DST gap does not exist: null, so "N rows have no time"
            col = col.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        return col.dt.epoch("us").cast(pl.Int64)
    if dtype.is_integer():
        return _int_time_us(col, unit)
    # the dtype comes from the file (a nested list, a struct with the file's field names):
    # outside text, cleaned and capped like every other
    raise ConfigError(
        f"source.{key}: column {column!r} is {clean_text(dtype, 60)} in {label}; expected a "
        "datetime, a date-time string or integer epoch time",
        path=f"source.{key}",
    )


def _int_time_us(col: pl.Expr, unit: str) -> pl.Expr:
    """Integer epoch times (any width, signed or not) as Int64 µs, clamped into int64:
    polars would refuse a UInt64/Int128 value past int64 and wrap a product around."""
    if unit == "ns":
        lo, hi = INT64_MIN, INT64_MAX
    else:
        scale = _UNIT_TO_US[unit]
        lo, hi = -(INT64_MAX // scale), INT64_MAX // scale
    wide = col.cast(pl.Int128)  # every integer column fits; the comparisons cannot overflow
    inside = wide.clip(lo, hi).cast(pl.Int64)
    scaled = inside // 1000 if unit == "ns" else inside * _UNIT_TO_US[unit]
    return (
        pl.when(wide > hi)
        .then(pl.lit(INT64_MAX, dtype=pl.Int64))
        .when(wide < lo)
        .then(pl.lit(INT64_MIN, dtype=pl.Int64))
        .otherwise(scaled)
        .cast(pl.Int64)
    )


def _track_name(symbol: str, tracks: Mapping[str, Any]) -> str:
    """The name a file's symbol is kept under: itself when it is clean text of at most
    ``_SYMBOL_BOUND`` characters (every symbol a config can name is), else its cleaned form
    (NUL, control characters, terminal escapes and surrogates shown escaped, capped), so
    the symbols a replay reports (in errors, progress, ``Collector``'s "not in the
    replayed file") are safe to print. Such a name is one no config can ask for; two that
    clean alike are told apart by a ``#k`` suffix, never merged."""
    name = symbol
    if len(name) > _SYMBOL_BOUND or not name.isascii() or not name.isprintable():
        name = clean_text(name, _SYMBOL_BOUND)
    base, k = name, 1
    while name in tracks:
        k += 1
        name = f"{base} #{k}"
    return name


def _first_sane(ts: array[int]) -> int | None:
    """The first time inside the sane window (the replay clock's origin), if any."""
    return next((t for t in ts if ts_in_window(t)), None)


@dataclass
class _Track:
    """One symbol's rows (``array`` columns in file order) and the replay position."""

    ts: array[int]
    recv: array[int] | None
    values: dict[str, array[float]]
    nulls: dict[str, bytearray]
    pos: int = 0
    extra: dict[str, list[Any]] = field(default_factory=dict)  # trades: text, correction

    @property
    def rows(self) -> int:
        return len(self.ts)

    def value(self, field: str, i: int) -> float | None:
        arr = self.values.get(field)
        if arr is None:
            return None
        mask = self.nulls.get(field)
        if mask is not None and mask[i]:
            return None
        return arr[i]


@dataclass(frozen=True)
class _FileSpec:
    """How errors about one file read: its config keys and its name."""

    kind: str  # quotes | trades
    path_key: str  # path | trades_path
    columns_key: str  # columns | trade_columns
    label: str


class ReplaySource:
    """Recorded files as a feed (see the module docs); ``self_paced``: poll without interval.

    ``frame`` and ``trades_frame`` replace reading ``config.path`` and
    ``config.trades_path`` (DataFrames already in memory). ``clock_us`` stamps
    ``recv_us``; ``monotonic`` and ``sleep`` pace the replay: all three are
    injectable for tests.
    """

    self_paced = True

    def __init__(
        self,
        config: ReplaySourceConfig,
        *,
        frame: pl.DataFrame | None = None,
        trades_frame: pl.DataFrame | None = None,
        clock_us: Callable[[], int] = now_us,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.name = "replay"
        self._clock_us = clock_us
        self._monotonic = monotonic
        self._sleep = sleep
        self._run_id = "replay"
        self._started: float | None = None
        no_file = config.path is None and config.trades_path is None
        if frame is None and trades_frame is None and no_file:
            raise ConfigError("source.path: required key is missing", path="source.path")
        wanted = wanted_kinds(config)
        for kind, key, given in (
            ("quotes", "path", frame is not None or config.path is not None),
            ("trades", "trades_path", trades_frame is not None or config.trades_path is not None),
        ):
            if given and kind not in wanted:  # a file nothing reads is a forgotten data key
                raise ConfigError(
                    f"source.{key}: set, but no symbol's data includes {kind} (add {kind} to data)",
                    path=f"source.{key}",
                )
        labels: list[str] = []
        self.columns: dict[str, str] = {}
        self.trade_columns: dict[str, str] = {}
        self._tracks: dict[str, _Track] = {}
        self._trade_tracks: dict[str, _Track] = {}
        if frame is not None or config.path is not None:
            if frame is None:
                assert config.path is not None
                frame = read_quotes_file(config.path, config.format)
                label = Path(config.path).name
            else:
                label = "the replayed frame"
            labels.append(label)
            self.columns = replay_columns(config, frame.columns)
            spec = _FileSpec("quotes", "path", "columns", label)
            self._tracks = self._load(frame, spec, self.columns)
        if trades_frame is not None or config.trades_path is not None:
            if trades_frame is None:
                assert config.trades_path is not None
                trades_frame = read_quotes_file(config.trades_path, config.format, "trades_path")
                label = Path(config.trades_path).name
            else:
                label = "the replayed trades frame"
            labels.append(label)
            self.trade_columns = trade_replay_columns(config, trades_frame.columns)
            spec = _FileSpec("trades", "trades_path", "trade_columns", label)
            self._trade_tracks = self._load(trades_frame, spec, self.trade_columns)
        self.label = " and ".join(labels)
        # a symbol replays only the kinds it collects (data, data_by_symbol)
        for kind, tracks in (("quotes", self._tracks), ("trades", self._trade_tracks)):
            for sym in [s for s in tracks if kind not in kinds_for(config, s)]:
                del tracks[sym]
        every = (*self._tracks.values(), *self._trade_tracks.values())
        firsts = (_first_sane(t.ts) for t in every)
        self.t0_us = min((ts for ts in firsts if ts is not None), default=0)

    def _load(self, df: pl.DataFrame, spec: _FileSpec, cols: dict[str, str]) -> dict[str, _Track]:
        """The file's rows per symbol; whatever polars raises on odd values is one line."""
        try:
            return self._load_tracks(df, spec, cols)
        except ConfigError:
            raise
        except (pl.exceptions.PolarsError, OverflowError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"source.{spec.path_key}: cannot replay {spec.label}: {_first_line(exc)}",
                path=f"source.{spec.path_key}",
            ) from None

    def _numeric(
        self, df: pl.DataFrame, spec: _FileSpec, field: str, column: str, dtype: pl.DataType
    ) -> pl.Expr:
        """``column`` cast to ``dtype``, or a one-line error naming its first bad row (an
        integer field refuses fractions and NaN rather than truncate them)."""
        col = pl.col(column)
        kind = "numeric" if dtype == pl.Float64 else "integers"
        why = ""
        try:
            df.select(col.cast(dtype))
        except pl.exceptions.PolarsError as exc:
            why = f" ({_first_line(exc)})"
            bad = col.cast(dtype, strict=False).is_null() & col.is_not_null()
        else:
            if dtype != pl.Float64 and df.schema[column].is_float():
                bad = col.is_not_null() & (col.is_nan() | (col != col.round(0)))
                if not df.select(bad.any()).item():
                    return col.cast(dtype).alias(field)
            else:
                return col.cast(dtype).alias(field)
        raise ConfigError(
            f"source.{spec.columns_key}.{field}: column {column!r} of {spec.label} is not "
            f"{kind}{_first_row(df, bad, column)}{why}",
            path=f"source.{spec.columns_key}.{field}",
        )

    @staticmethod
    def _text(df: pl.DataFrame, field: str, column: str) -> pl.Expr:
        """A text column as String; a list column (conditions) joined with spaces."""
        col = pl.col(column)
        if isinstance(df.schema[column], pl.List):
            col = col.list.eval(pl.element().cast(pl.String)).list.join(" ")
        return col.cast(pl.String).alias(field)

    def _load_tracks(
        self, df: pl.DataFrame, spec: _FileSpec, cols: dict[str, str]
    ) -> dict[str, _Track]:
        cfg = self.config
        ck = spec.columns_key
        if "symbol" in cols:
            sym = pl.col(cols["symbol"]).cast(pl.String)
        elif cfg.symbol is not None:
            sym = pl.lit(cfg.symbol, dtype=pl.String)
        else:
            raise ConfigError(
                f"source.symbol: the {spec.kind} file has no symbol column; name one in "
                f"source.{ck} or give the symbol of every row in source.symbol"
                if spec.kind == "trades"
                else "source.symbol: the file has no symbol column; name one in source.columns "
                "or give the symbol of every row in source.symbol",
                path="source.symbol",
            )
        time_key = ck
        exprs = [
            sym.alias("_sym"),
            _time_expr(df, cols["ts_us"], cfg.timezone, cfg.time_unit, time_key, spec.label).alias(
                "_ts"
            ),
        ]
        if "recv_us" in cols:
            exprs.append(
                _time_expr(
                    df, cols["recv_us"], cfg.timezone, cfg.time_unit, time_key, spec.label
                ).alias("_recv")
            )
        value_fields = _VALUE_FIELDS if spec.kind == "quotes" else _TRADE_VALUES
        fields = [f for f in value_fields if f in cols]
        exprs += [self._numeric(df, spec, f, cols[f], pl.Float64) for f in fields]
        texts = [f for f in _TRADE_TEXT if f in cols] if spec.kind == "trades" else []
        exprs += [self._text(df, f, cols[f]) for f in texts]
        has_corr = spec.kind == "trades" and "correction" in cols
        if has_corr:
            exprs.append(self._numeric(df, spec, "correction", cols["correction"], pl.Int64))
        work = df.select(exprs)
        no_time = work.get_column("_ts").null_count()
        if no_time:
            where = _first_row(df, work.get_column("_ts").is_null(), cols["ts_us"])
            raise ConfigError(
                f"source.{ck}.ts_us: {no_time} rows of {spec.label} have no time{where}",
                path=f"source.{ck}.ts_us",
            )
        if work.get_column("_sym").null_count():
            where = _first_row(df, work.get_column("_sym").is_null(), cols.get("symbol"))
            raise ConfigError(
                f"source.{ck}.symbol: rows of {spec.label} without a symbol{where}",
                path=f"source.{ck}.symbol",
            )
        tracks: dict[str, _Track] = {}
        shared: dict[str, str] = {}  # one string object per distinct value
        for key, part in work.partition_by("_sym", as_dict=True, maintain_order=True).items():
            symbol = key[0] if isinstance(key, tuple) else key
            values: dict[str, array[float]] = {}
            nulls: dict[str, bytearray] = {}
            for f in fields:
                s = part.get_column(f)
                if s.null_count():
                    nulls[f] = bytearray(s.is_null().to_list())
                    s = s.fill_null(math.nan)
                values[f] = array("d", s.to_list())
            extra: dict[str, list[Any]] = {}
            for f in texts:
                bound = _TRADE_TEXT[f]
                extra[f] = [
                    None if v is None else shared.setdefault(v, trade_text(v, bound))
                    for v in part.get_column(f).to_list()
                ]
            if has_corr:
                extra["correction"] = part.get_column("correction").to_list()
            recv = part.get_column("_recv") if "_recv" in part.columns else None
            tracks[_track_name(str(symbol), tracks)] = _Track(
                ts=array("q", part.get_column("_ts").to_list()),
                recv=None if recv is None else array("q", recv.to_list()),
                values=values,
                nulls=nulls,
                extra=extra,
            )
        return tracks

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, run_id: str) -> None:
        """Start the replay clock; ``run_id`` goes into every tick and trade id."""
        self._run_id = run_id
        self._started = self._monotonic()

    async def aclose(self) -> None:
        return None

    # -- progress -------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols replayed, in order of first appearance (quotes file first)."""
        return tuple(dict.fromkeys((*self._tracks, *self._trade_tracks)))

    def _kind_tracks(self, symbol: str, kind: str | None) -> list[_Track]:
        out = []
        if kind in (None, "quotes") and symbol in self._tracks:
            out.append(self._tracks[symbol])
        if kind in (None, "trades") and symbol in self._trade_tracks:
            out.append(self._trade_tracks[symbol])
        return out

    def rows(self, symbol: str, kind: str | None = None) -> int:
        """How many items ``symbol`` replays (0 if none): quotes and trades, or one ``kind``."""
        return sum(t.rows for t in self._kind_tracks(symbol, kind))

    def served(self, symbol: str, kind: str | None = None) -> int:
        """How many items of ``symbol`` (of one ``kind``, if given) have been replayed."""
        return sum(t.pos for t in self._kind_tracks(symbol, kind))

    def finished(self, *symbols: str) -> bool:
        """True when every one of ``symbols`` (default: all replayed) is replayed.

        A symbol the files do not hold counts as finished (it has nothing to replay).
        """
        names = symbols or self.symbols
        return all(self.served(s) >= self.rows(s) for s in names)

    def progress(self) -> dict[str, tuple[int, int]]:
        """Per symbol: (items replayed, items to replay), quotes and trades together."""
        return {s: (self.served(s), self.rows(s)) for s in self.symbols}

    # -- the feed ---------------------------------------------------------------------------

    def _unknown(self, symbol: str) -> PermanentSourceError:
        names = self.symbols
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        return PermanentSourceError(  # the file's symbols are outside text
            clean_text(
                f"replay {symbol}: symbol not in {self.label} (it holds {shown or 'no rows'})"
            ),
            symbol=symbol,
        )

    @staticmethod
    def _next(q: _Track | None, t: _Track | None) -> tuple[_Track, bool] | None:
        """The track whose row comes next (and whether it is the quotes'), or None at the
        end: the earlier time first, quotes first on equal times."""
        if q is not None and q.pos < q.rows:
            if t is None or t.pos >= t.rows or q.ts[q.pos] <= t.ts[t.pos]:
                return q, True
            return t, False
        if t is not None and t.pos < t.rows:
            return t, False
        return None

    async def fetch(self, symbol: str) -> Quote | Trade:
        """The next item of ``symbol`` (a quote or a trade, in time order) at its replay
        time; ``EndOfData`` at the end."""
        q = self._tracks.get(symbol)
        t = self._trade_tracks.get(symbol)
        if q is None and t is None:
            raise self._unknown(symbol)
        nxt = self._next(q, t)
        if nxt is None:
            nq, nt = self.rows(symbol, "quotes"), self.rows(symbol, "trades")
            what = f"{nq} rows" if t is None else f"{nq} quotes and {nt} trades"
            raise EndOfData(
                f"replay {symbol}: end of data after {what} of {self.label}",
                symbol=symbol,
                served=nq + nt,
            )
        track, is_quote = nxt
        i = track.pos
        ts = track.ts[i]
        speed = self.config.speed
        if speed > 0 and ts_in_window(ts):  # an absurd time is rejected, not waited for
            if self._started is None:
                self._started = self._monotonic()
            due = self._started + (ts - self.t0_us) / 1e6 / speed
            delay = due - self._monotonic()
            if delay > 0:
                await self._sleep(delay)
        track.pos = i + 1  # after the wait: a fetch cancelled while waiting replays the row later
        if is_quote:
            return self._quote_at(symbol, track, i)
        return self._trade_at(symbol, track, i)

    async def fetch_batch(self, symbol: str, limit: int) -> list[Quote | Trade]:
        """The next items of ``symbol`` that are due, at most ``limit`` (at least one).

        Waits for the first item like ``fetch``; then takes every following item whose
        replay time has come (all of them at speed 0): quotes and trades merged by time,
        quotes first on equal times. Lets the collector judge a run of items per call
        instead of paying the per-call overhead per item.
        """
        out: list[Quote | Trade] = [await self.fetch(symbol)]
        q = self._tracks.get(symbol)
        t = self._trade_tracks.get(symbol)
        speed = self.config.speed
        horizon = None
        if speed > 0 and self._started is not None:
            horizon = self.t0_us + (self._monotonic() - self._started) * speed * 1e6
        if q is None or t is None:  # one kind: its rows in file order
            track = q if q is not None else t
            assert track is not None
            start = track.pos
            end = min(track.rows, start + limit - 1)
            if horizon is not None:
                # the rows are in file order, not necessarily time order: stop at the first
                # row that is not due yet, as a row-by-row loop would
                ts = track.ts
                i = start
                while i < end and ts[i] <= horizon:
                    i += 1
                end = i
            if end > start:
                track.pos = end
                build = self._quotes_between if q is not None else self._trades_between
                out.extend(build(symbol, track, start, end))
            return out
        out.extend(self._merged(symbol, q, t, limit - 1, horizon))
        return out

    def _merged(
        self, symbol: str, q: _Track, t: _Track, limit: int, horizon: float | None
    ) -> list[Quote | Trade]:
        """Up to ``limit`` next items of both tracks in merge order, those due by ``horizon``."""
        qts, tts = q.ts, t.ts
        qi, ti, qn, tn = q.pos, t.pos, q.rows, t.rows
        order = bytearray()  # 1: a quote, 0: a trade
        while len(order) < limit:
            if qi < qn and (ti >= tn or qts[qi] <= tts[ti]):
                if horizon is not None and qts[qi] > horizon:
                    break
                qi += 1
                order.append(1)
            elif ti < tn:
                if horizon is not None and tts[ti] > horizon:
                    break
                ti += 1
                order.append(0)
            else:
                break
        quotes = iter(self._quotes_between(symbol, q, q.pos, qi))
        trades = iter(self._trades_between(symbol, t, t.pos, ti))
        q.pos, t.pos = qi, ti
        return [next(quotes) if is_q else next(trades) for is_q in order]

    def _column(self, t: _Track, field: str, start: int, end: int) -> Iterable[float | None]:
        """``t.value(field, i)`` for ``i`` in ``start:end``, as one iterable."""
        arr = t.values.get(field)
        if arr is None:
            return repeat(None, end - start)
        mask = t.nulls.get(field)
        values = arr[start:end]
        if mask is None or not any(mask[start:end]):
            return values
        return [None if null else v for v, null in zip(values, mask[start:end], strict=True)]

    def _recv_between(self, t: _Track, start: int, end: int) -> Iterable[int]:
        if t.recv is not None:
            return t.recv[start:end]
        if self._clock_us is now_us:  # the same reading, without a call per row
            return [time_ns() // 1000 for _ in range(end - start)]
        clock = self._clock_us
        return [clock() for _ in range(end - start)]

    def _quotes_between(self, symbol: str, t: _Track, start: int, end: int) -> list[Quote]:
        """Rows ``start:end`` of ``t`` as quotes, column by column (what ``_quote_at`` builds)."""
        n = end - start
        seqs = range(start + 1, end + 1)
        prefix = make_tick_id(self._run_id, symbol, 0)[:-1]  # "run:symbol:"
        if prefix + "1" == make_tick_id(self._run_id, symbol, 1):
            tick_ids: Iterable[str] = map(prefix.__add__, map(str, seqs))
        else:  # not a plain "prefix + seq" id: one call per row
            tick_ids = [make_tick_id(self._run_id, symbol, s) for s in seqs]
        col = self._column
        return list(
            map(
                new_quote,
                tick_ids,
                repeat(symbol, n),
                seqs,
                t.ts[start:end],
                self._recv_between(t, start, end),
                col(t, "bid", start, end),
                col(t, "ask", start, end),
                col(t, "bid_size", start, end),
                col(t, "ask_size", start, end),
                col(t, "last", start, end),
                repeat(self.name, n),
            )
        )

    def _extra(self, t: _Track, field: str, start: int, end: int) -> Iterable[Any]:
        values = t.extra.get(field)
        return repeat(None, end - start) if values is None else values[start:end]

    def _trades_between(self, symbol: str, t: _Track, start: int, end: int) -> list[Trade]:
        """Rows ``start:end`` of ``t`` as trades (what ``_trade_at`` builds)."""
        n = end - start
        seqs = range(start + 1, end + 1)
        ex = self._extra
        return list(
            map(
                Trade,
                [make_trade_id(self._run_id, symbol, s) for s in seqs],
                repeat(symbol, n),
                seqs,
                t.ts[start:end],
                self._recv_between(t, start, end),
                self._column(t, "price", start, end),
                self._column(t, "size", start, end),
                ex(t, "venue", start, end),
                ex(t, "conditions", start, end),
                ex(t, "correction", start, end),
                ex(t, "provider_id", start, end),
                ex(t, "tape", start, end),
                repeat(self.name, n),
            )
        )

    def _quote_at(self, symbol: str, t: Any, i: int) -> Quote:
        seq = i + 1
        return new_quote(
            make_tick_id(self._run_id, symbol, seq),
            symbol,
            seq,
            t.ts[i],
            t.recv[i] if t.recv is not None else self._clock_us(),
            t.value("bid", i),
            t.value("ask", i),
            t.value("bid_size", i),
            t.value("ask_size", i),
            t.value("last", i),
            self.name,
        )

    def _trade_at(self, symbol: str, t: _Track, i: int) -> Trade:
        return self._trades_between(symbol, t, i, i + 1)[0]


def _build(config: ReplaySourceConfig, **kwargs: Any) -> ReplaySource:
    return ReplaySource(config, **kwargs)


register_source("replay", _build)

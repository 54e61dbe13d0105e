"""Replay a recorded file (CSV, Parquet or JSONL) as a feed, through the live pipeline.

The file is read once with polars; each symbol's rows are kept as compact
``array.array`` columns (8 bytes a value) in file order and turned into a ``Quote`` only when fetched, so memory stays at
the size of the columns used. ``fetch(symbol)`` returns that symbol's next row:

- at ``speed > 0`` it first waits until the row's replay time: the row with
  time ``t`` is due ``(t - t0) / speed`` seconds after ``start``, where ``t0`` is
  the earliest time in the file (one timeline for every symbol);
- at ``speed == 0`` it returns at once (the source is ``self_paced``: the
  collector should poll it without its interval);
- after a symbol's last row it raises ``EndOfData`` (every later fetch too);
- a symbol the file does not hold raises ``PermanentSourceError`` naming it.

``ts_us`` is the row's time (naive times are read in ``timezone``); ``recv_us``
is our clock when fetched, unless the file maps a ``recv_us`` column. A file is
outside input: an integer time beyond int64 (or that overflows it once scaled to
µs) is clamped into int64, so the validator rejects that row (``bad_timestamp``)
instead of polars wrapping it around or refusing the file; a file polars cannot
read, or a time it cannot parse, is a one-line ``ConfigError``, never a traceback. Rows keep
their values exactly (nulls stay None, NaN stays NaN), so the collector's
``Validator`` decides as ``validate_frame`` does on the same file.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from time import time_ns
from typing import Any

import polars as pl

from robust_collector.boundary import INT64_MAX, INT64_MIN, clean_text, ts_in_window
from robust_collector.errors import ConfigError, EndOfData, PermanentSourceError
from robust_collector.model import Quote, make_tick_id, new_quote, now_us
from robust_collector.sources.base import register_source
from robust_collector.sources.settings import ReplaySourceConfig
from robust_collector.validation.frame import DEFAULT_COLUMNS, TAQ_COLUMNS

__all__ = ["EndOfData", "ReplaySource", "read_quotes_file", "replay_columns"]

_VALUE_FIELDS = ("bid", "ask", "bid_size", "ask_size", "last")
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


def read_quotes_file(path: str | Path, format: str = "auto") -> pl.DataFrame:
    """Read a CSV (dates parsed), Parquet or JSONL file with polars."""
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
        raise ConfigError(f"source.path: file not found: {p}", path="source.path")
    try:
        if fmt == "csv":
            return pl.read_csv(p, try_parse_dates=True)
        if fmt == "parquet":
            return pl.read_parquet(p)
        if fmt == "jsonl":
            return pl.read_ndjson(p)
    except (pl.exceptions.PolarsError, OSError, ValueError, OverflowError) as exc:
        raise ConfigError(
            f"source.path: cannot read {p} as {fmt}: {_first_line(exc)}", path="source.path"
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
            f"source.columns: {missing} not in the file (it has {available})",
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


def _time_expr(df: pl.DataFrame, column: str, tz: str, unit: str) -> pl.Expr:
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
    raise ConfigError(
        f"source.columns: column {column!r} is {dtype}; expected a datetime, a date-time "
        "string or integer epoch time",
        path="source.columns",
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


class ReplaySource:
    """A recorded file as a feed (see the module docs); ``self_paced``: poll without interval.

    ``frame`` replaces reading ``config.path`` (a DataFrame already in memory).
    ``clock_us`` stamps ``recv_us``; ``monotonic`` and ``sleep`` pace the replay:
    all three are injectable for tests.
    """

    self_paced = True

    def __init__(
        self,
        config: ReplaySourceConfig,
        *,
        frame: pl.DataFrame | None = None,
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
        if frame is None:
            if config.path is None:
                raise ConfigError("source.path: required key is missing", path="source.path")
            frame = read_quotes_file(config.path, config.format)
            self.label = Path(config.path).name
        else:
            self.label = "the replayed frame"
        self.columns = replay_columns(config, frame.columns)
        self._tracks = self._load(frame)
        firsts = (_first_sane(t.ts) for t in self._tracks.values())
        self.t0_us = min((ts for ts in firsts if ts is not None), default=0)

    def _load(self, df: pl.DataFrame) -> dict[str, _Track]:
        """The file's rows per symbol; whatever polars raises on odd values is one line."""
        try:
            return self._load_tracks(df)
        except ConfigError:
            raise
        except (pl.exceptions.PolarsError, OverflowError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"source.path: cannot replay {self.label}: {_first_line(exc)}",
                path="source.path",
            ) from None

    def _load_tracks(self, df: pl.DataFrame) -> dict[str, _Track]:
        cfg, cols = self.config, self.columns
        if "symbol" in cols:
            sym = pl.col(cols["symbol"]).cast(pl.String)
        elif cfg.symbol is not None:
            sym = pl.lit(cfg.symbol, dtype=pl.String)
        else:
            raise ConfigError(
                "source.symbol: the file has no symbol column; name one in source.columns "
                "or give the symbol of every row in source.symbol",
                path="source.symbol",
            )
        exprs = [sym.alias("_sym"), _time_expr(df, cols["ts_us"], cfg.timezone, cfg.time_unit)]
        if "recv_us" in cols:
            exprs.append(
                _time_expr(df, cols["recv_us"], cfg.timezone, cfg.time_unit).alias("_recv")
            )
        fields = [f for f in _VALUE_FIELDS if f in cols]
        for f in fields:
            try:
                df.select(pl.col(cols[f]).cast(pl.Float64))
            except pl.exceptions.PolarsError as exc:
                bad = (
                    pl.col(cols[f]).cast(pl.Float64, strict=False).is_null()
                    & pl.col(cols[f]).is_not_null()
                )
                raise ConfigError(
                    f"source.columns.{f}: column {cols[f]!r} of {self.label} is not numeric"
                    f"{_first_row(df, bad, cols[f])} ({_first_line(exc)})",
                    path=f"source.columns.{f}",
                ) from None
            exprs.append(pl.col(cols[f]).cast(pl.Float64).alias(f))
        work = df.select(exprs[0], exprs[1].alias("_ts"), *exprs[2:])
        no_time = work.get_column("_ts").null_count()
        if no_time:
            where = _first_row(df, work.get_column("_ts").is_null(), cols["ts_us"])
            raise ConfigError(
                f"source.columns.ts_us: {no_time} rows of {self.label} have no time{where}",
                path="source.columns.ts_us",
            )
        if work.get_column("_sym").null_count():
            where = _first_row(df, work.get_column("_sym").is_null(), cols.get("symbol"))
            raise ConfigError(
                f"source.columns.symbol: rows of {self.label} without a symbol{where}",
                path="source.columns.symbol",
            )
        tracks: dict[str, _Track] = {}
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
            recv = part.get_column("_recv") if "_recv" in part.columns else None
            tracks[str(symbol)] = _Track(
                ts=array("q", part.get_column("_ts").to_list()),
                recv=None if recv is None else array("q", recv.to_list()),
                values=values,
                nulls=nulls,
            )
        return tracks

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, run_id: str) -> None:
        """Start the replay clock; ``run_id`` goes into every tick id."""
        self._run_id = run_id
        self._started = self._monotonic()

    async def aclose(self) -> None:
        return None

    # -- progress -------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols in the file, in order of first appearance."""
        return tuple(self._tracks)

    def rows(self, symbol: str) -> int:
        """How many rows ``symbol`` has in the file (0 if none)."""
        t = self._tracks.get(symbol)
        return 0 if t is None else t.rows

    def served(self, symbol: str) -> int:
        """How many rows of ``symbol`` have been replayed."""
        t = self._tracks.get(symbol)
        return 0 if t is None else t.pos

    def finished(self, *symbols: str) -> bool:
        """True when every one of ``symbols`` (default: all in the file) is replayed.

        A symbol the file does not hold counts as finished (it has nothing to replay).
        """
        names = symbols or tuple(self._tracks)
        return all(self.served(s) >= self.rows(s) for s in names)

    def progress(self) -> dict[str, tuple[int, int]]:
        """Per symbol: (rows replayed, rows in the file)."""
        return {s: (t.pos, t.rows) for s, t in self._tracks.items()}

    # -- the feed ---------------------------------------------------------------------------

    def _unknown(self, symbol: str) -> PermanentSourceError:
        shown = ", ".join(list(self._tracks)[:10]) + (", ..." if len(self._tracks) > 10 else "")
        return PermanentSourceError(  # the file's symbols are outside text
            clean_text(
                f"replay {symbol}: symbol not in {self.label} (it holds {shown or 'no rows'})"
            ),
            symbol=symbol,
        )

    async def fetch(self, symbol: str) -> Quote:
        """The next row of ``symbol`` as a quote, at its replay time; ``EndOfData`` at the end."""
        t = self._tracks.get(symbol)
        if t is None:
            raise self._unknown(symbol)
        i = t.pos
        if i >= t.rows:
            raise EndOfData(
                f"replay {symbol}: end of data after {t.rows} rows of {self.label}",
                symbol=symbol,
                served=t.rows,
            )
        ts = t.ts[i]
        speed = self.config.speed
        if speed > 0 and ts_in_window(ts):  # an absurd time is rejected, not waited for
            if self._started is None:
                self._started = self._monotonic()
            due = self._started + (ts - self.t0_us) / 1e6 / speed
            delay = due - self._monotonic()
            if delay > 0:
                await self._sleep(delay)
        t.pos = i + 1  # after the wait: a fetch cancelled while waiting replays the row later
        return self._quote_at(symbol, t, i)

    async def fetch_batch(self, symbol: str, limit: int) -> list[Quote]:
        """The next rows of ``symbol`` that are due, at most ``limit`` (at least one).

        Waits for the first row like ``fetch``; then takes every following row whose
        replay time has come (all of them at speed 0). Lets the collector judge a
        run of quotes per call instead of paying the per-call overhead per quote.
        """
        out = [await self.fetch(symbol)]
        t = self._tracks[symbol]
        speed = self.config.speed
        horizon = None
        if speed > 0 and self._started is not None:
            horizon = self.t0_us + (self._monotonic() - self._started) * speed * 1e6
        start = t.pos
        end = min(t.rows, start + limit - 1)
        if horizon is not None:
            # the rows are in file order, not necessarily time order: stop at the first
            # row that is not due yet, as a row-by-row loop would
            ts = t.ts
            i = start
            while i < end and ts[i] <= horizon:
                i += 1
            end = i
        if end > start:
            t.pos = end
            out.extend(self._quotes_between(symbol, t, start, end))
        return out

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

    def _quotes_between(self, symbol: str, t: _Track, start: int, end: int) -> list[Quote]:
        """Rows ``start:end`` of ``t`` as quotes, column by column (what ``_quote_at`` builds)."""
        n = end - start
        seqs = range(start + 1, end + 1)
        prefix = make_tick_id(self._run_id, symbol, 0)[:-1]  # "run:symbol:"
        if prefix + "1" == make_tick_id(self._run_id, symbol, 1):
            tick_ids: Iterable[str] = map(prefix.__add__, map(str, seqs))
        else:  # not a plain "prefix + seq" id: one call per row
            tick_ids = [make_tick_id(self._run_id, symbol, s) for s in seqs]
        if t.recv is not None:
            recv: Iterable[int] = t.recv[start:end]
        elif self._clock_us is now_us:  # the same reading, without a call per row
            recv = [time_ns() // 1000 for _ in range(n)]
        else:
            clock = self._clock_us
            recv = [clock() for _ in range(n)]
        col = self._column
        return list(
            map(
                new_quote,
                tick_ids,
                repeat(symbol, n),
                seqs,
                t.ts[start:end],
                recv,
                col(t, "bid", start, end),
                col(t, "ask", start, end),
                col(t, "bid_size", start, end),
                col(t, "ask_size", start, end),
                col(t, "last", start, end),
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


def _build(config: ReplaySourceConfig, **kwargs: Any) -> ReplaySource:
    return ReplaySource(config, **kwargs)


register_source("replay", _build)

"""What a collector stored, rejected, failed on and wrote to backup, as polars frames (split up next)."""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from robust_collector.analysis.paths import Pathish
from robust_collector.config import SessionConfig
from robust_collector.health import HealthLevel, MarketSession
from robust_collector.model import now_us
from robust_collector.storage.backend import is_postgres_url
from robust_collector.storage.backup import RECOVERED_DIR, list_backup_files, read_backup_file
from robust_collector.storage.reader import (
    TICK_SCHEMA,
    open_reader,
    query_frame,
    read_ticks,
    to_epoch_us,
    with_datetimes,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

BREAKER_COLORS: dict[str, str] = {
    "CLOSED": "#2e7d32",
    "HALF_OPEN": "#f9a825",
    "OPEN": "#c62828",
    "DISABLED": "#757575",
}
"""One colour per breaker state, shared by the dashboard and the figures."""

LEVEL_COLORS: dict[str, str] = {
    "HEALTHY": "#2e7d32",
    "DEGRADED": "#f9a825",
    "UNHEALTHY": "#e65100",
    "CRITICAL": "#b71c1c",
    "UNKNOWN": "#757575",
}
"""One colour per health level (plus ``UNKNOWN``: no report, or not running)."""

STORAGE_BREAKER = "storage"
"""The name of the database's own breaker in ``breaker_events``."""

CAUSES: tuple[str, ...] = (
    "not_running",
    "outside_session",
    "storage_outage",
    "breaker_open",
    "stream_down",
    "symbol_silent",
    "source_errors",
    "rejects",
    "unknown",
)
"""Gap causes, in the order ``gaps`` tries them (the first with evidence wins)."""


# --------------------------------------------------------------------------- loaders


def _where(
    filters: Sequence[tuple[str, str, Any]], since: Any = None, until: Any = None
) -> tuple[str, tuple[Any, ...]]:
    parts: list[str] = []
    params: list[Any] = []
    for column, op, value in filters:
        if value is None:
            continue
        parts.append(f"{column} {op} ?")
        params.append(value)
    if since is not None:
        parts.append("ts_us >= ?")
        params.append(to_epoch_us(since))
    if until is not None:
        parts.append("ts_us < ?")
        params.append(to_epoch_us(until))
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(params)


def _prices(df: pl.DataFrame) -> pl.DataFrame:
    mid = (pl.col("bid") + pl.col("ask")) / 2.0
    return df.with_columns(
        mid.alias("mid"),
        (pl.col("ask") - pl.col("bid")).alias("spread"),
        pl.coalesce(pl.col("last"), mid).alias("price"),
    )


def load_ticks(
    db: Pathish,
    symbol: str | None = None,
    *,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Stored ticks, oldest first per symbol, with ``ts``/``recv_ts`` datetimes and
    ``mid``, ``spread`` and ``price`` (last, else mid) columns."""
    if until is None and run_id is None:
        return _prices(read_ticks(db, symbol=symbol, since=since))
    where, params = _where([("symbol", "=", symbol), ("run_id", "=", run_id)], since, until)
    sql = f"SELECT {', '.join(TICK_SCHEMA)} FROM ticks{where} ORDER BY symbol, ts_us, seq"
    df = query_frame(db, sql, params, TICK_SCHEMA)
    return _prices(with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts"}))


REJECT_SCHEMA: dict[str, Any] = {
    **TICK_SCHEMA,
    "rule": pl.String,
    "reason": pl.String,
    "rejected_us": pl.Int64,
}


def load_rejects(
    db: Pathish,
    symbol: str | None = None,
    *,
    rule: str | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Rejected quotes with the rule and reason that rejected them, oldest first."""
    where, params = _where(
        [("symbol", "=", symbol), ("rule", "=", rule), ("run_id", "=", run_id)], since, until
    )
    sql = f"SELECT {', '.join(REJECT_SCHEMA)} FROM rejects{where} ORDER BY ts_us, symbol"
    df = query_frame(db, sql, params, REJECT_SCHEMA)
    df = with_datetimes(df, {"ts_us": "ts", "recv_us": "recv_ts", "rejected_us": "rejected_ts"})
    return _prices(df)


ERROR_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "ts_us": pl.Int64,
    "component": pl.String,
    "symbol": pl.String,
    "error_type": pl.String,
    "message": pl.String,
}


def load_errors(
    db: Pathish,
    *,
    component: str | None = None,
    symbol: str | None = None,
    since: Any = None,
    until: Any = None,
    run_id: str | None = None,
) -> pl.DataFrame:
    """Error rows (each failed source attempt, each storage error), oldest first."""
    where, params = _where(
        [("component", "=", component), ("symbol", "=", symbol), ("run_id", "=", run_id)],
        since,
        until,
    )
    sql = f"SELECT {', '.join(ERROR_SCHEMA)} FROM errors{where} ORDER BY ts_us, id"
    return with_datetimes(query_frame(db, sql, params, ERROR_SCHEMA), {"ts_us": "ts"})


_LEVELS = {lvl.name: int(lvl) for lvl in HealthLevel}


def load_health(
    db: Pathish, *, component: str | None = None, run_id: str | None = None
) -> pl.DataFrame:
    """Health snapshots: one row per component per check (``system`` is the overall level),
    with ``level_value`` 0 (HEALTHY) .. 3 (CRITICAL) and ``reasons`` as a list."""
    where, params = _where([("component", "=", component), ("run_id", "=", run_id)])
    sql = (
        "SELECT id, run_id, ts_us, component, level, reasons, metrics "
        f"FROM health_snapshots{where} ORDER BY ts_us, id"
    )
    schema = {
        "id": pl.Int64,
        "run_id": pl.String,
        "ts_us": pl.Int64,
        "component": pl.String,
        "level": pl.String,
        "reasons": pl.String,
        "metrics": pl.String,
    }
    df = query_frame(db, sql, params, schema)
    df = df.with_columns(
        pl.col("level")
        .replace_strict(_LEVELS, default=None, return_dtype=pl.Int8)
        .alias("level_value"),
        pl.col("reasons").str.json_decode(pl.List(pl.String)),
        pl.col("metrics").str.json_path_match("$.kind").alias("kind"),
    )
    return with_datetimes(df, {"ts_us": "ts"})


BREAKER_EVENT_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "ts_us": pl.Int64,
    "symbol": pl.String,
    "old_state": pl.String,
    "new_state": pl.String,
    "reason": pl.String,
}


def load_breaker_events(
    db: Pathish,
    symbol: str | None = None,
    *,
    run_id: str | None = None,
    since: Any = None,
    until: Any = None,
) -> pl.DataFrame:
    """Breaker transitions (``symbol`` is the breaker's name), oldest first."""
    where, params = _where([("breaker", "=", symbol), ("run_id", "=", run_id)], since, until)
    sql = (
        "SELECT id, run_id, ts_us, breaker AS symbol, old_state, new_state, reason "
        f"FROM breaker_events{where} ORDER BY ts_us, id"
    )
    return with_datetimes(query_frame(db, sql, params, BREAKER_EVENT_SCHEMA), {"ts_us": "ts"})


RUN_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "started_us": pl.Int64,
    "stopped_us": pl.Int64,
    "status": pl.String,
    "pid": pl.Int64,
    "host": pl.String,
    "symbols": pl.String,
    "config": pl.String,
    "summary": pl.String,
}


def storage_settings(db: Pathish) -> dict[str, Any]:
    """The ``storage`` config overrides that write to ``db``: a SQLite path or a
    ``postgresql://`` URL (so a notebook's ``RC_DB`` may be either)."""
    if is_postgres_url(db):
        return {"backend": "postgresql", "url": str(db)}
    return {"backend": "sqlite", "database": str(db)}


@contextlib.contextmanager
def database_locked(db: Pathish) -> Iterator[None]:
    """Make ``db`` refuse writes from other connections until the block ends (readers
    still read): a database outage on demand, for demonstrations and drills."""
    if is_postgres_url(db):
        from robust_collector.storage.postgres import connect_postgres

        conn = connect_postgres(str(db))
        try:
            with conn.transaction():
                conn.execute("LOCK TABLE ticks, rejects IN EXCLUSIVE MODE")
                yield
        finally:
            conn.close()
        return
    import sqlite3

    blocker = sqlite3.connect(str(db), timeout=0, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()


def load_runs(db: Pathish) -> pl.DataFrame:
    """One row per collector run (oldest first), with ``symbols`` as a list and the
    run's ``config`` and ``summary`` as JSON text."""
    sql = f"SELECT {', '.join(RUN_SCHEMA)} FROM runs ORDER BY started_us"
    df = query_frame(db, sql, (), RUN_SCHEMA)
    df = df.with_columns(pl.col("symbols").str.json_decode(pl.List(pl.String)))
    return with_datetimes(df, {"started_us": "started", "stopped_us": "stopped"})


INTERVAL_SCHEMA: dict[str, Any] = {
    "run_id": pl.String,
    "symbol": pl.String,
    "state": pl.String,
    "start_us": pl.Int64,
    "end_us": pl.Int64,
    "reason": pl.String,
}


def breaker_intervals(
    events: pl.DataFrame,
    runs: pl.DataFrame | None = None,
    *,
    until: Any = None,
) -> pl.DataFrame:
    """Turn breaker events into state intervals: run_id, symbol, state, start, end,
    duration_s, reason.

    Each run's breakers start CLOSED at the run's start (when ``runs`` is given) and
    the last state lasts until the run stopped, or ``until`` (default: now).
    """
    end_default = to_epoch_us(until) if until is not None else now_us()
    starts: dict[str, int] = {}
    stops: dict[str, int | None] = {}
    symbols_of: dict[str, list[str]] = {}
    if runs is not None:
        for r in runs.iter_rows(named=True):
            starts[r["run_id"]] = r["started_us"]
            stops[r["run_id"]] = r["stopped_us"]
            symbols_of[r["run_id"]] = list(r["symbols"] or [])
    rows: list[tuple[Any, ...]] = []
    seen: set[tuple[str, str]] = set()
    ordered = events.sort("ts_us", "id") if "id" in events.columns else events.sort("ts_us")
    for (run_id, symbol), group in ordered.group_by(["run_id", "symbol"], maintain_order=True):
        seen.add((str(run_id), str(symbol)))
        end_run = stops.get(str(run_id)) or end_default
        first = group.row(0, named=True)
        t0 = starts.get(str(run_id))
        if t0 is not None and t0 < first["ts_us"]:
            rows.append((run_id, symbol, first["old_state"], t0, first["ts_us"], ""))
        evs = group.select("ts_us", "new_state", "reason").rows()
        for i, (ts, state, reason) in enumerate(evs):
            end = evs[i + 1][0] if i + 1 < len(evs) else max(ts, end_run)
            rows.append((run_id, symbol, state, ts, end, reason))
    for run_id, syms in symbols_of.items():  # quiet breakers: CLOSED all along
        for symbol in syms:
            if (run_id, symbol) not in seen:
                t0 = starts[run_id]
                rows.append((run_id, symbol, "CLOSED", t0, stops.get(run_id) or end_default, ""))
    df = pl.DataFrame(rows, schema=INTERVAL_SCHEMA, orient="row")
    df = df.with_columns(((pl.col("end_us") - pl.col("start_us")) / 1e6).alias("duration_s"))
    return with_datetimes(df.sort("symbol", "start_us"), {"start_us": "start", "end_us": "end"})


# --------------------------------------------------------------------------- summaries


def rejects_by(rejects: pl.DataFrame, *by: str) -> pl.DataFrame:
    """Reject counts grouped by columns (default ``rule``), largest first, with their share."""
    keys = list(by) or ["rule"]
    total = max(rejects.height, 1)
    return (
        rejects.group_by(keys)
        .agg(pl.len().alias("count"))
        .with_columns((pl.col("count") / total).alias("share"))
        .sort(["count", *keys], descending=[True, *([False] * len(keys))])
    )


def tick_rates(
    frame: pl.DataFrame, every: str = "1s", *, by: str | None = "symbol"
) -> pl.DataFrame:
    """Rows per time bucket (``every``, a polars duration like ``"1s"`` or ``"1m"``) of a
    frame with a ``ts`` column, per ``by`` group, with ``per_second``."""
    seconds = timedelta(**_duration_kwargs(every)).total_seconds()
    keys = [by] if by else []
    out = (
        frame.sort("ts")
        .group_by_dynamic("ts", every=every, group_by=keys or None)
        .agg(pl.len().alias("count"))
    )
    return out.with_columns((pl.col("count") / seconds).alias("per_second")).sort([*keys, "ts"])


def _duration_kwargs(every: str) -> dict[str, int]:
    units = {
        "us": "microseconds",
        "ms": "milliseconds",
        "s": "seconds",
        "m": "minutes",
        "h": "hours",
        "d": "days",
    }
    for suffix in ("us", "ms", "s", "m", "h", "d"):
        if every.endswith(suffix) and every[: -len(suffix)].isdigit():
            return {units[suffix]: int(every[: -len(suffix)])}
    raise ValueError(f"every: expected e.g. '500ms', '1s', '5m', got {every!r}")


# --------------------------------------------------------------------------- backup files

_SCAN_FILE_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "folder": pl.String,
    "bytes": pl.Int64,
    "lines": pl.Int64,
    "ticks": pl.Int64,
    "rejects": pl.Int64,
    "symbols": pl.List(pl.String),
    "first_us": pl.Int64,
    "last_us": pl.Int64,
    "torn": pl.Int64,
    "corrupt": pl.Int64,
    "in_db": pl.Int64,
    "not_in_db": pl.Int64,
}
_SCAN_RECORD_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "kind": pl.String,
    "tick_id": pl.String,
    "symbol": pl.String,
    "seq": pl.Int64,
    "ts_us": pl.Int64,
    "run_id": pl.String,
    "in_db": pl.Boolean,
}
_SCAN_PROBLEM_SCHEMA: dict[str, Any] = {
    "file": pl.String,
    "line": pl.Int64,
    "kind": pl.String,
    "detail": pl.String,
}


@dataclass(frozen=True)
class BackupScan:
    """What ``scan_backups`` found: one row per file, per record and per bad line.

    ``files``: file, folder (``waiting`` or ``recovered``), bytes, lines, ticks,
    rejects, symbols, first/last (record times), torn, corrupt, in_db, not_in_db.
    ``records``: file, kind (tick/reject), tick_id, symbol, seq, ts, run_id, in_db
    (null without a database). ``problems``: file, line, kind (torn/corrupt), detail.
    """

    path: Path
    files: pl.DataFrame
    records: pl.DataFrame
    problems: pl.DataFrame

    @property
    def missing(self) -> pl.DataFrame:
        """Records not (yet) in the database: what a recovery would insert."""
        return self.records.filter(~pl.col("in_db"))

    @property
    def totals(self) -> dict[str, int]:
        """Files, lines, ticks, rejects, torn, corrupt, in_db and not_in_db, summed."""
        f = self.files
        out = {"files": f.height}
        for col in ("lines", "ticks", "rejects", "torn", "corrupt", "in_db", "not_in_db"):
            out[col] = int(f[col].sum()) if f.height else 0
        return out

    def pending(self) -> pl.DataFrame:
        """Per symbol and kind: records not in the database, with their time range."""
        return (
            self.missing.group_by("symbol", "kind")
            .agg(
                pl.len().alias("records"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
            )
            .sort("symbol", "kind")
        )


def _present(conn: Any, table: str, ids: list[str]) -> set[str]:
    if conn is None or not ids:
        return set()
    found: set[str] = set()
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        cur = conn.execute(f"SELECT tick_id FROM {table} WHERE tick_id IN ({marks})", chunk)
        found.update(r[0] for r in cur)
    return found


def scan_backups(
    path: Pathish, db: Pathish | None = None, *, include_recovered: bool = False
) -> BackupScan:
    """Read every JSONL backup file in ``path`` (and ``recovered/`` if asked): files,
    lines, symbols, time ranges, torn or corrupt lines, and for each record whether
    its tick id is already in the database ``db`` (when given)."""
    folder = Path(path)
    files = [("waiting", p) for p in list_backup_files(folder)]
    if include_recovered:
        files += [("recovered", p) for p in list_backup_files(folder / RECOVERED_DIR)]
    conn = None
    if db is not None and (is_postgres_url(db) or Path(db).exists()):
        conn = open_reader(db)
    file_rows: list[dict[str, Any]] = []
    records: list[tuple[Any, ...]] = []
    problems: list[tuple[Any, ...]] = []
    try:
        for where, p in files:
            try:
                contents = read_backup_file(p)
                size = p.stat().st_size
            except FileNotFoundError:  # recovered meanwhile
                continue
            tick_ids = [r[0] for r in contents.ticks]
            reject_ids = [r[0] for r in contents.rejects]
            have_t = _present(conn, "ticks", tick_ids)
            have_r = _present(conn, "rejects", reject_ids)
            known = conn is not None
            times: list[int] = []
            syms: set[str] = set()
            n_in = 0
            for kind, rows, have in (
                ("tick", contents.ticks, have_t),
                ("reject", contents.rejects, have_r),
            ):
                for r in rows:
                    inside = r[0] in have
                    n_in += inside
                    times.append(r[3])
                    syms.add(r[1])
                    records.append(
                        (p.name, kind, r[0], r[1], r[2], r[3], r[11], inside if known else None)
                    )
            problems.extend((p.name, pr.line, pr.kind, pr.detail) for pr in contents.problems)
            n = len(contents.ticks) + len(contents.rejects)
            file_rows.append(
                {
                    "file": p.name,
                    "folder": where,
                    "bytes": size,
                    "lines": contents.lines,
                    "ticks": len(contents.ticks),
                    "rejects": len(contents.rejects),
                    "symbols": sorted(syms),
                    "first_us": min(times) if times else None,
                    "last_us": max(times) if times else None,
                    "torn": contents.torn,
                    "corrupt": contents.corrupt,
                    "in_db": n_in if known else None,
                    "not_in_db": n - n_in if known else None,
                }
            )
    finally:
        if conn is not None:
            conn.close()
    files_df = with_datetimes(
        pl.DataFrame(file_rows, schema=_SCAN_FILE_SCHEMA), {"first_us": "first", "last_us": "last"}
    )
    rec_df = with_datetimes(
        pl.DataFrame(records, schema=_SCAN_RECORD_SCHEMA, orient="row"), {"ts_us": "ts"}
    )
    prob_df = pl.DataFrame(problems, schema=_SCAN_PROBLEM_SCHEMA, orient="row")
    return BackupScan(folder, files_df, rec_df, prob_df)


# --------------------------------------------------------------------------- gaps

GAP_SCHEMA: dict[str, Any] = {
    "symbol": pl.String,
    "run_id": pl.String,
    "start_us": pl.Int64,
    "end_us": pl.Int64,
    "duration_s": pl.Float64,
    "missing": pl.Int64,
    "cause": pl.String,
    "causes": pl.List(pl.String),
    "detail": pl.String,
    "not_running_s": pl.Float64,
    "closed_s": pl.Float64,
    "breaker_open_s": pl.Float64,
    "source_errors": pl.Int64,
    "storage_errors": pl.Int64,
    "rejects": pl.Int64,
    "backup_ticks": pl.Int64,
    "stream_down_s": pl.Float64,
    "silent_s": pl.Float64,
}


def _overlap(a0: int, a1: int, intervals: Iterable[tuple[int, int]]) -> int:
    total = 0
    for b0, b1 in intervals:
        lo, hi = max(a0, b0), min(a1, b1)
        if hi > lo:
            total += hi - lo
    return total


def _count_between(sorted_ts: list[int], lo: int, hi: int) -> tuple[int, int, int]:
    """How many of ``sorted_ts`` fall strictly inside (lo, hi), and their index range."""
    i = bisect.bisect_right(sorted_ts, lo)
    j = bisect.bisect_left(sorted_ts, hi)
    return max(0, j - i), i, j


def _run_config(db: Pathish) -> dict[str, Any]:
    try:
        runs = load_runs(db)
    except (FileNotFoundError, RuntimeError):
        return {}
    if runs.height == 0:
        return {}
    try:
        return dict(orjson.loads(runs["config"][-1]))
    except (orjson.JSONDecodeError, TypeError):
        return {}


def _session_from(config: dict[str, Any]) -> MarketSession:
    raw = config.get("realtime_data", {}).get("health_check", {}).get("session", {})
    fields = {k: v for k, v in raw.items() if k in SessionConfig.__dataclass_fields__}
    for k in ("weekdays", "holidays"):
        if k in fields:
            fields[k] = tuple(fields[k])
    try:
        return MarketSession(SessionConfig(**fields))
    except (TypeError, ValueError):
        return MarketSession()


def _stream_gaps(db: Pathish) -> dict[tuple[str, str], list[tuple[int, int, str]]]:
    """A stream's recorded outages and silences by (symbol, cause); none in older databases."""
    try:
        rows = query_frame(
            db,
            "SELECT symbol, start_us, end_us, cause, detail FROM gaps ORDER BY start_us",
            (),
            {"symbol": pl.String, "start_us": pl.Int64, "end_us": pl.Int64},
        )
    except RuntimeError:  # no gaps table: the database predates streaming sources
        return {}
    out: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for sym, a, b, cause, detail in rows.iter_rows():
        out.setdefault((sym, cause), []).append((a, b, detail))
    return out


def _fmt_clock(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%H:%M:%S")


def gaps(
    db: Pathish,
    expected_interval: float | None = None,
    *,
    factor: float = 3.0,
    min_gap_seconds: float | None = None,
    symbol: str | None = None,
    since: Any = None,
    until: Any = None,
    session: MarketSession | SessionConfig | None = None,
    backup_path: Pathish | None = None,
    at: Any = None,
) -> pl.DataFrame:
    """The holes in each symbol's stored series, each with its likely cause.

    A hole is two consecutive stored ticks of a symbol (by exchange time) further
    apart than ``factor × expected_interval`` (default: the newest run's
    ``collect_interval_seconds``) or ``min_gap_seconds``. Each hole is overlapped
    with the collector's runs, the market session, storage errors and ticks still
    waiting in backup files (``backup_path``, default: the run's backup folder),
    the database's breaker, the symbol's breaker OPEN/HALF_OPEN intervals, a
    stream's recorded outages and silences (the ``gaps`` table), its source errors
    and rejects;
    ``cause`` is the first of ``CAUSES`` with evidence, ``causes`` all of them and
    ``detail`` says what was found. One row per hole, oldest first; with ``at`` (a
    time), only the holes around it: "why is there a hole in my SPY data at 9:47?"
    """
    config = _run_config(db)
    rt = config.get("realtime_data", {})
    if expected_interval is None:
        expected_interval = float(rt.get("collect_interval_seconds", 1.0))
    if expected_interval <= 0:
        raise ValueError(f"expected_interval must be > 0, got {expected_interval}")
    threshold_s = min_gap_seconds if min_gap_seconds is not None else factor * expected_interval
    threshold = int(threshold_s * 1e6)
    if isinstance(session, SessionConfig):
        session = MarketSession(session)
    elif session is None:
        session = _session_from(config)
    if backup_path is None:
        bp = rt.get("backup", {}).get("backup_path")
        backup_path = Path(bp) if bp else None

    where, params = _where([("symbol", "=", symbol)], since, until)
    ticks = query_frame(
        db,
        f"SELECT symbol, ts_us, run_id FROM ticks{where} ORDER BY symbol, ts_us",
        params,
        {"symbol": pl.String, "ts_us": pl.Int64, "run_id": pl.String},
    )
    holes = (
        ticks.with_columns(
            pl.col("ts_us").shift(1).over("symbol").alias("prev_us"),
            pl.col("run_id").shift(1).over("symbol").alias("prev_run"),
        )
        .filter((pl.col("ts_us") - pl.col("prev_us")) > threshold)
        .select("symbol", "prev_us", "ts_us", "prev_run", "run_id")
    )
    if at is not None:
        t = to_epoch_us(at)
        holes = holes.filter((pl.col("prev_us") <= t) & (pl.col("ts_us") >= t))
    if holes.height == 0:
        return with_datetimes(
            pl.DataFrame(schema=GAP_SCHEMA), {"start_us": "start", "end_us": "end"}
        )

    runs = load_runs(db)
    now = now_us()
    run_spans = [
        (r["started_us"], r["stopped_us"] if r["stopped_us"] is not None else now)
        for r in runs.iter_rows(named=True)
    ]
    events = load_breaker_events(db)
    bad = breaker_intervals(events, runs).filter(pl.col("state").is_in(["OPEN", "HALF_OPEN"]))
    open_by_sym: dict[str, list[tuple[int, int, str]]] = {}
    for s, a, b, why in bad.select("symbol", "start_us", "end_us", "reason").iter_rows():
        open_by_sym.setdefault(s, []).append((a, b, why))
    errors = load_errors(db)
    storage_mask = pl.col("component").is_in(["storage", "backup"])
    storage_err = errors.filter(storage_mask)
    storage_ts = storage_err["ts_us"].to_list()
    storage_msg = (storage_err["error_type"] + ": " + storage_err["message"]).to_list()
    src_by_sym: dict[str, tuple[list[int], list[str]]] = {}
    for (s,), g in errors.filter(~storage_mask & pl.col("symbol").is_not_null()).group_by(
        ["symbol"], maintain_order=True
    ):
        src_by_sym[str(s)] = (
            g["ts_us"].to_list(),
            (g["error_type"] + ": " + g["message"]).to_list(),
        )
    rejects = query_frame(
        db,
        "SELECT symbol, ts_us, rule FROM rejects ORDER BY symbol, ts_us",
        (),
        {"symbol": pl.String, "ts_us": pl.Int64, "rule": pl.String},
    )
    rej_by_sym: dict[str, tuple[list[int], list[str]]] = {
        str(s): (g["ts_us"].to_list(), g["rule"].to_list())
        for (s,), g in rejects.group_by(["symbol"], maintain_order=True)
    }
    stream_by_sym = _stream_gaps(db)
    backup_by_sym: dict[str, list[int]] = {}
    if backup_path is not None and Path(backup_path).is_dir():
        scan = scan_backups(backup_path, db)
        for (s,), g in scan.missing.filter(pl.col("kind") == "tick").group_by(["symbol"]):
            backup_by_sym[str(s)] = sorted(g["ts_us"].to_list())

    rows: list[dict[str, Any]] = []
    for sym, a, b, prev_run, run_id in holes.iter_rows():
        span = b - a
        covered = _overlap(a, b, run_spans)
        not_running = (span - covered) / 1e6
        closed = (span / 1e6) - session.open_seconds_between(a / 1e6, b / 1e6)
        opens = [(x, y, why) for x, y, why in open_by_sym.get(sym, []) if min(b, y) > max(a, x)]
        open_s = _overlap(a, b, [(x, y) for x, y, _ in opens]) / 1e6
        src_ts, src_msg = src_by_sym.get(sym, ([], []))
        n_src, i, _ = _count_between(src_ts, a, b)
        n_sto, k, _ = _count_between(storage_ts, a, b)
        rej_ts, rej_rule = rej_by_sym.get(sym, ([], []))
        n_rej, r0, r1 = _count_between(rej_ts, a, b)
        n_bak, _, _ = _count_between(backup_by_sym.get(sym, []), a, b)

        evidence: dict[str, str] = {}
        if not_running >= 0.5 * span / 1e6:
            evidence["not_running"] = f"collector not running for {not_running:.1f}s of it" + (
                f" (between runs {prev_run} and {run_id})" if prev_run != run_id else ""
            )
        if closed >= 0.5 * span / 1e6:
            evidence["outside_session"] = f"market closed for {closed:.0f}s of it"
        db_open_s = (
            _overlap(a, b, [(x, y) for x, y, _ in open_by_sym.get(STORAGE_BREAKER, [])]) / 1e6
        )
        if n_bak or n_sto or db_open_s:
            parts = []
            if n_bak:
                parts.append(f"{n_bak} ticks waiting in backup files (run a recovery)")
            if n_sto:
                parts.append(f"{n_sto} storage errors ({storage_msg[k]})")
            if db_open_s:
                parts.append(f"database breaker open {db_open_s:.1f}s")
            evidence["storage_outage"] = "; ".join(parts)
        if open_s > 0:
            x, _, why = opens[0]
            evidence["breaker_open"] = (
                f"breaker open {open_s:.1f}s from {_fmt_clock(max(a, x))}"
                + (f" ({why})" if why else "")
            )
        stream_s: dict[str, float] = {}
        for cause in ("stream_down", "symbol_silent"):
            spans = [
                (x, y, why)
                for x, y, why in stream_by_sym.get((sym, cause), [])
                if min(b, y) > max(a, x)
            ]
            stream_s[cause] = _overlap(a, b, [(x, y) for x, y, _ in spans]) / 1e6
            if stream_s[cause] > 0:
                what = "stream down" if cause == "stream_down" else "symbol silent"
                evidence[cause] = f"{what} {stream_s[cause]:.1f}s of it ({spans[0][2]})"
        if n_src:
            evidence["source_errors"] = f"{n_src} source errors ({src_msg[i]})"
        if n_rej:
            rules = sorted(set(rej_rule[r0:r1]))
            evidence["rejects"] = f"{n_rej} rejected quotes ({', '.join(rules)})"
        causes = [c for c in CAUSES if c in evidence] or ["unknown"]
        rows.append(
            {
                "symbol": sym,
                "run_id": run_id,
                "start_us": a,
                "end_us": b,
                "duration_s": span / 1e6,
                "missing": max(0, round(span / 1e6 / expected_interval) - 1),
                "cause": causes[0],
                "causes": causes,
                "detail": "; ".join(evidence.values())
                or "no breaker, error, reject or outage found",
                "not_running_s": not_running,
                "closed_s": max(0.0, closed),
                "breaker_open_s": open_s,
                "source_errors": n_src,
                "storage_errors": n_sto,
                "rejects": n_rej,
                "backup_ticks": n_bak,
                "stream_down_s": stream_s["stream_down"],
                "silent_s": stream_s["symbol_silent"],
            }
        )
    df = pl.DataFrame(rows, schema=GAP_SCHEMA).sort("start_us", "symbol")
    return with_datetimes(df, {"start_us": "start", "end_us": "end"})


# --------------------------------------------------------------------------- figures


def _utc_naive(series: pl.Series) -> list[Any]:
    # plotly.js has no time zones: hand it naive UTC datetimes, and say "UTC" on the axis
    if isinstance(series.dtype, pl.Datetime) and series.dtype.time_zone is not None:
        series = series.dt.replace_time_zone(None)
    return series.to_list()


def plot_prices(
    ticks: pl.DataFrame, rejects: pl.DataFrame | None = None, *, title: str = "Stored prices"
) -> go.Figure:
    """Accepted prices per symbol (one panel each) with rejected quotes overlaid as red
    crosses, clipped into the panel so a 100× spike does not flatten the line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    symbols = sorted(
        set(ticks["symbol"].to_list())
        | (set(rejects["symbol"].to_list()) if rejects is not None else set())
    )
    n = max(1, len(symbols))
    fig = make_subplots(
        rows=n, cols=1, shared_xaxes=True, subplot_titles=symbols, vertical_spacing=0.06
    )
    for i, sym in enumerate(symbols, start=1):
        t = ticks.filter(pl.col("symbol") == sym)
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(t["ts"]),
                y=t["price"].to_list(),
                mode="lines",
                name="accepted price",
                line={"width": 1.2, "color": "#1565c0"},
                legendgroup="price",
                showlegend=i == 1,
            ),
            row=i,
            col=1,
        )
        if rejects is None:
            continue
        r = rejects.filter(pl.col("symbol") == sym)
        if r.height == 0:
            continue
        lo = t["price"].min() if t.height else None
        hi = t["price"].max() if t.height else None
        price = r["price"].fill_nan(None)
        if lo is not None and hi is not None:
            pad = max((hi - lo) * 0.15, abs(hi) * 0.001)
            y = price.clip(lo - pad, hi + pad).fill_null(hi + pad)
        else:
            y = price
        text = [
            f"{rule}: {reason}<br>bid {b} ask {a}"
            for rule, reason, b, a in r.select("rule", "reason", "bid", "ask").rows()
        ]
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(r["ts"]),
                y=y.to_list(),
                mode="markers",
                name="rejected",
                marker={"symbol": "x", "color": BREAKER_COLORS["OPEN"], "size": 8},
                text=text,
                hovertemplate="%{x}<br>%{text}<extra></extra>",
                legendgroup="rejected",
                showlegend=i == 1,
            ),
            row=i,
            col=1,
        )
    fig.update_layout(title=title, height=220 * n + 80, margin={"l": 60, "r": 20, "t": 60, "b": 40})
    fig.update_xaxes(title_text="time (UTC)", row=n, col=1)
    return fig


def plot_rejects(
    rejects: pl.DataFrame, every: str = "10s", *, title: str = "Rejects over time"
) -> go.Figure:
    """Rejects per time bucket, stacked by rule."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if rejects.height:
        counts = (
            rejects.sort("ts")
            .group_by_dynamic("ts", every=every, group_by="rule")
            .agg(pl.len().alias("count"))
            .sort("rule", "ts")
        )
        for (rule,), g in counts.group_by(["rule"], maintain_order=True):
            fig.add_trace(go.Bar(x=_utc_naive(g["ts"]), y=g["count"].to_list(), name=str(rule)))
    fig.update_layout(
        barmode="stack",
        title=title,
        xaxis_title="time (UTC)",
        yaxis_title=f"rejects per {every}",
        height=320,
    )
    return fig


def plot_breaker_timeline(intervals: pl.DataFrame, *, title: str = "Circuit breakers") -> go.Figure:
    """One row per symbol, coloured by breaker state over time (from ``breaker_intervals``)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for state in ("CLOSED", "HALF_OPEN", "OPEN"):
        part = intervals.filter(pl.col("state") == state)
        fig.add_trace(
            go.Bar(
                y=part["symbol"].to_list(),
                base=_utc_naive(part["start"]),
                x=((part["end_us"] - part["start_us"]) / 1000).to_list(),
                orientation="h",
                name=state,
                marker={"color": BREAKER_COLORS[state]},
                text=part["reason"].to_list(),
                textposition="none",
                hovertemplate="%{y} "
                + state
                + "<br>%{base} for %{x:.0f} ms<br>%{text}<extra></extra>",
            )
        )
    symbols = sorted(set(intervals["symbol"].to_list()))
    fig.update_layout(
        barmode="overlay",
        title=title,
        height=120 + 40 * max(1, len(symbols)),
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"categoryorder": "array", "categoryarray": symbols[::-1]},
    )
    return fig


def plot_health(history: pl.DataFrame, *, title: str = "Health over time") -> go.Figure:
    """Each component's level over time as a step line (0 HEALTHY .. 3 CRITICAL)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for (comp,), g in history.sort("ts_us").group_by(["component"], maintain_order=True):
        fig.add_trace(
            go.Scatter(
                x=_utc_naive(g["ts"]),
                y=g["level_value"].to_list(),
                name=str(comp),
                mode="lines",
                line={"shape": "hv", "width": 3 if comp == "system" else 1.5},
            )
        )
    names = [lvl.name for lvl in HealthLevel]
    fig.update_layout(
        title=title,
        height=320,
        xaxis_title="time (UTC)",
        yaxis={
            "tickvals": list(range(len(names))),
            "ticktext": names,
            "range": [-0.3, len(names) - 0.7],
        },
    )
    return fig


GAP_COLORS: dict[str, str] = {
    "not_running": "#757575",
    "outside_session": "#9e9e9e",
    "storage_outage": "#6a1b9a",
    "breaker_open": BREAKER_COLORS["OPEN"],
    "stream_down": "#c62828",
    "symbol_silent": "#ff8f00",
    "source_errors": "#e65100",
    "rejects": "#f9a825",
    "unknown": "#000000",
}


def plot_gaps(gap_frame: pl.DataFrame, *, title: str = "Gaps by cause") -> go.Figure:
    """The holes of ``gaps()`` on a timeline, one row per symbol, coloured by cause."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for cause in CAUSES:
        part = gap_frame.filter(pl.col("cause") == cause)
        if part.height == 0:
            continue
        fig.add_trace(
            go.Bar(
                y=part["symbol"].to_list(),
                base=_utc_naive(part["start"]),
                x=((part["end_us"] - part["start_us"]) / 1000).to_list(),
                orientation="h",
                name=cause,
                marker={"color": GAP_COLORS[cause]},
                text=part["detail"].to_list(),
                textposition="none",
                hovertemplate="%{y}: %{base} for %{x:.0f} ms<br>%{text}<extra></extra>",
            )
        )
    n = gap_frame["symbol"].n_unique() if gap_frame.height else 1
    fig.update_layout(
        barmode="overlay",
        title=title,
        height=120 + 40 * n,
        xaxis={"type": "date", "title": "time (UTC)"},
    )
    return fig

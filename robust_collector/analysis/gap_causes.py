"""Gaps: the holes in each symbol's stored series, each with its likely cause (the
collector not running, the market closed, a storage outage, an open breaker, ...)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from robust_collector.analysis.backups import scan_backups
from robust_collector.analysis.breakers import STORAGE_BREAKER, breaker_intervals
from robust_collector.analysis.loaders import (
    load_breaker_events,
    load_errors,
    load_runs,
    sql_where,
)
from robust_collector.analysis.paths import Pathish
from robust_collector.config import SessionConfig
from robust_collector.health import MarketSession
from robust_collector.model import now_us
from robust_collector.runtime.streaming import TRADE_SILENCE  # how trade silences are written
from robust_collector.storage.reader import query_frame, to_epoch_us, with_datetimes
from robust_collector.validation.trade_rules import NOTICE_CORRECTIONS

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


KINDS: tuple[str, ...] = ("quotes", "trades")
"""The series ``gaps`` looks at: the ``ticks`` table (quotes) or the ``trades`` table."""


_SERIES: dict[str, tuple[str, str, str, str]] = {
    # kind: (table, rejects table, backup record kind, what one row is)
    "quotes": ("ticks", "rejects", "tick", "quote"),
    "trades": ("trades", "trade_rejects", "trade", "trade"),
}


def _of_kind(detail: str | None, kind: str) -> bool:
    """Whether a ``symbol_silent`` row (by its detail) is about ``kind``."""
    about_trades = (detail or "").startswith(TRADE_SILENCE)
    return about_trades if kind == "trades" else not about_trades


def _stream_gaps(
    db: Pathish, kind: str = "quotes"
) -> dict[tuple[str, str], list[tuple[int, int, str]]]:
    """A stream's recorded outages, and silences of ``kind``, by (symbol, cause); none in
    older databases."""
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
        if cause == "symbol_silent" and not _of_kind(detail, kind):
            continue
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
    kind: str = "quotes",
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
    ``kind="trades"`` does the same for the stored trades (corrections and cancels are
    not prints: left out): their holes, the trades rejected or waiting in backup files,
    and the stream's silences of trades (``backup_ticks`` and ``rejects`` then count
    trades).
    """
    if kind not in _SERIES:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    table, reject_table, backup_kind, noun = _SERIES[kind]
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

    where, params = sql_where([("symbol", "=", symbol)], since, until)
    if kind == "trades":  # corrections and cancels are notices about a trade, not prints
        notices = ", ".join(str(c) for c in sorted(NOTICE_CORRECTIONS))
        prints = f"(correction IS NULL OR correction NOT IN ({notices}))"
        where = f"{where} AND {prints}" if where else f" WHERE {prints}"
    ticks = query_frame(
        db,
        f"SELECT symbol, ts_us, run_id FROM {table}{where} ORDER BY symbol, ts_us",
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
        f"SELECT symbol, ts_us, rule FROM {reject_table} ORDER BY symbol, ts_us",
        (),
        {"symbol": pl.String, "ts_us": pl.Int64, "rule": pl.String},
    )
    rej_by_sym: dict[str, tuple[list[int], list[str]]] = {
        str(s): (g["ts_us"].to_list(), g["rule"].to_list())
        for (s,), g in rejects.group_by(["symbol"], maintain_order=True)
    }
    stream_by_sym = _stream_gaps(db, kind)
    backup_by_sym: dict[str, list[int]] = {}
    if backup_path is not None and Path(backup_path).is_dir():
        scan = scan_backups(backup_path, db)
        for (s,), g in scan.missing.filter(pl.col("kind") == backup_kind).group_by(["symbol"]):
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
                what = "ticks" if kind == "quotes" else "trades"
                parts.append(f"{n_bak} {what} waiting in backup files (run a recovery)")
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
            evidence["rejects"] = f"{n_rej} rejected {noun}s ({', '.join(rules)})"
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

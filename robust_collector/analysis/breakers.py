"""Breaker transitions turned into state intervals (CLOSED, OPEN, HALF_OPEN) per run and
breaker, for timelines and for attributing gaps."""

from __future__ import annotations

from typing import Any

import polars as pl

from robust_collector.model import now_us
from robust_collector.storage.reader import to_epoch_us, with_datetimes

STORAGE_BREAKER = "storage"
"""The name of the database's own breaker in ``breaker_events``."""
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

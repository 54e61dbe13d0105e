"""The polars schemas of the stored tables' rows as the loaders read them (ticks' is
``storage.reader.TICK_SCHEMA``); kept together so they change in one place."""

from __future__ import annotations

from typing import Any

import polars as pl

from robust_collector.storage.reader import TICK_SCHEMA

REJECT_SCHEMA: dict[str, Any] = {
    **TICK_SCHEMA,
    "rule": pl.String,
    "reason": pl.String,
    "rejected_us": pl.Int64,
}


ERROR_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "ts_us": pl.Int64,
    "component": pl.String,
    "symbol": pl.String,
    "error_type": pl.String,
    "message": pl.String,
}

HEALTH_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "ts_us": pl.Int64,
    "component": pl.String,
    "level": pl.String,
    "reasons": pl.String,
    "metrics": pl.String,
}

BREAKER_EVENT_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "run_id": pl.String,
    "ts_us": pl.Int64,
    "symbol": pl.String,
    "old_state": pl.String,
    "new_state": pl.String,
    "reason": pl.String,
}
"""``breaker_events`` rows, the ``breaker`` column read as ``symbol``."""

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

"""The polars schemas of the stored tables' rows as the loaders read them, all derived
from the one table definition (``storage/tables.py``)."""

from __future__ import annotations

from typing import Any

from robust_collector.storage.tables import BREAKER_EVENTS, ERRORS, HEALTH, REJECTS, RUNS, TICKS

TICK_SCHEMA: dict[str, Any] = TICKS.polars_schema

REJECT_SCHEMA: dict[str, Any] = REJECTS.polars_schema

ERROR_SCHEMA: dict[str, Any] = ERRORS.polars_schema

HEALTH_SCHEMA: dict[str, Any] = HEALTH.polars_schema

BREAKER_EVENT_SCHEMA: dict[str, Any] = {
    ("symbol" if name == "breaker" else name): dtype
    for name, dtype in BREAKER_EVENTS.polars_schema.items()
}
"""``breaker_events`` rows, the ``breaker`` column read as ``symbol``."""

RUN_SCHEMA: dict[str, Any] = RUNS.polars_subset(n for n in RUNS.names if n != "instance")
"""``runs`` rows as ``load_runs`` has always shown them (the instance is fleet.md's)."""

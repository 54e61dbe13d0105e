"""Notebook helpers: what a collector stored, rejected, failed on and wrote to backup.

Loaders take a database path or a ``postgresql://`` URL (any process's database;
each opens its own read-only connection) and return polars DataFrames with the epoch-µs columns
kept and tz-aware UTC datetimes added. ``scan_backups`` looks inside JSONL
backup files; ``gaps`` finds the holes in each symbol's series and says why
each one is there. The ``plot_*`` functions turn those frames into plotly
figures (plotly is imported only when a figure is made).

One module per idea: ``paths`` (where notebooks write), ``loaders`` and ``schemas``
(stored rows), ``database`` (which database, an outage on demand), ``breakers``
(state intervals), ``summaries`` (counts and rates), ``backups`` (backup-file scans),
``gap_causes`` (holes and why), ``plots`` (figures); the colours live in
``robust_collector.palette``, shared with the dashboard.
"""

from __future__ import annotations

from robust_collector.analysis.backups import BackupScan, scan_backups
from robust_collector.analysis.breakers import breaker_intervals
from robust_collector.analysis.database import database_locked, storage_settings
from robust_collector.analysis.gap_causes import CAUSES, gaps
from robust_collector.analysis.loaders import (
    load_breaker_events,
    load_errors,
    load_health,
    load_rejects,
    load_runs,
    load_ticks,
)
from robust_collector.analysis.paths import output_dir, project_root, under_test
from robust_collector.analysis.plots import (
    plot_breaker_timeline,
    plot_gaps,
    plot_health,
    plot_prices,
    plot_rejects,
)
from robust_collector.analysis.summaries import rejects_by, tick_rates
from robust_collector.analysis.trades import (
    aggregate_same_timestamp,
    apply_corrections,
    load_trade_rejects,
    load_trades,
    realized_variance,
    trade_bars,
    vwap,
)
from robust_collector.palette import BREAKER_COLORS, LEVEL_COLORS

__all__ = [
    "BREAKER_COLORS",
    "CAUSES",
    "LEVEL_COLORS",
    "BackupScan",
    "aggregate_same_timestamp",
    "apply_corrections",
    "breaker_intervals",
    "database_locked",
    "gaps",
    "load_breaker_events",
    "load_errors",
    "load_health",
    "load_rejects",
    "load_runs",
    "load_ticks",
    "load_trade_rejects",
    "load_trades",
    "output_dir",
    "plot_breaker_timeline",
    "plot_gaps",
    "plot_health",
    "plot_prices",
    "plot_rejects",
    "project_root",
    "realized_variance",
    "rejects_by",
    "scan_backups",
    "storage_settings",
    "tick_rates",
    "trade_bars",
    "under_test",
    "vwap",
]

"""Live dashboards for JupyterLab and Voila: ``live(collector)`` and ``watch(db_path)``.

Three layers, each usable alone:

- ``model``: a frozen ``DashboardView`` built from a live collector
  (``view_from_collector``) or a database (``view_from_database``,
  ``DatabaseFeed``), plus ``RateHistory`` and ``breaker_segments``;
- ``render``: the view as HTML strings and plain figure data;
- ``widgets``: the ``Dashboard`` widget and its daemon refresher thread
  (imported on first use, so the first two layers need no ipywidgets).

A live view reads a collector only through ``live_collector.LiveCollector`` (a
Protocol), so the dashboard imports storage, health and lower layers, never the
collector or the analysis helpers (the colours are ``robust_collector.palette``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from robust_collector.dashboard.model import (
    UNKNOWN,
    BreakerEvent,
    BreakerLog,
    DashboardView,
    DatabaseFeed,
    ErrorView,
    Feed,
    LiveFeed,
    RateHistory,
    RateSeries,
    Segment,
    StorageView,
    SymbolView,
    breaker_segments,
    view_from_collector,
    view_from_database,
)
from robust_collector.dashboard.render import (
    rates_data,
    render_errors,
    render_status,
    render_storage,
    render_symbols,
    timeline_data,
)

if TYPE_CHECKING:
    from robust_collector.dashboard.live_collector import LiveCollector
    from robust_collector.dashboard.widgets import Dashboard

__all__ = [
    "UNKNOWN",
    "BreakerEvent",
    "BreakerLog",
    "Dashboard",
    "DashboardView",
    "DatabaseFeed",
    "ErrorView",
    "Feed",
    "LiveFeed",
    "RateHistory",
    "RateSeries",
    "Segment",
    "StorageView",
    "SymbolView",
    "breaker_segments",
    "live",
    "rates_data",
    "render_errors",
    "render_status",
    "render_storage",
    "render_symbols",
    "timeline_data",
    "view_from_collector",
    "view_from_database",
    "watch",
]


def live(
    collector: LiveCollector,
    *,
    interval: float = 1.0,
    window_seconds: float = 300.0,
    max_errors: int = 20,
    rate_smoothing: float = 5.0,
    autostart: bool = True,
) -> Dashboard:
    """A dashboard of ``collector`` (in this process) that refreshes every ``interval``
    seconds until the collector stops or the widget is closed.

    ``window_seconds``: how far back the figures reach; ``max_errors``: rows in the
    errors table; ``rate_smoothing``: seconds the per-second rates are averaged over.
    """
    from robust_collector.dashboard.widgets import Dashboard

    feed = LiveFeed(collector, max_errors=max_errors, window_seconds=window_seconds)
    return Dashboard(
        feed,
        interval=interval,
        window_seconds=window_seconds,
        max_errors=max_errors,
        rate_smoothing=rate_smoothing,
        autostart=autostart,
    )


def watch(
    db_path: str | Path,
    *,
    run_id: str | None = None,
    interval: float = 1.0,
    window_seconds: float = 300.0,
    max_errors: int = 20,
    rate_smoothing: float = 5.0,
    autostart: bool = True,
) -> Dashboard:
    """The same dashboard, read-only, for the newest run (or ``run_id``) in a database a
    collector in another process writes (e.g. ``robust-collector run``).

    Given a ``postgresql://`` URL it is the fleet view instead: one row per collector
    instance writing into that server (level, last heartbeat, symbols, running or not).
    """
    from robust_collector.storage.backend import is_postgres_url

    if is_postgres_url(db_path):
        if run_id is not None:
            raise ValueError(
                "watch(url, run_id=...): one run's dashboard reads a SQLite file; "
                "watch(url) shows every instance writing into the PostgreSQL server"
            )
        from robust_collector.dashboard.fleet import FleetDashboard

        return FleetDashboard(db_path, interval=max(interval, 1.0), autostart=autostart)  # type: ignore[return-value]
    from robust_collector.dashboard.widgets import Dashboard

    feed = DatabaseFeed(
        db_path, run_id=run_id, max_errors=max_errors, window_seconds=window_seconds
    )
    return Dashboard(
        feed,
        interval=interval,
        window_seconds=window_seconds,
        max_errors=max_errors,
        rate_smoothing=rate_smoothing,
        autostart=autostart,
    )


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from robust_collector.dashboard.widgets import Dashboard

        return Dashboard
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

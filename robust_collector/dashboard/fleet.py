"""The fleet dashboard: every collector instance writing into one shared database.

``watch("postgresql://...")`` shows this: one row per instance with its level,
last heartbeat, symbols and whether it runs, refreshed by one daemon thread
(the same pattern as ``Dashboard``: widgets are written inside ``hold_sync()``).
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading

import ipywidgets as widgets

from robust_collector.health import HealthLevel
from robust_collector.health.fleet import (
    InstanceStatus,
    fleet_exit_code,
    fleet_status,
    heartbeat_age,
)
from robust_collector.model import now_us
from robust_collector.storage.reader import DatabaseRef

log = logging.getLogger(__name__)

_COLORS = {
    HealthLevel.HEALTHY: "#2e7d32",
    HealthLevel.DEGRADED: "#ef6c00",
    HealthLevel.UNHEALTHY: "#c62828",
    HealthLevel.CRITICAL: "#b71c1c",
}


def _e(value: object) -> str:
    """Any field as escaped HTML text: every value read from a database is outside text,
    whatever its declared type (a pid column may hold a string)."""
    return html.escape(str(value))


def render_fleet_html(instances: list[InstanceStatus], label: str, now: int) -> str:
    """The fleet table as HTML (escaped: instance names and reasons come from the database)."""
    if not instances:
        return f"<b>❔ no collector has written to {html.escape(label)} yet</b>"
    running = sum(i.running for i in instances)
    code = fleet_exit_code(instances)
    head_color = ["#2e7d32", "#ef6c00", "#c62828", "#616161"][code]
    rows = []
    for i in instances:
        if i.running and i.level is not None:
            level = f"{i.level.icon} {i.level.name}"
            color = _COLORS[i.level]
        else:
            level = "⏹ not running" if i.stopped_cleanly else "💀 not running"
            color = "#616161" if i.stopped_cleanly else "#c62828"
        syms = ", ".join(str(x) for x in i.symbols)
        reasons = "; ".join(str(x) for x in i.reasons) if i.running else ""
        rows.append(
            "<tr>"
            f"<td><b>{_e(i.instance)}</b><br><small>{_e(i.host or '-')}"
            f" pid {_e(i.pid or '-')}</small></td>"
            f"<td style='color:{_e(color)}'>{_e(level)}</td>"
            f"<td>{_e(heartbeat_age(i.last_heartbeat_us, now))}</td>"
            f"<td>{len(i.symbols)}: {_e(syms)}</td>"
            f"<td><small>{html.escape(reasons)}</small></td>"
            "</tr>"
        )
    return (
        f"<div style='color:{head_color};font-weight:bold'>Fleet at {html.escape(label)}: "
        f"{running} of {len(instances)} instance(s) running</div>"
        "<table style='border-collapse:collapse;width:100%'>"
        "<tr><th align=left>instance</th><th align=left>level</th>"
        "<th align=left>last heartbeat</th><th align=left>symbols</th>"
        "<th align=left>reasons</th></tr>" + "".join(rows) + "</table>"
    )


class FleetDashboard(widgets.VBox):
    """A live table of every instance in a shared database; ``refresh()`` draws once."""

    def __init__(self, db: DatabaseRef, *, interval: float = 2.0, autostart: bool = True) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        from robust_collector.storage.backend import is_postgres_url

        if is_postgres_url(db):
            from robust_collector.storage.postgres import redact_url

            self.label = redact_url(str(db))
        else:
            self.label = str(db)
        self.db = db
        self.interval = float(interval)
        self.table_html = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.footer_html = widgets.HTML()
        super().__init__(children=[self.table_html, self.footer_html])
        self.instances: list[InstanceStatus] = []
        self.refreshes = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with contextlib.suppress(Exception):  # a server that is down shows in the footer
            self.refresh()
        if autostart:
            self.start()

    def refresh(self) -> list[InstanceStatus]:
        """Read the fleet now and draw it."""
        with self._lock:
            try:
                instances = fleet_status(self.db)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                self.footer_html.value = (
                    f"<small style='color:#c62828'>cannot read the fleet: "
                    f"{html.escape(self.last_error)}</small>"
                )
                raise
            self.last_error = None
            self.instances = instances
            now = now_us()
            with self.table_html.hold_sync():
                self.table_html.value = render_fleet_html(instances, self.label, now)
            self.footer_html.value = (
                f"<small>refreshed every {self.interval:g}s; a collector that has not "
                "reported for three heartbeat intervals (at least 3 s), or whose process is gone, "
                "shows as not running</small>"
            )
            self.refreshes += 1
            return instances

    @property
    def refreshing(self) -> bool:
        """True while the refresher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> FleetDashboard:
        """Start the daemon refresher (no-op if it already runs)."""
        if self.refreshing:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rc-fleet", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as exc:  # keep refreshing; the footer says what failed
                log.debug("fleet refresh failed: %s", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the refresher, keeping the last table on screen."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop the refresher and close the widgets."""
        self.stop()
        for w in (self.table_html, self.footer_html):
            with contextlib.suppress(Exception):
                w.close()
        super().close()

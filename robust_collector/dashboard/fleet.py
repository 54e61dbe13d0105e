"""The fleet dashboard: every collector instance writing into one shared database.

``watch("postgresql://...")`` shows this: one row per instance with its level,
last heartbeat, symbols and whether it runs, refreshed by one daemon thread
(the same pattern as ``Dashboard``: widgets are written inside ``hold_sync()``).
A failed refresh never ends the refresher: it is counted, shown in the footer and
logged (the first time with its traceback).
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading

import ipywidgets as widgets

from robust_collector.boundary import clean_text
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

_MAX_LOGGED = 50  # distinct failure texts remembered (so each is logged once)

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
        self.refresh_failures = 0  # every failed refresh, counted
        self.last_error: str | None = None
        self._logged: set[str] = set()  # failures already logged with their traceback
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with contextlib.suppress(Exception):  # a server that is down shows in the footer
            self.refresh()
        if autostart:
            self.start()

    def refresh(self) -> list[InstanceStatus]:
        """Read the fleet now and draw it; a failure is counted, shown in the footer,
        logged (the first time with its traceback) and raised."""
        with self._lock:
            try:
                instances = fleet_status(self.db)
                self.last_error = None
                self.instances = instances
                now = now_us()
                with self.table_html.hold_sync():
                    self.table_html.value = render_fleet_html(instances, self.label, now)
                self.footer_html.value = (
                    f"<small>refreshed every {self.interval:g}s; a collector that has not "
                    "reported for three heartbeat intervals (at least 3 s), or whose process "
                    "is gone, shows as not running</small>"
                )
            except Exception as exc:
                self._failed(exc)
                raise
            self.refreshes += 1
            return instances

    def _failed(self, exc: BaseException) -> None:
        """One failure (the caller holds ``_lock``): counted, shown, logged once with traceback."""
        self.refresh_failures += 1
        first_line = (str(exc).strip().splitlines() or [""])[0]
        text = clean_text(f"{type(exc).__name__}: {first_line}", 300)
        self.last_error = text
        if text not in self._logged:  # the same failure again is counted, not re-logged
            if len(self._logged) < _MAX_LOGGED:
                self._logged.add(text)
            log.error("fleet refresh failed: %s", text, exc_info=exc)
        with contextlib.suppress(Exception):  # the widget may be closed meanwhile
            self.footer_html.value = (
                f"<small style='color:#c62828'>cannot read the fleet: {html.escape(text)} "
                f"({self.refresh_failures} failed so far; retrying every "
                f"{self.interval:g}s)</small>"
            )

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
        """The refresher: a failure is counted, shown and logged by ``refresh``; it goes on."""
        try:
            while not self._stop.wait(self.interval):
                with contextlib.suppress(Exception):  # refresh() counted and showed it
                    self.refresh()
        except BaseException as exc:  # not an Exception: say so before the thread ends
            with self._lock:
                self._failed(exc)
            raise

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

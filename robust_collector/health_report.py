"""Text and JSON reports of stored health, in the seed's ``system_health.py`` format.

Exit codes follow the monitoring-plugin convention: 0 HEALTHY, 1 DEGRADED,
2 UNHEALTHY or CRITICAL, 3 unknown (no database, no snapshot, not running).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from robust_collector.health import HealthLevel
from robust_collector.health_store import StoredSnapshot

RULE = "=" * 80
THIN = "-" * 80

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3


def exit_code(level: HealthLevel | None) -> int:
    """The monitoring-plugin exit code of a level (``None``: unknown)."""
    if level is None:
        return EXIT_UNKNOWN
    if level is HealthLevel.HEALTHY:
        return EXIT_HEALTHY
    if level is HealthLevel.DEGRADED:
        return EXIT_DEGRADED
    return EXIT_CRITICAL


def iso_utc(us: int) -> str:
    """Epoch microseconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def not_running_since(snap: StoredSnapshot, now_us: int) -> int | None:
    """When the collector stopped reporting (epoch µs), or ``None`` if it is running.

    A snapshot older than twice the check interval, or a run marked stopped,
    means the collector is not running.
    """
    if snap.run_status == "stopped" and snap.run_stopped_us is not None:
        return snap.run_stopped_us
    if now_us - snap.ts_us > 2 * snap.check_interval_seconds * 1_000_000:
        return snap.ts_us
    return None


def fmt_age(seconds: Any) -> str:
    """A duration for people: ``42s``, ``7m``, ``3.5h``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = float(seconds)
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def render_single(snap: StoredSnapshot, *, component: str | None = None) -> str:
    """The seed's health report for one snapshot."""
    lines = [RULE, f"SYSTEM HEALTH CHECK - {iso_utc(snap.ts_us)}", RULE, ""]
    lines.append(f"{snap.level.icon} Overall Status: {snap.level.name}")
    lines.append(
        f"  Run: {snap.run_id}" + (f" (pid {snap.pid} on {snap.host})" if snap.pid else "")
    )
    lines += ["", THIN, "COMPONENT HEALTH", THIN, ""]
    comps = [c for c in snap.components if component is None or c.name == component]
    if component is not None and not comps:
        names = ", ".join(c.name for c in snap.components)
        lines.append(f"no component named {component!r}; known: {names}")
    for c in comps:
        m = c.metrics
        lines.append(f"{c.level.icon} {c.name}: {c.level.label}")
        rate = m.get("success_rate")
        lines.append(f"  Operations:    {m.get('operations', 0):,}")
        lines.append(f"  Successes:     {m.get('successes', 0):,}")
        lines.append(f"  Failures:      {m.get('failures', 0):,}")
        lines.append(f"  Success Rate:  {'-' if rate is None else f'{rate:.1%}'}")
        lines.append(f"  Errors/minute: {m.get('errors_per_minute', 0):g}")
        if c.kind != "storage":
            lines.append(f"  Data Age:      {fmt_age(m.get('data_age_seconds'))}")
        if m.get("breaker_state"):
            lines.append(f"  Breaker:       {m['breaker_state']}")
        if m.get("storage_mode"):
            lines.append(f"  Storage:       {m['storage_mode']}")
            lines.append(f"  Queue depth:   {m.get('queue_depth', 0)}")
            lines.append(f"  Backup files:  {m.get('backup_files', 0)}")
        for r in c.reasons:
            lines.append(f"  ! {r}")
        lines.append("")
    if snap.level is HealthLevel.HEALTHY:
        lines.append("✅ All systems healthy!")
    else:
        lines.append(f"{snap.level.icon} {len(snap.reasons)} problem(s):")
        lines += [f"  - {r}" for r in snap.reasons]
    return "\n".join(lines)


def render_not_running(snap: StoredSnapshot | None, since_us: int | None, db: str) -> str:
    """What ``health`` says when there is nothing current to show."""
    if snap is None:
        return f"❔ UNKNOWN: no health snapshot in {db} (has a collector with health_check enabled run?)"
    return (
        f"❔ UNKNOWN: the collector is not running (run {snap.run_id}; last report at "
        f"{iso_utc(since_us or snap.ts_us)}, last level {snap.level.name})"
    )


def render_history(df: pl.DataFrame) -> str:
    """Levels over time per component, as a text table."""
    if df.is_empty():
        return "no health history"
    lines = [RULE, "HEALTH HISTORY", RULE, f"{'time (UTC)':<21} {'component':<22} level"]
    for row in df.iter_rows(named=True):
        lvl = HealthLevel.parse(row["level"])
        lines.append(f"{iso_utc(row['ts_us']):<21} {row['component']:<22} {lvl.icon} {lvl.name}")
    return "\n".join(lines)


def render_errors(df: pl.DataFrame, component: str | None) -> str:
    """The seed's recent-errors view."""
    title = f"RECENT ERRORS: {component}" if component else "RECENT ERRORS"
    lines = [RULE, title, RULE, ""]
    if df.is_empty():
        lines.append("no errors recorded")
    for row in df.iter_rows(named=True):
        when = dt.datetime.fromtimestamp(row["ts_us"] / 1e6, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        where = row["component"] + (
            f"/{row['symbol']}" if row["symbol"] and row["symbol"] != row["component"] else ""
        )
        lines.append(f"{when}  [{where}] {row['error_type']}")
        lines.append(f"  {row['message']}")
        lines.append("")
    return "\n".join(lines).rstrip()


def snapshot_json(snap: StoredSnapshot, running: bool) -> dict[str, Any]:
    """The same content as ``render_single``, as JSON-ready data."""
    return {
        "time": iso_utc(snap.ts_us),
        "run_id": snap.run_id,
        "running": running,
        "level": snap.level.name,
        "reasons": list(snap.reasons),
        "components": [
            {
                "name": c.name,
                "kind": c.kind,
                "level": c.level.name,
                "reasons": list(c.reasons),
                "metrics": c.metrics,
            }
            for c in snap.components
        ],
    }

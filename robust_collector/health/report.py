"""Text and JSON reports of stored health, in the seed's ``system_health.py`` format.

Exit codes follow the monitoring-plugin convention: 0 HEALTHY, 1 DEGRADED,
2 UNHEALTHY or CRITICAL (also: a collector that died or stopped reporting
without being stopped), 3 unknown (no database, no snapshot, stopped cleanly).

Every report says how old its snapshot is, and every text that came from outside
(reasons, error messages, names) passes ``boundary.clean_text`` before it is
printed: a terminal escape in an API's error body is shown escaped, never run.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any

import polars as pl

from robust_collector.boundary import clean_text
from robust_collector.health.levels import HealthLevel
from robust_collector.health.store import StoredSnapshot, pid_namespace, process_start

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


def stale_after_seconds(interval: float) -> float:
    """How old the newest sign of life may be before the collector counts as not
    reporting: three missed beats, never less than 3 s (one late beat is not death)."""
    return max(3.0 * interval, 3.0)


def pid_alive(pid: int, start: str | None = None) -> bool | None:
    """Whether process ``pid`` on this host is alive: ``False`` when it does not exist,
    is a zombie (killed, not yet reaped) or is a different process that reused the pid
    (its start time differs from ``start``); ``None`` when that cannot be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    except (OSError, OverflowError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc (not Linux): os.kill said it exists
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields and fields[0] in ("Z", "X"):
        return False
    # a recorded start time that differs: the pid was reused by another process
    return start is None or process_start(pid) in (None, start)


@dataclass(frozen=True)
class Liveness:
    """Whether the collector behind a snapshot runs, and if not, what to say.

    ``state`` is ``running``, ``stopped`` (recorded as stopped: not an error),
    ``dead`` (its pid on this host is gone) or ``silent`` (no sign of life for
    longer than ``stale_after_seconds``; died elsewhere, or stuck)."""

    state: str
    since_us: int | None
    message: str | None

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def failed(self) -> bool:
        """Died or stopped reporting without being stopped: CRITICAL."""
        return self.state in ("dead", "silent")


def _who(snap: StoredSnapshot) -> str:
    who = f"collector pid {snap.pid}" if snap.pid else "collector"
    if snap.host:
        who += f" on host {clean_text(snap.host, 200)}"
    return who


def liveness(snap: StoredSnapshot, now_us: int, *, host: str | None = None) -> Liveness:
    """Judge ``snap``: a run recorded as stopped is stopped; a pid recorded on this host
    that no longer exists is dead at once, whatever the age; a newest sign of life older
    than ``stale_after_seconds(beat interval)`` means not reporting."""
    last = snap.last_seen_us
    ago = fmt_ago(max(0.0, (now_us - last) / 1e6))
    if snap.run_status == "stopped":
        since = snap.run_stopped_us or last
        return Liveness(
            "stopped",
            since,
            f"{_who(snap)} is not running: run {clean_text(snap.run_id, 200)} was stopped "
            f"at {human_utc(since)}",
        )
    here = socket.gethostname() if host is None else host
    same_ns = snap.pid_ns is None or snap.pid_ns == pid_namespace()
    if snap.pid and snap.host == here and same_ns and pid_alive(snap.pid, snap.pid_start) is False:
        return Liveness(
            "dead",
            last,
            f"{_who(snap)} is not running (the process is gone; last heartbeat {ago})",
        )
    limit = stale_after_seconds(snap.beat_interval_seconds)
    if now_us - last > limit * 1_000_000:
        if snap.pid and snap.host == here and same_ns:
            msg = (
                f"{_who(snap)} is not reporting: the process exists but its last heartbeat "
                f"was {ago} (due every {snap.beat_interval_seconds:g}s; stuck?)"
            )
        else:
            msg = f"{_who(snap)} is not running (last heartbeat {ago})"
        return Liveness("silent", last, msg)
    return Liveness("running", None, None)


def not_running_since(snap: StoredSnapshot, now_us: int) -> int | None:
    """When the collector stopped reporting (epoch µs), or ``None`` if it is running."""
    return liveness(snap, now_us).since_us


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


def fmt_ago(seconds: float) -> str:
    """How long ago, precise where it matters: ``1.2 s ago`` below a minute, ``7m ago``."""
    s = max(0.0, float(seconds))
    return f"{s:.1f} s ago" if s < 60 else f"{fmt_age(s)} ago"


def human_utc(us: int) -> str:
    """Epoch microseconds as ``YYYY-MM-DD HH:MM:SS UTC``."""
    return dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def as_of(ts_us: int, now_us: int) -> str:
    """``as of 2026-11-30 02:10:03 UTC, 1.2 s ago``: a report's time and its age."""
    return f"as of {human_utc(ts_us)}, {fmt_ago((now_us - ts_us) / 1e6)}"


def render_single(snap: StoredSnapshot, *, component: str | None = None, now_us: int) -> str:
    """The seed's health report for one snapshot, headed by the snapshot's time and age."""
    lines = [RULE, f"SYSTEM HEALTH CHECK - {as_of(snap.ts_us, now_us)}", RULE, ""]
    lines.append(f"{snap.level.icon} Overall Status: {snap.level.name}")
    run = f"  Run: {clean_text(snap.run_id, 200)}"
    if snap.pid:
        run += f" (pid {snap.pid} on {clean_text(snap.host, 200)})"
    if snap.heartbeat_us is not None:
        run += f"; last heartbeat {fmt_ago((now_us - snap.last_seen_us) / 1e6)}"
    lines.append(run)
    lines += ["", THIN, "COMPONENT HEALTH", THIN, ""]
    comps = [c for c in snap.components if component is None or c.name == component]
    if component is not None and not comps:  # no verdict: there is nothing to judge
        names = ", ".join(clean_text(c.name, 200) for c in snap.components)
        lines.append(f"no component named {clean_text(component, 200)!r}; known: {names}")
        return "\n".join(lines)
    for c in comps:
        m = c.metrics
        lines.append(f"{c.level.icon} {clean_text(c.name, 200)}: {c.level.label}")
        rate = m.get("success_rate")
        lines.append(f"  Operations:    {m.get('operations', 0):,}")
        lines.append(f"  Successes:     {m.get('successes', 0):,}")
        lines.append(f"  Failures:      {m.get('failures', 0):,}")
        lines.append(f"  Success Rate:  {'-' if rate is None else f'{rate:.1%}'}")
        lines.append(f"  Errors/minute: {m.get('errors_per_minute', 0):g}")
        if c.kind != "storage":
            lines.append(f"  Data Age:      {fmt_age(m.get('data_age_seconds'))}")
        if m.get("breaker_state"):
            lines.append(f"  Breaker:       {clean_text(m['breaker_state'], 40)}")
        if "trades_received" in m:
            lines.append(
                f"  Trades:        {m.get('trades_received', 0):,} received, "
                f"{m.get('trades_stored', 0):,} stored, {m.get('trade_rejects', 0):,} rejected; "
                f"last {fmt_age(m.get('trade_age_seconds'))}"
            )
        if m.get("trades_breaker_state"):
            lines.append(f"  Trade breaker: {clean_text(m['trades_breaker_state'], 40)}")
        if m.get("storage_mode"):
            lines.append(f"  Storage:       {clean_text(m['storage_mode'], 40)}")
            lines.append(f"  Queue depth:   {m.get('queue_depth', 0)}")
            lines.append(f"  Backup files:  {m.get('backup_files', 0)}")
        for r in c.reasons:
            lines.append(f"  ! {clean_text(r)}")
        lines.append("")
    if component is not None:  # the verdict (and the exit code) are this component's
        c = comps[0]
        name = clean_text(c.name, 200)
        verdict = "healthy" if c.level is HealthLevel.HEALTHY else c.level.name
        lines.append(f"{c.level.icon} {name}: {verdict} (overall: {snap.level.name})")
    elif snap.level is HealthLevel.HEALTHY:
        lines.append("✅ All systems healthy!")
    else:
        lines.append(f"{snap.level.icon} {len(snap.reasons)} problem(s):")
        lines += [f"  - {clean_text(r)}" for r in snap.reasons]
    return "\n".join(lines)


def render_not_running(
    snap: StoredSnapshot | None, live: Liveness | None, db: str, *, now_us: int
) -> str:
    """What ``health`` says when there is nothing current to show: no snapshot, a run
    that was stopped (not an error), or a collector that died or stopped reporting."""
    if snap is None or live is None:
        return (
            f"❔ UNKNOWN: no health snapshot in {clean_text(db)} "
            "(has a collector with health_check enabled run?)"
        )
    head = f"last snapshot {as_of(snap.ts_us, now_us)}, last level {snap.level.name}"
    if live.failed:
        return f"{HealthLevel.CRITICAL.icon} CRITICAL: {live.message}\n  ({head})"
    return f"❔ UNKNOWN: {live.message}\n  ({head})"


def render_history(df: pl.DataFrame, *, now_us: int) -> str:
    """Levels over time per component, as a text table, with each snapshot's age."""
    if df.is_empty():
        return "no health history"
    newest = int(df["ts_us"].max())  # type: ignore[arg-type]
    lines = [
        RULE,
        f"HEALTH HISTORY - newest snapshot {as_of(newest, now_us)}",
        RULE,
        f"{'time (UTC)':<21} {'age':>10} {'component':<22} level",
    ]
    for row in df.iter_rows(named=True):
        lvl = HealthLevel.parse(row["level"])
        age = fmt_ago((now_us - row["ts_us"]) / 1e6).removesuffix(" ago")
        name = clean_text(row["component"], 200)
        lines.append(f"{iso_utc(row['ts_us']):<21} {age:>10} {name:<22} {lvl.icon} {lvl.name}")
    return "\n".join(lines)


def render_errors(df: pl.DataFrame, component: str | None, *, now_us: int) -> str:
    """The seed's recent-errors view; every outside text is cleaned before printing."""
    title = f"RECENT ERRORS: {clean_text(component, 200)}" if component else "RECENT ERRORS"
    if not df.is_empty():
        title += f" - newest {as_of(int(df['ts_us'].max()), now_us)}"  # type: ignore[arg-type]
    lines = [RULE, title, RULE, ""]
    if df.is_empty():
        lines.append("no errors recorded")
    for row in df.iter_rows(named=True):
        when = human_utc(row["ts_us"])
        where = clean_text(row["component"], 200) + (
            f"/{clean_text(row['symbol'], 200)}"
            if row["symbol"] and row["symbol"] != row["component"]
            else ""
        )
        ago = fmt_ago((now_us - row["ts_us"]) / 1e6)
        who = ""  # a fleet's errors (a PostgreSQL server): the instance that recorded it
        if "instance" in row:
            who = f"instance {clean_text(row['instance'] or 'unknown', 200)}  "
        lines.append(f"{when} ({ago})  {who}[{where}] {clean_text(row['error_type'], 200)}")
        lines.append(f"  {clean_text(row['message'])}")
        lines.append("")
    return "\n".join(lines).rstrip()


def snapshot_json(
    snap: StoredSnapshot, running: bool, *, now_us: int, live: Liveness | None = None
) -> dict[str, Any]:
    """The same content as ``render_single``, as JSON-ready data, with the snapshot's
    age and (when known) the collector's state, pid and host."""
    return {
        "time": iso_utc(snap.ts_us),
        "as_of": as_of(snap.ts_us, now_us),
        "age_seconds": round((now_us - snap.ts_us) / 1e6, 3),
        "last_heartbeat": iso_utc(snap.last_seen_us),
        "heartbeat_age_seconds": round((now_us - snap.last_seen_us) / 1e6, 3),
        "run_id": snap.run_id,
        "pid": snap.pid,
        "host": snap.host,
        "running": running,
        "state": "running" if live is None else live.state,
        "message": None if live is None else live.message,
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

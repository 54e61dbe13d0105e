"""The fleet view: every collector instance writing into one database, at a glance.

Each instance's newest run is read from ``runs`` and its newest system health
snapshot from ``health_snapshots``; an instance is *not running* when its run was
stopped, when its pid on this host no longer exists (killed), or when it has not
reported for ``stale_after_seconds`` of its health interval (it crashed elsewhere
or lost the database). ``robust-collector health --db postgresql://...`` prints
this and ``dashboard.watch(url)`` shows it live; it works on a SQLite file too.
Names, hosts and reasons come from the database, so they are cleaned before printing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import orjson

from robust_collector.boundary import clean_text
from robust_collector.health.levels import HealthLevel
from robust_collector.health.report import fmt_age, iso_utc, pid_alive, stale_after_seconds
from robust_collector.model import now_us as _now_us
from robust_collector.storage.reader import DatabaseRef, missing_table, open_reader, reader_errors

__all__ = [
    "InstanceStatus",
    "fleet_exit_code",
    "fleet_status",
    "heartbeat_age",
    "render_fleet",
]

SYSTEM = "RobustDataCollector"


@dataclass(frozen=True)
class InstanceStatus:
    """One collector instance: its newest run, its last heartbeat and whether it runs."""

    instance: str
    host: str | None
    pid: int | None
    run_id: str
    symbols: tuple[str, ...]
    started_us: int
    level: HealthLevel | None
    reasons: tuple[str, ...]
    last_heartbeat_us: int | None
    check_interval_seconds: float
    running: bool
    not_running_since_us: int | None
    stopped_cleanly: bool
    checked_us: int | None = None
    process_gone: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        age = None
        if self.last_heartbeat_us is not None and self.checked_us is not None:
            age = round(max(0, self.checked_us - self.last_heartbeat_us) / 1e6, 3)
        return {
            "instance": self.instance,
            "host": self.host,
            "pid": self.pid,
            "run_id": self.run_id,
            "symbols": list(self.symbols),
            "started": iso_utc(self.started_us),
            "level": None if self.level is None else self.level.name,
            "reasons": list(self.reasons),
            "last_heartbeat": None
            if self.last_heartbeat_us is None
            else iso_utc(self.last_heartbeat_us),
            "last_heartbeat_age_seconds": age,
            "running": self.running,
            "process_gone": self.process_gone,
            "not_running_since": None
            if self.not_running_since_us is None
            else iso_utc(self.not_running_since_us),
            "stopped_cleanly": self.stopped_cleanly,
        }


def _interval(config: Any) -> float:
    try:
        return float(
            orjson.loads(config)["realtime_data"]["health_check"]["check_interval_seconds"]
        )
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return 60.0


def fleet_status(db: DatabaseRef, *, now_us: int | None = None) -> list[InstanceStatus]:
    """The newest run of every instance in ``db`` (a SQLite file or a PostgreSQL URL)."""
    now = _now_us() if now_us is None else now_us
    here = socket.gethostname()
    conn = open_reader(db)
    try:
        try:
            runs = conn.execute(
                "SELECT run_id, started_us, stopped_us, status, pid, host, instance, symbols, "
                "config FROM runs ORDER BY started_us"
            ).fetchall()
        except reader_errors() as exc:
            if missing_table(exc):
                return []
            raise
        newest: dict[str, tuple[Any, ...]] = {}
        for row in runs:
            newest[row[6] or row[5] or row[0]] = row  # later runs replace earlier ones
        out = []
        for name, (run_id, started, stopped, status, pid, host, _, symbols, config) in sorted(
            newest.items()
        ):
            beat = conn.execute(
                "SELECT ts_us, level, reasons FROM health_snapshots "
                "WHERE run_id = ? AND component = ? ORDER BY ts_us DESC LIMIT 1",
                (run_id, SYSTEM),
            ).fetchone()
            interval = _interval(config)
            last = None if beat is None else int(beat[0])
            seen = last if last is not None else int(started)
            since: int | None = None
            gone = False
            if status == "stopped":
                since = int(stopped) if stopped is not None else seen
            elif pid and host == here and pid_alive(int(pid)) is False:
                since, gone = seen, True  # killed on this host: no need to wait for silence
            elif now - seen > stale_after_seconds(interval) * 1_000_000:
                since = seen
            try:
                syms = tuple(orjson.loads(symbols))
            except (TypeError, ValueError, orjson.JSONDecodeError):
                syms = ()
            out.append(
                InstanceStatus(
                    instance=name,
                    host=host,
                    pid=pid,
                    run_id=run_id,
                    symbols=syms,
                    started_us=int(started),
                    level=None if beat is None else HealthLevel.parse(beat[1]),
                    reasons=() if beat is None else tuple(orjson.loads(beat[2])),
                    last_heartbeat_us=last,
                    check_interval_seconds=interval,
                    running=since is None,
                    not_running_since_us=since,
                    stopped_cleanly=status == "stopped",
                    checked_us=now,
                    process_gone=gone,
                )
            )
        return out
    finally:
        conn.close()


def fleet_exit_code(instances: list[InstanceStatus]) -> int:
    """0 all running instances healthy, 1 one degraded, 2 one unhealthy or critical or an
    instance that died without stopping, 3 nothing running (or nothing known)."""
    running = [i for i in instances if i.running]
    if not running:
        return 3
    code = 0
    for i in instances:
        if not i.running and not i.stopped_cleanly:
            code = max(code, 2)
        elif i.running and i.level is not None:
            if i.level >= HealthLevel.UNHEALTHY:
                code = max(code, 2)
            elif i.level >= HealthLevel.DEGRADED:
                code = max(code, 1)
    return code


def heartbeat_age(us: int | None, now: int) -> str:
    """How long ago ``us`` was, for people (``never`` for no heartbeat yet)."""
    return "never" if us is None else f"{fmt_age(max(0.0, (now - us) / 1e6))} ago"


def render_fleet(
    instances: list[InstanceStatus], db_label: str, *, now_us: int | None = None
) -> str:
    """A text table, one line per instance, for the terminal."""
    now = _now_us() if now_us is None else now_us
    if not instances:
        return f"❔ UNKNOWN: no collector has written to {db_label} yet"
    running = sum(i.running for i in instances)
    lines = [
        f"fleet at {clean_text(db_label)}: {running} of {len(instances)} instance(s) running "
        f"(as of {iso_utc(now)})",
        "",
    ]
    rows = [("instance", "host/pid", "level", "last heartbeat", "symbols", "state")]
    for i in instances:
        level = "-" if i.level is None else i.level.name
        if not i.running:
            level = f"({level})"
        why = " (stopped reporting: process gone)" if i.process_gone else " (stopped reporting)"
        state = (
            "running"
            if i.running
            else f"not running since {iso_utc(i.not_running_since_us or i.started_us)}"
            + ("" if i.stopped_cleanly else why)
        )
        names = [clean_text(s, 40) for s in i.symbols]
        syms = ", ".join(names[:6]) + (f" +{len(names) - 6}" if len(names) > 6 else "")
        rows.append(
            (
                clean_text(i.instance, 200),
                f"{clean_text(i.host or '-', 200)}/{i.pid or '-'}",
                level,
                heartbeat_age(i.last_heartbeat_us, now),
                f"{len(i.symbols)}: {syms}",
                state,
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    for i in instances:
        if i.running and i.reasons and i.level is not None and i.level > HealthLevel.HEALTHY:
            reasons = "; ".join(clean_text(r) for r in i.reasons)
            lines.append(f"  {clean_text(i.instance, 200)}: {reasons}")
    return "\n".join(lines)
